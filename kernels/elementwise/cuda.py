"""Element-wise ops on the GPU with numba.cuda: activations, softmaxes, bias add, dropout.

Layouts (see the family's __init__): flat (n,) for activations and dropout,
(A, L, B) for the softmaxes along L, (N, C, S) for bias_add. Arrays are CuPy
arrays on a GPU, NumPy arrays under the simulator.

    activations  one thread per element, grid-stride loop; relu/sigmoid/tanh share a
                 kernel per direction (a loop-invariant op code: fewer kernels to
                 compile and launch-configure).
    softmaxes    rows (B == 1): one block per row, max and sum reduced through shared
                 memory (a tree: no warp shuffles, so the simulator runs it).
                 columns (B > 1): one thread per (a, b) column looping over L; threads
                 of a warp read neighbouring b, so the loads coalesce.
    bias_add     forward one thread per element; backward one block per channel
                 reducing over N and S in shared memory (a gather: no atomics).
    dropout      one thread per element; the splitmix64 hash of (seed, i) in uint64,
                 the same arithmetic as the reference, so the mask is bit-identical.
"""

import math
import warnings

import numpy as np
from numba import cuda, float64

from nnkern.device import cuda_simulated

from . import SPLITMIX_GAMMA, SPLITMIX_M1, SPLITMIX_M2

# Threads per block. The simulator runs every thread as a Python thread, so it gets small
# blocks; the code path is the same (rows longer than a block still loop).
THREADS = 16 if cuda_simulated() else 128           # row/channel reductions (power of 2)
ELEMENT_THREADS = 32 if cuda_simulated() else 256   # element-wise kernels
MAX_BLOCKS = 65535                                  # grid-stride loops cover the rest

RELU, SIGMOID, TANH = 0, 1, 2

_GAMMA = np.uint64(SPLITMIX_GAMMA)
_M1 = np.uint64(SPLITMIX_M1)
_M2 = np.uint64(SPLITMIX_M2)


def _blocks(n, threads):
    return max(1, min(MAX_BLOCKS, (n + threads - 1) // threads))


@cuda.jit(device=True)
def _block_reduce_sum(red, t):
    # red (THREADS,) shared; leaves the sum in red[0]
    cuda.syncthreads()
    stride = THREADS // 2
    while stride > 0:
        if t < stride:
            red[t] += red[t + stride]
        cuda.syncthreads()
        stride //= 2


@cuda.jit(device=True)
def _block_reduce_max(red, t):
    # red (THREADS,) shared; leaves the max in red[0]
    cuda.syncthreads()
    stride = THREADS // 2
    while stride > 0:
        if t < stride and red[t + stride] > red[t]:
            red[t] = red[t + stride]
        cuda.syncthreads()
        stride //= 2


# ----------------------------------------------------------------------------
# activations


@cuda.jit
def _activation_forward(x, y, op):
    # x, y (n,)
    start, step = cuda.grid(1), cuda.gridsize(1)
    real = y.dtype.type
    for i in range(start, x.shape[0], step):
        v = x[i]
        if op == RELU:
            y[i] = v if not v < 0 else real(0)
        elif op == SIGMOID:
            e = math.exp(-abs(v))
            y[i] = real(1) / (real(1) + e) if v >= 0 else e / (real(1) + e)
        else:
            y[i] = math.tanh(v)


@cuda.jit
def _activation_backward(g, saved, dx, op):
    # g, saved, dx (n,); saved is x for relu, the output y for sigmoid and tanh
    start, step = cuda.grid(1), cuda.gridsize(1)
    real = dx.dtype.type
    for i in range(start, g.shape[0], step):
        s = saved[i]
        if op == RELU:
            dx[i] = g[i] if s > 0 else real(0)
        elif op == SIGMOID:
            dx[i] = g[i] * s * (real(1) - s)
        else:
            dx[i] = g[i] * (real(1) - s * s)


def _launch_flat(kernel, n, *args):
    if n:
        kernel[_blocks(n, ELEMENT_THREADS), ELEMENT_THREADS](*args)


def relu_forward(x, y):
    """y (n,) = max(x, 0) (NaN stays NaN)."""
    _launch_flat(_activation_forward, x.shape[0], x, y, RELU)


def relu_backward(g, x, dx):
    """dx (n,) = g where x > 0, else 0."""
    _launch_flat(_activation_backward, g.shape[0], g, x, dx, RELU)


def sigmoid_forward(x, y):
    """y (n,) = 1 / (1 + exp(-x))."""
    _launch_flat(_activation_forward, x.shape[0], x, y, SIGMOID)


def sigmoid_backward(g, y, dx):
    """dx (n,) = g * y * (1 - y), y the saved output."""
    _launch_flat(_activation_backward, g.shape[0], g, y, dx, SIGMOID)


def tanh_forward(x, y):
    """y (n,) = tanh(x)."""
    _launch_flat(_activation_forward, x.shape[0], x, y, TANH)


def tanh_backward(g, y, dx):
    """dx (n,) = g * (1 - y^2), y the saved output."""
    _launch_flat(_activation_backward, g.shape[0], g, y, dx, TANH)


# ----------------------------------------------------------------------------
# softmax and log_softmax, rows: one block per row of (A, L)


@cuda.jit
def _softmax_rows(x, y, log):
    # x, y (A, L); grid: one block of THREADS threads per row
    _A, L = x.shape
    a = cuda.blockIdx.x
    t = cuda.threadIdx.x
    red = cuda.shared.array(THREADS, float64)
    real = y.dtype.type
    m = x[a, 0]
    for j in range(t, L, THREADS):
        m = max(m, x[a, j])
    red[t] = m
    _block_reduce_max(red, t)
    m = real(red[0])
    cuda.syncthreads()
    s = 0.0
    for j in range(t, L, THREADS):
        s += math.exp(x[a, j] - m)
    red[t] = s
    _block_reduce_sum(red, t)
    if log:
        log_s = real(math.log(red[0]))
        for j in range(t, L, THREADS):
            y[a, j] = (x[a, j] - m) - log_s
    else:
        inv = real(1.0 / red[0])
        for j in range(t, L, THREADS):
            y[a, j] = real(math.exp(x[a, j] - m)) * inv


@cuda.jit
def _softmax_rows_backward(g, y, dx, log):
    # g, y, dx (A, L); softmax: dx = y (g - sum g y); log_softmax: dx = g - exp(y) sum g
    _A, L = y.shape
    a = cuda.blockIdx.x
    t = cuda.threadIdx.x
    red = cuda.shared.array(THREADS, float64)
    real = dx.dtype.type
    acc = 0.0
    for j in range(t, L, THREADS):
        acc += g[a, j] if log else g[a, j] * y[a, j]
    red[t] = acc
    _block_reduce_sum(red, t)
    total = real(red[0])
    for j in range(t, L, THREADS):
        if log:
            dx[a, j] = g[a, j] - real(math.exp(y[a, j])) * total
        else:
            dx[a, j] = y[a, j] * (g[a, j] - total)


# columns: one thread per (a, b) of (A, L, B)


@cuda.jit
def _softmax_columns(x, y, log):
    # x, y (A, L, B)
    A, L, B = x.shape
    start, step = cuda.grid(1), cuda.gridsize(1)
    real = y.dtype.type
    for k in range(start, A * B, step):
        a = k // B
        b = k % B
        m = x[a, 0, b]
        for i in range(1, L):
            m = max(m, x[a, i, b])
        s = 0.0
        for i in range(L):
            s += math.exp(x[a, i, b] - m)
        if log:
            log_s = real(math.log(s))
            for i in range(L):
                y[a, i, b] = (x[a, i, b] - m) - log_s
        else:
            inv = real(1.0 / s)
            for i in range(L):
                y[a, i, b] = real(math.exp(x[a, i, b] - m)) * inv


@cuda.jit
def _softmax_columns_backward(g, y, dx, log):
    # g, y, dx (A, L, B)
    A, L, B = y.shape
    start, step = cuda.grid(1), cuda.gridsize(1)
    real = dx.dtype.type
    for k in range(start, A * B, step):
        a = k // B
        b = k % B
        acc = 0.0
        for i in range(L):
            acc += g[a, i, b] if log else g[a, i, b] * y[a, i, b]
        total = real(acc)
        for i in range(L):
            if log:
                dx[a, i, b] = g[a, i, b] - real(math.exp(y[a, i, b])) * total
            else:
                dx[a, i, b] = y[a, i, b] * (g[a, i, b] - total)


def _softmax(x, y, log):
    A, L, B = x.shape
    if B == 1:
        _softmax_rows[A, THREADS](x.reshape(A, L), y.reshape(A, L), log)
    else:
        _softmax_columns[_blocks(A * B, ELEMENT_THREADS), ELEMENT_THREADS](x, y, log)


def _softmax_backward(g, y, dx, log):
    A, L, B = y.shape
    if B == 1:
        _softmax_rows_backward[A, THREADS](g.reshape(A, L), y.reshape(A, L),
                                           dx.reshape(A, L), log)
    else:
        _softmax_columns_backward[_blocks(A * B, ELEMENT_THREADS), ELEMENT_THREADS](
            g, y, dx, log)


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


@cuda.jit
def _bias_add(x, b, y):
    # x, y (N, C, S), b (C,); one thread per element
    N, C, S = x.shape
    start, step = cuda.grid(1), cuda.gridsize(1)
    for k in range(start, N * C * S, step):
        n = k // (C * S)
        c = (k // S) % C
        s = k % S
        y[n, c, s] = x[n, c, s] + b[c]


@cuda.jit
def _bias_grad(g, db):
    # g (N, C, S), db (C,); one block per channel sums its N * S values
    N, _C, S = g.shape
    c = cuda.blockIdx.x
    t = cuda.threadIdx.x
    red = cuda.shared.array(THREADS, float64)
    acc = 0.0
    for k in range(t, N * S, THREADS):
        acc += g[k // S, c, k % S]
    red[t] = acc
    _block_reduce_sum(red, t)
    if t == 0:
        db[c] = red[0]


def bias_add_forward(x, b, y):
    """y (N, C, S) = x + b[c]."""
    _launch_flat(_bias_add, x.size, x, b, y)


def bias_add_backward(g, db):
    """db (C,) = sum of g (N, C, S) over N and S."""
    C = g.shape[1]
    if C:
        _bias_grad[C, THREADS](g, db)


# ----------------------------------------------------------------------------
# dropout


@cuda.jit
def _dropout(x, y, threshold, scale, seed):
    # x, y (n,); keep element i when the top 32 bits of splitmix64(seed + (i + 1) gamma)
    # are >= threshold; uint64 arithmetic wraps like the reference's
    start, step = cuda.grid(1), cuda.gridsize(1)
    real = y.dtype.type
    for i in range(start, x.shape[0], step):
        z = seed + (np.uint64(i) + np.uint64(1)) * _GAMMA
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        z = z ^ (z >> np.uint64(31))
        y[i] = x[i] * real(scale) if (z >> np.uint64(32)) >= threshold else real(0)


def dropout_apply(x, y, threshold, scale, seed):
    """y (n,) = x * scale where hash(seed, i) >= threshold, else 0."""
    args = (x, y, np.uint64(threshold), float(scale), np.uint64(seed))
    if cuda_simulated():
        # the simulator runs the kernel on NumPy uint64 scalars, which warn when the
        # (intended) modular multiply wraps; the GPU wraps silently
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "overflow encountered", RuntimeWarning)
            _launch_flat(_dropout, x.shape[0], *args)
    else:
        _launch_flat(_dropout, x.shape[0], *args)
