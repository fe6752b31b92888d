"""Losses: callables on (predictions, targets) with a ``backward()`` giving d loss / d predictions.

Every loss takes the network's raw outputs (logits), not probabilities: the
softmax or sigmoid is part of the loss, which is both faster and numerically
stable. The argument order is PyTorch's, predictions first:

    >>> import numpy as np, nnkern
    >>> from nnkern import losses
    >>> loss_fn = losses.get("sparse_categorical_crossentropy")
    >>> with nnkern.device("numpy"):
    ...     value = loss_fn(np.zeros((2, 3)), np.array([0, 2]))
    ...     dlogits = loss_fn.backward()
    >>> round(float(value), 4), dlogits.shape
    (1.0986, (2, 3))
"""

import numpy as np

import nnkern.functional as F
from nnkern.device import array_module, is_gpu_array


def _ones_like_scalar(ref, shape=()):
    xp = array_module("cuda") if is_gpu_array(ref) else np
    return xp.ones(shape, dtype=ref.dtype)


class Loss:
    """Base class: ``value = loss(y_pred, y_true)`` then ``dy_pred = loss.backward()``.

    ``reduction`` is ``"mean"`` (default), ``"sum"`` or ``"none"`` (per-sample).
    The value is a 0-d array on the current device (``float(value)`` reads it).
    """

    name = None

    def __init__(self, reduction="mean"):
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
        self.reduction = reduction
        self._saved = None

    def __call__(self, y_pred, y_true):
        self._saved = (y_pred, y_true)
        return self._forward(y_pred, y_true)

    def value(self, y_pred, y_true):
        """The loss alone, for evaluation: nothing is kept for ``backward()`` (and a
        fused loss computes no gradient)."""
        return self._forward(y_pred, y_true)

    def backward(self, grad=None):
        """Gradient of the loss with respect to ``y_pred`` of the last call; ``grad`` is the
        upstream gradient of the loss value (default 1)."""
        if self._saved is None:
            raise RuntimeError(f"{type(self).__name__}.backward() called before the loss")
        y_pred, y_true = self._saved
        if grad is None:
            shape = (y_pred.shape[0],) if self.reduction == "none" else ()
            grad = _ones_like_scalar(y_pred, shape)
        return self._backward(grad, y_pred, y_true)

    def get_config(self):
        return {"class": type(self).__name__, "reduction": self.reduction}


class SparseCategoricalCrossentropy(Loss):
    """Softmax cross-entropy of logits (N, C) against integer class labels (N,).

    ``label_smoothing`` mixes the one-hot target with the uniform distribution.
    """

    name = "sparse_categorical_crossentropy"

    def __init__(self, reduction="mean", label_smoothing=0.0):
        super().__init__(reduction)
        self.label_smoothing = float(label_smoothing)

    def _forward(self, y_pred, y_true):
        # One fused pass yields the loss and its gradient for an upstream gradient
        # of 1 (the usual case in training), so backward() costs nothing more.
        value, self._unit_grad = F.softmax_cross_entropy_with_grad(
            y_pred, y_true, self.reduction, self.label_smoothing
        )
        return value

    def value(self, y_pred, y_true):
        return F.softmax_cross_entropy(y_pred, y_true, self.reduction, self.label_smoothing)

    def backward(self, grad=None):
        if grad is None and self._saved is not None and self.reduction != "none":
            return self._unit_grad
        return super().backward(grad)

    def _backward(self, grad, y_pred, y_true):
        return F.softmax_cross_entropy_backward(grad, y_pred, y_true, self.reduction,
                                                self.label_smoothing)

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


class BinaryCrossentropy(Loss):
    """Binary cross-entropy of logits against float targets in [0, 1] of the same shape
    (the sigmoid is inside the loss)."""

    name = "binary_crossentropy"

    def _forward(self, y_pred, y_true):
        return F.binary_cross_entropy_with_logits(y_pred, y_true, self.reduction)

    def _backward(self, grad, y_pred, y_true):
        return F.binary_cross_entropy_with_logits_backward(grad, y_pred, y_true, self.reduction)


class MeanSquaredError(Loss):
    """Mean of (y_pred - y_true)**2 over all elements."""

    name = "mse"

    def _forward(self, y_pred, y_true):
        return F.mse_loss(y_pred, y_true, self.reduction)

    def _backward(self, grad, y_pred, y_true):
        return F.mse_loss_backward(grad, y_pred, y_true, self.reduction)


SoftmaxCrossEntropy = SparseCategoricalCrossentropy

_ALIASES = {
    "sparse_categorical_crossentropy": SparseCategoricalCrossentropy,
    "softmax_cross_entropy": SparseCategoricalCrossentropy,
    "cross_entropy": SparseCategoricalCrossentropy,
    "binary_crossentropy": BinaryCrossentropy,
    "binary_cross_entropy": BinaryCrossentropy,
    "mse": MeanSquaredError,
    "mean_squared_error": MeanSquaredError,
}
_CLASSES = {c.__name__: c for c in (SparseCategoricalCrossentropy, BinaryCrossentropy,
                                    MeanSquaredError)}


def get(identifier):
    """A Loss from a name (``"sparse_categorical_crossentropy"``, ``"softmax_cross_entropy"``,
    ``"binary_crossentropy"``, ``"mse"``), a Loss instance, or a saved config dict."""
    if isinstance(identifier, Loss):
        return identifier
    if isinstance(identifier, dict):
        config = dict(identifier)
        return _CLASSES[config.pop("class")](**config)
    if isinstance(identifier, str) and identifier.lower() in _ALIASES:
        return _ALIASES[identifier.lower()]()
    raise ValueError(
        f"loss must be a Loss or one of {sorted(_ALIASES)}, got {identifier!r}"
    )
