"""Callbacks for ``Model.fit``: History, EarlyStopping, ReduceLROnPlateau, ModelCheckpoint
(with resume), TerminateOnNaN, CSVLogger.

    >>> from nnkern import callbacks
    >>> cbs = [callbacks.ReduceLROnPlateau(patience=2), callbacks.EarlyStopping(patience=5),
    ...        callbacks.ModelCheckpoint("run.npz", resume=True)]

A callback sees ``self.model`` and ``self.params`` (epochs, steps, ...), and its
hooks get the epoch's ``logs`` dict (``loss``, metrics, ``val_*``).
"""

import csv
import math
import os
import warnings


class Callback:
    """Base class; override the hooks you need.

    ``runs_last``: fit calls this callback after all others and after the History (a
    checkpoint saves the epoch as the others left it). ``resume_point(model)`` may restore
    the model before training and return the info to resume from (see ModelCheckpoint).
    ``main_process_only``: in data-parallel training only rank 0 runs it (it writes files).
    """

    runs_last = False
    main_process_only = False

    def __init__(self):
        self.model = None
        self.params = {}

    def set_model(self, model):
        self.model = model

    def set_params(self, params):
        self.params = params

    def resume_point(self, model):
        """Restore ``model`` from this callback's saved run and return the checkpoint info
        (``epoch``, ``history``, ``callbacks``), or None to start afresh."""
        return

    def get_state(self):
        """JSON-able counters a checkpoint saves so a resumed run continues them."""
        return {}

    def set_state(self, state):
        """Restore ``get_state()`` output (called by ``fit`` after ``on_train_begin``)."""
        for key, value in state.items():
            setattr(self, key, value)

    def on_train_begin(self, logs=None):
        pass

    def on_train_end(self, logs=None):
        pass

    def on_epoch_begin(self, epoch, logs=None):
        pass

    def on_epoch_end(self, epoch, logs=None):
        pass

    def on_train_batch_begin(self, batch, logs=None):
        pass

    def on_train_batch_end(self, batch, logs=None):
        pass


class CallbackList:
    """Dispatches each hook to every callback, in order."""

    def __init__(self, callbacks, model, params):
        self.callbacks = list(callbacks)
        for cb in self.callbacks:
            cb.set_model(model)
            cb.set_params(params)

    def __getattr__(self, hook):
        if not hook.startswith("on_"):
            raise AttributeError(hook)

        def call(*args, **kwargs):
            for cb in self.callbacks:
                getattr(cb, hook)(*args, **kwargs)
        return call


class History(Callback):
    """Records the epoch logs: ``history.history["loss"]`` is the list of epoch losses;
    ``history.epoch`` the epoch indices. ``fit`` returns it."""

    def __init__(self):
        super().__init__()
        self.history = {}
        self.epoch = []

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(value)


class _Monitor(Callback):
    """Shared logic of callbacks that watch one logged quantity."""

    def __init__(self, monitor, mode, min_delta):
        super().__init__()
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
        if mode == "auto":
            maximise = any(k in monitor for k in ("acc", "precision", "recall", "auc"))
            mode = "max" if maximise else "min"
        self.monitor, self.mode, self.min_delta = monitor, mode, abs(float(min_delta))
        self._warned = False
        self.best = None

    def _current(self, logs):
        value = (logs or {}).get(self.monitor)
        if value is None and not self._warned:
            self._warned = True
            warnings.warn(
                f"{type(self).__name__} monitors {self.monitor!r}, which is not in the logs "
                f"{sorted(logs or {})}; give fit validation data or change monitor=",
                stacklevel=3,
            )
        return value

    def _improved(self, value):
        if math.isnan(value):  # never the best: a NaN first epoch would block every later one
            return False
        if self.best is None:
            return True
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta


class EarlyStopping(_Monitor):
    """Stop training when ``monitor`` has not improved by ``min_delta`` for ``patience``
    epochs in a row (Keras semantics: ``patience=2`` stops after the second epoch without
    improvement; ``patience=0`` after the first); ``restore_best_weights`` then puts back
    the weights of the best epoch.

        >>> stop = EarlyStopping(monitor="val_loss", patience=3, restore_best_weights=True)
        >>> # model.fit(x, y, validation_split=0.1, epochs=100, callbacks=[stop])
    """

    def __init__(self, monitor="val_loss", min_delta=0.0, patience=0, mode="auto",
                 restore_best_weights=False, verbose=0):
        super().__init__(monitor, mode, min_delta)
        self.patience = int(patience)
        self.restore_best_weights = restore_best_weights
        self.verbose = verbose

    def on_train_begin(self, logs=None):
        self.best, self.wait, self.best_weights, self.stopped_epoch = None, 0, None, None

    def get_state(self):
        return {"best": self.best, "wait": self.wait}

    def on_epoch_end(self, epoch, logs=None):
        value = self._current(logs)
        if value is None:
            return
        if self._improved(value):
            self.best, self.wait = value, 0
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = epoch
            self.model.stop_training = True
            if self.restore_best_weights and self.best_weights is not None:
                self.model.set_weights(self.best_weights)
            if self.verbose:
                print(f"Epoch {epoch + 1}: early stopping ({self.monitor} best {self.best:.4f})")


class ReduceLROnPlateau(_Monitor):
    """Multiply the optimizer's ``lr`` by ``factor`` (default: divide by 10, as AlexNet did)
    when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs; then wait
    ``cooldown`` epochs before counting again (Keras semantics). Adds ``lr`` to the epoch
    logs: the rate the epoch trained with, before any reduction at its end.

        >>> plateau = ReduceLROnPlateau(monitor="val_loss", factor=0.1, patience=5)
        >>> # model.fit(x, y, validation_split=0.1, epochs=90, callbacks=[plateau])
    """

    def __init__(self, monitor="val_loss", factor=0.1, patience=10, mode="auto",
                 min_delta=1e-4, cooldown=0, min_lr=0.0, verbose=0):
        super().__init__(monitor, mode, min_delta)
        if not 0.0 < factor < 1.0:
            raise ValueError(f"factor must be in (0, 1), got {factor}")
        self.factor, self.patience = float(factor), int(patience)
        self.cooldown, self.min_lr, self.verbose = int(cooldown), float(min_lr), verbose

    def on_train_begin(self, logs=None):
        self.best, self.wait, self.cooldown_left = None, 0, 0

    def get_state(self):
        return {"best": self.best, "wait": self.wait, "cooldown_left": self.cooldown_left}

    def on_epoch_end(self, epoch, logs=None):
        optimizer = self.model.optimizer
        if logs is not None:
            logs["lr"] = optimizer.lr
        value = self._current(logs)
        if value is not None:
            if self.cooldown_left > 0:
                self.cooldown_left -= 1
                self.wait = 0
            if self._improved(value):
                self.best, self.wait = value, 0
            elif self.cooldown_left == 0:
                self.wait += 1
                if self.wait >= self.patience and optimizer.lr > self.min_lr:
                    new_lr = max(optimizer.lr * self.factor, self.min_lr)
                    if self.verbose:
                        print(f"Epoch {epoch + 1}: ReduceLROnPlateau lr {optimizer.lr:.4g} -> "
                              f"{new_lr:.4g}")
                    optimizer.lr = new_lr
                    self.cooldown_left, self.wait = self.cooldown, 0


class ModelCheckpoint(_Monitor):
    """Save the model (architecture, weights, optimizer state, epoch, history) to ``filepath``
    at the end of each epoch, atomically (a temp file in the same folder, then a rename).

    ``save_best_only`` saves only when ``monitor`` improves. ``filepath`` may contain
    ``{epoch}`` and log keys (``"ckpt-{epoch:02d}.npz"``). With ``resume=True`` and a
    fixed ``filepath``, ``fit`` first loads an existing checkpoint and continues after
    its epoch, so a killed run re-started with the same script picks up where it
    stopped and ends with the same weights as an uninterrupted run. The counters of the
    fit's callbacks (plateau and early-stopping patience, best values) are saved and
    restored with it.
    """

    runs_last = True
    main_process_only = True

    def __init__(self, filepath, monitor="val_loss", save_best_only=False, mode="auto",
                 resume=False, verbose=0):
        from .models.saving import check_path  # nnkern.models imports this module

        super().__init__(monitor, mode, 0.0)
        self.filepath = check_path(filepath, (".npz",), "ModelCheckpoint")
        self.save_best_only = save_best_only
        self.resume = resume
        self.verbose = verbose
        if resume and "{" in self.filepath:
            raise ValueError(f"resume=True needs a fixed filepath (no {{epoch}} placeholders), "
                             f"got {self.filepath!r}")

    def resume_point(self, model):
        """Load the checkpoint into ``model`` when resuming; return its info dict or None."""
        if not (self.resume and os.path.exists(self.filepath)):
            return None
        info = model.load_checkpoint(self.filepath, return_info=True)
        if self.verbose:
            print(f"ModelCheckpoint: resuming from {self.filepath} after epoch {info['epoch']}")
        return info

    def get_state(self):
        return {"best": self.best}

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.save_best_only:
            value = self._current(logs)
            if value is None or not self._improved(value):
                return
            self.best = value
        path = self.filepath.format(epoch=epoch + 1, **logs)
        self.model.save_checkpoint(path, epoch + 1, logs=logs)
        if self.verbose:
            print(f"Epoch {epoch + 1}: saved checkpoint to {path}")


class TerminateOnNaN(Callback):
    """Stop training as soon as the loss becomes NaN or infinite."""

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            print(f"Batch {batch}: invalid loss {loss}, terminating training")
            self.model.stop_training = True


class CSVLogger(Callback):
    """Write one CSV row per epoch (``epoch`` then the logs). Appends when ``append`` is
    true or when the run resumes (``initial_epoch > 0``). The file is opened for each row
    and closed again, so a killed run leaves every finished epoch on disk and no open file.

        >>> logger = CSVLogger("training.csv")
        >>> # model.fit(x, y, epochs=10, callbacks=[logger])
    """

    main_process_only = True

    def __init__(self, filename, separator=",", append=False):
        super().__init__()
        self.filename = os.fspath(filename)
        self.separator = separator
        self.append = append
        self.keys = None

    def on_train_begin(self, logs=None):
        resuming = self.params.get("initial_epoch", 0) > 0
        append = (self.append or resuming) and os.path.exists(self.filename)
        self.keys = None
        if append:
            with open(self.filename, newline="") as f:
                header = next(csv.reader(f, delimiter=self.separator), None)
            self.keys = header[1:] if header else None
        else:
            open(self.filename, "w").close()  # start empty, as a fresh run should

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        with open(self.filename, "a", newline="") as f:
            writer = csv.writer(f, delimiter=self.separator)
            if self.keys is None:
                self.keys = list(logs)
                writer.writerow(["epoch"] + self.keys)
            writer.writerow([epoch] + [logs.get(k, "") for k in self.keys])
