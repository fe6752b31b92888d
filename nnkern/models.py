"""Models: ``Sequential`` and the functional ``Model(inputs, outputs)``, with the Keras
workflow (compile / fit / evaluate / predict / summary / save) and a hand-written loop
(forward / backward / parameters / zero_grad).

    >>> import numpy as np, nnkern
    >>> from nnkern import layers
    >>> model = nnkern.Sequential([layers.Input((1, 8, 8)),
    ...                            layers.Conv2D(6, 3, padding="same", activation="relu"),
    ...                            layers.MaxPool2D(2), layers.Flatten(), layers.Dense(10)])
    >>> model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
    ...               metrics=["accuracy"])
    >>> model.output_shape
    (None, 10)

Functional graphs allow fan-out and residual ``Add`` (gradients of a tensor used
twice are summed):

    >>> inp = layers.Input((4, 8, 8))
    >>> h = layers.Conv2D(4, 3, padding="same", activation="relu")(inp)
    >>> out = layers.Add()([h, inp])
    >>> residual = nnkern.Model(inp, out)

Parameters: all trainable weights of one dtype are views into ONE flat buffer
(gradients likewise), so an optimizer step is one kernel call. Layouts are
NCHW. Models run on the global device (``nnkern.set_device``) unless pinned with
``model.to(device)``. Files are ``.npz`` with the architecture as JSON inside
(never pickle) and are written atomically.
"""

import contextlib
import json
import math
import os
import secrets

import numpy as np

from . import callbacks as callbacks_mod
from . import losses as losses_mod
from . import metrics as metrics_mod
from . import optimizers as optimizers_mod
from .device import device as device_ctx
from .device import get_device, is_gpu_array, to_device, to_numpy
from .layers import base as layers_base
from .layers.base import Input, SymbolicTensor, as_symbolic, unique_name
from .progress import ProgressBar

FORMAT = "nnkern-model-1"


# ---------------------------------------------------------------------------------------------
# the flat parameter buffers


class Parameters:
    """The trainable parameters of a model: one flat buffer per dtype (and one for the
    gradients), with each layer's weights as reshaped views into it.

    Iterating yields the parameter views (layer order); ``arrays()`` /
    ``grad_arrays()`` give the flat buffers the optimizer updates in one call.
    """

    def __init__(self):
        self.version = 0
        self._flat, self._grad_flat, self._entries = [], [], []

    def pack(self, layers, backend):
        """(Re)build the buffers from the current weights of ``layers`` on ``backend``."""
        groups = {}
        for layer in layers:
            if not layer.trainable:
                layer.params = {k: to_device(v, backend).copy() for k, v in layer.params.items()}
                layer.grads = {}
                continue
            for name, value in layer.params.items():
                groups.setdefault(np.dtype(value.dtype), []).append((layer, name, value))
        self._flat, self._grad_flat, self._entries = [], [], []
        for gi, (dtype, items) in enumerate(groups.items()):
            total = sum(int(np.prod(v.shape)) for _, _, v in items)
            flat = to_device(np.empty(total, dtype), backend)
            grad_flat = to_device(np.zeros(total, dtype), backend)
            offset = 0
            for layer, name, value in items:
                size = int(np.prod(value.shape))
                self._entries.append((layer, name, gi, offset, size, tuple(value.shape)))
                flat[offset:offset + size] = to_device(value, backend).reshape(-1)
                offset += size
            self._flat.append(flat)
            self._grad_flat.append(grad_flat)
        self._bind_views()
        self.version += 1

    def _bind_views(self):
        for layer, name, gi, offset, size, shape in self._entries:
            layer.params[name] = self._flat[gi][offset:offset + size].reshape(shape)
            layer.grads[name] = self._grad_flat[gi][offset:offset + size].reshape(shape)

    def to(self, backend):
        """Move the buffers to ``backend``'s memory, keeping the layout (and optimizer state)."""
        self._flat = [to_device(f, backend) for f in self._flat]
        self._grad_flat = [to_device(g, backend) for g in self._grad_flat]
        self._bind_views()

    def arrays(self):
        return self._flat

    def grad_arrays(self):
        return self._grad_flat

    def zero_grad(self):
        for g in self._grad_flat:
            g.fill(0)

    def __iter__(self):
        return (layer.params[name] for layer, name, *_ in self._entries)

    def __len__(self):
        return len(self._entries)

    def names(self):
        """``layer/weight`` names in iteration order."""
        return [f"{layer.name}/{name}" for layer, name, *_ in self._entries]

    def gradients(self):
        return [layer.grads[name] for layer, name, *_ in self._entries]


# ---------------------------------------------------------------------------------------------


def _format_bytes(n):
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.2f} {unit}"
        n /= 1024


def _batch_size(value):
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {value!r}")
    return int(value)


def _host_backend(backend):
    return backend if backend == "cuda" else "numpy"


class Model:
    """A graph of layers from ``inputs`` to ``outputs`` (functional API).

    Args:
        inputs: an ``Input`` layer (or its tensor).
        outputs: the tensor returned by the last layer call.
        seed: weights are drawn from (seed, layer position): the same code builds the
            same weights; pass another seed for another initialisation.
    """

    def __init__(self, inputs=None, outputs=None, name=None, seed=0):
        self.name = name or unique_name("functional" if inputs is not None else "model")
        self.seed = int(seed)
        self.training = False
        self.stop_training = False
        self.optimizer = None
        self.loss = None
        self.metrics = []
        self.history = None
        self.built = False
        self._device = None
        self._fit_callbacks = []
        self._params = Parameters()
        self._nodes, self._inbound, self._many = [], {}, {}
        if inputs is not None:
            self._init_graph(inputs, outputs)

    # --- graph -------------------------------------------------------------------------------

    def _init_graph(self, inputs, outputs):
        inputs = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        outputs = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
        if len(inputs) != 1 or len(outputs) != 1:
            raise NotImplementedError(
                f"nnkern models take one input and one output, got {len(inputs)} inputs and "
                f"{len(outputs)} outputs"
            )
        inp, out = as_symbolic(inputs[0]), as_symbolic(outputs[0])
        if not isinstance(inp, SymbolicTensor) or not isinstance(inp.layer, Input):
            raise TypeError(f"inputs must be an Input layer, got {type(inputs[0]).__name__}")
        if not isinstance(out, SymbolicTensor):
            raise TypeError(
                f"outputs must be the result of calling a layer on the input, got "
                f"{type(outputs[0]).__name__}"
            )
        order, inbound, many = [], {}, {}

        def visit(tensor):  # depth-first post-order = a topological order
            layer = tensor.layer
            if id(layer) in inbound:
                return
            inbound[id(layer)] = [t.layer for t in tensor.inputs]
            many[id(layer)] = tensor.many
            for t in tensor.inputs:
                visit(t)
            order.append(layer)

        visit(out)
        for layer in order:
            if isinstance(layer, Input) and layer is not inp.layer:
                raise ValueError(
                    f"the outputs depend on {layer.name}, which is not the model's input"
                )
        if order[0] is not inp.layer:
            raise ValueError(f"the outputs do not depend on the input {inp.layer.name}")
        self._nodes, self._inbound, self._many = order, inbound, many
        self._build_graph()

    def _build_graph(self):
        names = [layer.name for layer in self._nodes]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"layer names must be unique within a model, repeated: {dup}")
        shapes, dtype = {}, self._nodes[0].dtype
        for i, layer in enumerate(self._nodes):
            ins = [shapes[id(src)] for src in self._inbound[id(layer)]]
            if isinstance(layer, Input):
                shapes[id(layer)] = layer.shape
                continue
            shape = ins if self._many[id(layer)] else ins[0]
            seed = int(np.random.SeedSequence([self.seed, i]).generate_state(1)[0])
            layer._build(shape, dtype, seed)
            shapes[id(layer)] = layer.output_shape
        self._backend = _host_backend(self._device or get_device())
        for layer in self._nodes:
            for key, value in layer.state.items():
                layer.state[key] = to_device(value, self._backend)
        self._params.pack(self._nodes, self._backend)
        self._signature = self._trainable_signature()
        self.built = True

    def _trainable_signature(self):
        return tuple(layer.trainable for layer in self._nodes)

    @property
    def layers(self):
        """The layers in topological order (the Input included, as in Keras)."""
        return list(self._nodes)

    @property
    def input_layer(self):
        self._require_built()
        return self._nodes[0]

    @property
    def output_layer(self):
        self._require_built()
        return self._nodes[-1]

    @property
    def input(self):
        """The input tensor (to build a new functional model on top of this one)."""
        return self.input_layer.output

    @property
    def output(self):
        """The output tensor (every layer's ``.output`` is usable the same way)."""
        return self.output_layer.output

    @property
    def input_shape(self):
        return (None,) + self.input_layer.shape

    @property
    def output_shape(self):
        return (None,) + tuple(self.output_layer.output_shape)

    @property
    def dtype(self):
        return self.input_layer.dtype

    def get_layer(self, name):
        for layer in self._nodes:
            if layer.name == name:
                return layer
        raise ValueError(f"no layer named {name!r}; layers: {[layer.name for layer in self._nodes]}")

    def _require_built(self):
        if not self.built:
            raise ValueError(
                f"model {self.name!r} is not built yet: start it with layers.Input(shape), or "
                f"call model.build(input_shape) or fit/predict on data first"
            )

    # --- parameters ----------------------------------------------------------------------------

    def parameters(self):
        """The trainable parameters (a ``Parameters``: iterate for the per-layer views).
        Re-packs the flat buffers when a layer's ``trainable`` flag changed."""
        self._require_built()
        if self._trainable_signature() != self._signature:
            self._params.pack(self._nodes, self._backend)
            self._signature = self._trainable_signature()
        return self._params

    def gradients(self):
        """The gradient views, in the order of ``parameters()``."""
        return self.parameters().gradients()

    def zero_grad(self):
        """Zero every gradient (they accumulate across ``backward`` calls)."""
        self.parameters().zero_grad()

    def count_params(self):
        self._require_built()
        return sum(sum(layer.count_params()) for layer in self._nodes)

    def get_weights(self):
        """Host copies of every weight and buffer, in layer order (Keras ``get_weights``)."""
        self._require_built()
        return [to_numpy(a).copy() for layer in self._nodes
                for a in list(layer.params.values()) + list(layer.state.values())]

    def set_weights(self, weights):
        """Copy ``get_weights()``-ordered arrays into the model (in place)."""
        targets = [(layer, d, k) for layer in self._nodes
                   for d in (layer.params, layer.state) for k in d]
        if len(weights) != len(targets):
            raise ValueError(f"expected {len(targets)} weight arrays, got {len(weights)}")
        for (layer, d, k), w in zip(targets, weights):
            w = np.asarray(to_numpy(w))
            if tuple(w.shape) != tuple(d[k].shape):
                raise ValueError(
                    f"weight {layer.name}/{k} has shape {tuple(d[k].shape)}, got {w.shape}"
                )
            d[k][...] = to_device(w.astype(d[k].dtype), self._backend)

    # --- modes and device ----------------------------------------------------------------------

    def train(self):
        """Training mode for ``forward`` calls without ``training=`` (dropout on, batch norm on
        batch statistics). Returns the model."""
        self.training = True
        return self

    def eval(self):
        """Evaluation mode (dropout off, batch norm on running statistics)."""
        self.training = False
        return self

    def to(self, device):
        """Move the weights (and optimizer state) to ``device`` ("numpy", "cpu", "cuda",
        "auto") and run this model's forward/backward/fit/predict there from now on."""
        with device_ctx(device) as resolved:
            pass
        self._device = resolved
        if self.built:
            self._backend = _host_backend(resolved)
            for layer in self._nodes:
                for store in (layer.state,) + (() if layer.grads else (layer.params,)):
                    for key, value in store.items():
                        store[key] = to_device(value, self._backend)
            self._params.to(self._backend)
        return self

    def _on_device(self):
        return device_ctx(self._device) if self._device else contextlib.nullcontext()

    # --- running -------------------------------------------------------------------------------

    def _check_batch(self, x):
        expected = self.input_layer.shape
        got = tuple(x.shape[1:])
        if got != expected:
            raise ValueError(self._shape_message("x", tuple(x.shape), expected))

    def _shape_message(self, what, got_shape, expected):
        got = got_shape[1:]
        msg = (f"{what} must have shape (N, {', '.join(map(str, expected))}) for this model's "
               f"input, got {got_shape}")
        if len(expected) == 3 and len(got) == 3 and got == (expected[1], expected[2], expected[0]):
            msg += (f"; the data looks channels-last (NHWC) but nnkern is NCHW: use "
                    f"{what}.transpose(0, 3, 1, 2)")
        elif len(got) == 1 and got[0] == int(np.prod(expected)):
            msg += f"; reshape it with {what}.reshape(-1, {', '.join(map(str, expected))})"
        elif len(expected) == 1 and int(np.prod(got)) == expected[0]:
            msg += f"; flatten it with {what}.reshape(len({what}), -1)"
        return msg

    def forward(self, x, training=None):
        """Run the graph on a batch (an array on the model's device) and return the output.
        Keeps what ``backward`` needs. ``training`` defaults to the mode set by
        ``train()``/``eval()``."""
        self._ensure_built(x)
        self._check_batch(x)
        training = self.training if training is None else bool(training)
        with self._on_device():
            values = {}
            for layer in self._nodes:
                if isinstance(layer, Input):
                    values[id(layer)] = x
                    continue
                ins = [values[id(src)] for src in self._inbound[id(layer)]]
                values[id(layer)] = layer.forward(ins if self._many[id(layer)] else ins[0],
                                                  training)
            return values[id(self._nodes[-1])]

    __call__ = forward

    def backward(self, grad):
        """Back-propagate ``grad`` (d loss / d output of the last forward): the parameter
        gradients accumulate into ``gradients()``; returns d loss / d input."""
        self._require_built()
        with self._on_device():
            pending = {id(self._nodes[-1]): grad}
            input_grad = None
            for layer in reversed(self._nodes):
                g = pending.pop(id(layer), None)
                if g is None:
                    continue
                if isinstance(layer, Input):
                    input_grad = g
                    continue
                dx = layer.backward(g)
                dxs = dx if self._many[id(layer)] else [dx]
                for src, d in zip(self._inbound[id(layer)], dxs):
                    key = id(src)
                    pending[key] = d if key not in pending else pending[key] + d
            return input_grad

    # --- Keras workflow ------------------------------------------------------------------------

    def _ensure_built(self, x=None):
        if not self.built:
            self._require_built()

    def compile(self, optimizer="adam", loss=None, metrics=None):
        """Choose the optimizer (``"adam"``, ``"sgd"`` or an instance), the loss
        (``"sparse_categorical_crossentropy"`` / ``"softmax_cross_entropy"``,
        ``"binary_crossentropy"``, ``"mse"`` or a Loss) and the metrics (``"accuracy"``,
        ``"precision"``, ``"recall"``). Losses take logits: do not end the model with a
        softmax/sigmoid before a cross-entropy."""
        self.optimizer = optimizers_mod.get(optimizer)
        self.loss = None if loss is None else losses_mod.get(loss)
        self.metrics = [metrics_mod.get(m) for m in (metrics or [])]
        threshold = 0.5 if isinstance(self.loss, losses_mod.MeanSquaredError) else 0.0
        for m in self.metrics:
            m.threshold = threshold
        if self.built:
            self._check_loss_head()
            self.optimizer.bind(self.parameters())

    def _check_loss_head(self):
        last = self._nodes[-1]
        act = getattr(last, "activation", None)
        for loss_cls, bad in ((losses_mod.SparseCategoricalCrossentropy, "softmax"),
                              (losses_mod.BinaryCrossentropy, "sigmoid")):
            if isinstance(self.loss, loss_cls) and act == bad:
                raise ValueError(
                    f"the last layer {last.name} applies a {bad}, but the loss "
                    f"{self.loss.name!r} takes logits and applies the {bad} itself; remove "
                    f"the final {bad} (for probabilities, apply it to predict()'s output)"
                )

    def _ready_to_train(self):
        if self.optimizer is None or self.loss is None:
            raise RuntimeError("call model.compile(optimizer=..., loss=...) before fit/evaluate")
        if self.loss.reduction == "none":
            raise ValueError(
                f"fit/evaluate need a loss that reduces to one number, got {self.loss.name!r} "
                f"with reduction='none'; compile with reduction='mean' (the default)"
            )
        if self.optimizer.params is not self._params:
            self._check_loss_head()
            self.optimizer.bind(self.parameters())
        self.parameters()

    def _check_x(self, x, what="x"):
        if is_gpu_array(x):
            x = to_numpy(x)
        x = np.asarray(x)
        if x.dtype.kind not in "fiub":
            raise TypeError(f"{what} must be a numeric array, got dtype {x.dtype}")
        if x.ndim < 2:
            raise ValueError(
                f"{what} must have a batch axis: shape (N, ...), got shape {x.shape}"
            )
        self._ensure_built(x)
        expected = self.input_layer.shape
        if tuple(x.shape[1:]) != expected:
            raise ValueError(self._shape_message(what, tuple(x.shape), expected))
        x = np.ascontiguousarray(x, dtype=self.dtype)
        bad = ~np.isfinite(x)
        if bad.any():
            first = int(np.argwhere(bad.reshape(len(x), -1).any(axis=1))[0, 0])
            raise ValueError(
                f"{what} contains {int(bad.sum())} NaN or infinite values (first in sample "
                f"{first}); clean or impute the data before training"
            )
        return x

    def _check_y(self, y, n, what="y"):
        if y is None:
            raise ValueError(f"{what} (the targets) is required")
        y = np.asarray(to_numpy(y))
        if len(y) != n:
            raise ValueError(
                f"x and {what} have different lengths: {n} samples in x but {len(y)} in {what}"
            )
        out_shape = tuple(self.output_layer.output_shape)
        if isinstance(self.loss, losses_mod.SparseCategoricalCrossentropy):
            if y.ndim == 2 and y.shape[1] == 1:
                y = y[:, 0]
            if y.ndim == 2 and y.shape[1] == out_shape[0]:
                raise ValueError(
                    f"{what} looks one-hot with shape {y.shape}; this loss takes class indices "
                    f"of shape ({n},): pass {what}.argmax(axis=1)"
                )
            if y.ndim != 1:
                raise ValueError(f"{what} must be class indices of shape ({n},), got {y.shape}")
            if y.dtype.kind == "f":
                if not np.isfinite(y).all() or (y != np.rint(y)).any():
                    raise ValueError(f"{what} must hold integer class indices, got non-integer "
                                     f"or NaN floats")
            elif y.dtype.kind not in "iub":
                raise TypeError(f"{what} must be integer class indices, got dtype {y.dtype}")
            y = y.astype(np.int64)
            classes = out_shape[0]
            if n and (y.min() < 0 or y.max() >= classes):
                raise ValueError(
                    f"{what} labels must lie in [0, {classes}) for the model's {classes} "
                    f"outputs, got values in [{y.min()}, {y.max()}]"
                )
            return y
        if y.dtype.kind not in "fiub":
            raise TypeError(f"{what} must be numeric, got dtype {y.dtype}")
        if int(np.prod(y.shape[1:])) != int(np.prod(out_shape)):
            raise ValueError(
                f"{what} must have shape (N, {', '.join(map(str, out_shape))}) to match the "
                f"model's output, got {y.shape}"
            )
        y = np.ascontiguousarray(y.reshape((n,) + out_shape), dtype=self.dtype)
        if not np.isfinite(y).all():
            raise ValueError(f"{what} contains NaN or infinite values")
        if isinstance(self.loss, losses_mod.BinaryCrossentropy) and n and (
                y.min() < 0 or y.max() > 1):
            raise ValueError(
                f"{what} must lie in [0, 1] for binary cross-entropy, got values in "
                f"[{y.min()}, {y.max()}]"
            )
        return y

    def fit(self, x=None, y=None, batch_size=32, epochs=1, verbose="auto", callbacks=None,
            validation_split=0.0, validation_data=None, shuffle=True, initial_epoch=0, seed=None):
        """Train for ``epochs`` epochs on (x, y); returns a ``History``.

        The data stay on the host; each batch moves to the model's device. The shuffle order
        of epoch ``e`` is a function of (``seed``, e), so a run resumed from a checkpoint
        (``initial_epoch``, or ``ModelCheckpoint(resume=True)``) sees the same batches as an
        uninterrupted one. ``validation_split`` holds out the LAST fraction of the data
        (before shuffling), as Keras does. ``verbose``: 0 silent, 1 (``"auto"``) progress
        bar, 2 one line per epoch.
        """
        x = self._check_x(x)
        self._ready_to_train()
        y = self._check_y(y, len(x))
        if validation_data is not None and validation_split:
            raise ValueError("give validation_data or validation_split, not both")
        if validation_split:
            if not 0.0 < validation_split < 1.0:
                raise ValueError(f"validation_split must be in (0, 1), got {validation_split}")
            split = int(len(x) * (1.0 - validation_split))
            if split < 1 or split >= len(x):
                raise ValueError(f"validation_split={validation_split} leaves an empty part "
                                 f"of {len(x)} samples")
            x, y, val = x[:split], y[:split], (x[split:], y[split:])
        elif validation_data is not None:
            if not isinstance(validation_data, (list, tuple)) or len(validation_data) != 2:
                raise ValueError(f"validation_data must be a pair (x_val, y_val), got a "
                                 f"{type(validation_data).__name__}")
            xv = self._check_x(validation_data[0], "x_val")
            val = (xv, self._check_y(validation_data[1], len(xv), "y_val"))
        else:
            val = None
        batch_size = _batch_size(batch_size)
        verbose = 1 if verbose == "auto" else int(verbose)
        n = len(x)
        steps = math.ceil(n / batch_size)
        if steps > 1 and n % batch_size == 1:
            steps -= 1  # fold a last batch of one sample into the previous one (batch norm
            #             cannot normalise a single sample)
        seed = 0 if seed is None else int(seed)

        history = callbacks_mod.History()
        self.history = history
        user_callbacks = list(callbacks or [])
        self._fit_callbacks = user_callbacks
        resumed = None
        for cb in user_callbacks:
            if isinstance(cb, callbacks_mod.ModelCheckpoint):
                info = cb.resume_point(self)
                if info is not None and info["epoch"] > initial_epoch:
                    resumed, initial_epoch = info, info["epoch"]
                    history.history = {k: list(v) for k, v in info["history"].items()}
                    history.epoch = list(range(initial_epoch))
        params = {"epochs": epochs, "steps": steps, "batch_size": batch_size,
                  "initial_epoch": initial_epoch, "verbose": verbose}
        # checkpoints run last, so they save the epoch as every other callback left it
        # (a reduced lr, updated patience counters, the history including this epoch)
        is_ckpt = [isinstance(cb, callbacks_mod.ModelCheckpoint) for cb in user_callbacks]
        ordered = ([cb for cb, c in zip(user_callbacks, is_ckpt) if not c] + [history]
                   + [cb for cb, c in zip(user_callbacks, is_ckpt) if c])
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
                order = (np.random.default_rng([seed, epoch]).permutation(n) if shuffle
                         else np.arange(n))
                logs = self._train_epoch(x, y, order, batch_size, steps, cbs, verbose)
                bar = logs.pop("_bar")
                if val is not None:
                    val_logs = self._evaluate_arrays(val[0], val[1], batch_size)
                    logs.update({f"val_{k}": v for k, v in val_logs.items()})
                bar.finish(logs)
                cbs.on_epoch_end(epoch, logs)
                if self.stop_training:
                    break
        finally:
            self.training = was_training
        cbs.on_train_end()
        return history

    def _train_epoch(self, x, y, order, batch_size, steps, cbs, verbose):
        n = len(x)
        self.training = True
        bar = ProgressBar(steps, verbose)
        for m in self.metrics:
            m.reset()
        total, count = 0.0, 0
        logs = {}
        with self._on_device():
            params = self._params
            for step in range(steps):
                end = n if step == steps - 1 else (step + 1) * batch_size
                idx = order[step * batch_size:end]
                cbs.on_train_batch_begin(step)
                xb = to_device(x[idx], self._backend)
                yb = to_device(y[idx], self._backend)
                params.zero_grad()
                out = self.forward(xb, training=True)
                loss = self.loss(out, yb)
                self.backward(self.loss.backward())
                self.optimizer.step()
                total += float(loss) * len(idx)  # the one host sync of a step without metrics
                count += len(idx)
                logs = {"loss": total / count}
                self._update_metrics(y[idx], out, logs)
                cbs.on_train_batch_end(step, logs)
                bar.update(step + 1, logs)
                if self.stop_training:
                    break
        logs = dict(logs)
        logs["_bar"] = bar
        return logs

    def _evaluate_arrays(self, x, y, batch_size):
        for m in self.metrics:
            m.reset()
        total, count = 0.0, 0
        with self._on_device():
            for start in range(0, len(x), batch_size):
                xb = to_device(x[start:start + batch_size], self._backend)
                yb = to_device(y[start:start + batch_size], self._backend)
                out = self.forward(xb, training=False)
                total += float(self.loss.value(out, yb)) * len(xb)
                count += len(xb)
                self._update_metrics(y[start:start + batch_size], out)
        logs = {"loss": total / max(count, 1)}
        logs.update({m.name: m.result() for m in self.metrics})
        return logs

    def _update_metrics(self, y_true, out, logs=None):
        """Feed one batch to every metric (one device-to-host copy of the outputs for all of
        them); write their running results into ``logs`` when given."""
        if not self.metrics:
            return
        out = to_numpy(out)
        for m in self.metrics:
            m.update(y_true, out)
            if logs is not None:
                logs[m.name] = m.result()

    def evaluate(self, x=None, y=None, batch_size=32, verbose=0):
        """Loss and metrics over (x, y) in evaluation mode -> ``{"loss": ..., "accuracy": ...}``."""
        x = self._check_x(x)
        self._ready_to_train()
        y = self._check_y(y, len(x))
        batch_size = _batch_size(batch_size)
        bar = ProgressBar(math.ceil(len(x) / batch_size), 1 if verbose == "auto" else verbose)
        logs = self._evaluate_arrays(x, y, batch_size)
        bar.finish(logs)
        return logs

    def predict(self, x, batch_size=32, verbose=0):
        """The model's outputs (logits for a classifier) for x, as a NumPy array; evaluation
        mode, in batches."""
        x = self._check_x(x)
        batch_size = _batch_size(batch_size)
        out = np.empty((len(x),) + tuple(self.output_layer.output_shape), self.dtype)
        with self._on_device():
            for start in range(0, len(x), batch_size):
                xb = to_device(x[start:start + batch_size], self._backend)
                out[start:start + batch_size] = to_numpy(self.forward(xb, training=False))
        return out

    # --- summary -------------------------------------------------------------------------------

    def summary(self, print_fn=None):
        """Print the Keras-style table: Layer (type) | Output Shape | Param # (| Connected to
        for a functional model), then the total, trainable and non-trainable counts with
        their sizes in bytes."""
        self._require_built()
        print_fn = print_fn or print
        functional = not isinstance(self, Sequential)
        header = ["Layer (type)", "Output Shape", "Param #"] + (["Connected to"] if functional
                                                                 else [])
        rows = []
        for layer in self._nodes:
            if not functional and isinstance(layer, Input):
                continue
            shape = (None,) + tuple(layer.output_shape if not isinstance(layer, Input)
                                    else layer.shape)
            row = [f"{layer.name} ({type(layer).__name__})", str(shape),
                   f"{sum(layer.count_params()):,}"]
            if functional:
                row.append(", ".join(src.name for src in self._inbound[id(layer)]) or "-")
            rows.append(row)
        widths = [max(len(h), *(len(r[i]) for r in rows)) + 2 for i, h in enumerate(header)]
        widths = [max(w, m) for w, m in zip(widths, (29, 24, 11, 20))]
        total_width = sum(widths)

        def line(cells):
            out = ""
            for i, (cell, w) in enumerate(zip(cells, widths)):
                out += cell.rjust(w - 2) + "  " if i == 2 else cell.ljust(w)
            return " " + out.rstrip()

        trainable = non_trainable = 0
        t_bytes = n_bytes = 0
        for layer in self._nodes:
            t, nt = layer.count_params()
            item = layer.dtype.itemsize if layer.dtype is not None else 4
            trainable, non_trainable = trainable + t, non_trainable + nt
            t_bytes, n_bytes = t_bytes + t * item, n_bytes + nt * item
        lines = [f'Model: "{self.name}"', "_" * total_width, line(header), "=" * total_width]
        for i, row in enumerate(rows):
            lines.append(line(row))
            lines.append("_" * total_width if i < len(rows) - 1 else "=" * total_width)
        lines += [
            f" Total params: {trainable + non_trainable:,} ({_format_bytes(t_bytes + n_bytes)})",
            f" Trainable params: {trainable:,} ({_format_bytes(t_bytes)})",
            f" Non-trainable params: {non_trainable:,} ({_format_bytes(n_bytes)})",
            "_" * total_width,
        ]
        print_fn("\n".join(lines))

    # --- save / load ---------------------------------------------------------------------------

    def get_config(self):
        """The architecture as JSON-able data (layers, their configs and connections)."""
        self._require_built()
        layers = [{"class": type(layer).__name__, "config": layer.get_config(),
                   "inbound": [src.name for src in self._inbound[id(layer)]],
                   "many": self._many[id(layer)]} for layer in self._nodes]
        return {"class": type(self).__name__, "name": self.name, "seed": self.seed,
                "layers": layers}

    def _arrays(self):
        arrays = {}
        for layer in self._nodes:
            for kind, store in (("params", layer.params), ("state", layer.state)):
                for key, value in store.items():
                    arrays[f"{kind}/{layer.name}/{key}"] = to_numpy(value)
        return arrays

    def _meta(self):
        meta = {"format": FORMAT, "architecture": self.get_config(),
                "layer_names": [layer.name for layer in self._nodes],
                "counters": {layer.name: layer.steps for layer in self._nodes
                             if hasattr(layer, "steps")},
                "compile": None}
        if self.optimizer is not None and self.loss is not None:
            meta["compile"] = {"optimizer": self.optimizer.get_config(),
                               "loss": self.loss.get_config(),
                               "metrics": [m.name for m in self.metrics]}
        return meta

    def save(self, path, include_optimizer=True, _extra=None):
        """Save architecture (JSON), weights, buffers and (by default) the optimizer state to
        one ``.npz`` file. The file is written to a temporary name in the same folder and then
        renamed over ``path``, so a failed save leaves an existing file intact."""
        self._require_built()
        path = os.fspath(path)
        meta = self._meta()
        arrays = self._arrays()
        if include_optimizer and self.optimizer is not None and self.optimizer.params is not None:
            state = self.optimizer.state_dict()
            meta["optimizer_state"] = {k: state[k] for k in ("iterations", "lr", "t")}
            meta["optimizer_state"]["slots"] = [len(slot) for slot in state["slots"]]
            for i, slot in enumerate(state["slots"]):
                for j, a in enumerate(slot):
                    arrays[f"optimizer/{i}/{j}"] = a
        meta.update(_extra or {})
        arrays["__meta__"] = np.array(json.dumps(meta))
        folder = os.path.dirname(os.path.abspath(path))
        # a fresh name in the target's folder (one file system: the rename is atomic); os.open
        # applies the umask to 0o666 as a plain open() does (tempfile.mkstemp would give 0600)
        tmp = os.path.join(folder, f".{os.path.basename(path)}.{secrets.token_hex(6)}.tmp")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
        fd = os.open(tmp, flags, 0o666)
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **arrays)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.remove(tmp)
            raise
        _fsync_folder(folder)

    def load_weights(self, path):
        """Load weights, buffers (and the optimizer state when this model is compiled and the
        file has one) from a file written by ``save``; layers are matched by position and
        checked by class and shape. Returns the file's metadata dict."""
        arrays, meta = _read(path)
        self._require_built()
        names = meta["layer_names"]
        classes = [entry["class"] for entry in meta["architecture"]["layers"]]
        if len(names) != len(self._nodes):
            raise ValueError(f"{path} holds {len(names)} layers but this model has "
                             f"{len(self._nodes)}")
        for layer, saved, cls in zip(self._nodes, names, classes):
            if cls != type(layer).__name__:
                raise ValueError(f"{path}: layer {saved} is a {cls} but this model's layer "
                                 f"{layer.name} is a {type(layer).__name__}")
            for kind, store in (("params", layer.params), ("state", layer.state)):
                for key in store:
                    value = arrays.get(f"{kind}/{saved}/{key}")
                    if value is None or value.shape != tuple(store[key].shape):
                        got = None if value is None else value.shape
                        raise ValueError(f"{path}: {kind} {saved}/{key} has shape {got}, this "
                                         f"model needs {tuple(store[key].shape)}")
                    store[key][...] = to_device(value.astype(store[key].dtype), self._backend)
            if hasattr(layer, "steps"):
                layer.steps = int(meta["counters"].get(saved, 0))
        opt_state = meta.get("optimizer_state")
        if opt_state and self.optimizer is not None:
            if self.optimizer.params is not self._params:  # compiled, not yet fitted
                self.optimizer.bind(self.parameters())
            slots = [[arrays[f"optimizer/{i}/{j}"] for j in range(count)]
                     for i, count in enumerate(opt_state["slots"])]
            self.optimizer.load_state_dict({**opt_state, "slots": slots})
        return meta

    def save_checkpoint(self, path, epoch, logs=None):
        """Save model + optimizer state + the number of finished epochs + the history so far,
        including this epoch's ``logs`` (what ``ModelCheckpoint`` writes; atomic like ``save``).
        """
        recorded = self.history if self.history is not None else callbacks_mod.History()
        history = {k: list(v) for k, v in recorded.history.items()}
        if logs and (not recorded.epoch or recorded.epoch[-1] < epoch - 1):
            for key, value in logs.items():
                history.setdefault(key, []).append(value)
        states = [[type(cb).__name__, cb.get_state()] for cb in self._fit_callbacks]
        self.save(path, _extra={"checkpoint": {"epoch": int(epoch), "history": history,
                                               "callbacks": states}})

    def load_checkpoint(self, path, return_info=False):
        """Restore a checkpoint into this (compiled) model; returns the epoch to continue from,
        to pass as ``fit(..., initial_epoch=...)`` (or the info dict with ``return_info``)."""
        meta = self.load_weights(path)
        info = meta.get("checkpoint")
        if info is None:
            raise ValueError(f"{path} is a saved model, not a checkpoint (no epoch in it)")
        return info if return_info else info["epoch"]


def _fsync_folder(folder):
    """Make a rename inside ``folder`` durable (POSIX); a no-op where folders cannot be
    opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def _read(path):
    path = os.fspath(path)
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    if "__meta__" not in arrays:
        raise ValueError(f"{path} is not an nnkern model file (no __meta__ entry)")
    meta = json.loads(str(arrays.pop("__meta__")))
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: unknown format {meta.get('format')!r}, expected {FORMAT!r}")
    return arrays, meta


class Sequential(Model):
    """A plain stack of layers, each feeding the next.

    Start with ``layers.Input(shape)`` (or give the first layer ``input_shape=``) to build
    at once; otherwise the model is built from the first data it sees (or
    ``model.build(input_shape)``).

    >>> from nnkern import layers
    >>> mlp = Sequential([layers.Input((784,)), layers.Dense(128, activation="relu"),
    ...                   layers.Dense(64, activation="relu"), layers.Dense(10)])
    >>> mlp.count_params()
    109386
    """

    def __init__(self, layers=None, name=None, seed=0):
        super().__init__(name=name or unique_name("sequential"), seed=seed)
        self._stack = []
        for layer in layers or []:
            self._append(layer)
        first = self._stack[0] if self._stack else None
        if first is not None and not isinstance(first, Input) and first.declared_input_shape:
            self._stack.insert(0, Input(first.declared_input_shape, dtype=first.dtype or "float32"))
        if len(self._stack) > 1 and isinstance(self._stack[0], Input):
            self._chain()

    def add(self, layer):
        """Append a layer (an ``Input`` only in the first position)."""
        self._append(layer)
        if len(self._stack) > 1 and isinstance(self._stack[0], Input):
            self._chain()

    def _append(self, layer):
        if not isinstance(layer, layers_base.Layer):
            raise TypeError(f"Sequential takes layers, got {type(layer).__name__}")
        if isinstance(layer, Input) and self._stack:
            raise ValueError("an Input layer can only be the first layer of a Sequential")
        if layer.inbound and not isinstance(layer, Input):
            raise ValueError(f"layer {layer.name} is already used in a functional graph")
        self._stack.append(layer)

    def _chain(self):
        self._nodes = list(self._stack)
        self._inbound = {id(self._nodes[0]): []}
        self._many = {id(layer): False for layer in self._nodes}
        for prev, layer in zip(self._nodes, self._nodes[1:]):
            self._inbound[id(layer)] = [prev]
        self._build_graph()
        for prev, layer in zip(self._nodes, self._nodes[1:]):
            layer.output = SymbolicTensor(layer.output_shape, layer.dtype, layer, [prev.output])

    @property
    def layers(self):
        """The layers (without the Input, as in Keras)."""
        return [layer for layer in self._stack if not isinstance(layer, Input)]

    def build(self, input_shape, dtype="float32"):
        """Build for a per-sample ``input_shape`` (a leading ``None`` batch axis is allowed)."""
        input_shape = tuple(input_shape)
        if input_shape and input_shape[0] is None:
            input_shape = input_shape[1:]
        if self._stack and isinstance(self._stack[0], Input):
            if tuple(self._stack[0].shape) != input_shape:
                raise ValueError(f"the model's Input has shape {self._stack[0].shape}, "
                                 f"build got {input_shape}")
        else:
            self._stack.insert(0, Input(input_shape, dtype=dtype))
        self._chain()

    def _ensure_built(self, x=None):
        if self.built:
            return
        if x is None or not self._stack or len(getattr(x, "shape", ())) < 2:
            self._require_built()
        shape = tuple(x.shape[1:])
        dtype = next((layer.dtype for layer in self._stack if layer.dtype is not None),
                     np.dtype(np.float32))
        self.build(shape, dtype=dtype)

    def get_config(self):
        config = super().get_config()
        for entry in config["layers"]:
            entry.pop("inbound")
            entry.pop("many")
        return config


def model_from_config(config):
    """Rebuild an (untrained) model from ``get_config()`` output."""
    layer_objs = []
    for entry in config["layers"]:
        cls = layers_base.layer_class(entry["class"])
        layer_objs.append((cls.from_config(dict(entry["config"])), entry))
    if config["class"] == "Sequential":
        return Sequential([layer for layer, _ in layer_objs], name=config["name"],
                          seed=config["seed"])
    if config["class"] != "Model":
        raise ValueError(f"unknown model class {config['class']!r}")
    tensors = {}
    for layer, entry in layer_objs:
        if isinstance(layer, Input):
            tensors[layer.name] = layer.output
            continue
        ins = [tensors[name] for name in entry["inbound"]]
        tensors[layer.name] = layer(ins if entry["many"] else ins[0])
    first, last = layer_objs[0][0], layer_objs[-1][0]
    return Model(first, tensors[last.name], name=config["name"], seed=config["seed"])


def load_model(path, compile=True):
    """Load a model written by ``Model.save``: architecture, weights, buffers, and (when
    ``compile``) its compile settings and optimizer state.

    >>> # model.save("m.npz"); m2 = nnkern.models.load_model("m.npz")
    """
    _, meta = _read(path)
    model = model_from_config(meta["architecture"])
    if compile and meta.get("compile"):
        c = meta["compile"]
        model.compile(optimizer=optimizers_mod.get(c["optimizer"]),
                      loss=losses_mod.get(c["loss"]), metrics=c["metrics"])
    model.load_weights(path)
    return model


def load_checkpoint(path):
    """Rebuild a compiled model from a ``ModelCheckpoint`` file; returns
    ``(model, initial_epoch)`` to continue with ``model.fit(..., initial_epoch=...)``."""
    model = load_model(path)
    return model, model.load_checkpoint(path)
