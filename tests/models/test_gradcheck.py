"""Whole-model gradient check: backward of a network with conv, batch norm, residual Add
(fan-out of the input), max pool and dense against central differences, in float64 on the
numpy backend. A sample of parameters and of input elements is perturbed."""

import numpy as np
from harness import numerical_gradient

import nnkern
from nnkern import layers, losses


def _residual_net(seed=0):
    inp = layers.Input((2, 6, 6), dtype="float64")
    h = layers.Conv2D(3, 3, padding="same", activation="tanh")(inp)
    h = layers.BatchNorm2D()(h)
    h = layers.Conv2D(2, 3, padding=1)(h)
    h = layers.Add()([h, inp])
    h = layers.MaxPool2D(2)(h)
    h = layers.Flatten()(h)
    h = layers.Dense(5, activation="sigmoid")(h)
    out = layers.Dense(3)(h)
    return nnkern.Model(inp, out, seed=seed)


def test_whole_model_gradients_match_finite_differences():
    rng = np.random.default_rng(1)
    model = _residual_net()
    loss_fn = losses.SparseCategoricalCrossentropy()
    x = rng.standard_normal((4, 2, 6, 6))
    y = np.array([0, 2, 1, 2])

    def loss_value():
        return float(loss_fn(model.forward(x, training=True), y))

    model.zero_grad()
    loss_fn(model.forward(x, training=True), y)
    dx = model.backward(loss_fn.backward())
    flat = model.parameters().arrays()[0]
    grad = model.parameters().grad_arrays()[0].copy()
    assert flat.dtype == np.float64 and flat.size == grad.size

    # every layer's weights are sampled: take a few indices inside each parameter view
    offsets, start = [], 0
    for p in model.parameters():
        picks = rng.choice(p.size, size=min(p.size, 4), replace=False)
        offsets += [start + int(k) for k in picks]
        start += p.size
    for i, num in zip(offsets, numerical_gradient(loss_value, flat, indices=offsets)):
        assert abs(num - grad[i]) <= 1e-6 * (abs(num) + 1e-3), (i, num, grad[i])

    picks = rng.choice(x.size, size=24, replace=False)
    for i, num in zip(picks, numerical_gradient(loss_value, x, indices=picks)):
        got = dx.reshape(-1)[i]
        assert abs(num - got) <= 1e-6 * (abs(num) + 1e-3), (i, num, got)


def test_fan_out_gradients_accumulate():
    # y = Dense(x) + x: d/dx sums both paths (identity + W^T g)
    inp = layers.Input((3,), dtype="float64")
    dense = layers.Dense(3, use_bias=False)
    out = layers.Add()([dense(inp), inp])
    model = nnkern.Model(inp, out)
    x = np.ones((2, 3))
    model.forward(x, training=True)
    g = np.arange(6.0).reshape(2, 3)
    dx = model.backward(g)
    w = dense.params["w"]
    np.testing.assert_allclose(dx, g + g @ w, rtol=1e-12)
    np.testing.assert_allclose(dense.grads["w"], g.T @ x, rtol=1e-12)
