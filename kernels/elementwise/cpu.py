"""Element-wise ops on the CPU with Numba: activations, softmaxes, bias add, dropout.

Layouts (see the family's __init__): flat (n,) for activations and dropout,
(A, L, B) for the softmaxes along L, (N, C, S) for bias_add.

Every kernel runs serially below SERIAL_BELOW elements (a parallel region costs
about 2 us more than it saves there, PERF.md) and in prange above. Memory-bound:
each element is read and written once, except the softmaxes, which read a row
while it sits in cache.

    building     fast_exp / fast_tanh: branch-free float32 versions (no libm call,
    blocks       no zero-divisor branch) so that the loops calling them vectorise;
                 float64 keeps math.exp / math.tanh. row_max: a max in 16 lanes.
                 Also used by the softmax_ce family.
    activations  one kernel per direction for relu/sigmoid/tanh, one loop per op
                 inside it (picked by the op code) so that every loop vectorises;
                 chunks of CHUNK elements in prange above SERIAL_BELOW.
                 Tried and dropped: one loop calling a scalar rule that switched on a
                 loop-invariant op code (LLVM did not unswitch it): 1.8 us for 1024
                 float32 relus against 0.25 us now, sigmoid and tanh 3.9 -> 0.6-0.75 us
                 (the same NumPy-free call, python -m timeit, 2026-12-07).
    softmaxes    one row per prange iteration, contiguous, the max and the sum
                 reduced in registers; softmax and log_softmax share the kernels (flag
                 ``log``). An axis that is not the last one (B > 1) is transposed to
                 rows and back by NumPy (two copies): one kernel pair to read and to
                 compile instead of a second, strided one.
    bias_add     forward by samples of (C, S) planes; backward db by channel in
                 prange (4-D, no shared writes) or one serial pass (2-D).
    dropout      the splitmix64 hash of (seed, i), the same integer arithmetic as
                 the reference, so the mask is bit-identical; y = x * keep * scale in
                 that order on every backend (bit-identical values, NaN kept).

Speed, float32 (256, 4096), 2 threads, against torch CPU in the same process
(/tmp/sce/bench_ew.py on a loaded 2-core machine, so ratios only; torch time /
nnkern time, above 1 = nnkern faster): relu, sigmoid, tanh, softmax 0.8-1.2,
log_softmax 0.65, dropout 17-20.
"""

import math

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic, overload

from . import SPLITMIX_GAMMA, SPLITMIX_M1, SPLITMIX_M2

SERIAL_BELOW = 50_000     # elements
# reductions may be reassociated (vectorised) and fused; NaN and inf are still honoured
FASTMATH = {"reassoc", "contract"}
# error_model="numpy" where a loop divides: Python's model tests every division for a zero
# divisor (to raise ZeroDivisionError), and that branch stops LLVM from vectorising.

_GAMMA = np.uint64(SPLITMIX_GAMMA)
_M1 = np.uint64(SPLITMIX_M1)
_M2 = np.uint64(SPLITMIX_M2)


# ----------------------------------------------------------------------------
# vectorisable building blocks (also used by the softmax_ce family)


@intrinsic
def _bits_as_float32(typingctx, bits):
    """Reinterpret the bits of an int32 as a float32 (what C does with a union)."""
    sig = types.float32(types.int32)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return sig, codegen


def fast_exp(z):
    """exp(z): a vectorisable float32 version (below), math.exp for float64."""
    return math.exp(z)


@overload(fast_exp, jit_options={"fastmath": FASTMATH})
def _fast_exp_impl(z):
    if z != types.float32:
        return lambda z: math.exp(z)

    log2e = np.float32(1.4426950408889634)
    ln2_hi = np.float32(0.693359375)           # ln 2 split in two so k * ln2_hi is exact
    ln2_lo = np.float32(-2.12194440e-4)
    lowest = np.float32(-87.0)                 # below: float32 leaves the normals; give 0
    highest = np.float32(89.0)                 # k = 128 gives inf: from z = 88.38 (true
    #                                            overflow 88.72); every caller has z <= 0
    half = np.float32(0.5)
    c2, c3 = np.float32(1 / 2), np.float32(1 / 6)
    c4, c5, c6 = np.float32(1 / 24), np.float32(1 / 120), np.float32(1 / 720)

    def exp32(z):
        # z = k ln2 + r with |r| <= ln2 / 2, exp(z) = 2^k * exp(r); a NaN z stays NaN.
        # Branch-free (selects), no libm call: LLVM vectorises loops that call it.
        w = lowest if z < lowest else z        # noqa: FURB136 (max() would drop a NaN)
        w = highest if w > highest else w      # noqa: FURB136
        k = np.floor(w * log2e + half)         # float32 (math.floor would give int64)
        r = w - k * ln2_hi - k * ln2_lo
        p = np.float32(1) + r * (np.float32(1) + r * (c2 + r * (c3 + r * (c4 + r * (c5 + r * c6)))))
        two_k = _bits_as_float32((np.int32(k) + np.int32(127)) << np.int32(23))
        return p * two_k if not z < lowest else np.float32(0)

    return exp32


def fast_tanh(v):
    """tanh(v): a vectorisable float32 version (below), math.tanh for float64."""
    return math.tanh(v)


@overload(fast_tanh, jit_options={"fastmath": FASTMATH, "error_model": "numpy"})
def _fast_tanh_impl(v):
    if v != types.float32:
        return lambda v: math.tanh(v)

    one, two, quarter = np.float32(1), np.float32(2), np.float32(0.25)
    # Taylor series of tanh(a) / a in a^2, to a^10: relative error < 1e-9 for |a| < 0.25
    t1, t2, t3 = np.float32(-1 / 3), np.float32(2 / 15), np.float32(-17 / 315)
    t4, t5 = np.float32(62 / 2835), np.float32(-1382 / 155925)

    def tanh32(v):
        # |v| >= 1/4: (1 - e) / (1 + e), e = exp(-2|v|); below, the series, where 1 - e
        # would cancel. Both are computed and one selected, so the loop vectorises.
        a = abs(v)
        e = fast_exp(-two * a)
        big = (one - e) / (one + e)
        a2 = a * a
        small = a * (one + a2 * (t1 + a2 * (t2 + a2 * (t3 + a2 * (t4 + a2 * t5)))))
        return math.copysign(small if a < quarter else big, v)

    return tanh32


@njit(cache=True)
def row_max(x):
    """max of x (L,), in 16 independent lanes, which the SLP vectoriser turns into two AVX
    registers (one running max is a serial chain it will not reorder). A NaN is not
    propagated here; the callers' sums of exp(x - max) that follow propagate it.
    """
    L = x.shape[0]
    if L < 64:                                 # short rows: not worth the lane buffer
        m = x[0]
        for j in range(1, L):
            m = x[j] if x[j] > m else m  # noqa: FURB136
        return m
    lanes = np.empty(16, x.dtype)
    for k in range(16):
        lanes[k] = x[0]
    blocks = L // 16
    for blk in range(blocks):
        for k in range(16):
            v = x[blk * 16 + k]
            lanes[k] = v if v > lanes[k] else lanes[k]  # noqa: FURB136 (a select vectorises)
    m = lanes[0]
    for k in range(1, 16):
        m = lanes[k] if lanes[k] > m else m  # noqa: FURB136
    for j in range(blocks * 16, L):
        m = x[j] if x[j] > m else m  # noqa: FURB136
    return m


# ----------------------------------------------------------------------------
# activations on flat arrays


# One kernel per direction for the three activations, with a loop per op inside: the op
# code picks the loop, so each loop body is one op and vectorises (a single loop that
# switched on the op per element did not: 1.8 us for 1024 float32 relus, against 0.25 us
# now, most of it Numba's call). Two kernels instead of six keep the cold compile short.
# ``one`` comes in the array's dtype so float32 math stays float32 (a Python 1 would
# promote it to float64).
RELU, SIGMOID, TANH = 0, 1, 2
CHUNK = 16384             # elements per prange iteration above SERIAL_BELOW


@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def _activation_span(x, y, op):
    # x, y (n,)
    one = y.dtype.type(1)
    zero = one - one
    if op == RELU:
        for i in range(x.shape[0]):
            v = x[i]
            y[i] = v if not v < zero else zero      # keeps NaN, like torch; -inf gives 0
    elif op == SIGMOID:
        for i in range(x.shape[0]):
            v = x[i]
            e = fast_exp(-abs(v))                   # no overflow for either sign
            y[i] = one / (one + e) if v >= zero else e / (one + e)
    else:
        for i in range(x.shape[0]):
            y[i] = fast_tanh(x[i])


@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def _activation_grad_span(g, saved, dx, op):
    # g, saved, dx (n,); saved is x for relu, the output y for sigmoid and tanh
    one = dx.dtype.type(1)
    zero = one - one
    if op == RELU:
        for i in range(g.shape[0]):
            # torch's select on x: x = NaN passes g, and g = NaN where x <= 0 gives 0
            dx[i] = zero if saved[i] <= zero else g[i]
    elif op == SIGMOID:
        for i in range(g.shape[0]):
            dx[i] = g[i] * saved[i] * (one - saved[i])
    else:
        for i in range(g.shape[0]):
            dx[i] = g[i] * (one - saved[i] * saved[i])


@njit(parallel=True, cache=True)
def _activation_forward(x, y, op):
    # x, y (n,): serially below SERIAL_BELOW, else chunks of CHUNK in prange
    n = x.shape[0]
    if n < SERIAL_BELOW:
        _activation_span(x, y, op)
    else:
        for c in prange((n + CHUNK - 1) // CHUNK):
            lo = c * CHUNK
            hi = min(n, lo + CHUNK)
            _activation_span(x[lo:hi], y[lo:hi], op)


@njit(parallel=True, cache=True)
def _activation_backward(g, saved, dx, op):
    # g, saved, dx (n,)
    n = g.shape[0]
    if n < SERIAL_BELOW:
        _activation_grad_span(g, saved, dx, op)
    else:
        for c in prange((n + CHUNK - 1) // CHUNK):
            lo = c * CHUNK
            hi = min(n, lo + CHUNK)
            _activation_grad_span(g[lo:hi], saved[lo:hi], dx[lo:hi], op)


def relu_forward(x, y):
    """y (n,) = max(x, 0) (NaN stays NaN)."""
    _activation_forward(x, y, RELU)


def relu_backward(g, x, dx):
    """dx (n,) = 0 where x <= 0, else g (so a NaN x passes g)."""
    _activation_backward(g, x, dx, RELU)


def sigmoid_forward(x, y):
    """y (n,) = 1 / (1 + exp(-x))."""
    _activation_forward(x, y, SIGMOID)


def sigmoid_backward(g, y, dx):
    """dx (n,) = g * y * (1 - y), y the saved output."""
    _activation_backward(g, y, dx, SIGMOID)


def tanh_forward(x, y):
    """y (n,) = tanh(x)."""
    _activation_forward(x, y, TANH)


def tanh_backward(g, y, dx):
    """dx (n,) = g * (1 - y^2), y the saved output."""
    _activation_backward(g, y, dx, TANH)


# ----------------------------------------------------------------------------
# softmax and log_softmax: rows (B == 1) and columns (B > 1)


@njit(cache=True, fastmath=FASTMATH)
def _softmax_row(x, y, log):
    # x, y (L,) contiguous
    L = x.shape[0]
    m = row_max(x)
    s = 0.0
    for j in range(L):
        e = fast_exp(x[j] - m)
        s += e
        if not log:
            y[j] = e
    if log:
        log_s = y.dtype.type(math.log(s))
        for j in range(L):
            y[j] = (x[j] - m) - log_s
    else:
        inv = y.dtype.type(1.0 / s)
        for j in range(L):
            y[j] *= inv


@njit(parallel=True, cache=True)
def _softmax_rows(x, y, log):
    # x, y (A, L): a softmax along each contiguous row
    A, L = x.shape
    if A * L < SERIAL_BELOW:
        for a in range(A):
            _softmax_row(x[a], y[a], log)
    else:
        for a in prange(A):
            _softmax_row(x[a], y[a], log)


@njit(cache=True, fastmath=FASTMATH)
def _softmax_row_backward(g, y, dx, log):
    # g, y, dx (L,): softmax dx = y (g - sum g y); log_softmax dx = g - exp(y) sum g
    L = y.shape[0]
    acc = 0.0
    if log:
        for j in range(L):
            acc += g[j]
        total = y.dtype.type(acc)
        for j in range(L):
            dx[j] = g[j] - fast_exp(y[j]) * total
    else:
        for j in range(L):
            acc += g[j] * y[j]
        total = y.dtype.type(acc)
        for j in range(L):
            dx[j] = y[j] * (g[j] - total)


@njit(parallel=True, cache=True)
def _softmax_rows_backward(g, y, dx, log):
    # g, y, dx (A, L)
    A, L = y.shape
    if A * L < SERIAL_BELOW:
        for a in range(A):
            _softmax_row_backward(g[a], y[a], dx[a], log)
    else:
        for a in prange(A):
            _softmax_row_backward(g[a], y[a], dx[a], log)


def _as_rows(a):
    # (A, L, B) -> (A * B, L) contiguous rows: the softmax axis last
    A, L, B = a.shape
    return np.ascontiguousarray(a.transpose(0, 2, 1)).reshape(A * B, L)


def _from_rows(rows, out):
    # (A * B, L) rows -> out (A, L, B)
    A, L, B = out.shape
    out[...] = rows.reshape(A, B, L).transpose(0, 2, 1)


def _softmax(x, y, log):
    A, L, B = x.shape
    if B == 1:
        _softmax_rows(x.reshape(A, L), y.reshape(A, L), log)
    else:
        rows = np.empty((A * B, L), y.dtype)
        _softmax_rows(_as_rows(x), rows, log)
        _from_rows(rows, y)


def _softmax_backward(g, y, dx, log):
    A, L, B = y.shape
    if B == 1:
        _softmax_rows_backward(g.reshape(A, L), y.reshape(A, L), dx.reshape(A, L), log)
    else:
        rows = np.empty((A * B, L), dx.dtype)
        _softmax_rows_backward(_as_rows(g), _as_rows(y), rows, log)
        _from_rows(rows, dx)


def softmax_forward(x, y):
    """y (A, L, B) = softmax of x along L."""
    _softmax(x, y, False)


def softmax_backward(g, y, dx):
    """dx (A, L, B) = y * (g - sum_L(g * y))."""
    _softmax_backward(g, y, dx, False)


def log_softmax_forward(x, y):
    """y (A, L, B) = log_softmax of x along L."""
    _softmax(x, y, True)


def log_softmax_backward(g, y, dx):
    """dx (A, L, B) = g - exp(y) * sum_L(g)."""
    _softmax_backward(g, y, dx, True)


# ----------------------------------------------------------------------------
# bias add


@njit(cache=True)
def _bias_add_sample(x, b, y):
    # x, y (C, S): one sample's channel planes, b (C,)
    C, S = x.shape
    for c in range(C):
        for s in range(S):
            y[c, s] = x[c, s] + b[c]


@njit(parallel=True, cache=True)
def _bias_add(x, b, y):
    # x, y (N, C, S), b (C,): one sample per iteration. The sizes come from the shape,
    # never from a division by C (C = 0 is a valid, empty call).
    N = x.shape[0]
    if x.size < SERIAL_BELOW:
        for n in range(N):
            _bias_add_sample(x[n], b, y[n])
    else:
        for n in prange(N):
            _bias_add_sample(x[n], b, y[n])


def bias_add_forward(x, b, y):
    """y (N, C, S) = x + b[c]."""
    _bias_add(x, b, y)


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def _bias_grad(g, db):
    # g (N, C, S), db (C,), float64 sums. S > 1: one channel per prange iteration.
    # S == 1 (a dense layer's (N, C)): one serial pass down the rows, vectorised along C
    # (a small array: N times the layer width).
    N, C, S = g.shape
    if S == 1:
        acc = np.zeros(C, np.float64)
        for n in range(N):
            for c in range(C):
                acc[c] += g[n, c, 0]
        for c in range(C):
            db[c] = acc[c]
    else:
        for c in prange(C):
            acc_c = 0.0
            for n in range(N):
                for s in range(S):
                    acc_c += g[n, c, s]
            db[c] = acc_c


def bias_add_backward(g, db):
    """db (C,) = sum of g (N, C, S) over N and S."""
    _bias_grad(g, db)


# ----------------------------------------------------------------------------
# dropout: the mask is the splitmix64 hash of (seed, flat index)


@njit(cache=True)
def _keep(seed, i, threshold):
    # top 32 bits of splitmix64(seed + (i + 1) gamma) compared with floor(p 2^32)
    z = seed + (np.uint64(i) + np.uint64(1)) * _GAMMA
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(32)) >= threshold


@njit(parallel=True, cache=True)
def _dropout(x, y, threshold, scale, seed):
    # x, y (n,); scale already in x's dtype. y = x * keep * scale with keep in {0, 1}: a
    # product, not a select that writes 0, so a dropped NaN or inf gives NaN (torch).
    n = x.shape[0]
    one = x.dtype.type(1)
    zero = one - one
    if n < SERIAL_BELOW:
        for i in range(n):
            y[i] = x[i] * (one if _keep(seed, i, threshold) else zero) * scale
    else:
        for i in prange(n):
            y[i] = x[i] * (one if _keep(seed, i, threshold) else zero) * scale


def dropout_apply(x, y, threshold, scale, seed):
    """y (n,) = x * keep * scale, keep = 1 where hash(seed, i) >= threshold, else 0."""
    _dropout(x, y, np.uint64(threshold), x.dtype.type(scale), np.uint64(seed))
