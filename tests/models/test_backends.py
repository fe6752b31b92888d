"""The same model, seed and batches give the same loss curve on every host backend."""

import numpy as np
import pytest

import nnkern
from nnkern import layers, optimizers


def _net():
    inp = layers.Input((2, 8, 8))
    h = layers.Conv2D(4, 3, padding="same", activation="relu")(inp)
    h = layers.BatchNorm2D()(h)
    h = layers.Conv2D(2, 3, padding="same")(h)
    h = layers.Add()([h, inp])
    h = layers.MaxPool2D(2)(h)
    h = layers.AvgPool2D(2, strides=1)(h)
    h = layers.Flatten()(h)
    h = layers.Dense(16, activation="relu")(h)
    h = layers.Dropout(0.2)(h)
    out = layers.Dense(3)(h)
    model = nnkern.Model(inp, out, seed=11)
    model.compile(optimizers.Adam(lr=3e-3), "sparse_categorical_crossentropy", ["accuracy"])
    return model


def _loss_curve(backend):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((48, 2, 8, 8)).astype(np.float32)
    y = rng.integers(0, 3, 48)
    model = _net().to(backend)
    history = model.fit(x, y, batch_size=16, epochs=3, verbose=0, seed=1)
    return history.history["loss"], model.predict(x)


@pytest.mark.parametrize("backend", ["cpu"])
def test_same_loss_curve_as_numpy_backend(backend):
    ref_losses, ref_pred = _loss_curve("numpy")
    losses, pred = _loss_curve(backend)
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-4)
    np.testing.assert_allclose(pred, ref_pred, rtol=1e-3, atol=1e-4)


def _tiny(kind):
    if kind == "mlp":
        stack = [layers.Input((2, 2, 2)), layers.Flatten(), layers.Dense(3, activation="relu"),
                 layers.Dense(2)]
    else:
        stack = [layers.Input((2, 2, 2)), layers.Conv2D(2, 3, padding="same", activation="relu"),
                 layers.BatchNorm2D(), layers.MaxPool2D(2), layers.Flatten(), layers.Dense(2)]
    model = nnkern.Sequential(stack, seed=2)
    model.compile(optimizers.SGD(lr=0.1, momentum=0.9), "sparse_categorical_crossentropy")
    return model


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_tiny_model_trains_on_cuda_backend(kind):
    """model.to("cuda"): weights, optimizer state and batches live on the device (the Numba
    simulator here, so the shapes are tiny)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 2, 2, 2)).astype(np.float32)
    y = np.array([0, 1, 1, 0])
    dev = _tiny(kind).to("cuda")
    h_dev = dev.fit(x, y, batch_size=4, epochs=2, verbose=0, shuffle=False)
    ref = _tiny(kind)
    h_ref = ref.fit(x, y, batch_size=4, epochs=2, verbose=0, shuffle=False)
    np.testing.assert_allclose(h_dev.history["loss"], h_ref.history["loss"], rtol=1e-4)
    np.testing.assert_allclose(dev.predict(x), ref.predict(x), rtol=1e-4, atol=1e-6)
