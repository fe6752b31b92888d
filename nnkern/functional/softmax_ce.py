"""Op surface of the 'softmax_ce' kernel family: the losses (validation and dispatch).

    >>> import numpy as np, nnkern
    >>> import nnkern.functional as F
    >>> logits = np.zeros((2, 4), np.float32); labels = np.array([1, 3])
    >>> with nnkern.device("numpy"):
    ...     float(F.softmax_cross_entropy(logits, labels))    # log(4)
    1.3862943649291992

Semantics follow ``torch.nn.functional.cross_entropy`` (integer targets,
``label_smoothing``), ``binary_cross_entropy_with_logits`` and ``mse_loss``.
Reductions: ``"mean"`` and ``"sum"`` return a 0-d array, ``"none"`` the
per-row (softmax CE) or per-element losses.
"""

import numpy as np

from ..device import array_module
from ._checks import (
    FLOAT_DTYPES,
    backend_kernels,
    choice,
    empty,
    float_array,
    labels_array,
    real_number,
    same_dtype,
    shape_is,
)

__all__ = [
    "binary_cross_entropy_with_logits",
    "binary_cross_entropy_with_logits_backward",
    "mse_loss",
    "mse_loss_backward",
    "softmax_cross_entropy",
    "softmax_cross_entropy_backward",
    "softmax_cross_entropy_with_grad",
]

REDUCTIONS = ("mean", "sum", "none")
FAMILY = "softmax_ce"
_NDARRAY = np.ndarray
_F32, _F64 = FLOAT_DTYPES
_I64 = np.dtype(np.int64)


def _check_reduction(reduction):
    choice(reduction, "reduction", REDUCTIONS)


def _check_smoothing(label_smoothing):
    return real_number(label_smoothing, "label_smoothing", 0, 1, expected="lie in [0, 1]")


def _reduce(losses, reduction):
    # losses (n,) -> 0-d array (mean/sum) or losses itself (none)
    if reduction == "none":
        return losses
    if type(losses) is _NDARRAY and losses.ndim == 1 and losses.shape[0]:
        # the host: the sum and the division that mean() runs, without its Python wrapper
        # (2 of a loss's 12 us)
        total = np.add.reduce(losses)
        if reduction == "mean":
            total = total / losses.shape[0]
        return np.asarray(total, dtype=losses.dtype)
    xp = array_module()
    total = losses.mean() if reduction == "mean" else losses.sum()
    return xp.asarray(total, dtype=losses.dtype)


def _grad_and_scale(grad_out, reduction, n, dtype, expected_shape):
    """Upstream gradient as a 1-D array (n,) or (1,) for the kernels, and its scale."""
    is_bool = isinstance(grad_out, (bool, np.bool_))
    if not is_bool and isinstance(grad_out, (int, float, np.integer, np.floating)) and (
            reduction != "none"):
        grad_out = array_module().full((1,), grad_out, dtype=dtype)
    if is_bool or not hasattr(grad_out, "dtype") or not hasattr(grad_out, "shape"):
        raise TypeError(f"grad_out must be an array, got {type(grad_out).__name__}")
    if grad_out.dtype != dtype:
        raise TypeError(f"grad_out has dtype {grad_out.dtype} but the input has {dtype}")
    if reduction == "none":
        shape_is(grad_out, "grad_out", expected_shape)
        return grad_out.reshape(-1), 1.0
    if grad_out.size != 1:
        raise ValueError(
            f"grad_out of a reduction={reduction!r} loss must hold one value (a 0-d array), "
            f"got shape {tuple(grad_out.shape)}"
        )
    scale = 1.0 / n if (reduction == "mean" and n) else 1.0
    return grad_out.reshape(1), scale


def _flat(x):
    return array_module().ascontiguousarray(x).reshape(-1)


# --- softmax cross-entropy ------------------------------------------------------------------


def _check_softmax_ce(logits, labels, reduction, label_smoothing, grad_out=None):
    grad = grad_out if hasattr(grad_out, "shape") else None
    K = backend_kernels(FAMILY, ("logits", logits), ("labels", labels), ("grad_out", grad))
    float_array(logits, "logits", ndim=2, layout="(N, C)")
    N, C = logits.shape
    if C < 1:
        raise ValueError(f"logits must have at least one class, got shape {tuple(logits.shape)}")
    labels_array(labels, "labels", N, C)
    _check_reduction(reduction)
    eps = _check_smoothing(label_smoothing)
    xp = array_module()
    logits = xp.ascontiguousarray(logits)
    labels = xp.ascontiguousarray(labels.astype(np.int64, copy=False))
    return K, logits, labels, eps


def softmax_cross_entropy(logits, labels, reduction="mean", label_smoothing=0.0):
    """Cross-entropy of softmax(logits) against integer class labels.

    logits (N, C) float32/float64, labels (N,) integers in [0, C).
    ``label_smoothing`` eps in [0, 1] mixes the one-hot target with the uniform
    distribution: q = (1 - eps) onehot + eps / C (torch semantics).
    Returns a 0-d array for ``"mean"``/``"sum"``, (N,) for ``"none"``.
    """
    K, logits, labels, eps = _check_softmax_ce(logits, labels, reduction, label_smoothing)
    losses = empty((logits.shape[0],), logits.dtype)
    K.softmax_ce_forward(logits, labels, losses, eps)
    return _reduce(losses, reduction)


def softmax_cross_entropy_backward(grad_out, logits, labels, reduction="mean",
                                   label_smoothing=0.0):
    """Gradient of ``softmax_cross_entropy`` w.r.t. logits: g * (softmax(logits) - q) [/ N].

    grad_out: a 0-d (or one-element) array for "mean"/"sum", (N,) for "none".
    Returns dlogits (N, C). The kernel is fused: one pass over each row.
    """
    K, logits, labels, eps = _check_softmax_ce(logits, labels, reduction, label_smoothing,
                                               grad_out)
    N = logits.shape[0]
    g, scale = _grad_and_scale(grad_out, reduction, N, logits.dtype, (N,))
    losses = empty((N,), logits.dtype)
    dlogits = empty(logits.shape, logits.dtype)
    K.softmax_ce_forward_backward(logits, labels, _flat(g), scale, eps, losses, dlogits)
    return dlogits


def softmax_cross_entropy_with_grad(logits, labels, reduction="mean", label_smoothing=0.0):
    """Loss and its gradient for an upstream gradient of 1, in ONE fused kernel pass.

    Returns ``(loss, dlogits)``: the same values as ``softmax_cross_entropy(...)``
    and ``softmax_cross_entropy_backward(ones, ...)``, for a training loop that
    needs both (the loss is the last node, so its upstream gradient is 1).
    """
    if _plain_softmax_ce(logits, labels, reduction, label_smoothing):
        # a training step's call (NumPy logits and int64 labels, checked in one test):
        # the loss of the MLP step spent 12 us in Python around a 1 us kernel
        K = backend_kernels(FAMILY, ("logits", logits))
        eps = float(label_smoothing)
        N = logits.shape[0]
        # one reduction, no temporary (1.4 -> 0.8 us); negatives wrap to >= 2^63
        if N and _max(labels.view(_U64)) >= logits.shape[1]:
            labels_array(labels, "labels", N, logits.shape[1])  # raises, naming the range
        g = _UNIT[logits.dtype]  # read only by the kernel
    else:
        K, logits, labels, eps = _check_softmax_ce(logits, labels, reduction, label_smoothing)
        N = logits.shape[0]
        g = array_module().ones((1,), dtype=logits.dtype)
    scale = 1.0 / N if (reduction == "mean" and N) else 1.0
    losses = empty((N,), logits.dtype)
    dlogits = empty(logits.shape, logits.dtype)
    K.softmax_ce_forward_backward(logits, labels, g, scale, eps, losses, dlogits)
    return _reduce(losses, reduction), dlogits


_max, _U64 = np.maximum.reduce, np.uint64

_UNIT = {dtype: np.ones((1,), dtype) for dtype in FLOAT_DTYPES}
"""The upstream gradient 1 of a loss at the root, per float dtype (0.6 us per np.ones)."""


def _plain_softmax_ce(logits, labels, reduction, label_smoothing):
    """True when the arguments pass _check_softmax_ce's checks but the label range: NumPy
    float logits (N, C >= 1) and int64 labels (N,), C-contiguous, a reduction to one value
    and a float smoothing in [0, 1]."""
    return (type(logits) is _NDARRAY and type(labels) is _NDARRAY
            and (logits.dtype is _F32 or logits.dtype is _F64) and labels.dtype is _I64
            and logits.ndim == 2 and labels.ndim == 1 and logits.shape[1] >= 1
            and labels.shape[0] == logits.shape[0] and logits.flags.c_contiguous
            and labels.flags.c_contiguous and (reduction == "mean" or reduction == "sum")
            and type(label_smoothing) is float and 0.0 <= label_smoothing <= 1.0)


# --- element-wise losses ------------------------------------------------------------------


def _check_pair(first, second, names, reduction, grad_out=None):
    grad = grad_out if hasattr(grad_out, "shape") else None
    K = backend_kernels(FAMILY, (names[0], first), (names[1], second), ("grad_out", grad))
    float_array(first, names[0])
    float_array(second, names[1])
    same_dtype((names[0], first), (names[1], second))
    shape_is(second, names[1], first.shape)
    _check_reduction(reduction)
    return K


def _elementwise_loss(forward, first, second, names, reduction):
    K = _check_pair(first, second, names, reduction)
    losses = empty((first.size,), first.dtype)
    getattr(K, forward)(_flat(first), _flat(second), losses)
    return _reduce(losses.reshape(first.shape), reduction)


def _elementwise_loss_backward(backward, grad_out, first, second, names, reduction):
    K = _check_pair(first, second, names, reduction, grad_out)
    g, scale = _grad_and_scale(grad_out, reduction, first.size, first.dtype, first.shape)
    dx = empty((first.size,), first.dtype)
    getattr(K, backward)(_flat(g), scale, _flat(first), _flat(second), dx)
    return dx.reshape(first.shape)


def binary_cross_entropy_with_logits(logits, targets, reduction="mean"):
    """Binary cross-entropy of sigmoid(logits) against float targets (same shape), in the
    stable form max(x, 0) - x t + log(1 + exp(-|x|))."""
    return _elementwise_loss("bce_with_logits_forward", logits, targets,
                             ("logits", "targets"), reduction)


def binary_cross_entropy_with_logits_backward(grad_out, logits, targets, reduction="mean"):
    """Gradient w.r.t. logits: g * (sigmoid(logits) - targets) [/ n]."""
    return _elementwise_loss_backward("bce_with_logits_backward", grad_out, logits, targets,
                                      ("logits", "targets"), reduction)


def mse_loss(pred, target, reduction="mean"):
    """Mean squared error (pred - target)^2, pred and target of the same shape."""
    return _elementwise_loss("mse_forward", pred, target, ("pred", "target"), reduction)


def mse_loss_backward(grad_out, pred, target, reduction="mean"):
    """Gradient w.r.t. pred: g * 2 (pred - target) [/ n]."""
    return _elementwise_loss_backward("mse_backward", grad_out, pred, target,
                                      ("pred", "target"), reduction)
