"""Op surface of the 'elementwise' kernel family: activations, softmaxes, bias add, dropout.

    >>> import numpy as np, nnkern
    >>> import nnkern.functional as F
    >>> with nnkern.device("numpy"):
    ...     F.softmax(np.zeros((1, 4))).tolist()
    [[0.25, 0.25, 0.25, 0.25]]

Semantics follow ``torch.nn.functional``. Backward ops take the upstream
gradient, then the forward op's arguments; sigmoid, tanh, softmax and
log_softmax accept the saved forward output as keyword ``out=`` to skip
recomputing it (the result is the same without it).
"""

import math

import numpy as np

from ..kernels.elementwise import dropout_threshold
from ._checks import (
    backend_kernels,
    empty,
    empty_like,
    flag,
    float_array,
    real_number,
    same_dtype,
    shape_is,
)
from ._checks import contiguous as _contiguous

__all__ = [
    "bias_add",
    "bias_add_backward",
    "dropout",
    "dropout_backward",
    "log_softmax",
    "log_softmax_backward",
    "relu",
    "relu_backward",
    "sigmoid",
    "sigmoid_backward",
    "softmax",
    "softmax_backward",
    "tanh",
    "tanh_backward",
]

FAMILY = "elementwise"


def _check_grad(grad_out, x):
    float_array(grad_out, "grad_out")
    same_dtype(("x", x), ("grad_out", grad_out))
    shape_is(grad_out, "grad_out", x.shape)


def _check_out(out, x):
    if out is None:
        return None
    float_array(out, "out")
    same_dtype(("x", x), ("out", out))
    shape_is(out, "out", x.shape)
    return _contiguous(out)


def _unary(kernel, x):
    # x any shape -> y of x's shape through a flat kernel. The path of every small op:
    # each step is measured (python -m timeit, relu on 1024 floats, see the report of
    # issue 13 item 5), and the 1-D case skips the two flat views.
    K = backend_kernels(FAMILY, ("x", x))
    float_array(x, "x")
    x = _contiguous(x)
    y = empty_like(x)
    if x.ndim == 1:
        getattr(K, kernel)(x, y)
    else:
        getattr(K, kernel)(x.reshape(-1), y.reshape(-1))
    return y


def _unary_backward(kernel, forward, grad_out, x, out):
    # dx from g and the saved operand (x for relu, the output y otherwise)
    K = backend_kernels(FAMILY, ("grad_out", grad_out), ("x", x), ("out", out))
    float_array(x, "x")
    _check_grad(grad_out, x)
    saved = _check_out(out, x)
    if saved is None:
        saved = _contiguous(x) if forward is None else forward(x)
    g = _contiguous(grad_out)
    dx = empty_like(x)
    if x.ndim == 1:
        getattr(K, kernel)(g, saved, dx)
    else:
        getattr(K, kernel)(g.reshape(-1), saved.reshape(-1), dx.reshape(-1))
    return dx


def relu(x):
    """max(x, 0), element-wise, any shape."""
    return _unary("relu_forward", x)


def relu_backward(grad_out, x):
    """grad_out where x > 0, else 0."""
    return _unary_backward("relu_backward", None, grad_out, x, None)


def sigmoid(x):
    """1 / (1 + exp(-x)), element-wise, any shape (no overflow for large |x|)."""
    return _unary("sigmoid_forward", x)


def sigmoid_backward(grad_out, x, *, out=None):
    """grad_out * y * (1 - y) with y = sigmoid(x) (pass ``out=y`` to reuse it)."""
    return _unary_backward("sigmoid_backward", sigmoid, grad_out, x, out)


def tanh(x):
    """tanh(x), element-wise, any shape."""
    return _unary("tanh_forward", x)


def tanh_backward(grad_out, x, *, out=None):
    """grad_out * (1 - y^2) with y = tanh(x) (pass ``out=y`` to reuse it)."""
    return _unary_backward("tanh_backward", tanh, grad_out, x, out)


# --- softmax and log_softmax along one axis ------------------------------------------------


def _axis_view(x, axis):
    """Normalise ``axis`` and return the (A, L, B) shape that puts it in the middle."""
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"axis must be an int, got {axis!r}")
    if x.ndim == 0:
        raise ValueError("softmax needs an array with at least one dimension, got a 0-d array")
    if not -x.ndim <= axis < x.ndim:
        raise ValueError(f"axis must lie in [{-x.ndim}, {x.ndim}) for a {x.ndim}-D x, got {axis}")
    axis = int(axis) % x.ndim
    return (math.prod(x.shape[:axis]), x.shape[axis], math.prod(x.shape[axis + 1:]))


def _softmax_like(kernel, x, axis):
    K = backend_kernels(FAMILY, ("x", x))
    float_array(x, "x")
    shape3 = _axis_view(x, axis)
    x = _contiguous(x)
    y = empty(x.shape, x.dtype)
    if x.size:
        getattr(K, kernel)(x.reshape(shape3), y.reshape(shape3))
    return y


def _softmax_like_backward(kernel, forward, grad_out, x, axis, out):
    K = backend_kernels(FAMILY, ("grad_out", grad_out), ("x", x), ("out", out))
    float_array(x, "x")
    _check_grad(grad_out, x)
    shape3 = _axis_view(x, axis)
    y = _check_out(out, x)
    if y is None:
        y = forward(x, axis)
    g = _contiguous(grad_out)
    dx = empty(x.shape, x.dtype)
    if x.size:
        getattr(K, kernel)(g.reshape(shape3), y.reshape(shape3), dx.reshape(shape3))
    return dx


def softmax(x, axis=-1):
    """exp(x) / sum(exp(x)) along ``axis``, computed as exp(x - logsumexp(x))."""
    return _softmax_like("softmax_forward", x, axis)


def softmax_backward(grad_out, x, axis=-1, *, out=None):
    """y * (grad_out - sum(grad_out * y)) along ``axis``, y = softmax(x) (or ``out=``)."""
    return _softmax_like_backward("softmax_backward", softmax, grad_out, x, axis, out)


def log_softmax(x, axis=-1):
    """x - logsumexp(x) along ``axis`` (stable for large |x|)."""
    return _softmax_like("log_softmax_forward", x, axis)


def log_softmax_backward(grad_out, x, axis=-1, *, out=None):
    """grad_out - exp(y) * sum(grad_out) along ``axis``, y = log_softmax(x) (or ``out=``)."""
    return _softmax_like_backward("log_softmax_backward", log_softmax, grad_out, x, axis, out)


# --- bias add ------------------------------------------------------------------------------


def _check_bias(x, b):
    float_array(x, "x")
    if x.ndim not in (2, 4):
        raise ValueError(
            f"x must be 2-D (N, C) or 4-D (N, C, H, W) for bias_add, got shape {tuple(x.shape)}"
        )
    float_array(b, "b", ndim=1, layout="(C,)")
    same_dtype(("x", x), ("b", b))
    if b.shape[0] != x.shape[1]:
        raise ValueError(
            f"b must have shape ({x.shape[1]},) to match axis 1 of x {tuple(x.shape)}, "
            f"got {tuple(b.shape)}"
        )
    N, C = x.shape[:2]
    return (N, C, math.prod(x.shape[2:]))


def bias_add(x, b):
    """x + b with b (C,) broadcast over axis 1 of a 2-D (N, C) or 4-D (N, C, H, W) x."""
    K = backend_kernels(FAMILY, ("x", x), ("b", b))
    shape3 = _check_bias(x, b)
    x = _contiguous(x)
    y = empty(x.shape, x.dtype)
    K.bias_add_forward(x.reshape(shape3), _contiguous(b), y.reshape(shape3))
    return y


def bias_add_backward(grad_out, x, b):
    """(dx, db): dx = grad_out (a copy), db = grad_out summed over every axis but 1."""
    K = backend_kernels(FAMILY, ("grad_out", grad_out), ("x", x), ("b", b))
    shape3 = _check_bias(x, b)
    _check_grad(grad_out, x)
    g = _contiguous(grad_out)
    db = empty(b.shape, b.dtype)
    K.bias_add_backward(g.reshape(shape3), db)
    return g.copy(), db


# --- dropout -------------------------------------------------------------------------------


def _check_dropout(x, p, training, seed):
    float_array(x, "x")
    p = real_number(p, "dropout probability p", 0, 1, hi_open=True, expected="lie in [0, 1)")
    flag(training, "training")
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {seed!r}")
    # any int is a seed: it is taken modulo 2^64 (negative and huge ones included)
    return p, np.uint64(int(seed) % 2**64)


def _dropout_apply(K, x, p, seed):
    x = _contiguous(x)
    y = empty(x.shape, x.dtype)
    threshold = np.uint64(dropout_threshold(p))
    K.dropout_apply(x.reshape(-1), y.reshape(-1), threshold, 1.0 / (1.0 - p), seed)
    return y


def dropout(x, p, training=True, seed=0):
    """Inverted dropout: zero each element with probability p, scale the kept ones by 1/(1-p).

    The keep mask is a function of (seed, flat element index) only (splitmix64),
    the same on every backend; call with a new seed per step for a new mask.
    ``training=False`` or ``p=0`` returns x itself.
    """
    K = backend_kernels(FAMILY, ("x", x))
    p, seed = _check_dropout(x, p, training, seed)
    if not training or p == 0.0:
        return x
    return _dropout_apply(K, x, p, seed)


def dropout_backward(grad_out, x, p, training=True, seed=0):
    """grad_out through the same mask and scale as ``dropout(x, p, training, seed)``."""
    K = backend_kernels(FAMILY, ("grad_out", grad_out), ("x", x))
    p, seed = _check_dropout(x, p, training, seed)
    _check_grad(grad_out, x)
    if not training or p == 0.0:
        return grad_out
    return _dropout_apply(K, grad_out, p, seed)
