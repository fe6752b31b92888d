"""``Model``: a graph of layer calls from input tensors to output tensors, itself a layer.

    >>> import nnkern
    >>> from nnkern import layers
    >>> a, b = layers.Input((4,)), layers.Input((4,))
    >>> encoder = layers.Dense(3)                      # one layer, called twice: shared weights
    >>> distance = layers.Add()([encoder(a), encoder(b)])
    >>> pair = nnkern.Model([a, b], distance)
    >>> pair.count_params()
    15

The graph is made of ``CallNode``s (one per call of a layer on symbolic tensors), so
a layer may be called several times (shared weights), a model may take several
inputs and give several outputs, and a model may be called inside another model
(``model(x)`` on a Tensor records its ops on the tape like any layer).

Running: ``model(tensor)`` returns Tensors on the autograd tape; ``model.predict``
and ``evaluate`` run without recording; ``model.forward(array)`` /
``model.backward(grad)`` keep the array API of a hand-written loop. Training
(compile/fit/...) is in ``training.py``, the summary in ``summary.py``, files in
``saving.py``, the flat parameter buffers in ``parameters.py``.
"""

import contextlib

import numpy as np

from .. import functional as F
from ..autograd import Tensor, is_grad_enabled, no_grad
from ..device import device as device_ctx
from ..device import get_device, to_device
from ..interop import as_array
from ..layers import base as layers_base
from ..layers.base import Input, Layer, SymbolicTensor, as_symbolic, unique_name
from ..layers.core import Dense
from . import saving, summary
from .parameters import Parameters
from .training import Trainer


def _host_backend(backend):
    return backend if backend == "cuda" else "numpy"


def _as_list(value):
    return list(value) if isinstance(value, (list, tuple)) else [value]


class Model(Layer, Trainer):
    """A graph of layers from ``inputs`` to ``outputs`` (functional API).

    Args:
        inputs: an ``Input`` layer (or its tensor), or a list of them.
        outputs: the tensor returned by a layer call on the inputs, or a list of them.
        seed: weights are drawn from (seed, layer position): the same code builds the
            same weights; pass another seed for another initialisation.
    """

    def __init__(self, inputs=None, outputs=None, name=None, seed=0):
        # Layer.__init__ is not called: a model's shapes and dtype come from its graph
        self.name = name or unique_name("functional" if inputs is not None else "model")
        self.seed = int(seed)
        self.declared_input_shape = None
        self._trainable = True
        self.variables = {}
        self.state = {}
        self.call_nodes = []
        self.training = False
        self.stop_training = False
        self.optimizer = None
        self.loss = None
        self.metrics = []
        self.history = None
        self.built = False
        self._device = None
        self._backend = None
        self._fit_callbacks = []
        self._params = Parameters()
        self._signature = None
        self._inputs, self._outputs, self._nodes, self._layers = [], [], [], []
        self._dense_chain = None
        self._pending, self._pending_count = None, 0
        if inputs is not None:
            self._init_graph(inputs, outputs)

    # --- graph -------------------------------------------------------------------------------

    def _init_graph(self, inputs, outputs):
        inputs = [as_symbolic(t) for t in _as_list(inputs)]
        outputs = [as_symbolic(t) for t in _as_list(outputs)]
        for t in inputs:
            if not isinstance(t, SymbolicTensor) or not isinstance(t.layer, Input):
                raise TypeError(f"inputs must be Input layers, got {type(t).__name__}")
        for t in outputs:
            if not isinstance(t, SymbolicTensor):
                raise TypeError(
                    f"outputs must be tensors returned by calling layers on the inputs, got "
                    f"{type(t).__name__}"
                )
        nodes, layers = _topological(outputs)
        given = {id(t.layer) for t in inputs}
        for layer in layers:
            if isinstance(layer, Input) and id(layer) not in given:
                raise ValueError(
                    f"the outputs depend on {layer.name}, which is not the model's input "
                    f"(the model's inputs: {[t.layer.name for t in inputs]})"
                )
        reached = {id(layer) for layer in layers}
        for t in inputs:
            if id(t.layer) not in reached:
                raise ValueError(f"the outputs do not depend on the input {t.layer.name}")
        self._inputs, self._outputs, self._nodes, self._layers = inputs, outputs, nodes, layers
        self._dense_chain = _dense_chain(inputs, outputs, nodes)
        self._build_graph()

    def _build_graph(self):
        names = [layer.name for layer in self._layers]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"layer names must be unique within a model, repeated: {dup}")
        dtype = self._inputs[0].dtype
        first_call = {}
        for node in self._nodes:
            first_call.setdefault(id(node.layer), node)
        for i, layer in enumerate(self._layers):
            if isinstance(layer, Input) or layer.built:
                continue
            node = first_call[id(layer)]
            shapes = [t.sample_shape for t in node.inputs]
            seed = int(np.random.SeedSequence([self.seed, i]).generate_state(1)[0])
            layer._build(shapes if node.many else shapes[0], dtype, seed)
        for node in self._nodes:  # every call of a shared layer must fit its weights
            shapes = [t.sample_shape for t in node.inputs]
            shape = shapes if node.many else shapes[0]
            if not isinstance(node.layer, Model) and not node.layer.fits(shape):
                raise ValueError(
                    f"layer {node.layer.name!r} was built for per-sample input shape "
                    f"{node.layer.input_shape} but is called on shape {shape}; its weights do "
                    f"not fit that input"
                )
        self._backend = _host_backend(self._device or get_device())
        leaves = self._leaf_layers()
        for layer in leaves:
            for key, value in layer.state.items():
                layer.state[key] = to_device(value, self._backend)
        self._params.pack(leaves, self._backend)
        self._signature = self._trainable_signature(leaves)
        self.built = True

    def _leaf_layers(self):
        """Every distinct layer with weights or state, nested models opened, in order."""
        out, seen = [], set()
        for layer in self._layers:
            inner = layer._leaf_layers() if isinstance(layer, Model) else [layer]
            for leaf in inner:
                if id(leaf) not in seen and not isinstance(leaf, Input):
                    seen.add(id(leaf))
                    out.append(leaf)
        return out

    def _trainable_signature(self, leaves):
        return tuple(layer.trainable for layer in leaves)

    def _build(self, input_shape, dtype, seed):
        """As a layer of another model: a model is built from its own inputs."""
        if not self.built:
            self._require_built()

    @property
    def layers(self):
        """The layers in topological order (the Inputs included, as in Keras); a nested
        model is one layer."""
        return list(self._layers)

    @property
    def inputs(self):
        """The input tensors (to build a new functional model on top of this one)."""
        return list(self._inputs)

    @property
    def outputs(self):
        return list(self._outputs)

    @property
    def input_layer(self):
        self._require_built()
        return self._inputs[0].layer

    @property
    def output_layer(self):
        self._require_built()
        return self._outputs[0].layer

    @property
    def input(self):
        """The input tensor (a list when there are several)."""
        self._require_built()
        return self._inputs[0] if len(self._inputs) == 1 else list(self._inputs)

    @property
    def output(self):
        """The output tensor (a list when there are several)."""
        self._require_built()
        return self._outputs[0] if len(self._outputs) == 1 else list(self._outputs)

    @property
    def input_shape(self):
        shapes = [(None,) + t.sample_shape for t in self._inputs]
        return shapes[0] if len(shapes) == 1 else shapes

    @property
    def output_shape(self):
        shapes = [(None,) + t.sample_shape for t in self._outputs]
        return shapes[0] if len(shapes) == 1 else shapes

    @property
    def dtype(self):
        return self._inputs[0].dtype if self._inputs else None

    def get_layer(self, name):
        for layer in self._layers:
            if layer.name == name:
                return layer
        raise ValueError(f"no layer named {name!r}; layers: {[layer.name for layer in self._layers]}")

    def _require_built(self):
        if not self.built:
            raise ValueError(
                f"model {self.name!r} is not built yet: start it with layers.Input(shape), or "
                f"call model.build(input_shape) or fit/predict on data first"
            )

    def _ensure_built(self, x=None):
        if not self.built:
            self._require_built()

    # --- as a layer of another model -----------------------------------------------------------

    def num_outputs(self):
        return len(self._outputs)

    def compute_output_shape(self, input_shape):
        self._require_built()
        given = input_shape if len(self._inputs) > 1 else [input_shape]
        expected = [t.sample_shape for t in self._inputs]
        if [tuple(s) for s in given] != expected:
            raise ValueError(f"model {self.name!r} takes per-sample shape(s) {expected}, got "
                             f"{[tuple(s) for s in given]}")
        shapes = [t.sample_shape for t in self._outputs]
        return shapes[0] if len(shapes) == 1 else shapes

    @property
    def trainable(self):
        return self._trainable

    @trainable.setter
    def trainable(self, value):
        """Freeze or unfreeze every layer of the model (Keras semantics)."""
        self._trainable = bool(value)
        for layer in self._leaf_layers():
            layer.trainable = value

    # --- parameters ----------------------------------------------------------------------------

    def parameters(self):
        """The trainable parameters (a ``Parameters``: iterate for the per-layer views).
        Re-packs the flat buffers when a layer's ``trainable`` flag changed, or when another
        model that shares a layer packed it into its own buffers."""
        self._require_built()
        leaves = self._leaf_layers()
        if (self._trainable_signature(leaves) != self._signature
                or not self._params.bound(leaves)):
            self._params.pack(leaves, self._backend)
            self._signature = self._trainable_signature(leaves)
        return self._params

    def gradients(self):
        """The gradient views, in the order of ``parameters()``."""
        return self.parameters().gradients()

    def zero_grad(self):
        """Zero every gradient (they accumulate across backward calls)."""
        self.parameters().zero_grad()

    def count_params(self):
        self._require_built()
        return sum(sum(layer.count_params()) for layer in self._leaf_layers())

    def get_weights(self):
        """Host copies of every weight and buffer, in layer order (Keras ``get_weights``)."""
        self._require_built()
        return [np.array(to_device(a, "numpy"), copy=True) for layer in self._leaf_layers()
                for a in list(layer.params.values()) + list(layer.state.values())]

    def set_weights(self, weights):
        """Copy ``get_weights()``-ordered arrays into the model (in place)."""
        self._require_built()
        targets = [(layer, k, a) for layer in self._leaf_layers()
                   for k, a in list(layer.params.items()) + list(layer.state.items())]
        if len(weights) != len(targets):
            raise ValueError(f"expected {len(targets)} weight arrays, got {len(weights)}")
        for (layer, k, target), w in zip(targets, weights):
            w = np.asarray(to_device(w, "numpy"))
            if tuple(w.shape) != tuple(target.shape):
                raise ValueError(
                    f"weight {layer.name}/{k} has shape {tuple(target.shape)}, got {w.shape}"
                )
            target[...] = to_device(w.astype(target.dtype), self._backend)
        self._params.mark_updated()

    # --- modes and device ----------------------------------------------------------------------

    def train(self):
        """Training mode for calls without ``training=`` (dropout on, batch norm on batch
        statistics). Returns the model."""
        self.training = True
        return self

    def eval(self):
        """Evaluation mode (dropout off, batch norm on running statistics)."""
        self.training = False
        return self

    def to(self, device):
        """Move the weights (and optimizer state) to ``device`` ("numpy", "cpu", "cuda",
        "auto") and run this model's calls, fit and predict there from now on."""
        with device_ctx(device) as resolved:
            pass
        self._device = resolved
        if self.built:
            self._backend = _host_backend(resolved)
            for layer in self._leaf_layers():
                for key, value in layer.state.items():
                    layer.state[key] = to_device(value, self._backend)
                if not layer.trainable:
                    for p in layer.variables.values():
                        p.data = to_device(p.data, self._backend)
            self._params.to(self._backend)
        return self

    def _on_device(self):
        return device_ctx(self._device) if self._device else contextlib.nullcontext()

    # --- running -------------------------------------------------------------------------------

    def _check_batch(self, xs):
        if len(xs) != len(self._inputs):
            raise ValueError(f"model {self.name!r} takes {len(self._inputs)} input(s), got "
                             f"{len(xs)}")
        for i, (t, x) in enumerate(zip(self._inputs, xs)):
            what = "x" if len(xs) == 1 else f"x[{i}]"
            if tuple(x.shape[1:]) != t.sample_shape:
                raise ValueError(self._shape_message(what, tuple(x.shape), t.sample_shape))

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

    def call(self, inputs, training=False):
        """Run the graph on Tensors (a list for several inputs); returns a Tensor (a list for
        several outputs). Every op is recorded on the tape when grad mode is on."""
        chain = self._dense_chain
        if chain is not None and type(inputs) is Tensor:
            # a chain of Dense layers is recorded as one node (the linear rule's
            # record_chain; None when a layer would not take its straight path)
            out = _record_chain(inputs, [(layer.variables["w"], layer.variables.get("b"),
                                          layer.activation) for layer in chain])
            if out is not None:
                return out
        xs = _as_list(inputs)
        values = {id(t): x for t, x in zip(self._inputs, xs)}
        for node in self._nodes:
            ins = [values[id(t)] for t in node.inputs]
            out = node.layer.call(ins if node.many else ins[0], training=training)
            if len(node.outputs) == 1:
                values[id(node.outputs[0])] = out
            else:
                for t, o in zip(node.outputs, out):
                    values[id(t)] = o
        outs = [values[id(t)] for t in self._outputs]
        return outs[0] if len(outs) == 1 else outs

    def __call__(self, inputs, training=None):
        """On Tensors: run the model on the tape (``training`` defaults to the mode set by
        ``train()``/``eval()``) and return Tensors. On symbolic tensors: use the model as a
        layer of a functional graph. On arrays: ``forward``."""
        if type(inputs) is Tensor and self.built and len(self._inputs) == 1:
            # a training step's call (one Tensor into a built one-input model): the general
            # path below (symbolic conversion, lists) cost 8 us of the MLP step's 340
            if inputs.data.shape[1:] != self._inputs[0].sample_shape:
                self._check_batch([inputs.data])  # raises, naming the shapes
            training = self.training if training is None else bool(training)
            if self._device is None or self._device == get_device():
                # already on the model's device (a training loop inside nnkern.device, or
                # after set_device): entering the device context again cost 3.5 us
                return self.call(inputs, training=training)
            with self._on_device():
                return self.call(inputs, training=training)
        items = [as_symbolic(v) for v in _as_list(inputs)]
        if any(isinstance(v, SymbolicTensor) for v in items):
            return Layer.__call__(self, inputs, training)
        if not any(isinstance(v, Tensor) for v in items):
            return self.forward(inputs, training)
        self._ensure_built(items[0])
        self._check_batch(items)
        training = self.training if training is None else bool(training)
        tensors = [v if isinstance(v, Tensor) else Tensor(v) for v in items]
        with self._on_device():
            return self.call(tensors if len(tensors) > 1 else tensors[0], training=training)

    def forward(self, x, training=None):
        """Run the model on an array batch (a list of arrays for several inputs) and return
        the output array(s). ``training`` defaults to the mode set by ``train()``/``eval()``.

        A training-mode forward records the graph for one ``backward(grad)`` (the array API
        of a hand-written loop); an evaluation-mode forward records nothing, so it can run
        between a forward and its backward without changing the gradients. For gradients
        through an evaluation-mode pass, or through several passes, call the model on
        Tensors and use ``loss.backward()``.
        """
        xs = [as_array(a, "x") for a in _as_list(x)]  # any array kind, without a copy
        self._ensure_built(xs[0])
        self._check_batch(xs)
        training = self.training if training is None else bool(training)
        with self._on_device():
            if training and is_grad_enabled():
                tensors = [Tensor(a, requires_grad=a.dtype.kind == "f") for a in xs]
                out = self.call(tensors if len(tensors) > 1 else tensors[0], training=True)
                self._pending = (tensors, out)
                self._pending_count += 1
            else:
                with no_grad():
                    out = self.call([Tensor(a) for a in xs] if len(xs) > 1 else Tensor(xs[0]),
                                    training=training)
        return [o.data for o in out] if isinstance(out, list) else out.data

    def backward(self, grad):
        """Back-propagate ``grad`` (d loss / d output of the last training-mode ``forward``):
        the parameter gradients accumulate into ``gradients()``; returns d loss / d input
        (a list for several inputs)."""
        self._require_built()
        if self._pending is None:
            raise RuntimeError(
                "model.backward() needs a model.forward(x, training=True) before it "
                "(evaluation-mode forwards record nothing); for gradients through an "
                "evaluation-mode pass call the model on a Tensor: "
                "out = model(nnkern.tensor(x, requires_grad=True), training=False)"
            )
        if self._pending_count > 1:
            count = self._pending_count
            self._pending, self._pending_count = None, 0
            raise RuntimeError(
                f"model.forward(training=True) ran {count} times since the last backward(); "
                f"the array API back-propagates one forward at a time. For several passes "
                f"(a Siamese pair), call the model on Tensors and back-propagate the loss: "
                f"y1 = model(nnkern.tensor(x1)); y2 = model(nnkern.tensor(x2)); "
                f"loss_fn(y1, y2).backward()"
            )
        tensors, out = self._pending
        self._pending, self._pending_count = None, 0
        outs, grads = _as_list(out), _as_list(grad)
        if len(grads) != len(outs):
            raise ValueError(f"backward takes one gradient per output ({len(outs)}), got "
                             f"{len(grads)}")
        with self._on_device():
            for i, (o, g) in enumerate(zip(outs, grads)):
                o.backward(g, retain_graph=i < len(outs) - 1)
        dx = [t.grad for t in tensors]
        return dx[0] if len(dx) == 1 else dx

    # --- summary and files (see summary.py and saving.py) --------------------------------------

    def summary(self, print_fn=None):
        """Print the Keras-style table: Layer (type) | Output Shape | Param # (| Connected to
        for a functional model), then the total, trainable and non-trainable counts with
        their sizes in bytes."""
        summary.print_summary(self, print_fn)

    def get_config(self):
        """The architecture as JSON-able data (layers, their configs and connections)."""
        return saving.model_config(self)

    @classmethod
    def from_config(cls, config):
        return saving.model_from_config(config)

    def save(self, path, include_optimizer=True):
        """Save architecture (JSON), weights, buffers and (by default) the optimizer state to
        one ``.npz`` file, atomically: a failed save leaves an existing file intact. Another
        extension is an error (``.safetensors``: use ``save_weights``)."""
        saving.save_model(self, path, include_optimizer)

    def save_weights(self, path):
        """Save ``state_dict()`` to a ``.safetensors`` file (atomically), readable by
        ``load_weights`` and by PyTorch (``safetensors.torch.load_file``)."""
        saving.save_weights(self, path)

    def load_weights(self, path):
        """Load the weights from a ``.safetensors`` file (``save_weights``, or a PyTorch
        state_dict saved with safetensors; matched by key, see ``load_state_dict``) or from a
        model file written by ``save`` (weights, buffers and the optimizer state when this
        model is compiled; layers matched by position and checked by class and shape).
        Returns the file's metadata dict."""
        return saving.load_weights(self, path)

    def state_dict(self):
        """Host copies of every weight and buffer under PyTorch's dotted keys and layouts
        (``{"conv1.weight": (K, C, R, S), "fc1.weight": (out, in), "fc1.bias": ...}``).

        >>> import nnkern
        >>> from nnkern import layers
        >>> m = nnkern.Sequential([layers.Input((4,)), layers.Dense(3, name="fc")])
        >>> {k: v.shape for k, v in m.state_dict().items()}
        {'fc.weight': (3, 4), 'fc.bias': (3,)}
        """
        return saving.state_dict(self)

    def load_state_dict(self, state_dict, strict=True):
        """Copy a ``state_dict`` (key -> array: NumPy, torch tensors, ...) into the model; a
        torch model's ``state_dict()`` loads into the same architecture when the nnkern
        layers carry the torch modules' names. Missing, unexpected (``strict``) and wrongly
        shaped keys are one error that names each; returns ``(missing_keys,
        unexpected_keys)`` as PyTorch does."""
        return saving.load_state_dict(self, state_dict, strict)

    def save_checkpoint(self, path, epoch, logs=None):
        """Save model + optimizer state + the number of finished epochs + the history so far
        (what ``ModelCheckpoint`` writes; atomic like ``save``)."""
        saving.save_checkpoint(self, path, epoch, logs)

    def load_checkpoint(self, path, return_info=False):
        """Restore a checkpoint into this (compiled) model; returns the epoch to continue from,
        to pass as ``fit(..., initial_epoch=...)`` (or the info dict with ``return_info``)."""
        return saving.load_checkpoint_into(self, path, return_info)


def _dense_chain(inputs, outputs, nodes):
    """The layers of a graph that is one chain of Dense calls from its one input to its one
    output (each call on the previous call's output), or None."""
    if len(inputs) != 1 or len(outputs) != 1 or not nodes:
        return None
    t = inputs[0]
    for node in nodes:
        if (node.many or type(node.layer) is not Dense or len(node.inputs) != 1
                or node.inputs[0] is not t or len(node.outputs) != 1):
            return None
        t = node.outputs[0]
    return tuple(node.layer for node in nodes) if t is outputs[0] else None


def _record_chain(x, layers):
    return F.linear.rule.record_chain(x, layers)


def _topological(outputs):
    """The call nodes needed for ``outputs``, each after the nodes it reads, and the distinct
    layers in the order they are first reached (a depth-first walk, inputs in order: for a
    chain that is Input, layer 1, layer 2, ...). Iterative, so deep graphs need no
    recursion."""
    nodes, layers = [], []
    seen_nodes, seen_layers = set(), set()

    def add_layer(layer):
        if id(layer) not in seen_layers:
            seen_layers.add(id(layer))
            layers.append(layer)

    stack = [(t, False) for t in reversed(outputs)]
    while stack:
        t, expanded = stack.pop()
        node = t.node
        if node is None:
            add_layer(t.layer)
            continue
        if expanded:
            nodes.append(node)
            add_layer(node.layer)
            continue
        if id(node) in seen_nodes:
            continue
        seen_nodes.add(id(node))
        stack.append((t, True))
        for s in reversed(node.inputs):
            stack.append((s, False))
    return nodes, layers


layers_base.register(Model)
