"""Batch normalisation in numba.cuda (CuPy arrays on a GPU, NumPy under the simulator).

x is (N, C, L), L = H*W (1 for a dense layer's (N, C) input); gamma, beta and
the running statistics are (C,). See reference.py for the maths, cpu.py for
the one-pass shifted statistics used here too.

Versions
    kernel 1 (this file): one block per channel, TPB threads striding over the
        channel's M = N*L values (consecutive threads read consecutive positions
        of a row: coalesced). Per-thread partial sums (in the array's dtype since the second
        revision, issue 14: the float32 kernels have no float64 instruction) go through a
        shared-memory tree reduction (no warp shuffles, so the simulator runs
        the same code); thread 0 turns them into the per-channel coefficients
        and, in training, updates the running statistics; after a barrier every
        thread writes its share of y (forward) or dx (backward). One launch per
        call; no atomics. The backward reduces four sums (shifted x, x^2, g, g*x)
        in one pass, then writes dx = k*g + q*(x - mean) + r.
        ptxas for sm_90 (bench/ptx_check.py), float32: forward 34 registers and 4 KB
        shared memory, backward 40 registers and 8 KB, at TPB = 512. No GPU timing
        yet. Not done: the (channel, chunk) split of issue 14 (C = 64 still leaves
        half the SMs idle) and coalesced reads of (N, C) inputs.
"""

import math

from numba import boolean, cuda

from .._cuda import SIM, KernelTable, block_sum, launch

# Threads per block, a power of two (tree reduction). With one block per channel
# a block must be large to keep an SM's memory pipes busy (a layer may have only
# 64 channels for 132 SMs). The simulator runs one Python thread per GPU
# thread, so it gets a small block.
TPB = 16 if SIM else 512


def build(T):
    """Both kernels for the Numba float type T: {name: (function, signature)}. Statistics,
    coefficients and running-statistic updates are in T (version 1 carried them in
    float64: 206 and 331 float64 instructions in the float32 kernels)."""
    zero = T(0)
    one = T(1)

    def _forward_kernel(x, gamma, beta, running_mean, running_var, y, training, momentum, eps):
        # x, y (N, C, L); gamma, beta, running_mean, running_var (C,); one block per channel
        N, L = x.shape[0], x.shape[2]
        M = N * L
        c = cuda.blockIdx.x
        t = cuda.threadIdx.x
        s1 = cuda.shared.array(TPB, T)
        s2 = cuda.shared.array(TPB, T)
        coef = cuda.shared.array(2, T)        # mean, gamma * invstd
        if training:
            shift = x[0, c, 0]
            a1 = zero
            a2 = zero
            for j in range(t, M, TPB):
                n = j // L
                d = x[n, c, j - n * L] - shift
                a1 += d
                a2 += d * d
            s1[t] = a1
            s2[t] = a2
            cuda.syncthreads()
            block_sum(s1, t, TPB)
            block_sum(s2, t, TPB)
            if t == 0:
                mean_d = s1[0] / T(M)
                var = max(s2[0] / T(M) - mean_d * mean_d, zero)
                mean = shift + mean_d
                running_mean[c] = (one - momentum) * running_mean[c] + momentum * mean
                running_var[c] = (one - momentum) * running_var[c] + momentum * var * (T(M) / T(M - 1))
                coef[0] = mean
                coef[1] = gamma[c] / math.sqrt(var + eps)
        elif t == 0:
            coef[0] = running_mean[c]
            coef[1] = gamma[c] / math.sqrt(running_var[c] + eps)
        cuda.syncthreads()
        mean = coef[0]
        a = coef[1]
        b = beta[c]
        for j in range(t, M, TPB):
            n = j // L
            i = j - n * L
            y[n, c, i] = (x[n, c, i] - mean) * a + b


    def _backward_kernel(g, x, gamma, running_mean, running_var, dx, dgamma, dbeta, training, eps):
        # g, x, dx (N, C, L); gamma, running_mean, running_var, dgamma, dbeta (C,);
        # one block per channel
        N, L = x.shape[0], x.shape[2]
        M = N * L
        c = cuda.blockIdx.x
        t = cuda.threadIdx.x
        s1 = cuda.shared.array(TPB, T)
        s2 = cuda.shared.array(TPB, T)
        sg = cuda.shared.array(TPB, T)
        sgd = cuda.shared.array(TPB, T)
        coef = cuda.shared.array(4, T)        # mean, k, q, r
        shift = x[0, c, 0] if training else running_mean[c]
        a1 = zero
        a2 = zero
        ag = zero
        agd = zero
        for j in range(t, M, TPB):
            n = j // L
            i = j - n * L
            d = x[n, c, i] - shift
            gv = g[n, c, i]
            a1 += d
            a2 += d * d
            ag += gv
            agd += gv * d
        s1[t] = a1
        s2[t] = a2
        sg[t] = ag
        sgd[t] = agd
        cuda.syncthreads()
        block_sum(s1, t, TPB)
        block_sum(s2, t, TPB)
        block_sum(sg, t, TPB)
        block_sum(sgd, t, TPB)
        if t == 0:
            if training:
                mean_d = s1[0] / T(M)
                var = max(s2[0] / T(M) - mean_d * mean_d, zero)
            else:
                mean_d = zero
                var = running_var[c]
            invstd = one / math.sqrt(var + eps)
            sum_gxhat = invstd * (sgd[0] - mean_d * sg[0])
            dgamma[c] = sum_gxhat
            dbeta[c] = sg[0]
            k = gamma[c] * invstd
            coef[0] = shift + mean_d
            coef[1] = k
            coef[2] = -k * invstd * sum_gxhat / T(M) if training else zero
            coef[3] = -k * sg[0] / T(M) if training else zero
        cuda.syncthreads()
        mean = coef[0]
        k = coef[1]
        q = coef[2]
        r = coef[3]
        for j in range(t, M, TPB):
            n = j // L
            i = j - n * L
            dx[n, c, i] = k * g[n, c, i] + q * (x[n, c, i] - mean) + r

    A1, A3 = T[::1], T[:, :, ::1]
    return {
        "forward": (_forward_kernel, (A3, A1, A1, A1, A1, A3, boolean, T, T)),
        "backward": (_backward_kernel, (A3, A3, A1, A1, A1, A3, A1, A1, boolean, T)),
    }


kernels = KernelTable(build)
"""``kernels(dtype)[name]``: compiled on first use."""


def batch_norm_forward(x, gamma, beta, running_mean, running_var, y, training, momentum, eps):
    """y = gamma * (x - mean) / sqrt(var + eps) + beta per channel; updates the running
    statistics in place when training. x, y (N, C, L); the others (C,). One launch."""
    if x.shape[1] == 0:
        return  # a grid of zero blocks is a launch error
    T = x.dtype.type
    launch(kernels(x.dtype)["forward"], x.shape[1], TPB, x, gamma, beta, running_mean,
           running_var, y, bool(training), T(momentum), T(eps))


def batch_norm_backward(g, x, gamma, running_mean, running_var, dx, dgamma, dbeta, training,
                        eps):
    """dx (N, C, L), dgamma, dbeta (C,) of batch_norm_forward; running statistics are read in
    eval and never written. One launch."""
    if x.shape[1] == 0:
        return
    T = x.dtype.type
    launch(kernels(x.dtype)["backward"], x.shape[1], TPB, g, x, gamma, running_mean,
           running_var, dx, dgamma, dbeta, bool(training), T(eps))
