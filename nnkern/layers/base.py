"""The Layer protocol, the symbolic tensors of the functional API, and initialisers.

Every layer follows one protocol (Caffe's one-interface-per-layer, Keras's names):

* ``build(input_shape)`` creates the weights for a per-sample input shape
  (the batch axis is left out: ``(C, H, W)`` for images, ``(features,)``
  for vectors); ``compute_output_shape(input_shape)`` infers the output
  shape without running anything, so ``summary()`` needs no dummy pass;
* ``forward(x, training)`` computes the output from a batch and keeps what
  the backward pass needs; ``backward(grad)`` takes the gradient of the
  output, ADDS the parameter gradients into ``grads`` (they accumulate until
  ``zero_grad``) and returns the gradient of the input;
* ``params`` / ``grads`` map a weight name to its array (inside a model they
  are views into one flat buffer per dtype); ``state`` holds non-trainable
  buffers such as batch-norm running statistics;
* ``trainable = False`` freezes the layer: its weights get no gradient and
  no optimizer update.

Images are NCHW (batch, channels, height, width). Layers call
``nnkern.functional`` only and never look at the device.
"""

import math
import re

import numpy as np

import nnkern.functional as F

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


def activation_forward(activation, z):
    """y = activation(z); the softmax runs over axis 1 (classes / channels)."""
    if activation is None:
        return z
    if activation == "softmax":
        return F.softmax(z, axis=1)
    return getattr(F, activation)(z)


def activation_backward(activation, grad, z, y):
    """dz from dy for y = activation(z)."""
    if activation is None:
        return grad
    if activation == "relu":
        return F.relu_backward(grad, z)
    if activation == "softmax":
        return F.softmax_backward(grad, z, axis=1, out=y)
    return getattr(F, activation + "_backward")(grad, z, out=y)


# ---------------------------------------------------------------------------------------------
# NCHW checks: Keras users pass channels-last images; say so instead of failing deep inside


def looks_channels_last(shape):
    """True when a per-sample (C, H, W) shape is more likely (H, W, C)."""
    return len(shape) == 3 and shape[-1] in (1, 3, 4) and shape[0] > 4 and shape[1] > 4


def require_image_shape(layer, shape):
    """Check a per-sample input shape is (C, H, W); explain NCHW when it looks channels-last."""
    shape = tuple(shape)
    if len(shape) != 3:
        raise ValueError(
            f"{layer.name} ({type(layer).__name__}) expects images laid out NCHW, i.e. a "
            f"per-sample shape (channels, height, width); got per-sample shape {shape}"
        )
    if looks_channels_last(shape):
        h, w, c = shape
        raise ValueError(
            f"{layer.name} ({type(layer).__name__}) expects NCHW input (channels, height, "
            f"width) per sample, got {shape}, which looks channels-last (height, width, "
            f"channels); nnkern is NCHW: transpose the data with x.transpose(0, 3, 1, 2) and "
            f"declare Input(({c}, {h}, {w}))"
        )
    return shape


# ---------------------------------------------------------------------------------------------
# symbolic tensors: what a layer returns when called on an Input in the functional API


class SymbolicTensor:
    """The future output of a layer in a functional graph: a shape, a dtype, and its origin.

    ``shape`` includes the batch axis as ``None`` (Keras style); ``layer`` made it from
    ``inputs`` (a list of SymbolicTensor), given to it as a list when ``many`` (Add).
    """

    def __init__(self, shape, dtype, layer, inputs, many=False):
        self.sample_shape = tuple(shape)
        self.shape = (None,) + self.sample_shape
        self.dtype = np.dtype(dtype)
        self.layer = layer
        self.inputs = list(inputs)
        self.many = bool(many)

    def __repr__(self):
        return f"<SymbolicTensor shape={self.shape} dtype={self.dtype} from {self.layer.name}>"


def as_symbolic(value):
    """An Input layer stands for its output tensor; anything else passes through."""
    if isinstance(value, Input):
        return value.output
    return value


# ---------------------------------------------------------------------------------------------


class Layer:
    """Base class of every layer. See the module docstring for the protocol.

    Subclasses set ``self.params`` (trainable weights), ``self.state``
    (non-trainable buffers) in ``build`` through ``add_weight``/``add_state``,
    and implement ``forward``, ``backward``, ``compute_output_shape`` and
    ``get_config``.
    """

    def __init__(self, name=None, trainable=True, dtype=None, seed=None, input_shape=None):
        self.name = name or unique_name(_snake(type(self).__name__))
        # Keras 2 style `Dense(128, input_shape=(784,))` as the first layer of a Sequential
        self.declared_input_shape = None if input_shape is None else tuple(input_shape)
        self.trainable = bool(trainable)
        self.dtype = None if dtype is None else np.dtype(dtype)
        self.seed = seed
        self.built = False
        self.input_shape = None
        self.output_shape = None
        self.params = {}
        self.grads = {}
        self.state = {}
        self.inbound = None  # list of SymbolicTensor once called in a functional graph
        self.output = None  # the SymbolicTensor this layer produces in its model's graph

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
        """Create a trainable weight drawn by ``initializer`` (host array of the layer dtype)."""
        value = initialize(initializer, tuple(shape), fan_in, fan_out, self._rng)
        self.params[name] = np.ascontiguousarray(value, dtype=self.dtype)
        return self.params[name]

    def add_state(self, name, value):
        """Create a non-trainable buffer (e.g. a running mean), updated by the layer itself."""
        self.state[name] = np.ascontiguousarray(value, dtype=self.dtype)
        return self.state[name]

    def compute_output_shape(self, input_shape):
        """The per-sample output shape for a per-sample input shape."""
        return tuple(input_shape)

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

    def forward(self, x, training=False):
        raise NotImplementedError

    def backward(self, grad):
        raise NotImplementedError

    def accumulate(self, name, value):
        """Add a parameter gradient into ``grads[name]`` (no-op for a frozen layer)."""
        if self.trainable and name in self.grads:
            self.grads[name] += value

    def count_params(self):
        """(trainable, non-trainable) scalar counts of this layer's weights and buffers."""
        n_params = sum(int(np.prod(p.shape)) for p in self.params.values())
        n_state = sum(int(np.prod(s.shape)) for s in self.state.values())
        if self.trainable:
            return n_params, n_state
        return 0, n_params + n_state

    def __call__(self, inputs, training=False):
        """Functional API: on symbolic tensors, record the edge and return the output tensor.
        On arrays, run ``forward`` eagerly (building first when needed)."""
        many = isinstance(inputs, (list, tuple))
        items = [as_symbolic(v) for v in (inputs if many else [inputs])]
        if all(isinstance(v, SymbolicTensor) for v in items):
            if self.inbound is not None:
                raise ValueError(
                    f"layer {self.name!r} is already used in a graph; nnkern does not share a "
                    f"layer between two call sites: create a second layer"
                )
            shapes = [v.sample_shape for v in items]
            out_shape = self.compute_output_shape(shapes if many else shapes[0])
            self.inbound = items
            dtype = self.dtype or items[0].dtype
            self.output = SymbolicTensor(out_shape, dtype, self, items, many)
            return self.output
        if any(isinstance(v, SymbolicTensor) for v in items):
            raise TypeError(f"{self.name}: cannot mix symbolic tensors and arrays in one call")
        if not self.built:
            shapes = [tuple(v.shape[1:]) for v in items]
            self._build(shapes if many else shapes[0], items[0].dtype, 0)
        return self.forward(list(items) if many else items[0], training=training)

    def __repr__(self):
        return f"<{type(self).__name__} name={self.name!r} built={self.built}>"


@register
class Input(Layer):
    """The model's input: a per-sample shape (the batch axis is left out) and a dtype.

    Images are NCHW, so a batch of 8x8 grey images is ``Input((1, 8, 8))``.
    In the functional API an Input stands for its tensor:

    >>> inp = Input((16,))
    >>> inp.output.shape
    (None, 16)

    ``dtype="float64"`` makes the whole model float64 (used by gradient checks).
    """

    def __init__(self, shape, dtype="float32", name=None, **kwargs):
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
        self.output = SymbolicTensor(shape, self.dtype, self, [])
        self.inbound = []

    def get_config(self):
        return {"shape": list(self.shape), "dtype": self.dtype.name, "name": self.name}

    def compute_output_shape(self, input_shape):
        return self.shape

    def forward(self, x, training=False):
        return x

    def backward(self, grad):
        return grad
