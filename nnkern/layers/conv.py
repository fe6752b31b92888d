"""Conv2D and the pooling layers (max, average, blur, max-blur). All NCHW."""

import nnkern.functional as F
from nnkern.functional._checks import int_pair

from .base import Layer, apply_activation, check_activation, register, require_image_shape


def _alias(kwargs, torch_name, keras_name, value, default):
    """Accept PyTorch's argument name (``stride``) next to Keras's (``strides``)."""
    if torch_name not in kwargs:
        return value
    other = kwargs.pop(torch_name)
    if value != default:
        raise TypeError(f"give {keras_name}= or {torch_name}=, not both")
    return other


def _pair_config(value):
    return list(value) if isinstance(value, tuple) else value


@register
class Conv2D(Layer):
    """2-D convolution over NCHW images: (N, C, H, W) -> (N, filters, OH, OW).

    Weights are (filters, C/groups, kh, kw), as in PyTorch. ``padding`` is an
    int, an (h, w) pair, ``"valid"`` (no padding) or ``"same"`` (output size =
    input size; stride 1 only). ``strides``/``dilation_rate`` (Keras names) may
    also be given as ``stride``/``dilation`` (PyTorch names).

    >>> conv = Conv2D(16, 3, padding="same", activation="relu")
    """

    takes_images = True

    def __init__(self, filters, kernel_size, strides=1, padding="valid", dilation_rate=1,
                 groups=1, activation=None, use_bias=True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", algo="auto", **kwargs):
        strides = _alias(kwargs, "stride", "strides", strides, 1)
        dilation_rate = _alias(kwargs, "dilation", "dilation_rate", dilation_rate, 1)
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.kernel_size = int_pair(kernel_size, f"{self.name}: kernel_size", 1)
        self.strides = int_pair(strides, f"{self.name}: strides", 1)
        self.dilation_rate = int_pair(dilation_rate, f"{self.name}: dilation_rate", 1)
        if isinstance(padding, str):
            padding = padding.lower()
            if padding not in ("same", "valid"):
                raise ValueError(f"padding must be an int, a pair, 'valid' or 'same', got {padding!r}")
            if padding == "same" and self.strides != (1, 1):
                raise ValueError(
                    f"{self.name}: padding='same' needs strides=1 (as in PyTorch), got "
                    f"strides={self.strides}; pass an explicit int padding instead"
                )
        else:
            padding = int_pair(padding, f"{self.name}: padding", 0)
        self.padding = padding
        self.groups = int(groups)
        if self.filters < 1 or self.groups < 1 or self.filters % self.groups:
            raise ValueError(
                f"{self.name}: filters ({filters}) must be >= 1 and divisible by groups ({groups})"
            )
        self.activation = check_activation(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = kernel_initializer
        self.bias_initializer = bias_initializer
        self.algo = algo

    def _args(self):
        return {"stride": self.strides, "padding": self.padding,
                "dilation": self.dilation_rate, "groups": self.groups, "algo": self.algo}

    def build(self, input_shape):
        C = require_image_shape(self, input_shape)[0]
        if C % self.groups:
            raise ValueError(f"{self.name}: groups={self.groups} must divide the input channels {C}")
        R, S = self.kernel_size
        # torch and Keras both count fan_out = K*R*S, whatever the groups
        fan_in = C // self.groups * R * S
        fan_out = self.filters * R * S
        self.add_weight("w", (self.filters, C // self.groups, R, S), self.kernel_initializer,
                        fan_in, fan_out)
        if self.use_bias:
            self.add_weight("b", (self.filters,), self.bias_initializer, fan_in, fan_out)

    def fits(self, input_shape):
        # any image size: only the channels must match the weights
        return len(input_shape) == 3 and input_shape[0] == self.input_shape[0]

    def compute_output_shape(self, input_shape):
        C, H, W = require_image_shape(self, input_shape)
        R, S = self.kernel_size
        _, K, OH, OW = F.conv2d_output_shape(
            (1, C, H, W), (self.filters, C // self.groups, R, S),
            self.strides, self.padding, self.dilation_rate,
        )
        if OH < 1 or OW < 1:
            raise ValueError(
                f"{self.name}: a {R}x{S} kernel (dilation {self.dilation_rate}) does not fit the "
                f"input {(C, H, W)} with padding {self.padding}"
            )
        return (K, OH, OW)

    def call(self, x, training=False):
        # x (N, C, H, W), w (K, C/groups, R, S) -> (N, K, OH, OW)
        z = F.conv2d(x, self.variables["w"], self.variables.get("b"), **self._args())
        return apply_activation(self.activation, z)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters,
                "kernel_size": list(self.kernel_size), "strides": list(self.strides),
                "padding": _pair_config(self.padding), "dilation_rate": list(self.dilation_rate),
                "groups": self.groups, "activation": self.activation, "use_bias": self.use_bias,
                "kernel_initializer": self.kernel_initializer,
                "bias_initializer": self.bias_initializer, "algo": self.algo}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("kernel_size", "strides", "dilation_rate", "padding"):
            if isinstance(config.get(key), list):
                config[key] = tuple(config[key])
        return cls(**config)


class _Pool(Layer):
    """Shared shape logic of the pooling layers: no weights, NCHW in and out."""

    op = None
    takes_images = True

    def _kwargs(self):
        raise NotImplementedError

    def compute_output_shape(self, input_shape):
        # the functional op's own shape rule and argument checks, so a layer that builds
        # also runs
        C, H, W = require_image_shape(self, input_shape)
        try:
            _, C, OH, OW = F.pool2d_output_shape(self.op, (1, C, H, W), **self._kwargs())
        except (TypeError, ValueError) as exc:
            raise ValueError(f"layer {self.name!r}: {exc} (layer input {(C, H, W)})") from exc
        return (C, OH, OW)

    def call(self, x, training=False):
        return getattr(F, self.op)(x, **self._kwargs())

    @classmethod
    def from_config(cls, config):
        config = {k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}
        return cls(**config)


def _pool_padding(padding, name):
    if isinstance(padding, str):
        if padding.lower() != "valid":
            raise ValueError(
                f"{name}: pooling padding must be 'valid' or an int/pair of ints, got {padding!r}"
            )
        return (0, 0)
    return int_pair(padding, f"{name}: padding", 0)


@register
class MaxPool2D(_Pool):
    """Max pooling; ``strides`` defaults to ``pool_size``. Overlapping windows work too
    (AlexNet's ``MaxPool2D(3, strides=2)``). The argmax is saved for the backward pass.
    PyTorch's names ``kernel_size``/``stride`` are accepted too.

    >>> MaxPool2D(3, strides=2).compute_output_shape((96, 55, 55))
    (96, 27, 27)
    """

    op = "max_pool2d"

    def __init__(self, pool_size=2, strides=None, padding="valid", **kwargs):
        strides = _alias(kwargs, "stride", "strides", strides, None)
        pool_size = _alias(kwargs, "kernel_size", "pool_size", pool_size, 2)
        super().__init__(**kwargs)
        self.pool_size = int_pair(pool_size, f"{self.name}: pool_size", 1)
        self.strides = self.pool_size if strides is None else int_pair(
            strides, f"{self.name}: strides", 1)
        self.padding = _pool_padding(padding, self.name)

    def _kwargs(self):
        return {"kernel_size": self.pool_size, "stride": self.strides, "padding": self.padding}

    def get_config(self):
        return {**super().get_config(), "pool_size": list(self.pool_size),
                "strides": list(self.strides), "padding": list(self.padding)}


@register
class AvgPool2D(MaxPool2D):
    """Average pooling (padding zeros count in the average, as PyTorch's default).

    >>> AvgPool2D(2).compute_output_shape((6, 28, 28))
    (6, 14, 14)
    """

    op = "avg_pool2d"


@register
class BlurPool2D(_Pool):
    """Anti-aliased downsampling (Zhang 2019): reflect-pad, blur each channel with a
    normalised binomial ``filt_size`` filter, keep every ``stride``-th pixel.
    (C, H, W) -> (C, ceil(H / stride), ceil(W / stride)).

    >>> BlurPool2D(filt_size=3, stride=2).compute_output_shape((8, 7, 7))
    (8, 4, 4)
    """

    op = "blur_pool2d"

    def __init__(self, filt_size=3, stride=2, **kwargs):
        super().__init__(**kwargs)
        self.filt_size = int(filt_size)
        self.stride = int_pair(stride, f"{self.name}: stride", 1)

    def _kwargs(self):
        return {"filt_size": self.filt_size, "stride": self.stride}

    def get_config(self):
        return {**super().get_config(), "filt_size": self.filt_size, "stride": list(self.stride)}


@register
class MaxBlurPool2D(_Pool):
    """MaxPool(stride 1) then BlurPool(stride): the shift-robust replacement of
    ``MaxPool2D(pool_size)`` from Zhang 2019.
    (C, H, W) -> (C, (H - k) // stride + 1, (W - k) // stride + 1) for pool_size k.

    >>> MaxBlurPool2D(2).compute_output_shape((6, 8, 8))  # as MaxPool2D(2)
    (6, 4, 4)
    """

    op = "max_blur_pool2d"

    def __init__(self, pool_size=2, filt_size=3, stride=2, **kwargs):
        pool_size = _alias(kwargs, "kernel_size", "pool_size", pool_size, 2)
        super().__init__(**kwargs)
        self.pool_size = int_pair(pool_size, f"{self.name}: pool_size", 1)
        self.filt_size = int(filt_size)
        self.stride = int_pair(stride, f"{self.name}: stride", 1)

    def _kwargs(self):
        return {"kernel_size": self.pool_size, "filt_size": self.filt_size,
                "stride": self.stride}

    def get_config(self):
        return {**super().get_config(), "pool_size": list(self.pool_size),
                "filt_size": self.filt_size, "stride": list(self.stride)}


@register
class GlobalAveragePooling2D(_Pool):
    """The mean of each channel over the whole image: (N, C, H, W) -> (N, C), or
    (N, C, 1, 1) with ``keepdims=True`` (Keras's layer, on NCHW images). It runs the
    average-pooling kernel with the image as its window.

    >>> GlobalAveragePooling2D().compute_output_shape((64, 7, 7))
    (64,)
    """

    op = "avg_pool2d"

    def __init__(self, data_format=None, keepdims=False, **kwargs):
        super().__init__(**kwargs)
        if data_format not in (None, "channels_first"):
            raise ValueError(
                f"{self.name}: nnkern is NCHW, so data_format must be 'channels_first' (or "
                f"None), got {data_format!r}; transpose the data with x.transpose(0, 3, 1, 2)"
            )
        self.keepdims = bool(keepdims)

    def compute_output_shape(self, input_shape):
        C, _, _ = require_image_shape(self, input_shape)
        return (C, 1, 1) if self.keepdims else (C,)

    def call(self, x, training=False):
        N, C, H, W = x.shape
        y = F.avg_pool2d(x, (H, W))
        return y if self.keepdims else y.reshape(N, C)

    def get_config(self):
        return {**super().get_config(), "keepdims": self.keepdims}


# Keras's names for the same layers (the same classes: saved files name the class above)
MaxPooling2D = MaxPool2D
AveragePooling2D = AvgPool2D

__all__ = ["AveragePooling2D", "AvgPool2D", "BlurPool2D", "Conv2D", "GlobalAveragePooling2D",
           "MaxBlurPool2D", "MaxPool2D", "MaxPooling2D"]
