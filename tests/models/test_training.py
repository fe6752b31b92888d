"""Training end to end: XOR, save/load round trip, checkpoint resume, callbacks, freezing."""

import csv
import os

import numpy as np
import pytest

import nnkern
from nnkern import callbacks, layers, losses, models, optimizers

XOR_X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)
XOR_Y = np.array([0, 1, 1, 0])


def test_xor_reaches_100_percent():
    model = nnkern.Sequential([layers.Input((2,)), layers.Dense(8, activation="tanh"),
                               layers.Dense(2)])
    model.compile(optimizer=optimizers.Adam(lr=0.05), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(XOR_X, XOR_Y, batch_size=4, epochs=150, verbose=0)
    assert model.evaluate(XOR_X, XOR_Y, return_dict=True)["accuracy"] == 1.0
    assert (model.predict(XOR_X).argmax(axis=1) == XOR_Y).all()


def test_xor_binary_crossentropy_with_sgd_momentum():
    model = nnkern.Sequential([layers.Input((2,)), layers.Dense(8, activation="relu"),
                               layers.Dense(1)], seed=3)
    model.compile(optimizer=optimizers.SGD(lr=0.3, momentum=0.9, nesterov=True),
                  loss="binary_crossentropy", metrics=["accuracy"])
    model.fit(XOR_X, XOR_Y.astype(np.float32), batch_size=4, epochs=300, verbose=0)
    assert model.evaluate(XOR_X, XOR_Y.astype(np.float32), return_dict=True)["accuracy"] == 1.0


def _small_cnn(seed=0, dropout=0.25):
    return nnkern.Sequential([
        layers.Input((1, 6, 6)),
        layers.Conv2D(4, 3, padding="same", activation="relu"),
        layers.BatchNorm2D(),
        layers.MaxPool2D(2),
        layers.Flatten(),
        layers.Dropout(dropout),
        layers.Dense(3),
    ], seed=seed)


def _blobs(n=60, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.standard_normal((n, 1, 6, 6)).astype(np.float32) * 0.3
    x[:, 0, :2, :2] += (y == 0)[:, None, None]
    x[:, 0, 4:, 4:] += (y == 1)[:, None, None]
    x[:, 0, 2:4, 2:4] += (y == 2)[:, None, None]
    return x, y


def test_save_load_predict_round_trips_exactly(tmp_path):
    x, y = _blobs()
    model = _small_cnn()
    model.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
    model.fit(x, y, batch_size=16, epochs=2, verbose=0)
    path = tmp_path / "m.npz"
    model.save(path)
    loaded = models.load_model(path)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    assert loaded.get_config()["layers"] == model.get_config()["layers"]
    # the optimizer state came back too: one more identical step on both gives equal weights
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, seed=5)
    loaded.fit(x, y, batch_size=16, epochs=1, verbose=0, seed=5)
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_functional_model_round_trips(tmp_path):
    inp = layers.Input((2, 5, 5))
    h = layers.Conv2D(2, 3, padding="same")(inp)
    h = layers.Add()([h, inp])
    h = layers.AvgPool2D(2, strides=1)(h)
    out = layers.Dense(2)(layers.Flatten()(h))
    model = nnkern.Model(inp, out, seed=4)
    path = tmp_path / "f.npz"
    model.save(path)
    x = np.random.default_rng(0).standard_normal((3, 2, 5, 5)).astype(np.float32)
    np.testing.assert_array_equal(models.load_model(path).predict(x), model.predict(x))


def test_failed_save_leaves_the_old_file_intact(tmp_path, monkeypatch):
    model = _small_cnn()
    path = tmp_path / "m.npz"
    model.save(path)
    before = path.read_bytes()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken)
    with pytest.raises(OSError, match="disk full"):
        model.save(path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["m.npz"]  # no temp file left behind


class _Kill(callbacks.Callback):
    """Simulates a crash in the middle of an epoch."""

    def __init__(self, epoch, batch):
        super().__init__()
        self.at = (epoch, batch)
        self.epoch = None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self.epoch, batch) == self.at:
            raise KeyboardInterrupt("killed")


def test_killed_and_resumed_fit_matches_uninterrupted_run(tmp_path):
    x, y = _blobs(50)
    fit_args = {"batch_size": 8, "epochs": 4, "verbose": 0, "validation_split": 0.2}

    def fresh():
        model = _small_cnn(seed=7)
        model.compile(optimizers.Adam(lr=0.01), "sparse_categorical_crossentropy", ["accuracy"])
        return model

    reference = fresh()
    full = reference.fit(x, y, **fit_args)

    path = tmp_path / "ckpt.npz"
    run = fresh()
    with pytest.raises(KeyboardInterrupt):
        run.fit(x, y, callbacks=[callbacks.ModelCheckpoint(path, resume=True), _Kill(2, 1)],
                **fit_args)
    assert models.load_checkpoint(path)[1] == 2

    restarted = fresh()  # a new process would rebuild the model the same way
    history = restarted.fit(x, y, callbacks=[callbacks.ModelCheckpoint(path, resume=True)],
                            **fit_args)
    assert history.history["loss"] == full.history["loss"]
    assert history.history["val_accuracy"] == full.history["val_accuracy"]
    for a, b in zip(restarted.get_weights(), reference.get_weights()):
        np.testing.assert_array_equal(a, b)

    assert models.load_checkpoint(path)[1] == 4


def test_manual_resume_with_initial_epoch(tmp_path):
    x, y = _blobs(40)
    path = tmp_path / "c.npz"

    def fresh():
        model = _small_cnn(seed=2, dropout=0.0)
        model.compile(optimizers.SGD(lr=0.05, momentum=0.9), "softmax_cross_entropy")
        return model

    reference = fresh()
    reference.fit(x, y, batch_size=10, epochs=3, verbose=0)
    first = fresh()
    first.fit(x, y, batch_size=10, epochs=1, verbose=0,
              callbacks=[callbacks.ModelCheckpoint(path)])
    second = fresh()
    start = second.load_checkpoint(path)
    second.fit(x, y, batch_size=10, epochs=3, initial_epoch=start, verbose=0)
    for a, b in zip(second.get_weights(), reference.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_hand_written_loop_matches_fit():
    x, y = _blobs(32)
    a = _small_cnn(seed=1, dropout=0.0)
    a.compile(optimizers.SGD(lr=0.1), "sparse_categorical_crossentropy")
    a.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0)

    b = _small_cnn(seed=1, dropout=0.0)
    loss_fn = losses.SparseCategoricalCrossentropy()
    opt = optimizers.SGD(b.parameters(), lr=0.1)
    for _ in range(2):
        logits = b.forward(x, training=True)
        loss_fn(logits, y)
        b.backward(loss_fn.backward())
        opt.step()
        opt.zero_grad()
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_allclose(wa, wb, rtol=1e-6, atol=1e-7)


def test_frozen_layers_do_not_change_and_head_trains():
    x, y = _blobs(40)
    model = _small_cnn(seed=3, dropout=0.0)
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=1, verbose=0)
    conv, bn = model.layers[0], model.layers[1]
    conv.trainable = bn.trainable = False
    frozen = [conv.params["w"].copy(), bn.state["running_mean"].copy()]
    head = model.layers[-1].params["w"].copy()
    model.fit(x, y, epochs=2, verbose=0)
    np.testing.assert_array_equal(conv.params["w"], frozen[0])
    np.testing.assert_array_equal(bn.state["running_mean"], frozen[1])
    assert not np.array_equal(model.layers[-1].params["w"], head)
    assert len(model.parameters()) == 2  # only the head's w and b are packed now


def test_callbacks_reduce_lr_early_stopping_csv_and_nan(tmp_path, capsys):
    x, y = _blobs(30)
    model = _small_cnn(dropout=0.0)
    model.compile(optimizers.SGD(lr=0.0), "sparse_categorical_crossentropy", ["accuracy"])
    log = tmp_path / "log.csv"
    # min_delta is so large that no epoch after the first counts as an improvement
    reduce = callbacks.ReduceLROnPlateau(monitor="loss", patience=1, min_delta=100.0)
    stop = callbacks.EarlyStopping(monitor="loss", patience=2, min_delta=100.0)
    model.optimizer.lr = 1e-3
    history = model.fit(x, y, epochs=10, verbose=0,
                        callbacks=[reduce, stop, callbacks.CSVLogger(log)])
    # Keras semantics: best at epoch 0, then `patience` (2) epochs without improvement
    assert len(history.epoch) == 3
    # each epoch logs the lr it trained with; the plateau cuts it at the end of epochs 1, 2
    assert history.history["lr"] == pytest.approx([1e-3, 1e-3, 1e-4])
    assert model.optimizer.lr == pytest.approx(1e-5)
    with open(log, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0][:2] == ["epoch", "loss"] and len(rows) == 4

    bad = _small_cnn(dropout=0.0)
    bad.compile(optimizers.SGD(lr=1e30), "mse")
    y_big = np.full((30, 3), 1e30, np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        h = bad.fit(x, y_big, epochs=5, verbose=0, callbacks=[callbacks.TerminateOnNaN()])
    assert "invalid loss" in capsys.readouterr().out
    assert len(h.epoch) == 1


def test_progress_output_without_a_tty(capsys):
    x, y = _blobs(20)
    model = _small_cnn()
    model.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
    model.fit(x, y, batch_size=8, epochs=2, validation_data=(x, y))
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "Epoch 1/2" and lines[2] == "Epoch 2/2"
    assert lines[1].startswith("3/3 ") and "ms/step - loss: " in lines[1]
    assert "- accuracy: " in lines[1] and "- val_loss: " in lines[1]
    assert "\r" not in lines[1]
    model.fit(x, y, batch_size=8, epochs=1, verbose=2)
    assert capsys.readouterr().out.splitlines()[1].startswith("3/3 - ")


def test_train_eval_modes_and_to_device():
    x, _ = _blobs(8)
    model = _small_cnn(dropout=0.5)
    assert not model.training
    a = model.forward(x)
    np.testing.assert_array_equal(a, model.eval().forward(x))
    b = model.train().forward(x)  # dropout on; batch norm updates its running statistics
    assert not np.array_equal(a, b)
    c = model.eval().forward(x)
    model.to("cpu")  # the Numba kernels: the same numbers up to float32 rounding
    assert np.shares_memory(model.parameters().arrays()[0], model.layers[0].params["w"])
    np.testing.assert_allclose(model.predict(x), c, rtol=1e-4, atol=1e-5)
    model.to("numpy")
    np.testing.assert_array_equal(model.predict(x), c)


def test_transfer_learning_reuses_trained_layers_with_a_new_head():
    x, y = _blobs(40)
    base = _small_cnn(seed=5, dropout=0.0)
    base.compile("adam", "sparse_categorical_crossentropy")
    base.fit(x, y, epochs=2, verbose=0)
    expected_features = base.layers[-2].output  # the Flatten output tensor
    for layer in base.layers[:-1]:
        layer.trainable = False
    head = layers.Dense(2, name="new_head")
    model = nnkern.Model(base.input, head(expected_features))
    assert [layer.name for layer in model.layers][-1] == "new_head"
    conv_w = base.layers[0].params["w"].copy()
    model.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
    model.fit(x, (y > 0).astype(int), epochs=3, verbose=0)
    np.testing.assert_array_equal(model.layers[1].params["w"], conv_w)
    assert len(model.parameters()) == 2
    stacked = nnkern.Sequential([layers.Input((1, 6, 6))] + base.layers[:-1]
                                + [layers.Dense(2)])
    assert stacked.count_params() == model.count_params()


def test_best_only_checkpoint_restore_best_weights_and_binary_metrics(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 4)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.float32)
    model = nnkern.Sequential([layers.Input((4,)), layers.Dense(8, activation="relu"),
                               layers.BatchNorm1D(), layers.Dense(1)])
    model.compile(optimizers.SGD(lr=0.1), "binary_crossentropy",
                  ["accuracy", "precision", "recall"])
    best = tmp_path / "best.npz"
    stop = callbacks.EarlyStopping(monitor="val_accuracy", patience=1, restore_best_weights=True)
    h = model.fit(x, y, epochs=6, verbose=0, validation_data=(x, y),
                  callbacks=[callbacks.ModelCheckpoint(best, monitor="val_accuracy",
                                                       save_best_only=True), stop])
    assert {"precision", "recall", "val_precision", "val_recall"} <= set(h.history)
    assert 0.0 <= h.history["val_recall"][-1] <= 1.0
    best_acc = max(h.history["val_accuracy"])
    assert model.evaluate(x, y, return_dict=True)["accuracy"] == pytest.approx(best_acc)
    loaded = models.load_model(best)
    scores = loaded.evaluate(x, y)  # a list in Keras's order (metrics_names)
    assert scores[loaded.metrics_names.index("accuracy")] == pytest.approx(best_acc)


def test_resume_restores_callback_counters_and_lr(tmp_path):
    x, y = _blobs(30)
    path = tmp_path / "plateau.npz"

    def run(kill=None):
        model = _small_cnn(seed=9, dropout=0.0)
        model.compile(optimizers.SGD(lr=0.05), "sparse_categorical_crossentropy")
        cbs = [callbacks.ReduceLROnPlateau(monitor="loss", patience=2, min_delta=100.0),
               callbacks.ModelCheckpoint(path, resume=True)]
        history = model.fit(x, y, epochs=6, verbose=0,
                            callbacks=cbs + ([kill] if kill else []))
        return model, history

    full_model, full = run()
    path.unlink()
    with pytest.raises(KeyboardInterrupt):
        run(_Kill(3, 0))
    model, history = run()
    assert history.history["lr"] == full.history["lr"]
    assert history.history["lr"][-1] == pytest.approx(0.05 * 0.01)
    for a, b in zip(model.get_weights(), full_model.get_weights()):
        np.testing.assert_array_equal(a, b)


class _ScriptedModel:
    """Just what EarlyStopping / ReduceLROnPlateau touch: an optimizer's lr, the stop flag,
    and weights (a label of the epoch that produced them)."""

    def __init__(self, lr=1.0):
        self.optimizer = optimizers.SGD(lr=lr)
        self.stop_training = False
        self.weights = None

    def get_weights(self):
        return self.weights

    def set_weights(self, weights):
        self.weights = weights


def _drive(callback, values, monitor="val_loss", lr=1.0):
    """Feed ``values`` as the monitored log of successive epochs, as fit would; return
    (epochs run, the lr each epoch logged, the model)."""
    model = _ScriptedModel(lr)
    callback.set_model(model)
    callback.on_train_begin()
    logged = []
    for epoch, value in enumerate(values):
        model.weights = f"epoch {epoch}"
        logs = {monitor: value}
        callback.on_epoch_end(epoch, logs)
        logged.append(logs.get("lr"))
        if model.stop_training:
            return epoch + 1, logged, model
    return len(values), logged, model


def test_early_stopping_patience_counts_epochs_without_improvement():
    # Keras: stop after `patience` epochs in a row without improvement (at least one)
    assert _drive(callbacks.EarlyStopping(patience=2), [1.0, 0.9, 0.95, 0.93, 0.8])[0] == 4
    assert _drive(callbacks.EarlyStopping(patience=0), [1.0, 1.1, 0.5])[0] == 2
    assert _drive(callbacks.EarlyStopping(patience=3), [1.0, 1.1, 0.9, 1.0, 1.0])[0] == 5
    # a NaN epoch is never the best one
    nan = float("nan")
    assert _drive(callbacks.EarlyStopping(patience=2), [nan, 1.0, 0.9, 0.8])[0] == 4
    assert _drive(callbacks.EarlyStopping(patience=2), [1.0, nan, nan, 0.5])[0] == 3
    # min_delta: a gain smaller than it is no improvement
    assert _drive(callbacks.EarlyStopping(patience=1, min_delta=0.1), [1.0, 0.95, 0.5])[0] == 2
    # accuracy-like quantities are maximised in mode "auto"
    stop = callbacks.EarlyStopping(monitor="val_accuracy", patience=2)
    assert _drive(stop, [0.5, 0.6, 0.6, 0.55, 0.9], monitor="val_accuracy")[0] == 4
    # restore_best_weights puts back the best epoch's weights when it stops
    stop = callbacks.EarlyStopping(patience=2, restore_best_weights=True)
    ran, _, model = _drive(stop, [1.0, 0.5, 0.7, 0.6, 0.1])
    assert ran == 4 and model.weights == "epoch 1" and stop.stopped_epoch == 3


def test_reduce_lr_on_plateau_patience_cooldown_and_min_lr():
    plateau = callbacks.ReduceLROnPlateau(factor=0.5, patience=2, cooldown=1, min_lr=0.2)
    _, logged, model = _drive(plateau, [1.0] * 9)
    # cut at the end of epochs 2, 4, 6 (the cooldown epoch after a cut counts again, as in
    # Keras); the last cut stops at min_lr; each epoch logs the lr it trained with
    assert logged == pytest.approx([1.0, 1.0, 1.0, 0.5, 0.5, 0.25, 0.25, 0.2, 0.2])
    assert model.optimizer.lr == pytest.approx(0.2)
    # an improvement resets the count
    plateau = callbacks.ReduceLROnPlateau(factor=0.1, patience=2)
    _, logged, model = _drive(plateau, [1.0, 1.0, 0.5, 0.5, 0.5])
    assert logged == pytest.approx([1.0, 1.0, 1.0, 1.0, 1.0]) and model.optimizer.lr == 0.1


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_saved_file_gets_ordinary_permissions(tmp_path):
    # the temp file of the atomic save starts 0600; the saved model must not stay private
    model = _small_cnn()
    model.save(tmp_path / "m.npz")
    plain = tmp_path / "plain"
    plain.write_bytes(b"")
    assert (tmp_path / "m.npz").stat().st_mode == plain.stat().st_mode


def test_csv_logger_continues_a_resumed_run(tmp_path):
    x, y = _blobs(30)
    ckpt, log = tmp_path / "ckpt.npz", tmp_path / "log.csv"

    def run(kill=None):
        model = _small_cnn(seed=4)
        model.compile(optimizers.Adam(lr=0.01), "sparse_categorical_crossentropy", ["accuracy"])
        cbs = [callbacks.CSVLogger(log), callbacks.ModelCheckpoint(ckpt, resume=True)]
        return model.fit(x, y, epochs=4, verbose=0, callbacks=cbs + ([kill] if kill else []))

    with pytest.raises(KeyboardInterrupt):
        run(_Kill(2, 0))
    with open(log, newline="") as f:
        assert [row[0] for row in csv.reader(f)] == ["epoch", "0", "1"]  # finished epochs
    history = run()
    with open(log, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["epoch", "loss", "accuracy"]
    assert [row[0] for row in rows[1:]] == ["0", "1", "2", "3"]
    assert [float(row[1]) for row in rows[1:]] == pytest.approx(history.history["loss"])
