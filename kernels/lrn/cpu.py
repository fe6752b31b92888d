"""Local response normalisation on the CPU with Numba.

x is (N, C, L); the window of channel c is c - before .. c + after
(``reference.window``). See reference.py for the maths.

Versions
    kernel 1 (this file): a sliding window over the channels. A task is one sample
        and one tile of positions (at most TILE of them, contiguous in memory); it
        walks the channels once, keeping the window sums of its positions in a
        float64 row: s_c = s_(c-1) + x_(c+after)^2 - x_(c-before-1)^2. Each input is
        read three times per output (entering the window, leaving it, its own
        quotient), whatever the size, where a direct sum reads it ``size`` times;
        the rows it re-reads were touched a few channels earlier, so they come from
        L1/L2. ``prange`` over (sample, tile) tasks: no two write one element.
        - Running sums and cancellation. A float32 square is exact in float64, so for
          float32 inputs a float64 running sum drifts by about C * 1e-16 of the
          largest window seen: invisible at float32's precision. For float64 inputs
          that drift showed: one channel 1000x its neighbours (test_large_dynamic_range)
          left the next windows' sums wrong in the 9th digit, against the tests' 1e-9.
          Float64 inputs therefore carry each sum's rounding errors in a second row
          (TwoSum: the same square added and later subtracted cancels exactly).
        - A NaN or inf stays in a running sum once it entered it (inf - inf is NaN);
          each step flags non-finite sums (a select inside the vectorised loop) and
          the rare path recomputes just those from their window, so a bad input spoils
          only the outputs whose window holds it, as in the reference and PyTorch.
        - d^beta for beta in {0.75, 0.5, 1} by square roots (sqrt(d) * sqrt(sqrt(d)) for
          AlexNet's 0.75), which vectorise; this Numba has no SVML, so a general pow is
          a scalar libm call per element. Other betas take that path.
        - d is stored into a row of x's dtype before the power, so for float32 the
          roots and the quotient run in float32 (8 lanes per AVX2/AVX-512 ymm vector).
        - error_model="numpy": Python's division-by-zero check is a branch that kept
          every loop with a division scalar (measured: 0 of the divisions vectorised).
        - Loops with few rows: one loop over all eight rows of the backward step was
          left scalar (LLVM gives up on that many aliasing checks); split in two, both
          vectorise.
        - Rows taken as acc_rows[tid, row, :nl], never as rows of a 2-D view
          (acc_rows[tid, 4:, :nl][i] has a run-time stride to Numba, layout "A", and the
          ring's loops stayed scalar): fwd+bwd on (32, 16, 28, 28), the AlexNet
          example's lrn1, went from 6.0x to 10-11.7x PyTorch.
        - Tried, inconclusive on the busy shared machine: whole rows as one tile
          (TILE 1024/4096 against 512: 0.9-1.5x, the same setting differing by 25%
          between rounds) and fastmath {afn, arcp} on the power and the quotient
          (no change: the roots are not the bottleneck; beta = 1, no roots at all, ran
          only 10% faster than 0.75). TILE stays 512.
        - Backward, in the same single sweep: channel j's window sum gives d_j,
          r_j = d_j^beta, q_j = g_j / r_j (kept in dx's row j until it is final) and
          t_j = g_j x_j / (r_j d_j) (kept in a ring of size + 1 float64 rows); a
          second running sum T over the mirrored window, T_m = sum of t over
          m - after .. m + before, finishes dx_m = q_m - 2 alpha beta / size * x_m * T_m
          as soon as t_(m+before) is known (m = j - before). One power per element,
          as in the forward.
        Speed (bench/cases/lrn.py, ratios against PyTorch in its header): fwd+bwd 12-13x
        torch on (32, 96, 55, 55), 9-10x on (32, 256, 27, 27) and 10-11x on (32, 16, 28,
        28), measured while other processes took 30-70% of the 2 CPUs; 3.7-5.2 GB/s against a
        copy ceiling of about 25 GB/s. Against a parallel copy of x in the same process
        the forward ran at about 1/3 and the backward at about 1/4 of copy speed, so it
        is not yet memory-bound: the per-channel passes over the L1 rows (float64
        sums, conversions) cost more than the traffic.
"""

import numba
import numpy as np
from nnkern.kernels._workspace import workspace
from numba import njit, prange

from .reference import power_mode, window

TILE = 512
"""Most positions per task: the float64 rows of one task (backward: size + 5 of them)
stay in L1/L2 for AlexNet's size 5."""

# Division by zero gives inf/NaN as in NumPy (d = 0 is 0/0 = NaN, as in the reference)
# instead of Python's ZeroDivisionError check, whose branch kept every loop scalar.
_JIT = {"error_model": "numpy"}


@njit(inline="always", **_JIT)
def _two_sum(a, b):
    # a + b rounded, and its rounding error, exactly (Knuth's TwoSum; no fastmath in this
    # file, so LLVM keeps the order of the operations)
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


@njit(inline="always", **_JIT)
def _slide_squares(xa, xr, hi, lo, exact):
    # hi (+ lo) += xa^2 - xr^2 per position; True when a sum is not finite (_mend_sums).
    # exact (float64 inputs): lo keeps the rounding errors of hi, so a sum that shrinks
    # after a large square left the window keeps float64's precision; float32 squares
    # are exact in float64 and need no lo.
    bad = False
    if exact:
        for i in range(hi.size):
            va = np.float64(xa[i])
            vr = np.float64(xr[i])
            s, e1 = _two_sum(hi[i], va * va)
            s, e2 = _two_sum(s, -(vr * vr))
            hi[i] = s
            lo[i] += e1 + e2
            if s - s != 0.0:    # NaN or inf; a select, so the loop still vectorises
                bad = True
    else:
        for i in range(hi.size):
            va = np.float64(xa[i])
            vr = np.float64(xr[i])
            s = hi[i] + (va * va - vr * vr)
            hi[i] = s
            if s - s != 0.0:
                bad = True
    return bad


@njit(inline="always", **_JIT)
def _slide_terms(tin, tout, hi, lo, exact):
    # hi (+ lo) += tin - tout per position (float64 rows); True when a sum is not finite
    bad = False
    if exact:
        for i in range(hi.size):
            s, e1 = _two_sum(hi[i], tin[i])
            s, e2 = _two_sum(s, -tout[i])
            hi[i] = s
            lo[i] += e1 + e2
            if s - s != 0.0:
                bad = True
    else:
        for i in range(hi.size):
            s = hi[i] + (tin[i] - tout[i])
            hi[i] = s
            if s - s != 0.0:
                bad = True
    return bad


@njit(inline="always", **_JIT)
def _denominators(hi, lo, d, scale, k):
    # d = k + scale * (window sum), stored in x's dtype
    for i in range(hi.size):
        d[i] = k + scale * (hi[i] + lo[i])


@njit(inline="always", **_JIT)
def _power(d, r, beta, mode):
    # r = d^beta, element-wise over two rows of x's dtype. The branch stays outside the
    # loops, so each loop vectorises (a branch inside kept the whole sweep scalar).
    if mode == 1:
        for i in range(d.size):
            q = np.sqrt(d[i])
            r[i] = q * np.sqrt(q)
    elif mode == 2:
        for i in range(d.size):
            r[i] = np.sqrt(d[i])
    elif mode == 3:
        for i in range(d.size):
            r[i] = d[i]
    else:
        for i in range(d.size):
            r[i] = d[i] ** beta


@njit(cache=True, **_JIT)
def _mend_sums(x, n, c, l0, hi, lo, before, after):
    # The rare path: a NaN or inf that entered a running sum stays there (inf - inf is
    # NaN) after it has left the window. Each non-finite sum is recomputed from its
    # window, so a non-finite input spoils only the outputs whose window holds it, as
    # in the reference.
    C = x.shape[1]
    for i in range(hi.size):
        if not np.isfinite(hi[i]):
            s = 0.0
            for j in range(max(c - before, 0), min(c + after + 1, C)):
                v = np.float64(x[n, j, l0 + i])
                s += v * v
            hi[i] = s
            lo[i] = 0.0


@njit(cache=True, **_JIT)
def _mend_terms(ring, hi, lo, j, size, C):
    # The rare path of T, as _mend_sums: a non-finite T is recomputed from the ring,
    # which holds t of the whole mirrored window (channels j - size + 1 .. j).
    R = ring.shape[0]
    for i in range(hi.size):
        if not np.isfinite(hi[i]):
            T = 0.0
            for c in range(max(j - size + 1, 0), min(j + 1, C)):
                T += ring[c % R, i]
            hi[i] = T
            lo[i] = 0.0


@njit(inline="always", **_JIT)
def _first_sums(x, n, l0, hi, lo, after):
    # the window sums of channel -1: the squares of channels 0 .. after - 1
    C = x.shape[1]
    nl = hi.size
    hi[:] = 0.0
    lo[:] = 0.0
    for j in range(min(after, C)):
        xj = x[n, j, l0:l0 + nl]
        for i in range(nl):
            v = np.float64(xj[i])
            hi[i] += v * v


@njit(inline="always", **_JIT)
def _tile(task, tiles, TL, L):
    # task -> (sample n, first position l0, positions nl) of its tile
    n = task // tiles
    l0 = (task - n * tiles) * TL
    return n, l0, min(TL, L - l0)


@njit(inline="always", **_JIT)
def _step(x, n, c, l0, zero, hi, lo, d, r, before, after, scale, beta, k, mode, exact):
    # The window moves to channel c: its sums (hi, lo), then d = k + scale * sum and
    # r = d^beta in x's dtype
    C = x.shape[1]
    nl = hi.size
    xa = x[n, c + after, l0:l0 + nl] if c + after < C else zero[:nl]   # entering
    xr = x[n, c - before - 1, l0:l0 + nl] if c > before else zero[:nl]  # leaving
    if _slide_squares(xa, xr, hi, lo, exact):
        _mend_sums(x, n, c, l0, hi, lo, before, after)
    _denominators(hi, lo, d, scale, k)
    _power(d, r, beta, mode)


@njit(parallel=True, cache=True, **_JIT)
def _forward(x, y, before, after, scale, beta, k, mode, exact, tiles, acc_rows, d_rows, zero):
    # x, y (N, C, L); acc_rows (threads, 2, TL) float64 (the window sums and their
    # rounding errors) and d_rows (threads, 2, TL) of x's dtype (d and d^beta): one set per
    # thread; zero (L,) zeros of x's dtype, the rows outside 0..C-1. Rows are sliced to
    # the tile so every loop runs from 0 (it vectorises).
    N, C, L = x.shape
    TL = acc_rows.shape[2]
    for task in prange(N * tiles):
        n, l0, nl = _tile(task, tiles, TL, L)
        tid = numba.get_thread_id()
        hi = acc_rows[tid, 0, :nl]
        lo = acc_rows[tid, 1, :nl]
        d = d_rows[tid, 0, :nl]
        r = d_rows[tid, 1, :nl]
        _first_sums(x, n, l0, hi, lo, after)
        for c in range(C):
            _step(x, n, c, l0, zero, hi, lo, d, r, before, after, scale, beta, k, mode, exact)
            xc = x[n, c, l0:l0 + nl]
            yc = y[n, c, l0:l0 + nl]
            for i in range(nl):
                yc[i] = xc[i] / r[i]


@njit(parallel=True, cache=True, **_JIT)
def _backward(g, x, dx, before, after, scale, beta, k, mode, exact, tiles, acc_rows, d_rows,
              zero, zero64):
    # g, x, dx (N, C, L); acc_rows (threads, 4 + size + 1, TL) float64: the window sum s
    # and its rounding errors, the mirrored sum T and its errors, then a ring of size + 1
    # rows of t; d_rows (threads, 2, TL) of x's dtype; zero (L,) zeros of x's dtype;
    # zero64 (TL,) float64 zeros
    N, C, L = x.shape
    TL = acc_rows.shape[2]
    R = acc_rows.shape[1] - 4          # ring rows: t_j and t_(j - size) are both needed
    size = before + after + 1
    coef = 2.0 * scale * beta
    for task in prange(N * tiles):
        n, l0, nl = _tile(task, tiles, TL, L)
        tid = numba.get_thread_id()
        s_hi = acc_rows[tid, 0, :nl]
        s_lo = acc_rows[tid, 1, :nl]
        t_hi = acc_rows[tid, 2, :nl]
        t_lo = acc_rows[tid, 3, :nl]
        ring = acc_rows[tid, 4:, :nl]
        d = d_rows[tid, 0, :nl]
        r = d_rows[tid, 1, :nl]
        _first_sums(x, n, l0, s_hi, s_lo, after)
        t_hi[:] = 0.0
        t_lo[:] = 0.0
        for j in range(C + before):
            m = j - before                                     # the channel dx finishes
            # rows indexed in acc_rows itself: a row of the 2-D ring view has a run-time
            # stride to Numba (layout "A"), and its loops stayed scalar
            told = acc_rows[tid, 4 + (j - size) % R, :nl] if j >= size else zero64[:nl]
            tj = acc_rows[tid, 4 + j % R, :nl]
            if j < C:
                _step(x, n, j, l0, zero, s_hi, s_lo, d, r, before, after, scale, beta, k, mode,
                      exact)
                xj = x[n, j, l0:l0 + nl]
                gj = g[n, j, l0:l0 + nl]
                qj = dx[n, j, l0:l0 + nl]                      # holds q_j until row j is final
                # two loops, not one: with every row in one loop LLVM gave up on the
                # aliasing checks and left it scalar
                for i in range(nl):
                    qj[i] = gj[i] / r[i]
                for i in range(nl):
                    tj[i] = np.float64(gj[i]) * np.float64(xj[i]) / (
                        np.float64(r[i]) * np.float64(d[i]))
            else:
                tj[:] = 0.0                                    # channels past C add nothing
            if _slide_terms(tj, told, t_hi, t_lo, exact):
                _mend_terms(ring, t_hi, t_lo, j, size, C)
            if m >= 0:
                xm = x[n, m, l0:l0 + nl]
                dm = dx[n, m, l0:l0 + nl]
                for i in range(nl):
                    dm[i] = dm[i] - coef * np.float64(xm[i]) * (t_hi[i] + t_lo[i])


def _prepare(x, size, rows):
    # the window, the tiling and the per-thread scratch rows of one call
    L = x.shape[2]
    before, after = window(size)
    tiles = max(1, -(-L // TILE))
    TL = -(-L // tiles)                 # equal tiles of at most TILE positions
    threads = numba.get_num_threads()
    acc = workspace("lrn.acc", (threads, rows, TL), np.float64)
    d = workspace("lrn.d", (threads, 2, TL), x.dtype)
    zero = np.zeros(L, x.dtype)
    exact = x.dtype == np.float64
    return before, after, exact, tiles, acc, d, zero


def lrn_forward(x, y, size, alpha, beta, k):
    """y = x / (k + alpha/size * window sum of x^2)^beta. x, y (N, C, L)."""
    if x.size == 0:
        return
    before, after, exact, tiles, acc, d, zero = _prepare(x, size, 2)
    _forward(x, y, before, after, float(alpha) / size, float(beta), float(k), power_mode(beta),
             exact, tiles, acc, d, zero)


def lrn_backward(g, x, dx, size, alpha, beta, k):
    """dx (N, C, L) of lrn_forward for the upstream gradient g (N, C, L)."""
    if x.size == 0:
        return
    before, after, exact, tiles, acc, d, zero = _prepare(x, size, 4 + size + 1)
    zero64 = np.zeros(acc.shape[2])
    _backward(g, x, dx, before, after, float(alpha) / size, float(beta), float(k),
              power_mode(beta), exact, tiles, acc, d, zero, zero64)
