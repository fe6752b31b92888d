"""Keras habits (issue 11 item 4): evaluate's list, fit/evaluate/predict on a DataLoader or any
iterable of (x, y) batches, the layer-name aliases, and the channels-last hint only on the
model's input images."""

import numpy as np
import pytest

import nnkern
from nnkern import data, layers, optimizers


def _data(n=70, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 6)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    return x, y


def _model(metrics=("accuracy",), seed=0):
    model = nnkern.Sequential([layers.Input((6,)), layers.Dense(8, activation="relu"),
                               layers.Dense(2)], seed=seed)
    model.compile(optimizers.Adam(lr=0.02), "sparse_categorical_crossentropy", list(metrics))
    return model


# --- evaluate ----------------------------------------------------------------------------------


def test_evaluate_returns_a_list_like_keras_and_a_dict_on_request():
    x, y = _data()
    model = _model()
    model.fit(x, y, epochs=2, verbose=0)
    as_dict = model.evaluate(x, y, return_dict=True)
    loss, acc = model.evaluate(x, y)
    assert model.metrics_names == ["loss", "accuracy"]
    assert [loss, acc] == [as_dict["loss"], as_dict["accuracy"]]
    logits = model.predict(x)  # an independent computation of both numbers
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    assert loss == pytest.approx(-log_p[np.arange(len(y)), y].mean(), rel=1e-5)
    assert acc == pytest.approx(np.mean(logits.argmax(axis=1) == y))


def test_evaluate_without_metrics_returns_the_loss_alone():
    x, y = _data()
    model = _model(metrics=())
    loss = model.evaluate(x, y)
    assert isinstance(loss, float)
    assert model.evaluate(x, y, return_dict=True) == {"loss": loss}


# --- fit on a source of batches ------------------------------------------------------------------


def test_fit_on_a_dataloader_trains_exactly_as_on_the_same_batches_of_arrays():
    x, y = _data()
    on_arrays, on_loader = _model(), _model()
    h1 = on_arrays.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0)
    loader = data.DataLoader(x, y, batch_size=16, shuffle=False)
    h2 = on_loader.fit(loader, epochs=3, verbose=0)
    for a, b in zip(on_arrays.get_weights(), on_loader.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert h1.history == h2.history


def test_fit_on_a_shuffling_loader_with_validation_batches():
    x, y = _data(96)
    model = _model()
    loader = data.DataLoader(x[:64], y[:64], batch_size=16, seed=3)
    val_batches = [(x[64:80], y[64:80]), (x[80:], y[80:])]  # a list of (x, y) tuples
    history = model.fit(loader, epochs=20, validation_data=val_batches, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    val = model.evaluate(x[64:], y[64:], return_dict=True)
    assert history.history["val_loss"][-1] == pytest.approx(val["loss"], rel=1e-6)
    assert history.history["val_accuracy"][-1] == pytest.approx(val["accuracy"])
    assert val["accuracy"] > 0.8


def test_evaluate_and_predict_on_sources_of_batches():
    x, y = _data()
    model = _model()
    loader = data.DataLoader(x, y, batch_size=32, shuffle=False)
    assert model.evaluate(loader) == pytest.approx(model.evaluate(x, y))
    np.testing.assert_allclose(model.predict(loader), model.predict(x), rtol=1e-6)
    x_only = data.DataLoader(x, batch_size=32, shuffle=False)  # batches of x alone
    np.testing.assert_allclose(model.predict(x_only), model.predict(x), rtol=1e-6)


def test_a_generator_serves_one_epoch():
    x, y = _data()
    model = _model()

    def batches():
        for start in range(0, len(x), 20):
            yield x[start:start + 20], y[start:start + 20]

    model.fit(batches(), epochs=1, verbose=0)
    with pytest.raises(ValueError, match=r"one-shot iterator \(generator\).*3 epochs.*"
                                         r"DataLoader"):
        model.fit(batches(), epochs=3, verbose=0)


def test_bad_sources_of_batches_are_named():
    x, y = _data()
    model = _model()
    loader = data.DataLoader(x, y, batch_size=16)
    with pytest.raises(ValueError, match="gives \\(x, y\\) batches, so y must be None"):
        model.fit(loader, y, verbose=0)
    with pytest.raises(ValueError, match="validation_split needs arrays"):
        model.fit(loader, validation_split=0.2, verbose=0)
    with pytest.raises(ValueError, match=r"each batch of x must be a pair \(x, y\), got "
                                         r"numpy.ndarray in batch 0"):
        model.fit(data.DataLoader(x, batch_size=16), verbose=0)
    with pytest.raises(ValueError, match=r"x batch 1 must have shape \(N, 6\)"):
        model.fit([(x[:8], y[:8]), (x[:8, :5], y[:8])], verbose=0)
    with pytest.raises(ValueError, match="gave no batches in epoch 1"):
        model.fit(iter([]), verbose=0)


# --- layer names and the channels-last hint ----------------------------------------------------


def test_keras_layer_aliases_are_the_same_layers():
    assert layers.MaxPooling2D is layers.MaxPool2D
    assert layers.AveragePooling2D is layers.AvgPool2D
    x = np.random.default_rng(4).standard_normal((2, 3, 6, 6)).astype(np.float32)
    act = layers.Activation("tanh")
    np.testing.assert_allclose(act(x), np.tanh(x), rtol=1e-6)
    assert layers.Activation("linear")(x) is x
    with pytest.raises(ValueError, match="activation must be one of"):
        layers.Activation("gelu")


def test_global_average_pooling_is_the_mean_over_each_image(tmp_path):
    x = np.random.default_rng(5).standard_normal((4, 3, 5, 7))
    np.testing.assert_allclose(layers.GlobalAveragePooling2D()(x), x.mean(axis=(2, 3)),
                               rtol=1e-12)
    np.testing.assert_allclose(layers.GlobalAveragePooling2D(keepdims=True)(x),
                               x.mean(axis=(2, 3), keepdims=True), rtol=1e-12)
    with pytest.raises(ValueError, match="data_format must be 'channels_first'"):
        layers.GlobalAveragePooling2D(data_format="channels_last")
    model = nnkern.Sequential([layers.Input((1, 8, 8)), layers.Conv2D(4, 3, padding="same"),
                               layers.GlobalAveragePooling2D(), layers.Activation("relu"),
                               layers.Dense(10)])
    assert model.output_shape == (None, 10)
    model.compile("adam", "sparse_categorical_crossentropy")
    x8, y8 = data.load_digits()
    model.fit(x8[:64], y8[:64], epochs=1, verbose=0)
    path = tmp_path / "gap.npz"
    model.save(path)
    np.testing.assert_array_equal(nnkern.models.load_model(path).predict(x8[:8]),
                                  model.predict(x8[:8]))


@pytest.mark.parametrize("stack", [
    # Input((1, 64, 24)) -> (16, 64, 24) -> MaxPool 8 -> (16, 8, 3): a map, not an image
    [layers.Input((1, 64, 24)), layers.Conv2D(16, 3, padding="same", activation="relu"),
     layers.MaxPool2D(8), layers.Conv2D(8, 3, padding="same"), layers.Flatten(),
     layers.Dense(3)],
    # Input((1, 100, 1)) -> (16, 98, 1) -> (16, 96, 1)
    [layers.Input((1, 100, 1)), layers.Conv2D(16, (3, 1), activation="relu"),
     layers.Conv2D(16, (3, 1)), layers.BatchNorm2D(), layers.Flatten(), layers.Dense(3)],
])
def test_inner_feature_maps_that_look_channels_last_build_and_train(stack):
    model = nnkern.Sequential(stack)
    model.compile("adam", "sparse_categorical_crossentropy")
    shape = model.input_shape[1:]
    x = np.random.default_rng(6).standard_normal((12,) + shape).astype(np.float32)
    history = model.fit(x, np.arange(12) % 3, batch_size=4, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert model.predict(x).shape == (12, 3)


def test_the_channels_last_hint_stays_on_the_model_input_and_can_be_turned_off():
    with pytest.raises(ValueError, match=r"looks channels-last.*check_layout=False"):
        nnkern.Sequential([layers.Input((16, 8, 3)), layers.Conv2D(4, 3)])
    a = layers.Input((28, 28, 3))
    with pytest.raises(ValueError, match=r"max_pool\w* \(MaxPool2D\) expects NCHW"):
        layers.MaxPool2D(2)(a)  # functional graphs too
    model = nnkern.Sequential([layers.Input((16, 8, 3), check_layout=False),
                               layers.Conv2D(4, 3), layers.Flatten(), layers.Dense(2)])
    assert model.output_shape == (None, 2)
    again = nnkern.models.model_from_config(model.get_config())  # the choice is saved
    assert again.output_shape == (None, 2)
