"""Local response normalisation in numba.cuda (CuPy arrays on a GPU, NumPy under the simulator).

x is (N, C, L); the window of channel c is c - before .. c + after
(``reference.window``). See reference.py for the maths, cpu.py for the CPU sweep.

Versions (one table, ``VERSIONS``)
    v1  one thread per column (n, l), walking the channels with a running window
        sum in registers, as the CPU kernel does per tile: each input is read a
        constant number of times, whatever the size. Consecutive threads hold
        consecutive positions l, so every channel step is a coalesced load of each
        row; the rows a thread reads again (leaving the window) were loaded a few
        channel steps earlier by the same warp, so they come from L1/L2. One launch
        per call, no shared memory, no atomics.
        - Arithmetic in the array's dtype (no float64 in float32 kernels:
          bench/ptx_check.py). A float32 running sum would drift by C float32
          roundings of the largest window seen, so every running sum carries its
          rounding errors (TwoSum, hi + lo): the same rounded square added and later
          subtracted cancels exactly, and a window after a 1000x channel keeps
          float32's precision (test_large_dynamic_range).
        - The backward has no ring of t rows (a thread's registers cannot be indexed
          by a run-time channel, and local memory would cost a store and a load per
          element): it keeps three running sums instead, at channel j (leading: t_j
          enters T), m = j - before (dx_m is finished) and j - size (t_(j-size) leaves
          T, recomputed from its own running sum). The three sums see the same
          additions in the same order, so the recomputed t equals the one added, bit
          for bit. Cost: three powers per element instead of one, on a memory-bound op.
        - A NaN or inf stays in a running sum once it entered it (inf - inf is NaN):
          a non-finite sum is recomputed directly from its window, so a bad input
          spoils only the outputs whose window holds it, as on the CPU.
        - d^beta by square roots for beta in {0.75, 0.5, 1} (as on the CPU), else pow.
        Compiled per dtype from ``build(T)`` with explicit signatures, launched through
        ``_cuda.launch``. No GPU timing yet (no GPU has been lent).
"""

import math

from numba import cuda, int64

from .._cuda import ELEMENT_THREADS, KernelTable, blocks, launch
from .reference import power_mode, window

VERSIONS = {"v1": "one thread per column, running window sums in registers"}


def choose():
    """The one version (kept for the common table/switch shape)."""
    return "v1", "one version"


def functions(T):
    """The forward and backward kernels for the Numba float type T."""
    zero = T(0)

    @cuda.jit(device=True)
    def two_sum(a, b):
        # a + b rounded, and its rounding error, exactly (Knuth's TwoSum)
        s = a + b
        bb = s - a
        return s, (a - (s - bb)) + (b - bb)

    @cuda.jit(device=True)
    def add(hi, lo, v):
        # (hi, lo) + v, lo keeping hi's rounding errors
        hi, e = two_sum(hi, v)
        return hi, lo + e

    @cuda.jit(device=True)
    def pow_beta(d, beta, mode):
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
    def window_sum(x, n, l, c, before, after):
        # the window sum of channel c, added directly
        s = zero
        for j in range(max(c - before, 0), min(c + after + 1, x.shape[1])):
            v = x[n, j, l]
            s += v * v
        return s

    @cuda.jit(device=True)
    def slide(x, n, l, c, hi, lo, before, after):
        # the window sum (hi, lo) of channel c from that of channel c - 1 (c = 0: from
        # the empty sum); a non-finite sum is recomputed directly
        if c == 0:
            hi = window_sum(x, n, l, -1, before, after)
            lo = zero
        if c + after < x.shape[1]:
            v = x[n, c + after, l]
            hi, lo = add(hi, lo, v * v)
        if c > before:
            v = x[n, c - before - 1, l]
            hi, lo = add(hi, lo, -(v * v))
        if not math.isfinite(hi):
            hi = window_sum(x, n, l, c, before, after)
            lo = zero
        return hi, lo

    @cuda.jit(device=True)
    def term(g, x, n, l, c, s, scale, beta, k, mode):
        # t_c = g_c x_c / (d_c^beta * d_c), what channel c adds to its mirrored windows
        d = k + scale * s
        return g[n, c, l] * x[n, c, l] / (pow_beta(d, beta, mode) * d)

    @cuda.jit(device=True)
    def column(L):
        # this thread's column (n, l): consecutive threads, consecutive positions
        idx = cuda.grid(1)
        n = idx // L
        return n, idx - n * L

    def forward(x, y, before, after, scale, beta, k, mode):
        # x, y (N, C, L); one thread per (n, l)
        N, C, L = x.shape
        n, l = column(L)
        if n >= N:
            return
        hi = zero
        lo = zero
        for c in range(C):
            hi, lo = slide(x, n, l, c, hi, lo, before, after)
            y[n, c, l] = x[n, c, l] / pow_beta(k + scale * (hi + lo), beta, mode)

    def backward(g, x, dx, before, after, scale, beta, k, mode, coef):
        # g, x, dx (N, C, L); one thread per (n, l); coef = 2 alpha beta / size
        N, C, L = x.shape
        n, l = column(L)
        if n >= N:
            return
        size = before + after + 1
        lead_hi = lead_lo = mid_hi = mid_lo = trail_hi = trail_lo = zero
        T_hi = zero                             # sum of t over m - after .. m + before
        T_lo = zero
        for j in range(C + before):
            if j < C:
                lead_hi, lead_lo = slide(x, n, l, j, lead_hi, lead_lo, before, after)
                t = term(g, x, n, l, j, lead_hi + lead_lo, scale, beta, k, mode)
                T_hi, T_lo = add(T_hi, T_lo, t)
            i = j - size                        # t_i leaves the mirrored window
            if i >= 0:
                trail_hi, trail_lo = slide(x, n, l, i, trail_hi, trail_lo, before, after)
                t = term(g, x, n, l, i, trail_hi + trail_lo, scale, beta, k, mode)
                T_hi, T_lo = add(T_hi, T_lo, -t)
            if not math.isfinite(T_hi):
                # the rare path, as for the window sums: T from each t of its window
                T_hi = zero
                T_lo = zero
                for c in range(max(j - size + 1, 0), min(j + 1, C)):
                    T_hi += term(g, x, n, l, c, window_sum(x, n, l, c, before, after), scale,
                                 beta, k, mode)
            m = j - before
            if m >= 0:
                mid_hi, mid_lo = slide(x, n, l, m, mid_hi, mid_lo, before, after)
                r = pow_beta(k + scale * (mid_hi + mid_lo), beta, mode)
                dx[n, m, l] = g[n, m, l] / r - coef * x[n, m, l] * (T_hi + T_lo)

    return forward, backward


def build(T):
    """{name: (python function, signature)} for the Numba float type T."""
    forward, backward = functions(T)
    A3 = T[:, :, ::1]
    i = int64
    return {
        "forward": (forward, (A3, A3, i, i, T, T, T, i)),
        "backward": (backward, (A3, A3, A3, i, i, T, T, T, i, T)),
    }


kernels = KernelTable(build)
"""``kernels(dtype)[name]``: compiled on first use."""


def _launch(name, x, *args):
    N, _, L = x.shape
    if N * L:  # a grid of zero blocks is a launch error
        launch(kernels(x.dtype)[name], blocks(N * L), ELEMENT_THREADS, *args)


def lrn_forward(x, y, size, alpha, beta, k):
    """y = x / (k + alpha/size * window sum of x^2)^beta. x, y (N, C, L). One launch."""
    before, after = window(size)
    t = x.dtype.type
    _launch("forward", x, x, y, before, after, t(alpha / size), t(beta), t(k),
            power_mode(beta))


def lrn_backward(g, x, dx, size, alpha, beta, k):
    """dx (N, C, L) of lrn_forward for the upstream gradient g (N, C, L). One launch."""
    before, after = window(size)
    t = x.dtype.type
    _launch("backward", x, g, x, dx, before, after, t(alpha / size), t(beta), t(k),
            power_mode(beta), t(2.0 * alpha * beta / size))
