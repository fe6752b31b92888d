"""Local response normalisation in NumPy: the oracle and the text to read first.

x is (N, C, L). Channel c is divided by a power of the energy of its
neighbouring channels at the same position ("lateral inhibition", Krizhevsky
et al. 2012, section 3.3), with PyTorch's conventions (alpha is divided by
size; the window is zero-padded at both ends of the channel axis):

    before, after = size // 2, (size - 1) // 2            (window(size))
    s_c = sum of x_j^2 for j in c - before .. c + after    (0 <= j < C)
    d_c = k + alpha / size * s_c
    y_c = x_c * d_c^(-beta)

Backward, with g = dL/dy. x_m enters its own y_m and, through s_i, every y_i
whose window holds m, i.e. i in m - after .. m + before (the mirrored window):

    t_i  = g_i * x_i * d_i^(-beta - 1)
    dx_m = g_m * d_m^(-beta) - 2 * alpha * beta / size * x_m * sum of t_i over i in
           m - after .. m + before

Here every window sum adds its ``size`` terms directly (no running sum, so no
cancellation): this is the oracle. Computed in float64 whatever the input
dtype; outputs are written in the dtype of the given output arrays. A
denominator of 0 (k = 0 and a zero window) gives 0/0 = NaN, as in PyTorch.
"""

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def window(size):
    """(before, after): how many channels before and after c the window of c covers.

    >>> window(5), window(4)
    ((2, 2), (2, 1))
    """
    return size // 2, (size - 1) // 2


_ROOT_BETAS = {0.75: 1, 0.5: 2, 1.0: 3}


def power_mode(beta):
    """How the cpu and cuda kernels raise d to beta: 1, 2, 3 by square roots for beta 0.75
    (AlexNet's), 0.5 and 1, which vectorise; 0 by pow. This file uses ``**`` throughout."""
    return _ROOT_BETAS.get(float(beta), 0)


def _window_sum(v, before, after):
    # v (N, C, L) -> (N, C, L): out[:, c] = sum of v[:, j] for j in c - before .. c + after
    padded = np.pad(v, ((0, 0), (before, after), (0, 0)))
    return sliding_window_view(padded, before + after + 1, axis=1).sum(axis=-1)


def _denominator(x, size, alpha, k):
    # d (N, C, L) float64
    before, after = window(size)
    x64 = x.astype(np.float64)
    return k + alpha / size * _window_sum(x64 * x64, before, after)


def lrn_forward(x, y, size, alpha, beta, k):
    """y = x / (k + alpha/size * window sum of x^2)^beta. x, y (N, C, L)."""
    d = _denominator(x, size, alpha, k)
    with np.errstate(divide="ignore", invalid="ignore"):
        y[...] = x / d ** beta


def lrn_backward(g, x, dx, size, alpha, beta, k):
    """dx (N, C, L) of lrn_forward for the upstream gradient g (N, C, L)."""
    before, after = window(size)
    d = _denominator(x, size, alpha, k)
    x64 = x.astype(np.float64)
    g64 = g.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = d ** beta                                     # (N, C, L)
        t = g64 * x64 / (r * d)
        # the mirrored window: after channels before m, before channels after it
        dx[...] = g64 / r - 2.0 * alpha * beta / size * x64 * _window_sum(t, after, before)
