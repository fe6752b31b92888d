"""Local response normalisation as a layer: AlexNet's "lateral inhibition" across channels."""

import nnkern.functional as F
from nnkern.functional.lrn import lrn_params

from .base import Layer, register


@register
class LocalResponseNorm(Layer):
    """Divide each channel by a power of its ``size`` neighbours' energy (no weights).

    PyTorch's ``nn.LocalResponseNorm(size, alpha=1e-4, beta=0.75, k=1.0)``:
    ``y_c = x_c / (k + alpha / size * sum of x_j^2 over the window of c)^beta``, see
    ``F.local_response_norm``. Input: channels first, ``(C, H, W)`` per sample (or
    ``(C, L)``). AlexNet put it after the first two ReLUs, with ``size=5, alpha=5e-4``
    (its paper's 1e-4 per channel), ``beta=0.75, k=2``:

    >>> from nnkern import layers
    >>> block = [layers.Conv2D(24, 5, activation="relu"),
    ...          layers.LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2.0),
    ...          layers.MaxPool2D(3, strides=2)]
    """

    def __init__(self, size, alpha=1e-4, beta=0.75, k=1.0, **kwargs):
        super().__init__(**kwargs)
        try:
            self.size, self.alpha, self.beta, self.k = lrn_params(size, alpha, beta, k)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"{self.name}: {exc}") from None

    def compute_output_shape(self, input_shape):
        shape = tuple(input_shape)
        if len(shape) < 2:
            raise ValueError(
                f"{self.name} (LocalResponseNorm) normalises across channels and expects a "
                f"per-sample shape (channels, ...) such as (C, H, W), got {shape}"
            )
        return shape

    def call(self, x, training=False):
        return F.local_response_norm(x, self.size, self.alpha, self.beta, self.k)

    def get_config(self):
        return {**super().get_config(), "size": self.size, "alpha": self.alpha,
                "beta": self.beta, "k": self.k}
