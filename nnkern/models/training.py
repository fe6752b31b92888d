"""The Keras workflow of a model: ``compile``, ``fit``, ``evaluate``, ``predict``.

A training step is the tape's: ``out = model.call(x)``, ``loss = loss_fn(out, y)``,
``loss.backward()``, ``optimizer.step()``. The model's weights live in one flat
buffer per dtype (``parameters.py``), so the optimizer step is one kernel call.
Data stay on the host and each batch moves to the model's device. Checks of the
targets belong to the loss (``Loss.check_targets``); callbacks say themselves
whether they run last (``runs_last``) and how to resume (``resume_point``).
"""

import numpy as np

from .. import callbacks as callbacks_mod
from .. import distributed as distributed_mod
from .. import losses as losses_mod
from .. import metrics as metrics_mod
from .. import optimizers as optimizers_mod
from ..autograd import Tensor, enable_grad, no_grad
from ..device import to_device, to_numpy
from ..progress import ProgressBar
from .batches import ArrayBatches, IterableBatches, is_batch_iterable


def _batch_size(value):
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {value!r}")
    return int(value)


def _slice(data, start, stop):
    if isinstance(data, list):
        return [a[start:stop] for a in data]
    return data[start:stop]


def _local_for_batches(distributed):
    """A source of batches trains in this process only: refuse ``distributed``."""
    if distributed:
        raise ValueError(
            "distributed training takes arrays: every rank passes the same x and y and "
            "takes its part of each batch; a source of batches (a DataLoader) cannot be "
            "split that way"
        )
    return distributed_mod.LOCAL


class Trainer:
    """compile / fit / evaluate / predict for ``Model`` (a mixin: it uses the model's graph,
    parameters and device)."""

    def compile(self, optimizer="adam", loss=None, metrics=None):
        """Choose the optimizer (``"adam"``, ``"sgd"`` or an instance), the loss
        (``"sparse_categorical_crossentropy"`` / ``"softmax_cross_entropy"``,
        ``"binary_crossentropy"``, ``"mse"``, a Loss, or a plain function of
        ``(y_true, y_pred)`` Tensors) and the metrics (``"accuracy"``, ``"precision"``,
        ``"recall"``). Built-in losses take logits: do not end the model with a
        softmax/sigmoid before a cross-entropy."""
        self.optimizer = optimizers_mod.get(optimizer)
        self.loss = None if loss is None else losses_mod.get(loss)
        self.metrics = [metrics_mod.get(m) for m in (metrics or [])]
        threshold = self.loss.prediction_threshold if self.loss is not None else 0.0
        for m in self.metrics:
            m.threshold = threshold
        if self.built:
            if self.loss is not None:
                self.loss.check_head(self)
            self.optimizer.bind(self.parameters())

    def _ready_to_train(self):
        if self.optimizer is None or self.loss is None:
            raise RuntimeError("call model.compile(optimizer=..., loss=...) before fit/evaluate")
        if self.loss.reduction == "none":
            raise ValueError(
                f"fit/evaluate need a loss that reduces to one number, got {self.loss.name!r} "
                f"with reduction='none'; compile with reduction='mean' (the default)"
            )
        params = self.parameters()
        if self.optimizer.params is not params:
            self.loss.check_head(self)
            self.optimizer.bind(params)

    # --- data checks -------------------------------------------------------------------------

    def _check_x(self, x, what="x"):
        """Host arrays of the model's dtype, one per input, checked against the inputs."""
        many = len(self._inputs) > 1 if self.built else False
        if many:
            if not isinstance(x, (list, tuple)) or len(x) != len(self._inputs):
                raise ValueError(
                    f"{what} must be a list of {len(self._inputs)} arrays, one per input of "
                    f"model {self.name!r}, got {type(x).__name__}"
                )
            items = [(f"{what}[{i}]", a) for i, a in enumerate(x)]
        else:
            items = [(what, x)]
        arrays = []
        for i, (name, a) in enumerate(items):
            if a is None:
                raise ValueError(f"{name} (the input data) is required")
            a = to_numpy(a)  # any array kind (torch, CuPy, DLPack); lists too
            if a.dtype.kind not in "fiub":
                raise TypeError(f"{name} must be a numeric array, got dtype {a.dtype}")
            if a.ndim < 2:
                raise ValueError(f"{name} must have a batch axis: shape (N, ...), got shape "
                                 f"{a.shape}")
            self._ensure_built(a)
            expected = self._inputs[i].sample_shape
            if tuple(a.shape[1:]) != expected:
                raise ValueError(self._shape_message(name, tuple(a.shape), expected))
            a = np.ascontiguousarray(a, dtype=self._inputs[i].dtype)
            bad = ~np.isfinite(a)
            if bad.any():
                first = int(np.argwhere(bad.reshape(len(a), -1).any(axis=1))[0, 0])
                raise ValueError(
                    f"{name} contains {int(bad.sum())} NaN or infinite values (first in "
                    f"sample {first}); clean or impute the data before training"
                )
            if arrays and len(a) != len(arrays[0]):
                raise ValueError(f"the inputs have different lengths: {len(arrays[0])} samples "
                                 f"in {items[0][0]} but {len(a)} in {name}")
            arrays.append(a)
        return arrays if many else arrays[0]

    def _check_y(self, y, n, what="y", x_what="x"):
        if y is None:
            raise ValueError(f"{what} (the targets) is required")
        out_shape = self._outputs[0].sample_shape
        return self.loss.check_targets(y, n, out_shape, self.dtype, what, x_what)

    def _checked_data(self, x, y, action):
        """(x, y, n) of array data, checked, for a compiled model."""
        x = self._check_x(x)
        self._ready_to_train()
        n = len(x[0] if isinstance(x, list) else x)
        if n == 0:
            raise ValueError(f"{action} needs at least one sample, got x with 0 samples")
        return x, self._check_y(y, n), n

    # --- fit ---------------------------------------------------------------------------------

    def fit(self, x=None, y=None, batch_size=32, epochs=1, verbose="auto", callbacks=None,
            validation_split=0.0, validation_data=None, shuffle=True, initial_epoch=0, seed=None,
            distributed=None):
        """Train for ``epochs`` epochs on (x, y); returns a ``History``.

        ``x`` is an array (a list of arrays for a model with several inputs), or a source of
        ``(x, y)`` batches: nnkern's ``DataLoader`` or any iterable of pairs, which then
        decides the batches and their order (``y``, ``batch_size``, ``shuffle`` and ``seed``
        are not used; ``validation_data`` may be such a source too). Arrays of any library
        (torch tensors, anything with ``__dlpack__``) are taken as they are. The data stay
        on the host; each batch moves to the model's device. The shuffle order of epoch
        ``e`` is a function of (``seed``, e), so a run resumed from a checkpoint
        (``initial_epoch``, or ``ModelCheckpoint(resume=True)``) sees the same batches as an
        uninterrupted one. ``validation_split`` holds out the LAST fraction of the data
        (before shuffling), as Keras does. ``verbose``: 0 silent, 1 (``"auto"``) progress
        bar, 2 one line per epoch. ``distributed=True`` (or a
        ``nnkern.distributed.DataParallel``) trains data-parallel on the ranks of
        ``mpiexec``: ``batch_size`` is then the global batch, split over the ranks (see
        ``nnkern.distributed``); it takes arrays, not a source of batches.
        """
        batch_size = _batch_size(batch_size)
        seed = 0 if seed is None else int(seed)
        if is_batch_iterable(x):
            self._ready_to_train()
            strategy = _local_for_batches(distributed)
            if validation_split:
                raise ValueError("validation_split needs arrays; with a source of batches "
                                 "pass validation_data")
            train, n = self._iterable_batches(x, y, epochs - initial_epoch), None
        else:
            x, y, n = self._checked_data(x, y, "fit")
            strategy = distributed_mod.strategy_for(distributed, self)
            if validation_data is not None and validation_split:
                raise ValueError("give validation_data or validation_split, not both")
            if validation_split:
                if not 0.0 < validation_split < 1.0:
                    raise ValueError(f"validation_split must be in (0, 1), got "
                                     f"{validation_split}")
                split = int(n * (1.0 - validation_split))
                if split < 1 or split >= n:
                    raise ValueError(f"validation_split={validation_split} leaves an empty "
                                     f"part of {n} samples")
                validation_data = ArrayBatches.evaluation(
                    _slice(x, split, n), _slice(y, split, n), batch_size, strategy)
                x, y, n = _slice(x, 0, split), _slice(y, 0, split), split
            train = ArrayBatches(x, y, batch_size, strategy, shuffle, seed)
        val = None if validation_data is None else self._validation_batches(
            validation_data, batch_size, strategy)
        verbose = strategy.verbose(1 if verbose == "auto" else int(verbose))
        steps = train.steps

        history = callbacks_mod.History()
        self.history = history
        user_callbacks = strategy.callbacks(callbacks or [])
        self._fit_callbacks = user_callbacks
        resumed = None
        for cb in user_callbacks:
            info = cb.resume_point(self)
            if info is not None and info["epoch"] > initial_epoch:
                resumed, initial_epoch = info, info["epoch"]
        resumed, initial_epoch, seed = strategy.start(self, resumed, initial_epoch, seed, n)
        train.seed = seed  # rank 0's, in data-parallel training
        if resumed is not None:
            history.history = {k: list(v) for k, v in resumed["history"].items()}
            history.epoch = list(range(initial_epoch))
        params = {"epochs": epochs, "steps": steps, "batch_size": batch_size,
                  "initial_epoch": initial_epoch, "verbose": verbose}
        # callbacks that run last (checkpoints) save the epoch as every other callback left
        # it (a reduced lr, updated patience counters, the history including this epoch)
        ordered = ([cb for cb in user_callbacks if not cb.runs_last] + [history]
                   + [cb for cb in user_callbacks if cb.runs_last])
        cbs = callbacks_mod.CallbackList(ordered, self, params)
        self.stop_training = False
        cbs.on_train_begin()
        if resumed is not None:
            saved = {}
            for name, state in resumed.get("callbacks", []):
                saved.setdefault(name, []).append(state)
            for cb in user_callbacks:  # matched by class, in order of appearance
                states = saved.get(type(cb).__name__)
                if states:
                    cb.set_state(states.pop(0))
        was_training = self.training
        try:
            for epoch in range(initial_epoch, epochs):
                if verbose:
                    print(f"Epoch {epoch + 1}/{epochs}", flush=True)
                cbs.on_epoch_begin(epoch)
                logs, bar = self._train_epoch(train.epoch(epoch), train.steps, cbs, verbose,
                                              strategy)
                strategy.end_epoch(self)
                if val is not None:
                    val_logs = self._evaluate_batches(val.epoch(0), strategy)
                    logs.update({f"val_{k}": v for k, v in val_logs.items()})
                bar.finish(logs)
                cbs.on_epoch_end(epoch, logs)
                self.stop_training = strategy.agree(self.stop_training)
                if self.stop_training:
                    break
        finally:
            self.training = was_training
        cbs.on_train_end()
        return history

    def _batch_tensors(self, xb):
        if isinstance(xb, list):
            return [Tensor(to_device(a, self._backend)) for a in xb]
        return Tensor(to_device(xb, self._backend))

    def _batch_targets(self, yb):
        if isinstance(yb, list):
            return [to_device(a, self._backend) for a in yb]
        return to_device(yb, self._backend)

    def _iterable_batches(self, source, y, epochs, what="x"):
        """A DataLoader / iterable of (x, y) pairs as checked host batches."""
        if y is not None:
            raise ValueError(f"{what} gives (x, y) batches, so y must be None, got "
                             f"{type(y).__name__}")

        def check(xb, yb, step):
            name = f"{what} batch {step}"
            xb = self._check_x(xb, name)
            n = len(xb[0] if isinstance(xb, list) else xb)
            return xb, self._check_y(yb, n, f"y of {name}", name)

        return IterableBatches(source, check, epochs, what)

    def _validation_batches(self, data, batch_size, strategy):
        if isinstance(data, ArrayBatches):
            return data
        if is_batch_iterable(data):
            _local_for_batches(strategy.size > 1)
            return self._iterable_batches(data, None, 2, "validation_data")
        if not isinstance(data, (list, tuple)) or len(data) != 2:
            raise ValueError(f"validation_data must be a pair (x_val, y_val) or a source of "
                             f"(x, y) batches, got a {type(data).__name__}")
        xv = self._check_x(data[0], "x_val")
        nv = len(xv[0] if isinstance(xv, list) else xv)
        yv = self._check_y(data[1], nv, "y_val", "x_val")
        return ArrayBatches.evaluation(xv, yv, batch_size, strategy)

    def _train_epoch(self, batches, steps, cbs, verbose, strategy):
        """One epoch over ``batches``: checked host ``(xb, yb, size of the global batch)``
        (in data-parallel training ``xb`` is this rank's part of it)."""
        self.training = True
        bar = ProgressBar(steps, verbose)
        for m in self.metrics:
            m.reset()
        running = strategy.running(self)
        total, count, step = 0.0, 0, 0
        logs = {}
        with self._on_device(), enable_grad():
            params = self._params
            for step, (xh, yh, n_global) in enumerate(batches):
                size = len(xh[0] if isinstance(xh, list) else xh)
                cbs.on_train_batch_begin(step)
                xb = self._batch_tensors(xh)
                yb = self._batch_targets(yh)
                params.zero_grad()
                out = self.call(xb, training=True)
                loss = self.loss(out, yb)
                loss.backward()
                strategy.reduce_gradients(self, size, n_global)
                self.optimizer.step()
                total += float(loss.data) * size  # the one host sync of a step
                count += size
                self._update_metrics(yh, out)
                total, count = running.reduce(total, count)  # the global sums, data-parallel
                logs = {"loss": total / count, **{m.name: m.result() for m in self.metrics}}
                cbs.on_train_batch_end(step, logs)
                bar.update(step + 1, logs)
                self.stop_training = strategy.agree(self.stop_training)
                if self.stop_training:
                    break
        bar.total = max(bar.total, step + 1)  # a source without a length
        return dict(logs), bar

    def _evaluate_batches(self, batches, strategy=distributed_mod.LOCAL):
        for m in self.metrics:
            m.reset()
        total, count = 0.0, 0
        with self._on_device(), no_grad():
            for xh, yh, _ in batches:
                size = len(xh[0] if isinstance(xh, list) else xh)
                out = self.call(self._batch_tensors(xh), training=False)
                total += float(to_numpy(self.loss.value(out, self._batch_targets(yh)))) * size
                count += size
                self._update_metrics(yh, out)
        total, count = strategy.running(self).reduce(total, count)
        logs = {"loss": total / max(count, 1)}
        logs.update({m.name: m.result() for m in self.metrics})
        return logs

    def _update_metrics(self, y_true, out):
        """Feed one batch to every metric (one device-to-host copy of the outputs for all of
        them)."""
        if not self.metrics:
            return
        first = out[0] if isinstance(out, list) else out
        pred = to_numpy(first.data if isinstance(first, Tensor) else first)
        truth = y_true[0] if isinstance(y_true, list) else y_true
        for m in self.metrics:
            m.update(truth, pred)

    @property
    def metrics_names(self):
        """The names of what ``evaluate`` returns, in order: ``["loss", "accuracy", ...]``."""
        return ["loss"] + [m.name for m in self.metrics]

    def evaluate(self, x=None, y=None, batch_size=32, verbose=0, return_dict=False,
                 distributed=None):
        """Loss and metrics over (x, y) in evaluation mode, as Keras returns them: the loss
        alone when the model has no metrics, else the list ``[loss, metric, ...]`` in the
        order of ``metrics_names`` (``loss, acc = model.evaluate(x, y)``); with
        ``return_dict=True`` the dict ``{"loss": ..., "accuracy": ...}``. ``x`` may be a
        source of ``(x, y)`` batches, as in ``fit``. ``distributed=True``: each rank
        evaluates its part of (x, y), and every rank gets the totals over all of them."""
        if is_batch_iterable(x):
            self._ready_to_train()
            strategy = _local_for_batches(distributed)
            batches = self._iterable_batches(x, y, 1)
        else:
            x, y, _ = self._checked_data(x, y, "evaluate")
            strategy = distributed_mod.strategy_for(distributed, self)
            batches = ArrayBatches.evaluation(x, y, _batch_size(batch_size), strategy)
        verbose = strategy.verbose(verbose)
        bar = ProgressBar(batches.steps, 1 if verbose == "auto" else verbose)
        logs = self._evaluate_batches(batches.epoch(0), strategy)
        bar.total = batches.steps
        bar.finish(logs)
        if return_dict:
            return logs
        values = [logs[name] for name in self.metrics_names]
        return values[0] if len(values) == 1 else values

    def predict(self, x, batch_size=32, verbose=0):
        """The model's outputs (logits for a classifier) for x, as a NumPy array (a list for
        several outputs); evaluation mode, in batches, nothing recorded. ``x`` may also be a
        source of batches (of x alone, or of (x, y) pairs whose y is ignored)."""
        if is_batch_iterable(x):
            return self._predict_batches(x)
        x = self._check_x(x)
        batch_size = _batch_size(batch_size)
        n = len(x[0] if isinstance(x, list) else x)
        outs = [np.empty((n,) + t.sample_shape, self.dtype) for t in self._outputs]
        with self._on_device(), no_grad():
            for start in range(0, n, batch_size):
                xb = self._batch_tensors(_slice(x, start, start + batch_size))
                result = self.call(xb, training=False)
                for target, o in zip(outs, result if isinstance(result, list) else [result]):
                    target[start:start + batch_size] = to_numpy(o.data)
        return outs[0] if len(outs) == 1 else outs

    def _predict_batches(self, source):
        parts = [[] for _ in self._outputs]
        with self._on_device(), no_grad():
            for step, batch in enumerate(source):
                xb = batch[0] if isinstance(batch, tuple) and len(batch) == 2 else batch
                xb = self._check_x(xb, f"x batch {step}")
                result = self.call(self._batch_tensors(xb), training=False)
                for part, o in zip(parts, result if isinstance(result, list) else [result]):
                    part.append(to_numpy(o.data))
        if not parts[0]:
            raise ValueError("predict got a source that gave no batches")
        outs = [np.concatenate(p) for p in parts]
        return outs[0] if len(outs) == 1 else outs
