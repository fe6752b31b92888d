"""Element-wise ops, NumPy reference: the oracle for the cpu and cuda backends.

    relu      y = max(x, 0)                     dx = 0 if x <= 0 else g
    sigmoid   y = 1 / (1 + exp(-x))             dx = g * y * (1 - y)
    tanh      y = tanh(x)                       dx = g * (1 - y^2)
    softmax   y = exp(x - lse(x)) along L       dx = y * (g - sum_L(g * y))
    log_softmax y = x - lse(x) along L          dx = g - exp(y) * sum_L(g)
    bias_add  y[n, c, s] = x[n, c, s] + b[c]    db[c] = sum_{n, s} g[n, c, s]
    dropout   y = x * keep * scale,  keep = (hash(seed, i) >= p * 2^32) in {0, 1},
              scale = 1 / (1 - p)

NaN and inf follow PyTorch: relu's backward selects on x (a NaN x passes g, a NaN g
where x <= 0 gives 0), and dropout multiplies by its mask instead of writing 0, so
a dropped NaN or inf stays NaN (as torch's ``x * mask / (1 - p)``).

Layouts are those of the family's ``__init__``: flat (n,), (A, L, B) for the
softmaxes, (N, C, S) for bias_add. Every kernel writes into given outputs.
"""

import numpy as np

from . import SPLITMIX_GAMMA, SPLITMIX_M1, SPLITMIX_M2


def relu_forward(x, y):
    """y (n,) = max(x, 0)."""
    np.maximum(x, 0, out=y)


def relu_backward(g, x, dx):
    """dx (n,) = 0 where x <= 0, else g (torch's select: 0 at x == 0, g where x is NaN)."""
    dx[...] = np.where(x <= 0, 0, g)


def sigmoid_forward(x, y):
    """y (n,) = 1 / (1 + exp(-x)), evaluated without overflow for either sign."""
    e = np.exp(-np.abs(x))
    y[...] = np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def sigmoid_backward(g, y, dx):
    """dx (n,) = g * y * (1 - y), from the saved output y."""
    dx[...] = g * y * (1 - y)


def tanh_forward(x, y):
    """y (n,) = tanh(x)."""
    np.tanh(x, out=y)


def tanh_backward(g, y, dx):
    """dx (n,) = g * (1 - y^2), from the saved output y."""
    dx[...] = g * (1 - y * y)


def _shifted(x):
    # x (A, L, B) -> z = x - max_L(x) (A, L, B) and log sum_L exp(z) (A, 1, B). Working with
    # the shifted z keeps |x| ~ 1e4 from overflowing exp or losing digits in x - lse(x).
    z = x - x.max(axis=1, keepdims=True)
    return z, np.log(np.exp(z).sum(axis=1, keepdims=True))


def softmax_forward(x, y):
    """y (A, L, B) = exp(z) / sum_L exp(z), z = x - max_L(x)."""
    e = np.exp(x - x.max(axis=1, keepdims=True))
    y[...] = e / e.sum(axis=1, keepdims=True)


def softmax_backward(g, y, dx):
    """dx (A, L, B) = y * (g - sum_L(g * y)), from the saved output y."""
    dx[...] = y * (g - (g * y).sum(axis=1, keepdims=True))


def log_softmax_forward(x, y):
    """y (A, L, B) = z - log sum_L exp(z), z = x - max_L(x)."""
    z, log_sum = _shifted(x)
    y[...] = z - log_sum


def log_softmax_backward(g, y, dx):
    """dx (A, L, B) = g - exp(y) * sum_L(g), from the saved output y."""
    dx[...] = g - np.exp(y) * g.sum(axis=1, keepdims=True)


def bias_add_forward(x, b, y):
    """y (N, C, S) = x + b[c]."""
    y[...] = x + b[None, :, None]


def bias_add_backward(g, db):
    """db (C,) = sum of g (N, C, S) over N and S."""
    db[...] = g.sum(axis=(0, 2))


def dropout_hash(seed, n):
    """Top 32 bits of splitmix64(seed + (i + 1) * gamma) for i in [0, n): (n,) uint64.

    Counter-based: element i's value depends only on (seed, i), so any backend,
    any thread layout and any chunking give the same mask.
    """
    i = np.arange(n, dtype=np.uint64)
    z = np.uint64(seed) + (i + np.uint64(1)) * np.uint64(SPLITMIX_GAMMA)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(SPLITMIX_M1)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(SPLITMIX_M2)
    z = z ^ (z >> np.uint64(31))
    return z >> np.uint64(32)


def dropout_apply(x, y, threshold, scale, seed):
    """y (n,) = x * keep * scale, keep = 1 where hash(seed, i) >= threshold, else 0.

    threshold = floor(p * 2^32) (see ``dropout_threshold``), scale = 1 / (1 - p)
    in x's dtype, seed an integer in [0, 2^64). Forward on x, backward on g. A product,
    not a select: a dropped NaN or inf gives NaN, as in torch.
    """
    keep = (dropout_hash(seed, x.shape[0]) >= np.uint64(threshold)).astype(x.dtype)
    with np.errstate(invalid="ignore"):           # inf * 0 = NaN is the answer, no warning
        y[...] = x * keep * x.dtype.type(scale)
