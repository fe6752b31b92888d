"""The model as a real graph: shared layers, several inputs and outputs, models as layers,
the tape instead of cached activations, and loss functions written as plain Python."""

import numpy as np
import pytest

import nnkern
from nnkern import layers, losses, optimizers
from nnkern.testing import gradcheck, numerical_gradient


def _data(n=16, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 6)), rng.standard_normal((n, 6)), rng.random(n)


def test_shared_layer_siamese_pair_gradients_match_central_differences():
    # one Dense called on both inputs: its weight gradient is the sum over both calls
    shared = layers.Dense(3, activation="tanh", dtype="float64")
    a, b = layers.Input((6,), dtype="float64"), layers.Input((6,), dtype="float64")
    distance = layers.Lambda(lambda t: ((t[0] - t[1]) ** 2).sum(axis=1))([shared(a), shared(b)])
    model = nnkern.Model([a, b], distance, seed=3)
    xa, xb, target = _data()
    w = shared.variables["w"]

    def loss_value():
        with nnkern.no_grad():
            d = model([nnkern.Tensor(xa), nnkern.Tensor(xb)])
            return float(((d - target) ** 2).mean())

    model.zero_grad()
    d = model([nnkern.Tensor(xa), nnkern.Tensor(xb)])
    ((d - target) ** 2).mean().backward()
    numeric = numerical_gradient(loss_value, w.data)
    nnkern.testing.assert_close(w.grad, numeric, 1e-6, "shared weight gradient")
    # and both calls count: the gradient differs from one branch's alone
    single = nnkern.Model(a, shared(a))
    assert single.count_params() == model.count_params() == 21


def test_gradcheck_through_a_whole_model_on_tensors():
    inp = layers.Input((2, 5, 5), dtype="float64")
    h = layers.Conv2D(3, 3, padding="same", activation="tanh")(inp)
    h = layers.AvgPool2D(2)(h)
    out = layers.Dense(2)(layers.Flatten()(h))
    model = nnkern.Model(inp, out, seed=1)
    x = np.random.default_rng(2).standard_normal((3, 2, 5, 5))
    assert gradcheck(lambda t: model(t), [x], rtol=1e-6)


def test_eval_forward_between_forward_and_backward_does_not_change_gradients():
    # the silent-wrong case of the cached-activation design: forward, an evaluation
    # forward on other data, then backward must give the gradients of the first forward
    def run(interleave):
        model = nnkern.Sequential([layers.Input((6,)), layers.Dense(8, activation="relu"),
                                   layers.BatchNorm1D(), layers.Dropout(0.3), layers.Dense(2)],
                                  seed=4)
        x1, x2, _ = _data(12)
        loss_fn = losses.get("mse")
        out = model.forward(x1.astype(np.float32), training=True)
        if interleave:
            model.forward(x2.astype(np.float32), training=False)
            model.predict(x2[:5].astype(np.float32))
        loss_fn(out, np.zeros_like(out))
        dx = model.backward(loss_fn.backward())
        return [g.copy() for g in model.gradients()] + [dx]

    for got, expected in zip(run(True), run(False)):
        np.testing.assert_array_equal(got, expected)


def test_two_forwards_then_backward_on_the_array_api_is_refused():
    model = nnkern.Sequential([layers.Input((6,)), layers.Dense(2)])
    x1, x2, _ = _data(4)
    model.forward(x1.astype(np.float32), training=True)
    model.forward(x2.astype(np.float32), training=True)
    with pytest.raises(RuntimeError, match="2 times since the last backward"):
        model.backward(np.ones((4, 2), np.float32))


def test_two_forwards_two_backwards_on_tensors_accumulate_both():
    # the natural Siamese loop: both passes stay on the tape
    model = nnkern.Sequential([layers.Input((6,), dtype="float64"), layers.Dense(2)], seed=5)
    x1, x2, _ = _data(4)
    y1, y2 = model(nnkern.Tensor(x1)), model(nnkern.Tensor(x2))
    model.zero_grad()
    y1.sum().backward()
    y2.sum().backward()
    w = model.layers[0].variables["w"]
    np.testing.assert_allclose(w.grad, np.ones((4, 2)).T @ x1 + np.ones((4, 2)).T @ x2,
                               rtol=1e-12)


def test_model_is_a_layer_nested_encoder_shares_weights():
    encoder = nnkern.Sequential([layers.Input((6,)), layers.Dense(4, activation="relu"),
                                 layers.Dense(3)], name="enc", seed=7)
    a, b = layers.Input((6,)), layers.Input((6,))
    ea, eb = encoder(a), encoder(b)
    both = nnkern.Model([a, b], [ea, eb], name="pair")
    assert both.count_params() == encoder.count_params()
    assert [layer.name for layer in both.layers].count("enc") == 1
    xa, xb, _ = _data(5)
    out_a, out_b = both.predict([xa.astype(np.float32), xb.astype(np.float32)])
    np.testing.assert_allclose(out_a, encoder.predict(xa.astype(np.float32)), rtol=1e-6)
    np.testing.assert_allclose(out_b, encoder.predict(xb.astype(np.float32)), rtol=1e-6)
    # as a layer on Tensors inside a hand-written computation
    t = encoder(nnkern.tensor(xa.astype(np.float32)))
    assert isinstance(t, nnkern.Tensor) and t.requires_grad


def test_several_inputs_and_outputs_fit_with_a_function_loss_and_round_trip(tmp_path):
    a, b = layers.Input((6,), name="a"), layers.Input((6,), name="b")
    shared = layers.Dense(4, activation="tanh", name="shared")
    ha, hb = shared(a), shared(b)
    score = layers.Dense(1, name="score")(layers.Add()([ha, hb]))
    model = nnkern.Model([a, b], [score, ha], name="two_out", seed=2)

    def loss(y_true, y_pred):
        score_pred, features = y_pred
        return ((score_pred.reshape(-1) - y_true) ** 2).mean() + 1e-3 * (features ** 2).mean()

    model.compile(optimizers.Adam(lr=1e-2), loss=loss)
    xa, xb, target = _data(32)
    history = model.fit([xa, xb], target.astype(np.float32), batch_size=8, epochs=4, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    path = tmp_path / "two.npz"
    model.save(path)
    with pytest.raises(ValueError, match="custom_objects"):
        nnkern.models.load_model(path)
    again = nnkern.models.load_model(path, custom_objects={"loss": loss})
    for got, expected in zip(again.predict([xa, xb]), model.predict([xa, xb])):
        np.testing.assert_array_equal(got, expected)
    assert [layer.name for layer in again.layers] == [layer.name for layer in model.layers]


def test_function_loss_trains_like_the_builtin_loss():
    def mse(y_true, y_pred):
        return ((y_pred - y_true) ** 2).mean()

    x = np.random.default_rng(0).standard_normal((40, 6)).astype(np.float32)
    y = (x[:, :2] * 2.0).astype(np.float32)
    weights = []
    for loss in ("mse", mse):
        model = nnkern.Sequential([layers.Input((6,)), layers.Dense(2)], seed=9)
        model.compile(optimizers.SGD(lr=0.05), loss)
        model.fit(x, y, batch_size=8, epochs=3, verbose=0, shuffle=False)
        weights.append(model.get_weights())
    for got, expected in zip(*weights):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_a_loss_function_must_return_a_tensor():
    model = nnkern.Sequential([layers.Input((3,)), layers.Dense(1)])
    model.compile("sgd", loss=lambda y_true, y_pred: np.float32(0.0))
    with pytest.raises(TypeError, match="must return an nnkern.Tensor"):
        model.fit(np.ones((4, 3), np.float32), np.ones(4, np.float32), verbose=0)


@pytest.mark.parametrize("backend", ["cpu"])
def test_tensor_api_loss_curve_matches_numpy_backend(backend):
    def curve(device):
        with nnkern.device(device):
            rng = np.random.default_rng(0)
            x = rng.standard_normal((32, 1, 6, 6)).astype(np.float32)
            y = rng.integers(0, 3, 32)
            model = nnkern.Sequential([layers.Input((1, 6, 6)),
                                       layers.Conv2D(4, 3, activation="relu"),
                                       layers.MaxPool2D(2), layers.Flatten(), layers.Dense(3)],
                                      seed=1)
            loss_fn = losses.SparseCategoricalCrossentropy()
            opt = optimizers.Adam(model.parameters(), lr=1e-2)
            values = []
            for step in range(6):
                xb, yb = x[step % 4 * 8:(step % 4 + 1) * 8], y[step % 4 * 8:(step % 4 + 1) * 8]
                model.zero_grad()
                loss = loss_fn(model(nnkern.tensor(xb)), yb)
                loss.backward()
                opt.step()
                values.append(float(loss))
            return values

    np.testing.assert_allclose(curve(backend), curve("numpy"), rtol=1e-4)


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
def test_zero_grad_then_backward_writes_fresh_gradients(backend):
    # zero_grad marks the gradient buffers zero without writing them; a linear backward then
    # writes its gradients, everything else reads zeros (the flat buffer the optimizer steps
    # with included), and without zero_grad gradients still accumulate (PyTorch semantics)
    inp = layers.Input((6,), dtype="float64")
    used = layers.Dense(4, activation="relu", name="used")
    unused = layers.Dense(2, name="unused")
    h = used(inp)
    model = nnkern.Model(inp, [layers.Dense(3, name="head")(h), unused(inp)], seed=2)
    model.to(backend)
    x = _data(5)[0]
    w1, b1 = (used.variables[k].data for k in ("w", "b"))
    head = next(layer for layer in model.layers if layer.name == "head")
    w2 = head.variables["w"].data
    pre = x @ w1.T + b1
    # loss = sum(head(x)): reference gradients in NumPy
    d_h = np.ones((5, 3)) @ w2 * (pre > 0)
    want = {"used/w": d_h.T @ x, "used/b": d_h.sum(0), "head/w": np.ones((5, 3)).T
            @ np.maximum(pre, 0), "head/b": np.full(3, 5.0), "unused/w": np.zeros((2, 6)),
            "unused/b": np.zeros(2)}

    def backward(loss_of_both):
        with nnkern.device(backend):
            out_head, out_unused = model(nnkern.Tensor(x))
            loss_of_both(out_head, out_unused).backward()

    def grads():
        return {f"{layer.name}/{k}": np.array(v.grad) for layer in (used, head, unused)
                for k, v in layer.variables.items()}

    backward(lambda a, b: a.sum() + b.sum())       # every layer gets a gradient
    model.zero_grad()
    assert all((g == 0).all() for g in grads().values())
    model.zero_grad()
    backward(lambda a, b: a.sum())                  # unused gets none this time
    for name, g in grads().items():
        nnkern.testing.assert_close(g, want[name], 1e-12, f"{name} after zero_grad")
    flat = model.parameters().grad_arrays()[0]
    nnkern.testing.assert_close(flat, np.concatenate([want[n].ravel() for n in (
        "used/w", "used/b", "head/w", "head/b", "unused/w", "unused/b")]), 1e-12, "flat grads")
    backward(lambda a, b: a.sum())                  # no zero_grad: the two add up
    for name, g in grads().items():
        nnkern.testing.assert_close(g, 2 * want[name], 1e-12, f"{name} accumulated")
    model.zero_grad()
    with nnkern.device(backend):
        model.parameters().grad_arrays()            # the optimizer's read writes the zeros
    assert not model.parameters().grad_arrays()[0].any()


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dense_chain_recorded_as_one_node_against_float64(backend, dtype, monkeypatch):
    # a model that is a chain of Dense layers records ONE node (the linear rule's
    # record_chain): its output and the gradients of every weight and of the input match
    # NumPy in float64, after zero_grad (written) and without it (added), for an upstream
    # gradient that is not C-contiguous (the top layer's generic backward), for a layer
    # called twice in the chain (its two contributions add up), and a chain that cannot
    # take the path (a layer without bias; a frozen first layer on an input that needs no
    # gradient) gives the same values through one node per layer
    rule = nnkern.functional.RULES["linear"]
    chains = []
    record_chain = rule.record_chain
    monkeypatch.setattr(rule, "record_chain",
                        lambda *a: chains.append(record_chain(*a)) or chains[-1])
    rng = np.random.default_rng(11)
    x64 = rng.standard_normal((5, 6))
    tol = 1e-4 if dtype == "float32" else 1e-11

    def build(square_twice=False, use_bias=True, freeze_first=False):
        inp = layers.Input((6,), dtype=dtype)
        first = layers.Dense(4, activation="relu", use_bias=use_bias, name="first")
        mid = layers.Dense(4, activation="relu", name="mid")
        h = mid(first(inp))
        if square_twice:
            h = mid(h)
        model = nnkern.Model(inp, layers.Dense(3, name="top")(h), seed=4)
        first.trainable = not freeze_first
        model.to(backend)
        return model

    def reference(model, calls, g):
        # the chain in float64: forward, then backward of sum(out * g)
        hs, h = [x64], x64
        for layer in calls:
            w = np.asarray(layer.variables["w"].data, np.float64)
            b = layer.variables.get("b")
            z = h @ w.T + (0 if b is None else np.asarray(b.data, np.float64))
            h = np.maximum(z, 0) if layer.activation == "relu" else z
            hs.append(h)
        grads = {}
        for i in range(len(calls) - 1, -1, -1):
            layer = calls[i]
            if layer.activation == "relu":
                g = g * (hs[i + 1] > 0)
            for key, value in (("w", g.T @ hs[i]), ("b", g.sum(0))):
                if key in layer.variables:
                    name = f"{layer.name}/{key}"
                    grads[name] = grads.get(name, 0) + value
            g = g @ np.asarray(layer.variables["w"].data, np.float64)
        return h, grads, g

    # kind -> whether the chain is one node without and with an input gradient
    for kind, one_node in (({}, (True, True)), ({"square_twice": True}, (True, True)),
                           ({"use_bias": False}, (False, False)),
                           ({"freeze_first": True}, (False, True))):
        model = build(**kind)
        calls = [node.layer for node in model._nodes]
        upstream = rng.standard_normal((5, 3))
        want_y, want, want_x = reference(model, calls, upstream)
        for g, x_grad in ((upstream, False), (np.asfortranarray(upstream), True)):
            chains.clear()
            model.zero_grad()
            x = nnkern.tensor(x64.astype(dtype), requires_grad=x_grad)
            with nnkern.device(backend):
                for _ in range(2):  # the second backward adds to the first
                    y = model(x, training=True)
                    nnkern.testing.assert_close(y.numpy(), want_y, tol, f"{kind} output")
                    assert (y._node.name == "linear" and len(y._node.inputs)
                            == (1 + 2 * len(calls) if one_node[x_grad] else 3))
                    y.backward(g.astype(dtype, order="K"))
            assert [c is not None for c in chains] == [one_node[x_grad]] * 2
            for layer in set(calls):
                for key, p in layer.variables.items():
                    name = f"{layer.name}/{key}"
                    if p.requires_grad:
                        nnkern.testing.assert_close(p.grad, 2 * want[name], tol,
                                                    f"{kind} {name}")
            if x_grad:
                nnkern.testing.assert_close(x.grad, 2 * want_x, tol, f"{kind} input")
            else:
                assert x.grad is None
