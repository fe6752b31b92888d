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

Versions: one each. Version 2 of this file (issue 14) changed what every kernel
computes in, not how it walks: kernels are built per dtype with explicit signatures
(compiled once, on first use), and float32 kernels carry float32 sums and scalars
(`bench/ptx_check.py` fails on any float64 instruction in them; version 1 summed in
float64, 53-125 float64 instructions per softmax kernel). NaN rules are PyTorch's
(issue 12): relu backward is a select on x (`0 if x <= 0 else g`, so x = NaN passes
g), dropout multiplies by its 0/1 mask (a dropped NaN stays NaN).
"""

import math
import warnings

import numpy as np
from numba import boolean, cuda, int64, uint64

from .._cuda import (
    REDUCE_THREADS,
    SIM,
    KernelTable,
    block_max,
    block_sum,
    launch,
    launch_flat,
)
from . import SPLITMIX_GAMMA, SPLITMIX_M1, SPLITMIX_M2

THREADS = REDUCE_THREADS  # per row/channel reduction block
VERSIONS = {"v1": "one version per op (see the header)"}

RELU, SIGMOID, TANH = 0, 1, 2

_GAMMA = np.uint64(SPLITMIX_GAMMA)
_M1 = np.uint64(SPLITMIX_M1)
_M2 = np.uint64(SPLITMIX_M2)


def choose(op):
    """The version every op runs: there is one (kept for the common table/switch shape)."""
    return "v1", "one version"


def build(T):
    """The kernels of this file for the Numba float type T: {name: (python function,
    signature)}. ``kernels(dtype)`` compiles them; bench/ptx_check.py compiles the same
    pairs to PTX without a GPU."""
    A1, A2, A3 = T[::1], T[:, ::1], T[:, :, ::1]
    zero = T(0)
    one = T(1)

    def activation_forward(x, y, op):
        # x, y (n,)
        start, step = cuda.grid(1), cuda.gridsize(1)
        for i in range(start, x.shape[0], step):
            v = x[i]
            if op == RELU:
                y[i] = v if not v < zero else zero  # a select, not max(): NaN stays NaN
            elif op == SIGMOID:
                e = math.exp(-abs(v))
                y[i] = one / (one + e) if v >= zero else e / (one + e)
            else:
                y[i] = math.tanh(v)

    def activation_backward(g, saved, dx, op):
        # g, saved, dx (n,); saved is x for relu, the output y for sigmoid and tanh
        start, step = cuda.grid(1), cuda.gridsize(1)
        for i in range(start, g.shape[0], step):
            s = saved[i]
            if op == RELU:
                dx[i] = zero if s <= zero else g[i]  # PyTorch's select: x = NaN passes g
            elif op == SIGMOID:
                dx[i] = g[i] * s * (one - s)
            else:
                dx[i] = g[i] * (one - s * s)

    def softmax_rows(x, y, log):
        # x, y (A, L); one block of THREADS threads per row
        L = x.shape[1]
        a = cuda.blockIdx.x
        t = cuda.threadIdx.x
        red = cuda.shared.array(THREADS, T)
        m = x[a, 0]
        for j in range(t, L, THREADS):
            m = max(m, x[a, j])
        red[t] = m
        block_max(red, t, THREADS)
        m = red[0]
        cuda.syncthreads()
        s = zero
        for j in range(t, L, THREADS):
            s += math.exp(x[a, j] - m)
        red[t] = s
        block_sum(red, t, THREADS)
        if log:
            log_s = math.log(red[0])
            for j in range(t, L, THREADS):
                y[a, j] = (x[a, j] - m) - log_s
        else:
            inv = one / red[0]
            for j in range(t, L, THREADS):
                y[a, j] = math.exp(x[a, j] - m) * inv

    def softmax_rows_backward(g, y, dx, log):
        # g, y, dx (A, L); softmax: dx = y (g - sum g y); log_softmax: dx = g - exp(y) sum g
        L = y.shape[1]
        a = cuda.blockIdx.x
        t = cuda.threadIdx.x
        red = cuda.shared.array(THREADS, T)
        acc = zero
        for j in range(t, L, THREADS):
            acc += g[a, j] if log else g[a, j] * y[a, j]
        red[t] = acc
        block_sum(red, t, THREADS)
        total = red[0]
        for j in range(t, L, THREADS):
            if log:
                dx[a, j] = g[a, j] - math.exp(y[a, j]) * total
            else:
                dx[a, j] = y[a, j] * (g[a, j] - total)

    def softmax_columns(x, y, log):
        # x, y (A, L, B); one thread per (a, b)
        A, L, B = x.shape
        start, step = cuda.grid(1), cuda.gridsize(1)
        for k in range(start, A * B, step):
            a = k // B
            b = k % B
            m = x[a, 0, b]
            for i in range(1, L):
                m = max(m, x[a, i, b])
            s = zero
            for i in range(L):
                s += math.exp(x[a, i, b] - m)
            if log:
                log_s = math.log(s)
                for i in range(L):
                    y[a, i, b] = (x[a, i, b] - m) - log_s
            else:
                inv = one / s
                for i in range(L):
                    y[a, i, b] = math.exp(x[a, i, b] - m) * inv

    def softmax_columns_backward(g, y, dx, log):
        # g, y, dx (A, L, B)
        A, L, B = y.shape
        start, step = cuda.grid(1), cuda.gridsize(1)
        for k in range(start, A * B, step):
            a = k // B
            b = k % B
            total = zero
            for i in range(L):
                total += g[a, i, b] if log else g[a, i, b] * y[a, i, b]
            for i in range(L):
                if log:
                    dx[a, i, b] = g[a, i, b] - math.exp(y[a, i, b]) * total
                else:
                    dx[a, i, b] = y[a, i, b] * (g[a, i, b] - total)

    def bias_add(x, b, y):
        # x, y (N, C, S), b (C,); one thread per element
        N, C, S = x.shape
        start, step = cuda.grid(1), cuda.gridsize(1)
        for k in range(start, N * C * S, step):
            n = k // (C * S)
            c = (k // S) % C
            s = k % S
            y[n, c, s] = x[n, c, s] + b[c]

    def bias_grad(g, db):
        # g (N, C, S), db (C,); one block per channel sums its N * S values
        N, _C, S = g.shape
        c = cuda.blockIdx.x
        t = cuda.threadIdx.x
        red = cuda.shared.array(THREADS, T)
        acc = zero
        for k in range(t, N * S, THREADS):
            acc += g[k // S, c, k % S]
        red[t] = acc
        block_sum(red, t, THREADS)
        if t == 0:
            db[c] = red[0]

    def dropout(x, y, threshold, scale, seed):
        # x, y (n,); keep element i when the top 32 bits of splitmix64(seed + (i + 1) gamma)
        # are >= threshold; uint64 arithmetic wraps like the reference's. y = x * keep * scale
        # with keep in {0, 1}: a product, never a select, so a dropped NaN stays NaN
        start, step = cuda.grid(1), cuda.gridsize(1)
        for i in range(start, x.shape[0], step):
            z = seed + (np.uint64(i) + np.uint64(1)) * _GAMMA
            z = (z ^ (z >> np.uint64(30))) * _M1
            z = (z ^ (z >> np.uint64(27))) * _M2
            z = z ^ (z >> np.uint64(31))
            keep = one if (z >> np.uint64(32)) >= threshold else zero
            y[i] = x[i] * keep * scale

    b = boolean
    return {
        "activation_forward": (activation_forward, (A1, A1, int64)),
        "activation_backward": (activation_backward, (A1, A1, A1, int64)),
        "softmax_rows": (softmax_rows, (A2, A2, b)),
        "softmax_rows_backward": (softmax_rows_backward, (A2, A2, A2, b)),
        "softmax_columns": (softmax_columns, (A3, A3, b)),
        "softmax_columns_backward": (softmax_columns_backward, (A3, A3, A3, b)),
        "bias_add": (bias_add, (A3, A1, A3)),
        "bias_grad": (bias_grad, (A3, A1)),
        "dropout": (dropout, (A1, A1, uint64, T, uint64)),
    }


kernels = KernelTable(build)
"""``kernels(dtype)[name]``: compiled on first use."""


# ----------------------------------------------------------------------------
# activations


def _activation(name, op, *arrays):
    launch_flat(kernels(arrays[0].dtype)[name], arrays[0].shape[0], *arrays, op)


def relu_forward(x, y):
    """y (n,) = max(x, 0) (NaN stays NaN)."""
    _activation("activation_forward", RELU, x, y)


def relu_backward(g, x, dx):
    """dx (n,) = 0 where x <= 0, else g (x = NaN passes g, as in PyTorch)."""
    _activation("activation_backward", RELU, g, x, dx)


def sigmoid_forward(x, y):
    """y (n,) = 1 / (1 + exp(-x))."""
    _activation("activation_forward", SIGMOID, x, y)


def sigmoid_backward(g, y, dx):
    """dx (n,) = g * y * (1 - y), y the saved output."""
    _activation("activation_backward", SIGMOID, g, y, dx)


def tanh_forward(x, y):
    """y (n,) = tanh(x)."""
    _activation("activation_forward", TANH, x, y)


def tanh_backward(g, y, dx):
    """dx (n,) = g * (1 - y^2), y the saved output."""
    _activation("activation_backward", TANH, g, y, dx)


# ----------------------------------------------------------------------------
# softmax and log_softmax: rows (one block per row of (A, L)) or columns (a thread each)


def _softmax(x, y, log):
    A, L, B = x.shape
    K = kernels(x.dtype)
    if B == 1:
        if A:
            launch(K["softmax_rows"], A, THREADS, x.reshape(A, L), y.reshape(A, L), log)
    else:
        launch_flat(K["softmax_columns"], A * B, x, y, log)


def _softmax_backward(g, y, dx, log):
    A, L, B = y.shape
    K = kernels(y.dtype)
    if B == 1:
        if A:
            launch(K["softmax_rows_backward"], A, THREADS, g.reshape(A, L), y.reshape(A, L),
                   dx.reshape(A, L), log)
    else:
        launch_flat(K["softmax_columns_backward"], A * B, g, y, dx, log)


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


def bias_add_forward(x, b, y):
    """y (N, C, S) = x + b[c]."""
    launch_flat(kernels(x.dtype)["bias_add"], x.size, x, b, y)


def bias_add_backward(g, db):
    """db (C,) = sum of g (N, C, S) over N and S."""
    C = g.shape[1]
    if C:
        launch(kernels(g.dtype)["bias_grad"], C, THREADS, g, db)


# ----------------------------------------------------------------------------
# dropout


def dropout_apply(x, y, threshold, scale, seed):
    """y (n,) = x * keep * scale, keep = 1 where hash(seed, i) >= threshold, else 0."""
    args = (x, y, np.uint64(threshold), x.dtype.type(scale), np.uint64(seed))
    kern = kernels(x.dtype)["dropout"]
    if SIM:
        # the simulator runs the kernel on NumPy uint64 scalars, which warn when the
        # (intended) modular multiply wraps; the GPU wraps silently
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "overflow encountered", RuntimeWarning)
            launch_flat(kern, x.shape[0], *args)
    else:
        launch_flat(kern, x.shape[0], *args)

