"""Losses on the GPU with numba.cuda: softmax cross-entropy fused forward+backward, BCE, MSE.

Shapes: logits (N, C), labels (N,) int64, losses (N,), dlogits (N, C); the
element-wise losses work on flat (n,) arrays. See reference.py for the maths.
Arrays are CuPy arrays on a GPU, NumPy arrays under the simulator; both are
passed straight to the launch.

Versions (read top to bottom):
    version 1  _softmax_ce_rows: ONE block per row, forward and backward in ONE
               kernel. The block's threads stride over the row (coalesced), reduce
               the max, then the sum of exp(x - max) (and of x - max for label
               smoothing) through shared memory (a tree, no warp shuffles, so the
               simulator runs it), thread 0 writes the loss, and every thread writes
               its part of g * (p - q). Sums are carried in float64.
    element-wise losses: one thread per element, grid-stride loop.
"""

import math

# the block sizes and flat launches of the element-wise family: THREADS (a power of
# two) per row kernel, ELEMENT_THREADS per element-wise kernel, small under the simulator
from nnkern.kernels.elementwise.cuda import THREADS, _launch_flat
from numba import cuda, float64

# ----------------------------------------------------------------------------
# version 1: one block per row, fused forward and backward


@cuda.jit
def _softmax_ce_rows(logits, labels, g, scale, label_smoothing, losses, dlogits, want_grad):
    # logits (N, C), labels (N,), g (N,) or (1,), losses (N,), dlogits (N, C) (unused unless
    # want_grad); grid: one block of THREADS threads per row
    N, C = logits.shape
    i = cuda.blockIdx.x
    t = cuda.threadIdx.x
    red = cuda.shared.array(THREADS, float64)
    red2 = cuda.shared.array(THREADS, float64)
    real = logits.dtype.type

    # the row max, reduced through shared memory
    m = logits[i, 0]
    for j in range(t, C, THREADS):
        m = max(m, logits[i, j])
    red[t] = m
    cuda.syncthreads()
    stride = THREADS // 2
    while stride > 0:
        if t < stride and red[t + stride] > red[t]:
            red[t] = red[t + stride]
        cuda.syncthreads()
        stride //= 2
    m = real(red[0])
    cuda.syncthreads()

    # sum of exp(z) and of z, z = x - max
    s = 0.0
    z_sum = 0.0
    for j in range(t, C, THREADS):
        z = logits[i, j] - m
        s += math.exp(z)
        z_sum += z
    red[t] = s
    red2[t] = z_sum
    cuda.syncthreads()
    stride = THREADS // 2
    while stride > 0:
        if t < stride:
            red[t] += red[t + stride]
            red2[t] += red2[t + stride]
        cuda.syncthreads()
        stride //= 2
    s = red[0]
    z_sum = red2[0]

    label = labels[i]
    if t == 0:
        # loss = log s - (1 - eps) z_label - (eps / C) sum_j z_j
        losses[i] = (math.log(s) - (1.0 - label_smoothing) * (logits[i, label] - m)
                     - (label_smoothing / C) * z_sum)
    if want_grad:
        gi = scale * (g[i] if g.shape[0] == N else g[0])
        a = real(gi / s)
        q_off = real(gi * (label_smoothing / C))
        q_on = real(gi * (1.0 - label_smoothing + label_smoothing / C))
        for j in range(t, C, THREADS):
            p = a * real(math.exp(logits[i, j] - m))
            dlogits[i, j] = p - (q_on if j == label else q_off)


def softmax_ce_forward(logits, labels, losses, label_smoothing):
    """Per-row loss: logits (N, C), labels (N,) -> losses (N,). One block per row."""
    N = logits.shape[0]
    if N:
        # empty stand-ins for g and dlogits, read and written only when want_grad: not
        # losses or logits themselves, since the CUDA simulator copies every argument
        # back in order and a stale second copy could overwrite the results
        _softmax_ce_rows[N, THREADS](logits, labels, losses[:0], 1.0, label_smoothing, losses,
                                     logits[:, :0], False)


def softmax_ce_forward_backward(logits, labels, g, scale, label_smoothing, losses, dlogits):
    """Losses (N,) and dlogits (N, C) = scale * g_i * (softmax - q), one kernel launch."""
    N = logits.shape[0]
    if N:
        _softmax_ce_rows[N, THREADS](logits, labels, g, scale, label_smoothing, losses,
                                     dlogits, True)


# ----------------------------------------------------------------------------
# element-wise losses: one thread per element, grid-stride


@cuda.jit
def _bce_forward(x, t, losses):
    # x, t, losses (n,): max(x, 0) - x t + log1p(exp(-|x|))
    start, step = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, x.shape[0], step):
        v = x[i]
        losses[i] = max(v, 0) - v * t[i] + math.log1p(math.exp(-abs(v)))


@cuda.jit
def _bce_backward(g, scale, x, t, dx):
    # dx (n,) = scale * g * (sigmoid(x) - t); g (n,) or (1,)
    start, step = cuda.grid(1), cuda.gridsize(1)
    n = x.shape[0]
    real = x.dtype.type
    for i in range(start, n, step):
        v = x[i]
        e = math.exp(-abs(v))
        sig = real(1) / (real(1) + e) if v >= 0 else e / (real(1) + e)
        dx[i] = real(scale) * (g[i] if g.shape[0] == n else g[0]) * (sig - t[i])


@cuda.jit
def _mse_forward(x, t, losses):
    # losses (n,) = (x - t)^2
    start, step = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, x.shape[0], step):
        d = x[i] - t[i]
        losses[i] = d * d


@cuda.jit
def _mse_backward(g, scale, x, t, dx):
    # dx (n,) = 2 scale g (x - t); g (n,) or (1,)
    start, step = cuda.grid(1), cuda.gridsize(1)
    n = x.shape[0]
    real = x.dtype.type
    for i in range(start, n, step):
        dx[i] = real(2.0 * scale) * (g[i] if g.shape[0] == n else g[0]) * (x[i] - t[i])


def bce_with_logits_forward(x, t, losses):
    """Element-wise BCE with logits: x, t, losses (n,)."""
    _launch_flat(_bce_forward, x.shape[0], x, t, losses)


def bce_with_logits_backward(g, scale, x, t, dx):
    """dx (n,) = scale * g * (sigmoid(x) - t)."""
    _launch_flat(_bce_backward, x.shape[0], g, scale, x, t, dx)


def mse_forward(x, t, losses):
    """Element-wise (x - t)^2: x, t, losses (n,)."""
    _launch_flat(_mse_forward, x.shape[0], x, t, losses)


def mse_backward(g, scale, x, t, dx):
    """dx (n,) = 2 scale g (x - t)."""
    _launch_flat(_mse_backward, x.shape[0], g, scale, x, t, dx)
