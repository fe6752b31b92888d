"""Batch normalisation in numba.cuda (CuPy arrays on a GPU, NumPy under the simulator).

x is (N, C, L), L = H*W (1 for a dense layer's (N, C) input); gamma, beta and
the running statistics are (C,). See reference.py for the maths, cpu.py for
the one-pass shifted statistics used here too. M = N*L values per channel.

Versions
    version 1 (issue 14's first revision): one block per channel, TPB threads striding
        over the channel's M values, a shared-memory tree, thread 0 turning the sums into
        coefficients, then every thread writing its share. One launch per call. ptxas,
        float32: forward 34 registers, backward 40. Two flaws: C = 64 channels give 64
        blocks for 132 SMs, and an (N, C) input is read with stride C (a warp touches 32
        rows: 32 memory transactions per load).
    version 2 (this file): each channel's values are cut into ``chunks`` pieces so that
        (chunk, channel) blocks fill the GPU (at least MIN_BLOCKS), in two launches:
          partial  each block sums its piece (shifted by the channel's first value, or by
                   the running mean in eval backward) into part[chunk, channel, :];
          apply    each block adds the partials of its channel in chunk order (fixed
                   order: deterministic, no atomics), turns them into coefficients (the
                   chunk-0 block also writes the running statistics, or dgamma/dbeta),
                   then writes y or dx for its piece.
        Two layouts of the same kernels (a compile-time switch): "ncl", a block of TPB
        threads per (chunk, channel), consecutive threads on consecutive positions of a
        row; and "nc" for L == 1, a block of 32 channels x RY row lanes, so a warp reads
        32 neighbouring channels of one row (coalesced) and the lanes meet in shared
        memory. Eval forward needs no statistics: the apply launch alone. No GPU timing
        yet (bench/gpu_check.py times forward and backward against cuDNN).
"""

import math

from numba import boolean, cuda, int64

from .._cuda import SIM, SMS, KernelTable, launch, scratch, stand_in

# Threads per block: a power of two (tree over the lanes). With the channels split into
# chunks a block no longer has to be large to keep an SM busy. The simulator runs one
# Python thread per GPU thread, so it gets small blocks.
TPB = 16 if SIM else 256
RY = 4 if SIM else 8  # row lanes of the (N, C) layout: blocks of 32 channels x RY rows
MIN_BLOCKS = 8 if SIM else 4 * SMS  # (chunk, channel) blocks to aim for
MIN_PER_LANE = 2 if SIM else 8  # values per thread below which a channel is not cut further


def plan(N, C, L):
    """(layout, chunks) for x (N, C, L): "nc" when L == 1, else "ncl"; enough chunks per
    channel for MIN_BLOCKS blocks while each thread keeps MIN_PER_LANE values or more."""
    if L == 1:
        cols = -(-C // 32)
        most = max(1, N // (RY * MIN_PER_LANE))
        return "nc", max(1, min(-(-MIN_BLOCKS // cols), most))
    most = max(1, N * L // (TPB * MIN_PER_LANE))
    return "ncl", max(1, min(-(-MIN_BLOCKS // C), most))


def layout_functions(T, NC):
    """The four kernels of one layout ("nc" when NC) for the Numba float type T."""
    LANES = RY if NC else TPB
    W = 32 if NC else 1  # channels per block
    SLOTS = LANES * W
    zero = T(0)
    one = T(1)

    @cuda.jit(device=True)
    def where():
        # (channel slot in the block, lane, channel, chunk) of this thread
        if NC:
            cx = cuda.threadIdx.x
            return cx, cuda.threadIdx.y, cuda.blockIdx.x * 32 + cx, cuda.blockIdx.y
        return 0, cuda.threadIdx.x, cuda.blockIdx.y, cuda.blockIdx.x

    @cuda.jit(device=True)
    def tree(buf, k, lane, cx):
        # sums buf[i, lane*W + cx] over the lanes into lane 0, for i < k; every thread calls
        cuda.syncthreads()
        step = LANES // 2
        while step > 0:
            if lane < step:
                for i in range(k):
                    buf[i, lane * W + cx] += buf[i, (lane + step) * W + cx]
            cuda.syncthreads()
            step //= 2

    def fwd_partial(x, part):
        # part[z, c, :2] = sums of d and d*d over piece z of channel c, d = x - x[0, c, 0]
        N, C, L = x.shape
        M = N * L
        chunks = part.shape[0]
        piece = (M + chunks - 1) // chunks
        cx, lane, c, z = where()
        buf = cuda.shared.array((2, SLOTS), T)
        a1 = zero
        a2 = zero
        if c < C:
            shift = x[0, c, 0]
            for j in range(z * piece + lane, min(M, (z + 1) * piece), LANES):
                n = j // L
                d = x[n, c, j - n * L] - shift
                a1 += d
                a2 += d * d
        buf[0, lane * W + cx] = a1
        buf[1, lane * W + cx] = a2
        tree(buf, 2, lane, cx)
        if lane == 0 and c < C:
            part[z, c, 0] = buf[0, cx]
            part[z, c, 1] = buf[1, cx]

    def fwd_apply(x, gamma, beta, running_mean, running_var, part, y, chunks, training,
                  momentum, eps):
        # y = (x - mean) * gamma / sqrt(var + eps) + beta over piece z of channel c
        N, C, L = x.shape
        M = N * L
        piece = (M + chunks - 1) // chunks
        cx, lane, c, z = where()
        coef = cuda.shared.array((3, W), T)  # shift, gamma * invstd, shifted beta
        if lane == 0 and c < C:
            if training:
                s1 = zero
                s2 = zero
                for k in range(part.shape[0]):  # in chunk order: deterministic
                    s1 += part[k, c, 0]
                    s2 += part[k, c, 1]
                mean_d = s1 / T(M)
                var = max(s2 / T(M) - mean_d * mean_d, zero)
                mean = x[0, c, 0] + mean_d
                if z == 0:
                    running_mean[c] = (one - momentum) * running_mean[c] + momentum * mean
                    running_var[c] = ((one - momentum) * running_var[c]
                                      + momentum * var * (T(M) / T(M - 1)))
                # y = (x - shift) a + beta - mean_d a: x - shift is exact near the mean, where
                # x - mean with the mean rounded to T was not (issue 12 item 14)
                coef[0, cx] = x[0, c, 0]
                coef[1, cx] = gamma[c] / math.sqrt(var + eps)
                coef[2, cx] = beta[c] - mean_d * coef[1, cx]
            else:
                coef[0, cx] = running_mean[c]
                coef[1, cx] = gamma[c] / math.sqrt(running_var[c] + eps)
                coef[2, cx] = beta[c]
        cuda.syncthreads()
        if c < C:
            mean = coef[0, cx]
            a = coef[1, cx]
            b = coef[2, cx]
            for j in range(z * piece + lane, min(M, (z + 1) * piece), LANES):
                n = j // L
                i = j - n * L
                y[n, c, i] = (x[n, c, i] - mean) * a + b

    def bwd_partial(g, x, running_mean, part, training):
        # part[z, c, :4] = sums of d, d*d, g, g*d over piece z; d = x - shift, the shift the
        # channel's first value (training) or its running mean (eval)
        N, C, L = x.shape
        M = N * L
        chunks = part.shape[0]
        piece = (M + chunks - 1) // chunks
        cx, lane, c, z = where()
        buf = cuda.shared.array((4, SLOTS), T)
        a1 = zero
        a2 = zero
        ag = zero
        agd = zero
        if c < C:
            shift = x[0, c, 0] if training else running_mean[c]
            for j in range(z * piece + lane, min(M, (z + 1) * piece), LANES):
                n = j // L
                i = j - n * L
                d = x[n, c, i] - shift
                gv = g[n, c, i]
                a1 += d
                a2 += d * d
                ag += gv
                agd += gv * d
        slot = lane * W + cx
        buf[0, slot] = a1
        buf[1, slot] = a2
        buf[2, slot] = ag
        buf[3, slot] = agd
        tree(buf, 4, lane, cx)
        if lane == 0 and c < C:
            for k in range(4):
                part[z, c, k] = buf[k, cx]

    def bwd_apply(g, x, gamma, running_mean, running_var, part, dx, dgamma, dbeta, training,
                  eps):
        # dx = k*g + q*(x - mean) + r over piece z of channel c; dgamma, dbeta by chunk 0
        N, C, L = x.shape
        M = N * L
        chunks = part.shape[0]
        piece = (M + chunks - 1) // chunks
        cx, lane, c, z = where()
        coef = cuda.shared.array((4, W), T)  # mean, k, q, r
        if lane == 0 and c < C:
            s1 = zero
            s2 = zero
            sg = zero
            sgd = zero
            for k in range(chunks):  # in chunk order: deterministic
                s1 += part[k, c, 0]
                s2 += part[k, c, 1]
                sg += part[k, c, 2]
                sgd += part[k, c, 3]
            shift = x[0, c, 0] if training else running_mean[c]
            if training:
                mean_d = s1 / T(M)
                var = max(s2 / T(M) - mean_d * mean_d, zero)
            else:
                mean_d = zero
                var = running_var[c]
            invstd = one / math.sqrt(var + eps)
            sum_gxhat = invstd * (sgd - mean_d * sg)
            if z == 0:
                dgamma[c] = sum_gxhat
                dbeta[c] = sg
            k = gamma[c] * invstd
            coef[0, cx] = shift  # q (x - shift) + r - q mean_d: exact near the mean (item 14)
            coef[1, cx] = k
            coef[2, cx] = -k * invstd * sum_gxhat / T(M) if training else zero
            coef[3, cx] = -k * sg / T(M) - coef[2, cx] * mean_d if training else zero
        cuda.syncthreads()
        if c < C:
            mean = coef[0, cx]
            k = coef[1, cx]
            q = coef[2, cx]
            r = coef[3, cx]
            for j in range(z * piece + lane, min(M, (z + 1) * piece), LANES):
                n = j // L
                i = j - n * L
                if training:
                    dx[n, c, i] = k * g[n, c, i] + q * (x[n, c, i] - mean) + r
                else:  # k g alone: an inf running mean must not give 0 * inf
                    dx[n, c, i] = k * g[n, c, i]

    return fwd_partial, fwd_apply, bwd_partial, bwd_apply


def build(T):
    """Every kernel for the Numba float type T: {name: (function, signature)}, per layout
    ("ncl" and "nc"). Statistics, coefficients and running-statistic updates are in T."""
    A1, A3 = T[::1], T[:, :, ::1]
    i, b = int64, boolean
    table = {}
    for layout in ("ncl", "nc"):
        fp, fa, bp, ba = layout_functions(T, layout == "nc")
        table[f"fwd_partial_{layout}"] = (fp, (A3, A3))
        table[f"fwd_apply_{layout}"] = (fa, (A3, A1, A1, A1, A1, A3, A3, i, b, T, T))
        table[f"bwd_partial_{layout}"] = (bp, (A3, A3, A1, A3, b))
        table[f"bwd_apply_{layout}"] = (ba, (A3, A3, A1, A1, A1, A3, A3, A1, A1, b, T))
    return table


kernels = KernelTable(build)
"""``kernels(dtype)[name]``: compiled on first use."""


def _grid(layout, chunks, C):
    if layout == "nc":
        return (-(-C // 32), chunks), (32, RY)
    return (chunks, C), TPB


def batch_norm_forward(x, gamma, beta, running_mean, running_var, y, training, momentum, eps):
    """y = gamma * (x - mean) / sqrt(var + eps) + beta per channel; updates the running
    statistics in place when training. x, y (N, C, L); the others (C,). Two launches in
    training (partial sums, then apply), one in eval."""
    N, C, L = x.shape
    if C == 0:
        return  # a grid of zero blocks is a launch error
    T = x.dtype.type
    layout, chunks = plan(N, C, L)
    grid, block = _grid(layout, chunks, C)
    K = kernels(x.dtype)
    if training:
        part = scratch(x, (chunks, C, 2))
        launch(K[f"fwd_partial_{layout}"], grid, block, x, part)
    else:
        part = stand_in(x.dtype, 3)
    launch(K[f"fwd_apply_{layout}"], grid, block, x, gamma, beta, running_mean, running_var,
           part, y, chunks, bool(training), T(momentum), T(eps))


def batch_norm_backward(g, x, gamma, running_mean, running_var, dx, dgamma, dbeta, training,
                        eps):
    """dx (N, C, L), dgamma, dbeta (C,) of batch_norm_forward; running statistics are read in
    eval and never written. Two launches (partial sums, then apply)."""
    N, C, L = x.shape
    if C == 0:
        return
    T = x.dtype.type
    layout, chunks = plan(N, C, L)
    grid, block = _grid(layout, chunks, C)
    K = kernels(x.dtype)
    part = scratch(x, (chunks, C, 4))
    launch(K[f"bwd_partial_{layout}"], grid, block, g, x, running_mean, part, bool(training))
    launch(K[f"bwd_apply_{layout}"], grid, block, g, x, gamma, running_mean, running_var, part,
           dx, dgamma, dbeta, bool(training), T(eps))
