"""Batch normalisation in numba.cuda (CuPy arrays on a GPU, NumPy under the simulator).

x is (N, C, L), L = H*W (1 for a dense layer's (N, C) input); gamma, beta and
the running statistics are (C,). See reference.py for the maths, cpu.py for
the one-pass shifted statistics used here too.

Versions
    kernel 1 (this file): one block per channel, TPB threads striding over the
        channel's M = N*L values (consecutive threads read consecutive positions
        of a row: coalesced). Per-thread float64 partial sums go through a
        shared-memory tree reduction (no warp shuffles, so the simulator runs
        the same code); thread 0 turns them into the per-channel coefficients
        and, in training, updates the running statistics; after a barrier every
        thread writes its share of y (forward) or dx (backward). One launch per
        call; no atomics. The backward reduces four sums (shifted x, x^2, g, g*x)
        in one pass, then writes dx = k*g + q*(x - mean) + r.
        ptxas for sm_90 (no GPU needed): forward 40 registers and 8 KB shared
        memory, backward 48 registers and 16 KB, at TPB = 512. No GPU timing yet.
"""

import math

from numba import cuda, float64

from nnkern.device import cuda_simulated

# Threads per block, a power of two (tree reduction). With one block per channel
# a block must be large to keep an SM's memory pipes busy (a layer may have only
# 64 channels for 132 SMs). The simulator runs one Python thread per GPU
# thread, so it gets a small block.
TPB = 16 if cuda_simulated() else 512


@cuda.jit(device=True)
def _block_sum(buf, t):
    """Tree-reduce buf[0:TPB] (shared) into buf[0]; every thread of the block must call it."""
    stride = TPB // 2
    while stride > 0:
        if t < stride:
            buf[t] += buf[t + stride]
        cuda.syncthreads()
        stride //= 2


@cuda.jit
def _forward_kernel(x, gamma, beta, running_mean, running_var, y, training, momentum, eps):
    # x, y (N, C, L); gamma, beta, running_mean, running_var (C,); one block per channel
    N, L = x.shape[0], x.shape[2]
    M = N * L
    c = cuda.blockIdx.x
    t = cuda.threadIdx.x
    s1 = cuda.shared.array(TPB, float64)
    s2 = cuda.shared.array(TPB, float64)
    coef = cuda.shared.array(2, float64)        # mean, gamma * invstd
    if training:
        shift = float64(x[0, c, 0])
        a1 = 0.0
        a2 = 0.0
        for j in range(t, M, TPB):
            n = j // L
            d = float64(x[n, c, j - n * L]) - shift
            a1 += d
            a2 += d * d
        s1[t] = a1
        s2[t] = a2
        cuda.syncthreads()
        _block_sum(s1, t)
        _block_sum(s2, t)
        if t == 0:
            mean_d = s1[0] / M
            var = max(s2[0] / M - mean_d * mean_d, 0.0)
            mean = shift + mean_d
            running_mean[c] = (1.0 - momentum) * running_mean[c] + momentum * mean
            running_var[c] = (1.0 - momentum) * running_var[c] + momentum * var * M / (M - 1)
            coef[0] = mean
            coef[1] = gamma[c] / math.sqrt(var + eps)
    elif t == 0:
        coef[0] = running_mean[c]
        coef[1] = gamma[c] / math.sqrt(float64(running_var[c]) + eps)
    cuda.syncthreads()
    mean = coef[0]
    a = coef[1]
    b = beta[c]
    for j in range(t, M, TPB):
        n = j // L
        i = j - n * L
        y[n, c, i] = (x[n, c, i] - mean) * a + b


@cuda.jit
def _backward_kernel(g, x, gamma, running_mean, running_var, dx, dgamma, dbeta, training, eps):
    # g, x, dx (N, C, L); gamma, running_mean, running_var, dgamma, dbeta (C,);
    # one block per channel
    N, L = x.shape[0], x.shape[2]
    M = N * L
    c = cuda.blockIdx.x
    t = cuda.threadIdx.x
    s1 = cuda.shared.array(TPB, float64)
    s2 = cuda.shared.array(TPB, float64)
    sg = cuda.shared.array(TPB, float64)
    sgd = cuda.shared.array(TPB, float64)
    coef = cuda.shared.array(4, float64)        # mean, k, q, r
    shift = float64(x[0, c, 0]) if training else float64(running_mean[c])
    a1 = 0.0
    a2 = 0.0
    ag = 0.0
    agd = 0.0
    for j in range(t, M, TPB):
        n = j // L
        i = j - n * L
        d = float64(x[n, c, i]) - shift
        gv = float64(g[n, c, i])
        a1 += d
        a2 += d * d
        ag += gv
        agd += gv * d
    s1[t] = a1
    s2[t] = a2
    sg[t] = ag
    sgd[t] = agd
    cuda.syncthreads()
    _block_sum(s1, t)
    _block_sum(s2, t)
    _block_sum(sg, t)
    _block_sum(sgd, t)
    if t == 0:
        if training:
            mean_d = s1[0] / M
            var = max(s2[0] / M - mean_d * mean_d, 0.0)
        else:
            mean_d = 0.0
            var = float64(running_var[c])
        invstd = 1.0 / math.sqrt(var + eps)
        sum_gxhat = invstd * (sgd[0] - mean_d * sg[0])
        dgamma[c] = sum_gxhat
        dbeta[c] = sg[0]
        k = gamma[c] * invstd
        coef[0] = shift + mean_d
        coef[1] = k
        coef[2] = -k * invstd * sum_gxhat / M if training else 0.0
        coef[3] = -k * sg[0] / M if training else 0.0
    cuda.syncthreads()
    mean = coef[0]
    k = coef[1]
    q = coef[2]
    r = coef[3]
    for j in range(t, M, TPB):
        n = j // L
        i = j - n * L
        dx[n, c, i] = k * g[n, c, i] + q * (x[n, c, i] - mean) + r


def batch_norm_forward(x, gamma, beta, running_mean, running_var, y, training, momentum, eps):
    """y = gamma * (x - mean) / sqrt(var + eps) + beta per channel; updates the running
    statistics in place when training. x, y (N, C, L); the others (C,). One launch."""
    if x.shape[1] == 0:
        return  # a grid of zero blocks is a launch error
    _forward_kernel[x.shape[1], TPB](x, gamma, beta, running_mean, running_var, y,
                                     bool(training), float(momentum), float(eps))


def batch_norm_backward(g, x, gamma, running_mean, running_var, dx, dgamma, dbeta, training,
                        eps):
    """dx (N, C, L), dgamma, dbeta (C,) of batch_norm_forward; running statistics are read in
    eval and never written. One launch."""
    if x.shape[1] == 0:
        return
    _backward_kernel[x.shape[1], TPB](g, x, gamma, running_mean, running_var, dx, dgamma, dbeta,
                                      bool(training), float(eps))
