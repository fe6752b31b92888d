"""Dense, Flatten, activation layers, Dropout and the residual Add."""

import numpy as np

import nnkern.functional as F
from nnkern import distributed
from nnkern.autograd import Tensor, no_grad

from .base import Layer, apply_activation, check_activation, register


@register
class Dense(Layer):
    """Fully connected layer: y = activation(x @ w.T + b), x (N, in), w (out, in), b (out,).

    >>> layer = Dense(10, activation="relu")

    ``activation="relu"`` is fused into the GEMM epilogue. The input must be
    2-D; put a ``Flatten()`` before a Dense that follows a conv or pool layer.
    """

    def __init__(self, units, activation=None, use_bias=True,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        if int(units) < 1:
            raise ValueError(f"Dense units must be >= 1, got {units}")
        self.units = int(units)
        self.activation = check_activation(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = kernel_initializer
        self.bias_initializer = bias_initializer

    def build(self, input_shape):
        if len(input_shape) != 1:
            raise ValueError(
                f"{self.name} (Dense) expects a per-sample shape (features,), got "
                f"{tuple(input_shape)}; add a Flatten() layer before it"
            )
        n_in = input_shape[0]
        self.add_weight("w", (self.units, n_in), self.kernel_initializer, n_in, self.units)
        if self.use_bias:
            self.add_weight("b", (self.units,), self.bias_initializer, n_in, self.units)

    def compute_output_shape(self, input_shape):
        return (self.units,)

    def call(self, x, training=False):
        # x (N, in), w (out, in) -> (N, out)
        w, b = self.variables["w"], self.variables.get("b")
        fused = "relu" if self.activation == "relu" else None
        z = F.linear(x, w, b, activation=fused)
        return z if self.activation in (None, "relu") else apply_activation(self.activation, z)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "activation": self.activation,
                "use_bias": self.use_bias, "kernel_initializer": self.kernel_initializer,
                "bias_initializer": self.bias_initializer}


@register
class Flatten(Layer):
    """(N, C, H, W) -> (N, C*H*W), a reshape (no copy for a contiguous input).

    >>> Flatten().compute_output_shape((6, 4, 4))
    (96,)
    """

    def compute_output_shape(self, input_shape):
        return (int(np.prod(input_shape)),)

    def call(self, x, training=False):
        return x.reshape(x.shape[0], -1)


class _Activation(Layer):
    """An activation as a layer (the same code as ``activation=`` on Dense/Conv2D)."""

    activation = None

    def call(self, x, training=False):
        return apply_activation(self.activation, x)


@register
class ReLU(_Activation):
    """y = max(x, 0), element-wise (the same as ``activation="relu"`` on the layer before).

    >>> import numpy as np
    >>> ReLU()(np.array([[-1.0, 2.0]]))
    array([[0., 2.]])
    """

    activation = "relu"


@register
class Sigmoid(_Activation):
    """y = 1 / (1 + exp(-x)), element-wise."""

    activation = "sigmoid"


@register
class Tanh(_Activation):
    """y = tanh(x), element-wise."""

    activation = "tanh"


@register
class Softmax(_Activation):
    """Softmax over axis 1 (the class axis of (N, C) logits). Do not put it before a
    cross-entropy loss: the losses take logits and apply the softmax themselves."""

    activation = "softmax"


@register
class Activation(_Activation):
    """Keras's ``Activation(name)``: ``"relu"``, ``"sigmoid"``, ``"tanh"``, ``"softmax"``
    (over axis 1) or ``"linear"`` as a layer.

    >>> import numpy as np
    >>> Activation("relu")(np.array([[-1.0, 2.0]]))
    array([[0., 2.]])
    """

    def __init__(self, activation, **kwargs):
        super().__init__(**kwargs)
        self.activation = check_activation(activation)

    def get_config(self):
        return {**super().get_config(), "activation": self.activation}


@register
class Dropout(Layer):
    """Inverted dropout: in training zero each element with probability ``rate`` and scale
    the rest by 1 / (1 - rate); identity in evaluation.

    Each training step draws a fresh mask seed from the layer's own seed and a
    step counter, so a run is reproducible (and a resumed run continues the
    same sequence: the counter is saved with the weights). In data-parallel
    training each rank adds its rank to the seed, so the ranks' masks differ.

    >>> head = [Flatten(), Dropout(0.5), Dense(10)]
    """

    def __init__(self, rate, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= float(rate) < 1.0:
            raise ValueError(f"Dropout rate must be in [0, 1), got {rate}")
        self.rate = float(rate)
        self.steps = 0

    def call(self, x, training=False):
        if not training or self.rate == 0.0:
            return x
        key = [self.seed or 0, self.steps, *distributed.seed_stream()]  # + rank, data-parallel
        step_seed = int(np.random.default_rng(key).integers(0, 2**31 - 1))
        self.steps += 1
        return F.dropout(x, self.rate, training=True, seed=step_seed)

    def get_config(self):
        return {**super().get_config(), "rate": self.rate}


@register
class Add(Layer):
    """Element-wise sum of two or more tensors of one shape (residual connections).

    >>> from nnkern.layers import Input, Dense
    >>> inp = Input((8,)); h = Dense(8)(inp)
    >>> out = Add()([h, inp])
    """

    def compute_output_shape(self, input_shape):
        if not (isinstance(input_shape, (list, tuple)) and len(input_shape) >= 2
                and all(isinstance(s, (list, tuple)) for s in input_shape)):
            raise ValueError(f"{self.name} (Add) takes a list of two or more tensors, got "
                             f"per-sample shape(s) {input_shape}")
        shapes = [tuple(s) for s in input_shape]
        if any(s != shapes[0] for s in shapes):
            raise ValueError(
                f"{self.name} (Add) needs inputs of one shape, got {[(None,) + s for s in shapes]}"
            )
        return shapes[0]

    def call(self, xs, training=False):
        y = xs[0] + xs[1]
        for x in xs[2:]:
            y = y + x
        return y


@register
class Lambda(Layer):
    """A layer made of a function of Tensors built from nnkern ops, e.g. the distance of a
    Siamese pair:

    >>> from nnkern.layers import Input
    >>> a, b = Input((16,)), Input((16,))
    >>> distance = Lambda(lambda t: ((t[0] - t[1]) ** 2).sum(axis=1, keepdims=True))([a, b])
    >>> distance.shape
    (None, 1)

    The output shape is found by running the function once on a batch of zeros. The
    function is Python code, which model files never store: rebuild such a model in
    Python and load its weights with ``load_weights``.
    """

    def __init__(self, function, **kwargs):
        super().__init__(**kwargs)
        if not callable(function):
            raise TypeError(f"Lambda takes a function, got {type(function).__name__}")
        self.function = function

    def compute_output_shape(self, input_shape):
        from nnkern.autograd import tensor
        from nnkern.device import device

        many = isinstance(input_shape, list)
        shapes = input_shape if many else [input_shape]
        with no_grad(), device("numpy"):
            probe = [tensor(np.zeros((1,) + tuple(s), np.float32)) for s in shapes]
            out = self.function(probe if many else probe[0])
        if not isinstance(out, Tensor):
            raise TypeError(f"{self.name} (Lambda): the function must return an nnkern.Tensor, "
                            f"got {type(out).__name__}")
        return tuple(out.shape[1:])

    def call(self, inputs, training=False):
        return self.function(inputs)

    def get_config(self):
        return {**super().get_config(), "function": getattr(self.function, "__name__", "lambda")}

    @classmethod
    def from_config(cls, config):
        raise ValueError(
            f"layer {config.get('name')!r} is a Lambda of the function "
            f"{config.get('function')!r}, which model files do not store (never code); "
            f"rebuild the model in Python and load its weights with load_weights"
        )

