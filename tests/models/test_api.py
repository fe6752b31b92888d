"""The public model API: layer shapes, summary, metrics, flat buffers, and clear errors."""

import numpy as np
import pytest
from harness import numerical_gradient

import nnkern
from nnkern import layers, losses, metrics, models, optimizers


def _mlp():
    return nnkern.Sequential([layers.Input((784,)), layers.Dense(128, activation="relu"),
                              layers.Dense(64, activation="relu"), layers.Dense(10)])


def test_summary_of_the_course_mlp(capsys):
    model = _mlp()
    model.summary()
    out = capsys.readouterr().out
    assert "Layer (type)" in out and "Output Shape" in out and "Param #" in out
    assert "(None, 128)" in out and "100,480" in out and "8,256" in out and "650" in out
    assert "Total params: 109,386 (427.29 KB)" in out
    assert "Trainable params: 109,386 (427.29 KB)" in out
    assert "Non-trainable params: 0 (0.00 B)" in out
    assert model.count_params() == 109386


def test_summary_counts_batch_norm_statistics_as_non_trainable(capsys):
    model = nnkern.Sequential([layers.Input((3, 4, 4)), layers.BatchNorm2D()])
    model.summary()
    out = capsys.readouterr().out
    assert "Total params: 12 (48.00 B)" in out and "Non-trainable params: 6 (24.00 B)" in out


LAYER_CASES = [
    (lambda: layers.Conv2D(4, 3), (2, 7, 9)),
    (lambda: layers.Conv2D(4, (3, 2), strides=2, padding=1), (2, 7, 9)),
    (lambda: layers.Conv2D(4, 3, padding="same", dilation_rate=2), (2, 7, 9)),
    (lambda: layers.Conv2D(4, 3, padding="valid", groups=2, activation="tanh"), (2, 7, 9)),
    (lambda: layers.Conv2D(3, 1, activation="sigmoid"), (2, 5, 5)),
    (lambda: layers.MaxPool2D(2), (2, 7, 9)),
    (lambda: layers.MaxPool2D(3, strides=2), (2, 7, 9)),  # overlapping, as in AlexNet
    (lambda: layers.MaxPool2D(3, strides=2, padding=1), (2, 7, 9)),
    (lambda: layers.AvgPool2D(2), (2, 7, 9)),
    (lambda: layers.BlurPool2D(), (2, 7, 9)),
    (lambda: layers.BlurPool2D(filt_size=5, stride=3), (2, 7, 9)),
    (lambda: layers.MaxBlurPool2D(), (2, 7, 9)),
    (lambda: layers.MaxBlurPool2D(3, filt_size=2, stride=2), (2, 7, 9)),
    (lambda: layers.BatchNorm2D(), (2, 7, 9)),
    (lambda: layers.BatchNorm1D(), (6,)),
    (lambda: layers.Flatten(), (2, 3, 4)),
    (lambda: layers.Dense(5, activation="softmax"), (6,)),
    (lambda: layers.Dense(5, activation="tanh", use_bias=False), (6,)),
    (lambda: layers.ReLU(), (2, 3, 4)),
    (lambda: layers.Sigmoid(), (6,)),
    (lambda: layers.Tanh(), (6,)),
    (lambda: layers.Softmax(), (6,)),
    (lambda: layers.Dropout(0.5), (2, 3, 4)),
]


def _case_id(value):
    return type(value()).__name__ if callable(value) else str(value)


@pytest.mark.parametrize("make,shape", LAYER_CASES, ids=_case_id)
def test_layer_output_shape_and_gradient_shapes(make, shape):
    layer = make()
    model = nnkern.Sequential([layers.Input(shape, dtype="float64"), layer])
    assert model.output_shape == (None,) + layer.compute_output_shape(shape)
    x = np.random.default_rng(0).standard_normal((3,) + shape)
    y = model.forward(x, training=True)
    assert y.shape == (3,) + layer.compute_output_shape(shape) and y.dtype == np.float64
    dx = model.backward(np.ones_like(y))
    assert dx.shape == x.shape
    for name, g in layer.grads.items():
        assert g.shape == layer.params[name].shape


@pytest.mark.parametrize("make,shape", LAYER_CASES, ids=_case_id)
def test_layer_gradients_match_finite_differences(make, shape):
    """Each layer's backward (how it wires F.<op>_backward: arguments, saved values, fused
    activation, dropout mask) against central differences of a random projection of its
    output, for the input and every weight, in float64."""
    layer = make()
    model = nnkern.Sequential([layers.Input(shape, dtype="float64"), layer], seed=5)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3,) + shape)
    proj = rng.standard_normal((3,) + layer.compute_output_shape(shape))

    def loss():
        if isinstance(layer, layers.Dropout):
            layer.steps = 0  # the same mask on every call
        return float((model.forward(x, training=True) * proj).sum())

    loss()
    model.zero_grad()
    dx = model.backward(proj)
    wrt = [("x", x, dx)] + [(k, layer.params[k], layer.grads[k].copy()) for k in layer.grads]
    for name, value, grad in wrt:
        picks = rng.choice(value.size, size=min(value.size, 8), replace=False)
        nums = numerical_gradient(loss, value, indices=picks)
        for i, num in zip(picks, nums):
            got = grad.reshape(-1)[i]
            assert abs(num - got) <= 1e-6 * max(1.0, abs(num)), (name, int(i), num, got)


@pytest.mark.parametrize("make,shape", LAYER_CASES, ids=_case_id)
def test_every_layer_saves_and_loads(make, shape, tmp_path):
    model = nnkern.Sequential([layers.Input(shape), make()], seed=3)
    x = np.random.default_rng(0).standard_normal((2,) + shape).astype(np.float32)
    model.forward(x, training=True)  # moves batch-norm running statistics off their init
    model.save(tmp_path / "layer.npz")
    loaded = models.load_model(tmp_path / "layer.npz")
    assert loaded.get_config()["layers"][1] == model.get_config()["layers"][1]
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))


def test_parameters_are_views_of_one_flat_buffer():
    model = _mlp()
    params = model.parameters()
    (flat,), (grads,) = params.arrays(), params.grad_arrays()
    assert flat.size == grads.size == 109386 and len(params) == 6
    for p in params:
        assert np.shares_memory(p, flat)
    for g in model.gradients():
        assert np.shares_memory(g, grads)
    flat[:] = 0.5
    assert float(model.layers[0].params["w"][3, 7]) == 0.5


def test_seeded_initialisation_is_reproducible():
    a, b = _mlp(), _mlp()
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)
    c = nnkern.Sequential([layers.Input((784,)), layers.Dense(128)], seed=1)
    assert not np.array_equal(c.get_weights()[0], a.get_weights()[0])
    w = a.layers[0].params["w"]
    limit = np.sqrt(6 / (784 + 128))  # glorot_uniform
    assert np.abs(w).max() <= limit and np.abs(w).max() > 0.9 * limit
    he = nnkern.Sequential([layers.Input((100,)), layers.Dense(50, kernel_initializer="he_normal")])
    assert abs(he.layers[0].params["w"].std() - np.sqrt(2 / 100)) < 0.01
    # a grouped conv: fan_in = C/groups*R*S, fan_out = K*R*S (torch and Keras alike)
    conv = nnkern.Sequential([layers.Input((8, 5, 5)), layers.Conv2D(64, 3, groups=4)])
    w = conv.layers[0].params["w"]
    limit = np.sqrt(6 / (2 * 9 + 64 * 9))
    assert np.abs(w).max() <= limit and np.abs(w).max() > 0.95 * limit


def test_lazy_sequential_builds_from_data():
    model = nnkern.Sequential([layers.Dense(4, activation="relu"), layers.Dense(2)])
    model.compile("sgd", "mse")
    with pytest.raises(ValueError, match="not built"):
        model.summary()
    model.fit(np.ones((6, 3)), np.zeros((6, 2)), verbose=0)
    assert model.input_shape == (None, 3) and model.dtype == np.float32
    keras2 = nnkern.Sequential([layers.Dense(128, activation="relu", input_shape=(784,)),
                                layers.Dense(64, activation="relu"), layers.Dense(10)])
    assert keras2.built and keras2.count_params() == 109386


def test_optimizer_on_plain_arrays_and_state_dict():
    p = np.ones(4)
    g = np.full(4, 0.5)
    opt = optimizers.SGD([p], grads=[g], lr=0.1, momentum=0.9)
    opt.step()
    np.testing.assert_allclose(p, 0.95)
    state = opt.state_dict()
    assert state["iterations"] == 1 and len(state["slots"]) == 1
    with pytest.raises(ValueError, match="gradients"):
        optimizers.Adam([p], lr=0.1)


def test_losses_take_logits_and_give_gradients():
    logits = np.array([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    ce = losses.get("softmax_cross_entropy")
    value = float(ce(logits, np.array([0, 1])))
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    assert value == pytest.approx(-np.log(p[[0, 1], [0, 1]]).mean())
    expected = (p - np.eye(3)[[0, 1]]) / 2
    np.testing.assert_allclose(ce.backward(), expected, rtol=1e-12)
    mse = losses.get("mse")
    assert float(mse(np.ones((2, 1)), np.zeros((2, 1)))) == 1.0
    np.testing.assert_allclose(mse.backward(), np.ones((2, 1)))
    bce = losses.get("binary_crossentropy")
    assert float(bce(np.zeros((2, 1)), np.ones((2, 1)))) == pytest.approx(np.log(2))


def test_metrics():
    y_true = np.array([1, 0, 1, 1, 0, 0])
    y_pred = np.array([1, 1, 1, 0, 0, 0])
    assert metrics.accuracy(y_true, y_pred) == pytest.approx(4 / 6)
    np.testing.assert_array_equal(metrics.confusion_matrix(y_true, y_pred), [[2, 1], [1, 2]])
    assert metrics.precision(y_true, y_pred) == pytest.approx(2 / 3)
    assert metrics.recall(y_true, y_pred) == pytest.approx(2 / 3)
    assert metrics.true_positive_rate(y_true, y_pred) == pytest.approx(2 / 3)
    assert metrics.false_positive_rate(y_true, y_pred) == pytest.approx(1 / 3)
    scores = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]])
    assert metrics.accuracy([1, 0, 0], scores) == pytest.approx(2 / 3)
    assert metrics.accuracy([1, 0], np.array([[2.5], [-1.0]])) == 1.0  # binary logits
    np.testing.assert_allclose(metrics.recall([0, 1, 2, 2], [0, 1, 1, 2], average=None),
                               [1, 1, 0.5])
    assert metrics.precision([0, 1, 2, 2], [0, 1, 1, 2], average="macro") == pytest.approx(
        (1 + 0.5 + 1) / 3)
    np.testing.assert_allclose(
        metrics.false_positive_rate([0, 1, 2, 2], [0, 1, 1, 2], average=None), [0, 1 / 3, 0])


def test_metrics_edge_cases():
    # an empty denominator gives 0 (sklearn's default), never NaN or an error
    assert metrics.precision([1, 0], [0, 0]) == 0.0  # nothing predicted positive
    assert metrics.recall([0, 0], [1, 0]) == 0.0  # no positive sample
    assert metrics.false_positive_rate([1, 1], [1, 0]) == 0.0  # no negative sample
    assert metrics.precision([0, 0], [0, 0]) == 0.0  # only class 0 seen: class 1 still counts
    assert metrics.accuracy([], np.zeros((0, 3))) == 0.0
    # probabilities of a binary model are thresholded at the given threshold
    probs = np.array([[0.7], [0.4], [0.6]])
    assert metrics.recall([1, 1, 0], probs, threshold=0.5) == 0.5
    assert metrics.false_positive_rate([1, 1, 0], probs, threshold=0.5) == 1.0
    np.testing.assert_array_equal(metrics.confusion_matrix([0, 1], [1, 1], num_classes=3),
                                  [[0, 1, 0], [0, 1, 0], [0, 0, 0]])
    with pytest.raises(ValueError, match="labels go up to 3 but num_classes is 2"):
        metrics.confusion_matrix([0, 3], [0, 1], num_classes=2)
    with pytest.raises(ValueError, match="labels must be >= 0, got a label -1"):
        metrics.confusion_matrix([0, -1], [0, 1])
    with pytest.raises(ValueError, match=r"positive must be a class in \[0, 2\), got 5"):
        metrics.precision([0, 1], [0, 1], positive=5, num_classes=2)
    with pytest.raises(ValueError, match="3 samples but y_pred has 2"):
        metrics.accuracy([0, 1, 1], [0, 1])


# --------------------------------------------------------------------------------------------
# clear errors for bad input


def _cnn():
    model = nnkern.Sequential([layers.Input((1, 8, 8)), layers.Conv2D(2, 3), layers.Flatten(),
                               layers.Dense(10)])
    model.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
    return model


def test_channels_last_images_are_refused_with_an_nchw_hint():
    model = _cnn()
    x = np.zeros((5, 8, 8, 1), np.float32)
    with pytest.raises(ValueError, match=r"channels-last.*NCHW.*transpose\(0, 3, 1, 2\)"):
        model.fit(x, np.zeros(5, int), verbose=0)
    with pytest.raises(ValueError, match="channels-last"):
        model.predict(x)
    with pytest.raises(ValueError, match=r"expects NCHW.*Input\(\(3, 28, 28\)\)"):
        nnkern.Sequential([layers.Input((28, 28, 3)), layers.Conv2D(4, 3)])


def test_wrong_shapes_lengths_labels_and_nan():
    model = _cnn()
    x = np.zeros((5, 1, 8, 8), np.float32)
    with pytest.raises(ValueError, match=r"must have shape \(N, 1, 8, 8\).*got \(5, 64\)"):
        model.predict(np.zeros((5, 64)))
    with pytest.raises(ValueError, match="different lengths: 5 samples in x but 4 in y"):
        model.fit(x, np.zeros(4, int), verbose=0)
    with pytest.raises(ValueError, match=r"lie in \[0, 10\).*got values in \[0, 12\]"):
        model.fit(x, np.array([0, 1, 2, 3, 12]), verbose=0)
    with pytest.raises(ValueError, match="one-hot"):
        model.fit(x, np.eye(10)[:5], verbose=0)
    x_nan = x.copy()
    x_nan[3, 0, 2, 2] = np.nan
    with pytest.raises(ValueError, match="1 NaN or infinite values.*sample 3"):
        model.fit(x_nan, np.zeros(5, int), verbose=0)
    with pytest.raises(ValueError, match="batch axis"):
        model.predict(np.zeros(64))
    with pytest.raises(ValueError, match="Flatten"):
        nnkern.Sequential([layers.Input((1, 8, 8)), layers.Dense(3)])


def test_compile_errors():
    model = nnkern.Sequential([layers.Input((4,)), layers.Dense(3, activation="softmax")])
    with pytest.raises(ValueError, match="takes logits"):
        model.compile("adam", "sparse_categorical_crossentropy")
    with pytest.raises(ValueError, match="optimizer must be"):
        model.compile("rmsprop", "mse")
    with pytest.raises(ValueError, match="loss must be"):
        model.compile("adam", "hinge")
    fresh = nnkern.Sequential([layers.Input((4,)), layers.Dense(3)])
    with pytest.raises(RuntimeError, match="compile"):
        fresh.fit(np.zeros((2, 4)), np.zeros(2, int))
    with pytest.raises(ValueError, match=r"batch_size must be an int >= 1, got 0"):
        fresh.predict(np.zeros((2, 4)), batch_size=0)
    fresh.compile("adam", losses.MeanSquaredError(reduction="none"))
    with pytest.raises(ValueError, match=r"reduces to one number.*reduction='none'"):
        fresh.fit(np.zeros((2, 4)), np.zeros((2, 3)), verbose=0)
    with pytest.raises(ValueError, match=r"weight_decay must be >= 0, got -0.1"):
        optimizers.SGD(lr=0.1, weight_decay=-0.1)
    with pytest.raises(ValueError, match=r"nesterov=True needs momentum > 0, got momentum=0"):
        optimizers.SGD(lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\], got 1.5"):
        layers.BatchNorm2D(momentum=1.5)


def test_graph_errors():
    inp = layers.Input((4,))
    dense = layers.Dense(4)
    h = dense(inp)
    # a layer called twice shares its weights (issue 10 lifted the one-call rule); a call
    # on a shape its weights do not fit is refused when the model is built
    assert dense(h).shape == (None, 4) and len(dense.call_nodes) == 2
    with pytest.raises(ValueError, match="built for per-sample input shape"):
        nnkern.Model(inp, layers.Add()([dense(inp), dense(layers.Dense(3)(inp))]))
    with pytest.raises(ValueError, match="one shape"):
        layers.Add()([inp, layers.Dense(3)(inp)])
    other = layers.Input((4,))
    with pytest.raises(ValueError, match="not the model's input"):
        nnkern.Model(inp, layers.Add()([h, other]))
    with pytest.raises(ValueError, match="same.*strides=1"):
        layers.Conv2D(2, 3, strides=2, padding="same")


def test_streaming_precision_recall_match_the_whole_set():
    # the running counts of Precision/Recall give what precision()/recall() give on
    # all the batches' labels at once (scores: class 1 when above the threshold 0)
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 257)
    scores = rng.standard_normal(257) + (y - 0.5)
    stream = {m: m() for m in (metrics.Precision, metrics.Recall)}
    for s in range(0, 257, 40):
        for m in stream.values():
            m.update(y[s:s + 40], scores[s:s + 40])
    labels = (scores > 0).astype(np.int64)
    assert stream[metrics.Precision].result() == pytest.approx(metrics.precision(y, labels))
    assert stream[metrics.Recall].result() == pytest.approx(metrics.recall(y, labels))
    assert metrics.Precision().result() == 0.0 and metrics.Recall().result() == 0.0


@pytest.mark.parametrize("layer,match", [
    (lambda: layers.MaxPool2D(2, padding=2), "padding must be at most half"),
    (lambda: layers.AvgPool2D(9), "does not fit"),
    (lambda: layers.BlurPool2D(filt_size=9), "filt_size must be in"),
    (lambda: layers.MaxBlurPool2D(6, filt_size=5), "reflect padding"),
])
def test_pool_layer_arguments_are_checked_when_the_model_is_built(layer, match):
    # the functional op's checks run at build time, not first at the first forward pass
    with pytest.raises(ValueError, match=match):
        nnkern.Sequential([layers.Input((2, 7, 7)), layer(), layers.Flatten(), layers.Dense(2)])


@pytest.mark.parametrize("name", ["sparse_categorical_crossentropy", "binary_crossentropy", "mse"])
def test_loss_value_equals_the_training_call(name):
    # evaluate uses loss.value(): the same number as the training call, no gradient kept
    rng = np.random.default_rng(1)
    pred = rng.standard_normal((6, 3))
    true = rng.integers(0, 3, 6) if name.startswith("sparse") else rng.random((6, 3))
    fn = losses.get(name)
    with nnkern.device("numpy"):
        assert float(fn.value(pred, true)) == pytest.approx(float(fn(pred, true)), rel=1e-12)
        fresh = losses.get(name)
        fresh.value(pred, true)
        with pytest.raises(RuntimeError, match="before the loss"):
            fresh.backward()
