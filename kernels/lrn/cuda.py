"""Local response normalisation in numba.cuda (CuPy arrays on a GPU, NumPy under the simulator).

x is (N, C, L); the window of channel c is c - before .. c + after
(``reference.window``). See reference.py for the maths, cpu.py for the CPU sweep.

Versions
    kernel 1 (this file): one thread per column (n, l), walking the channels with a
        running window sum in a float64 register, as the CPU kernel does per tile:
        each input is read a constant number of times, whatever the size.
        Consecutive threads hold consecutive positions l, so every channel step is a
        coalesced load of each row; the rows a thread reads again (leaving the
        window) were loaded a few channel steps earlier by the same warp, so they
        come from L1/L2. One launch per call, no shared memory, no atomics.
        - The backward has no ring of t rows here (a thread's registers cannot be
          indexed by a run-time channel, and local memory would cost a store and a
          load per element): it keeps three running sums instead, at channel j
          (leading: t_j enters T), m = j - before (dx_m is finished) and j - size
          (t_(j-size) leaves T, recomputed from its own running sum). The three sums
          see the same additions in the same order, so the recomputed t equals the
          one added, bit for bit. Cost: three powers per element instead of one, on
          a memory-bound op.
        - d^beta by square roots for beta in {0.75, 0.5, 1} (as on the CPU), else pow,
          computed in float64 for both dtypes.
        No GPU timing yet (no GPU has been lent); compiled to sm_90 PTX by
        bench/ptx_check.py.
"""

import math

import numpy as np
from numba import config, cuda, float64

from .reference import power_mode, window

# The simulator runs every thread of a block as a Python thread, so it gets a small block.
THREADS = 32 if config.ENABLE_CUDASIM else 128


@cuda.jit(device=True)
def _pow_beta(d, beta, mode):
    # d^beta: roots for the common betas (mode from power_mode), pow for the others
    if mode == 1:
        q = math.sqrt(d)
        return q * math.sqrt(q)
    if mode == 2:
        return math.sqrt(d)
    if mode == 3:
        return d
    return math.pow(d, beta)


@cuda.jit(device=True)
def _two_sum(a, b):
    # a + b rounded, and its rounding error, exactly (Knuth's TwoSum)
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


@cuda.jit(device=True)
def _add(hi, lo, v, exact):
    # (hi, lo) + v; with exact (float64 inputs) lo keeps hi's rounding errors, as on the CPU
    if exact:
        hi, e = _two_sum(hi, v)
        return hi, lo + e
    return hi + v, lo


@cuda.jit(device=True)
def _window_sum(x, n, l, c, before, after):
    # the window sum of channel c, added directly
    s = 0.0
    for j in range(max(c - before, 0), min(c + after + 1, x.shape[1])):
        v = float64(x[n, j, l])
        s += v * v
    return s


@cuda.jit(device=True)
def _slide(x, n, l, c, hi, lo, before, after, exact):
    # the window sum (hi, lo) of channel c from that of channel c - 1 (c = 0: from the
    # empty sum). A NaN or inf that entered the running sum would stay after leaving the
    # window (inf - inf is NaN), so a non-finite sum is recomputed directly, as on the CPU.
    if c == 0:
        hi = _window_sum(x, n, l, -1, before, after)
        lo = 0.0
    if c + after < x.shape[1]:
        v = float64(x[n, c + after, l])
        hi, lo = _add(hi, lo, v * v, exact)
    if c > before:
        v = float64(x[n, c - before - 1, l])
        hi, lo = _add(hi, lo, -(v * v), exact)
    if not math.isfinite(hi):
        hi = _window_sum(x, n, l, c, before, after)
        lo = 0.0
    return hi, lo


@cuda.jit(device=True)
def _column(L):
    # this thread's column (n, l): consecutive threads, consecutive positions
    idx = cuda.grid(1)
    n = idx // L
    return n, idx - n * L


@cuda.jit
def _forward_kernel(x, y, before, after, scale, beta, k, mode, exact):
    # x, y (N, C, L); one thread per (n, l)
    N, C, L = x.shape
    n, l = _column(L)
    if n >= N:
        return
    hi = 0.0
    lo = 0.0
    for c in range(C):
        hi, lo = _slide(x, n, l, c, hi, lo, before, after, exact)
        y[n, c, l] = x[n, c, l] / _pow_beta(k + scale * (hi + lo), beta, mode)


@cuda.jit(device=True)
def _t(g, x, n, l, c, s, scale, beta, k, mode):
    # t_c = g_c x_c / (d_c^beta * d_c), the term channel c adds to its mirrored windows
    d = k + scale * s
    return float64(g[n, c, l]) * float64(x[n, c, l]) / (_pow_beta(d, beta, mode) * d)


@cuda.jit
def _backward_kernel(g, x, dx, before, after, scale, beta, k, mode, exact):
    # g, x, dx (N, C, L); one thread per (n, l)
    N, C, L = x.shape
    n, l = _column(L)
    if n >= N:
        return
    size = before + after + 1
    coef = 2.0 * scale * beta
    lead_hi = lead_lo = mid_hi = mid_lo = trail_hi = trail_lo = 0.0
    T_hi = 0.0                                  # sum of t over m - after .. m + before
    T_lo = 0.0
    for j in range(C + before):
        if j < C:
            lead_hi, lead_lo = _slide(x, n, l, j, lead_hi, lead_lo, before, after, exact)
            t = _t(g, x, n, l, j, lead_hi + lead_lo, scale, beta, k, mode)
            T_hi, T_lo = _add(T_hi, T_lo, t, exact)
        i = j - size                            # t_i leaves the mirrored window
        if i >= 0:
            trail_hi, trail_lo = _slide(x, n, l, i, trail_hi, trail_lo, before, after, exact)
            t = _t(g, x, n, l, i, trail_hi + trail_lo, scale, beta, k, mode)
            T_hi, T_lo = _add(T_hi, T_lo, -t, exact)
        if not math.isfinite(T_hi):
            # the rare path, as for the window sums: T from each t of its window
            T_hi = 0.0
            T_lo = 0.0
            for c in range(max(j - size + 1, 0), min(j + 1, C)):
                T_hi += _t(g, x, n, l, c, _window_sum(x, n, l, c, before, after), scale,
                           beta, k, mode)
        m = j - before
        if m >= 0:
            mid_hi, mid_lo = _slide(x, n, l, m, mid_hi, mid_lo, before, after, exact)
            r = _pow_beta(k + scale * (mid_hi + mid_lo), beta, mode)
            dx[n, m, l] = g[n, m, l] / r - coef * float64(x[n, m, l]) * (T_hi + T_lo)


def _launch(kernel, x, *args):
    N, _, L = x.shape
    if N * L:  # a grid of zero blocks is a launch error
        kernel[(N * L + THREADS - 1) // THREADS, THREADS](*args)


def lrn_forward(x, y, size, alpha, beta, k):
    """y = x / (k + alpha/size * window sum of x^2)^beta. x, y (N, C, L). One launch."""
    before, after = window(size)
    _launch(_forward_kernel, x, x, y, before, after, float(alpha) / size, float(beta),
            float(k), power_mode(beta), x.dtype == np.float64)


def lrn_backward(g, x, dx, size, alpha, beta, k):
    """dx (N, C, L) of lrn_forward for the upstream gradient g (N, C, L). One launch."""
    before, after = window(size)
    _launch(_backward_kernel, x, g, x, dx, before, after, float(alpha) / size, float(beta),
            float(k), power_mode(beta), x.dtype == np.float64)
