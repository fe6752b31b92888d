"""Dense, Flatten, activation layers, Dropout and the residual Add."""

import numpy as np

import nnkern.functional as F

from .base import (
    Layer,
    activation_backward,
    activation_forward,
    check_activation,
    register,
)


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

    def forward(self, x, training=False):
        # x (N, in), w (out, in) -> (N, out)
        w, b = self.params["w"], self.params.get("b")
        fused = "relu" if self.activation == "relu" else None
        z = F.linear(x, w, b, activation=fused)
        y = z if self.activation in (None, "relu") else activation_forward(self.activation, z)
        self._cache = (x, z, y)
        return y

    def backward(self, grad):
        x, z, y = self._cache
        w, b = self.params["w"], self.params.get("b")
        if self.activation == "relu":
            dx, dw, db = F.linear_backward(grad, x, w, b, activation="relu", out=y)
        else:
            dz = activation_backward(self.activation, grad, z, y)
            dx, dw, db = F.linear_backward(dz, x, w, b)
        self.accumulate("w", dw)
        if b is not None:
            self.accumulate("b", db)
        return dx

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

    def forward(self, x, training=False):
        self._shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, grad):
        return grad.reshape(self._shape)


class _Activation(Layer):
    """An activation as a layer (the same code as ``activation=`` on Dense/Conv2D)."""

    activation = None

    def forward(self, x, training=False):
        y = activation_forward(self.activation, x)
        self._cache = (x, y)
        return y

    def backward(self, grad):
        x, y = self._cache
        return activation_backward(self.activation, grad, x, y)


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
class Dropout(Layer):
    """Inverted dropout: in training zero each element with probability ``rate`` and scale
    the rest by 1 / (1 - rate); identity in evaluation.

    Each training step draws a fresh mask seed from the layer's own seed and a
    step counter, so a run is reproducible (and a resumed run continues the
    same sequence: the counter is saved with the weights).

    >>> head = [Flatten(), Dropout(0.5), Dense(10)]
    """

    def __init__(self, rate, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= float(rate) < 1.0:
            raise ValueError(f"Dropout rate must be in [0, 1), got {rate}")
        self.rate = float(rate)
        self.steps = 0

    def forward(self, x, training=False):
        self._active = bool(training) and self.rate > 0.0
        if not self._active:
            return x
        self._step_seed = int(
            np.random.default_rng([self.seed or 0, self.steps]).integers(0, 2**31 - 1)
        )
        self.steps += 1
        self._x = x
        return F.dropout(x, self.rate, training=True, seed=self._step_seed)

    def backward(self, grad):
        if not self._active:
            return grad
        return F.dropout_backward(grad, self._x, self.rate, training=True, seed=self._step_seed)

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

    def forward(self, xs, training=False):
        self._count = len(xs)
        y = xs[0] + xs[1]
        for x in xs[2:]:
            y += x
        return y

    def backward(self, grad):
        return [grad] * self._count
