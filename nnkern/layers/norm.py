"""Batch normalisation layers (PyTorch semantics: momentum 0.1, eps 1e-5)."""

import nnkern.functional as F

from .base import Layer, register, require_image_shape


class _BatchNorm(Layer):
    """y = gamma * (x - mean) / sqrt(var + eps) + beta per channel (axis 1).

    Training uses the batch statistics and updates the running ones in place;
    evaluation uses the running ones. A frozen layer (``trainable = False``)
    always runs in evaluation mode, as in Keras, so transfer learning keeps its
    statistics. ``gamma``/``beta`` are trainable; ``running_mean``/``running_var``
    are non-trainable state and count as such in ``summary()``.

    ``momentum`` is PyTorch's: the weight of the NEW batch in the running
    statistics (0.1), where Keras's ``momentum=0.99`` weighs the old value.
    """

    def __init__(self, momentum=0.1, epsilon=1e-5, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= float(momentum) <= 1.0:
            raise ValueError(f"{self.name}: momentum must be in [0, 1], got {momentum}")
        if not float(epsilon) > 0.0:
            raise ValueError(f"{self.name}: epsilon must be > 0, got {epsilon}")
        self.momentum = float(momentum)
        self.epsilon = float(epsilon)

    def build(self, input_shape):
        C = self._channels(input_shape)
        self.add_weight("gamma", (C,), "ones")
        self.add_weight("beta", (C,), "zeros")
        self.add_state("running_mean", [0.0] * C)
        self.add_state("running_var", [1.0] * C)

    def compute_output_shape(self, input_shape):
        self._channels(input_shape)
        return tuple(input_shape)

    def fits(self, input_shape):
        # one set of statistics per channel: any image size
        return len(input_shape) == len(self.input_shape) and input_shape[0] == self.input_shape[0]

    def call(self, x, training=False):
        # a frozen layer keeps its statistics: evaluation mode, as in Keras
        v, s = self.variables, self.state
        return F.batch_norm(x, v["gamma"], v["beta"], s["running_mean"], s["running_var"],
                            bool(training) and self.trainable, self.momentum, self.epsilon)

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum, "epsilon": self.epsilon}


@register
class BatchNorm1D(_BatchNorm):
    """Batch norm of (N, features) activations, e.g. after a Dense layer.

    >>> from nnkern import layers
    >>> block = [layers.Dense(64), layers.BatchNorm1D(), layers.ReLU()]
    """

    def _channels(self, input_shape):
        if len(input_shape) != 1:
            raise ValueError(
                f"{self.name} (BatchNorm1D) expects a per-sample shape (features,), got "
                f"{tuple(input_shape)}; use BatchNorm2D for NCHW images"
            )
        return input_shape[0]


@register
class BatchNorm2D(_BatchNorm):
    """Batch norm of NCHW images, one mean/variance per channel over (N, H, W).

    >>> from nnkern import layers
    >>> block = [layers.Conv2D(16, 3, padding="same", use_bias=False), layers.BatchNorm2D(),
    ...          layers.ReLU()]
    """

    takes_images = True

    def _channels(self, input_shape):
        return require_image_shape(self, input_shape)[0]

