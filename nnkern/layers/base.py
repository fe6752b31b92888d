"""The Layer protocol, the symbolic tensors of the functional API, and initialisers.

Every layer is a module (Keras's names, PyTorch's semantics):

* ``build(input_shape)`` creates the weights for a per-sample input shape
  (the batch axis is left out: ``(C, H, W)`` for images, ``(features,)``
  for vectors); ``compute_output_shape(input_shape)`` infers the output
  shape without running anything, so ``summary()`` needs no dummy pass;
* ``call(x, training)`` computes the output from a batch of ``nnkern.Tensor``
  by calling ``nnkern.functional``; every op records itself on the autograd
  tape, so a layer caches nothing and has no backward method of its own;
* calling the layer, ``layer(x)``, on a Tensor returns a Tensor on the tape;
  on an array it returns an array (nothing recorded); on a symbolic tensor of
  the functional API it adds a node to the graph. The same layer called twice
  shares its weights, and both calls contribute gradients;
* ``variables`` maps a weight name to its ``Parameter`` (a leaf Tensor);
  ``params`` / ``grads`` give their arrays (inside a model, views into one flat
  buffer per dtype); ``state`` holds non-trainable buffers such as batch-norm
  running statistics;
* ``trainable = False`` freezes the layer: its weights get no gradient and
  no optimizer update.

Images are NCHW (batch, channels, height, width). Layers call
``nnkern.functional`` only and never look at the device.
"""

import math
import re

import numpy as np

import nnkern.functional as F
from nnkern.autograd import Parameter, Tensor, no_grad
from nnkern.interop import as_array

_REGISTRY = {}
_NAME_COUNTS = {}


def register(cls):
    """Class decorator: make a layer class loadable from a saved architecture."""
    _REGISTRY[cls.__name__] = cls
    return cls


def layer_class(name):
    """The layer class registered under ``name`` (used by ``load_model``)."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown layer class {name!r} in a saved architecture; known: {sorted(_REGISTRY)}"
        ) from None


def _snake(name):
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def unique_name(prefix):
    """``dense``, ``dense_1``, ``dense_2``, ... (one counter per prefix, as in Keras)."""
    count = _NAME_COUNTS.get(prefix, 0)
    _NAME_COUNTS[prefix] = count + 1
    return prefix if count == 0 else f"{prefix}_{count}"


# ---------------------------------------------------------------------------------------------
# initialisers: seeded, computed on the host in float64 and cast to the layer's dtype


def initialize(kind, shape, fan_in, fan_out, rng):
    """Draw a weight tensor of ``shape`` by a named scheme.

    ``glorot_uniform`` (Keras's default): U(-a, a), a = sqrt(6 / (fan_in + fan_out));
    ``glorot_normal``: N(0, 2 / (fan_in + fan_out)); ``he_uniform``: U(-a, a),
    a = sqrt(6 / fan_in); ``he_normal``: N(0, 2 / fan_in); ``zeros``; ``ones``.
    """
    if kind == "glorot_uniform":
        limit = math.sqrt(6.0 / (fan_in + fan_out))
        return rng.uniform(-limit, limit, shape)
    if kind == "glorot_normal":
        return rng.standard_normal(shape) * math.sqrt(2.0 / (fan_in + fan_out))
    if kind == "he_uniform":
        limit = math.sqrt(6.0 / fan_in)
        return rng.uniform(-limit, limit, shape)
    if kind == "he_normal":
        return rng.standard_normal(shape) * math.sqrt(2.0 / fan_in)
    if kind == "zeros":
        return np.zeros(shape)
    if kind == "ones":
        return np.ones(shape)
    raise ValueError(
        f"initializer must be one of glorot_uniform, glorot_normal, he_uniform, he_normal, "
        f"zeros, ones; got {kind!r}"
    )


# ---------------------------------------------------------------------------------------------
# activations shared by the activation layers and the `activation=` argument of Dense/Conv2D

ACTIVATIONS = (None, "linear", "relu", "sigmoid", "tanh", "softmax")


def check_activation(activation):
    """Normalise an activation name (``None`` and ``"linear"`` mean identity)."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    return None if activation == "linear" else activation


def apply_activation(activation, z):
    """y = activation(z) through ``F`` (recorded on Tensors); the softmax runs over axis 1
    (classes / channels)."""
    if activation is None:
        return z
    if activation == "softmax":
        return F.softmax(z, axis=1)
    return getattr(F, activation)(z)


# ---------------------------------------------------------------------------------------------
# NCHW checks: Keras users pass channels-last images; say so instead of failing deep inside.
# The hint looks at the model's input images only (the shape an Input declares, where a
# layer that takes images reads it, and the data given to fit/predict): an inner feature
# map such as (16, 8, 3) is valid NCHW, however it looks.


def looks_channels_last(shape):
    """True when a per-sample (C, H, W) shape is more likely (H, W, C)."""
    return len(shape) == 3 and shape[-1] in (1, 3, 4) and shape[0] > 4 and shape[1] > 4


def require_image_shape(layer, shape):
    """Check a per-sample input shape is (C, H, W) (three dimensions)."""
    shape = tuple(shape)
    if len(shape) != 3:
        raise ValueError(
            f"{layer.name} ({type(layer).__name__}) expects images laid out NCHW, i.e. a "
            f"per-sample shape (channels, height, width); got per-sample shape {shape}"
        )
    return shape


def check_input_layout(layer, shape):
    """Refuse a model input image shape that looks channels-last, with the fix."""
    shape = tuple(shape)
    if looks_channels_last(shape):
        h, w, c = shape
        raise ValueError(
            f"{layer.name} ({type(layer).__name__}) expects NCHW input (channels, height, "
            f"width) per sample, got {shape}, which looks channels-last (height, width, "
            f"channels); nnkern is NCHW: transpose the data with x.transpose(0, 3, 1, 2) and "
            f"declare Input(({c}, {h}, {w})) (or, if {shape} really is NCHW, "
            f"Input({shape}, check_layout=False))"
        )
    return shape


# ---------------------------------------------------------------------------------------------
# symbolic tensors: what a layer returns when called on an Input in the functional API


class CallNode:
    """One call of a layer in a functional graph: the layer, the symbolic tensors it was
    called on (a list when ``many``, e.g. Add), and the symbolic tensors it returned."""

    def __init__(self, layer, inputs, many):
        self.layer = layer
        self.inputs = list(inputs)
        self.many = bool(many)
        self.outputs = []

    def __repr__(self):
        return f"<CallNode {self.layer.name} on {len(self.inputs)} input(s)>"


class SymbolicTensor:
    """The future output of a layer call in a functional graph: a shape, a dtype and the
    call that makes it.

    ``shape`` includes the batch axis as ``None`` (Keras style); ``node`` is the
    ``CallNode`` that produces it (``None`` for a model input) and ``index`` which of that
    call's outputs it is.
    """

    def __init__(self, shape, dtype, layer, node=None, index=0):
        self.sample_shape = tuple(shape)
        self.shape = (None,) + self.sample_shape
        self.dtype = np.dtype(dtype)
        self.layer = layer
        self.node = node
        self.index = index

    @property
    def inputs(self):
        """The symbolic tensors the producing call read (empty for a model input)."""
        return [] if self.node is None else self.node.inputs

    def __repr__(self):
        return f"<SymbolicTensor shape={self.shape} dtype={self.dtype} from {self.layer.name}>"


def as_symbolic(value):
    """An Input layer stands for its output tensor; anything else passes through."""
    if isinstance(value, Input):
        return value.output
    return value


# ---------------------------------------------------------------------------------------------


def _as_tensor(value, name):
    """A layer's input as a Tensor: arrays of any library are converted once, without a
    copy (``nnkern.interop.as_array``); anything else is a TypeError naming what came."""
    if isinstance(value, Tensor):
        return value
    return Tensor(as_array(value, name))


class Layer:
    """Base class of every layer. See the module docstring for the protocol.

    Subclasses create weights in ``build`` with ``add_weight``/``add_state`` and
    implement ``call``, ``compute_output_shape`` and ``get_config``:

    >>> class Scale(Layer):
    ...     def build(self, input_shape):
    ...         self.add_weight("s", input_shape, "ones")
    ...     def call(self, x, training=False):
    ...         return x * self.variables["s"]
    """

    takes_images = False  # NCHW images in: the channels-last hint checks a model input

    def __init__(self, name=None, trainable=True, dtype=None, seed=None, input_shape=None):
        self.name = name or unique_name(_snake(type(self).__name__))
        # Keras 2 style `Dense(128, input_shape=(784,))` as the first layer of a Sequential
        self.declared_input_shape = None if input_shape is None else tuple(input_shape)
        self._trainable = bool(trainable)
        self.dtype = None if dtype is None else np.dtype(dtype)
        self.seed = seed
        self.built = False
        self.input_shape = None
        self.output_shape = None
        self.variables = {}
        self.state = {}
        self.call_nodes = []  # the calls of this layer in functional graphs

    # --- weights -------------------------------------------------------------------------------

    @property
    def trainable(self):
        """Whether the weights get gradients and optimizer updates."""
        return self._trainable

    @trainable.setter
    def trainable(self, value):
        self._trainable = bool(value)
        for p in self.variables.values():
            p.requires_grad = self._trainable
            if not self._trainable:
                p.grad = None

    @property
    def params(self):
        """The weight arrays by name (inside a model, views into its flat buffer)."""
        return {name: p.data for name, p in self.variables.items()}

    @property
    def grads(self):
        """The gradient arrays by name, for the weights that have one."""
        return {name: p.grad for name, p in self.variables.items() if p.grad is not None}

    # --- construction --------------------------------------------------------------------

    def build(self, input_shape):
        """Create the weights for a per-sample ``input_shape``. Layers without weights only
        record the shapes."""

    def _build(self, input_shape, dtype, seed):
        """Build once with a dtype and a seed (the model supplies both)."""
        if self.built:
            return
        if self.dtype is None:
            self.dtype = np.dtype(dtype)
        if self.seed is None:
            self.seed = int(seed)
        self._rng = np.random.default_rng(self.seed)
        self.build(input_shape)
        self.input_shape = input_shape
        self.output_shape = self.compute_output_shape(input_shape)
        self.built = True

    def add_weight(self, name, shape, initializer, fan_in=1, fan_out=1):
        """Create a trainable weight drawn by ``initializer`` (host array of the layer dtype);
        returns its ``Parameter``."""
        value = initialize(initializer, tuple(shape), fan_in, fan_out, self._rng)
        param = Parameter(np.ascontiguousarray(value, dtype=self.dtype), self.trainable)
        self.variables[name] = param
        return param

    def add_state(self, name, value):
        """Create a non-trainable buffer (e.g. a running mean), updated by the layer itself."""
        self.state[name] = np.ascontiguousarray(value, dtype=self.dtype)
        return self.state[name]

    def compute_output_shape(self, input_shape):
        """The per-sample output shape for a per-sample input shape."""
        return tuple(input_shape)

    def fits(self, input_shape):
        """Whether the built weights fit a call on ``input_shape`` (a shared layer's later
        calls): layers without weights take any shape, others the one they were built for."""
        return not self.variables or _same_shapes(input_shape, self.input_shape)

    def get_config(self):
        """The constructor arguments as JSON-able values (saved in the architecture)."""
        return {
            "name": self.name,
            "trainable": self.trainable,
            "dtype": None if self.dtype is None else self.dtype.name,
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    # --- running -------------------------------------------------------------------------

    def call(self, inputs, training=False):
        """The layer's computation on Tensors (a list of them for multi-input layers)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement call()")

    def count_params(self):
        """(trainable, non-trainable) scalar counts of this layer's weights and buffers."""
        n_params = sum(int(np.prod(p.shape)) for p in self.variables.values())
        n_state = sum(int(np.prod(s.shape)) for s in self.state.values())
        if self.trainable:
            return n_params, n_state
        return 0, n_params + n_state

    @property
    def output(self):
        """The symbolic output of this layer's one call in a functional graph."""
        if len(self.call_nodes) != 1:
            raise AttributeError(
                f"layer {self.name!r} has been called {len(self.call_nodes)} times in "
                f"functional graphs; use the tensor each call returned"
            )
        outputs = self.call_nodes[0].outputs
        return outputs[0] if len(outputs) == 1 else list(outputs)

    def num_outputs(self):
        """How many tensors one call returns (models may return several)."""
        return 1

    def __call__(self, inputs, training=None):
        """On symbolic tensors, add a call to the functional graph and return its output
        tensor(s); on Tensors, run ``call`` (recorded on the tape) and return Tensors; on
        arrays, run without recording and return arrays."""
        many = isinstance(inputs, (list, tuple))
        items = [as_symbolic(v) for v in (inputs if many else [inputs])]
        symbolic = [isinstance(v, SymbolicTensor) for v in items]
        if all(symbolic):
            return self._call_symbolic(items, many)
        if any(symbolic):
            raise TypeError(f"{self.name}: cannot mix symbolic tensors and arrays in one call")
        training = bool(training)
        tensors = [_as_tensor(v, f"{self.name} input") for v in items]
        if any(isinstance(v, Tensor) for v in items):
            self._ensure_built(tensors, many)
            return self.call(tensors if many else tensors[0], training=training)
        self._ensure_built(tensors, many)
        with no_grad():
            out = self.call(tensors if many else tensors[0], training=training)
        return _arrays_of(out)

    def _ensure_built(self, tensors, many):
        if not self.built:
            shapes = [tuple(t.shape[1:]) for t in tensors]
            self._build(shapes if many else shapes[0], tensors[0].dtype, 0)

    def _call_symbolic(self, items, many):
        if self.takes_images:
            for v in items:  # a model input image, not an inner feature map
                if v.node is None and isinstance(v.layer, Input) and v.layer.check_layout:
                    check_input_layout(self, v.sample_shape)
        shapes = [v.sample_shape for v in items]
        out_shape = self.compute_output_shape(shapes if many else shapes[0])
        node = CallNode(self, items, many)
        dtype = self.dtype or items[0].dtype
        shapes_out = out_shape if self.num_outputs() > 1 else [out_shape]
        node.outputs = [SymbolicTensor(shape, dtype, self, node, i)
                        for i, shape in enumerate(shapes_out)]
        self.call_nodes.append(node)
        return node.outputs[0] if len(node.outputs) == 1 else list(node.outputs)

    def __repr__(self):
        return f"<{type(self).__name__} name={self.name!r} built={self.built}>"


def _same_shapes(a, b):
    if isinstance(a, list) or isinstance(b, list):
        return [tuple(x) for x in a] == [tuple(x) for x in b]
    return tuple(a) == tuple(b)


def _arrays_of(value):
    if isinstance(value, Tensor):
        return value.data
    if isinstance(value, (list, tuple)):
        return type(value)(_arrays_of(v) for v in value)
    return value


@register
class Input(Layer):
    """The model's input: a per-sample shape (the batch axis is left out) and a dtype.

    Images are NCHW, so a batch of 8x8 grey images is ``Input((1, 8, 8))``.
    In the functional API an Input stands for its tensor:

    >>> inp = Input((16,))
    >>> inp.output.shape
    (None, 16)

    ``dtype="float64"`` makes the whole model float64 (used by gradient checks).
    A layer that takes images refuses an input shape that looks channels-last, such as
    ``(28, 28, 3)``, and says how to transpose; ``check_layout=False`` accepts it as NCHW.
    """

    def __init__(self, shape, dtype="float32", name=None, check_layout=True, **kwargs):
        kwargs.pop("trainable", None)
        kwargs.pop("seed", None)
        super().__init__(name=name or unique_name("input_layer"), dtype=dtype)
        if isinstance(shape, (int, np.integer)):
            shape = (int(shape),)
        shape = tuple(int(s) for s in shape)
        if not shape or min(shape) < 1:
            raise ValueError(f"Input shape must be a non-empty tuple of positive ints, got {shape}")
        if self.dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise TypeError(f"Input dtype must be float32 or float64, got {self.dtype}")
        self.shape = shape
        self.check_layout = bool(check_layout)
        self.input_shape = self.output_shape = shape
        self.built = True
        self._tensor = SymbolicTensor(shape, self.dtype, self)

    @property
    def output(self):
        return self._tensor

    def get_config(self):
        config = {"shape": list(self.shape), "dtype": self.dtype.name, "name": self.name}
        if not self.check_layout:
            config["check_layout"] = False
        return config

    def compute_output_shape(self, input_shape):
        return self.shape

    def call(self, x, training=False):
        return x
