"""Losses on the GPU with numba.cuda: softmax cross-entropy fused forward+backward, BCE, MSE.

Shapes: logits (N, C), labels (N,) int64, losses (N,), dlogits (N, C); the
element-wise losses work on flat (n,) arrays. See reference.py for the maths.
Arrays are CuPy arrays on a GPU, NumPy arrays under the simulator.

Versions of softmax-CE (one table, ``VERSIONS``; ``choose`` picks):
    v1  block_tree: ONE block per row, forward and backward in ONE kernel. The block's
        threads stride over the row (coalesced), reduce the max, then the sum of
        exp(x - max) (and of x - max for label smoothing) through a shared-memory
        tree; thread 0 writes the loss and every thread writes its part of
        g * (p - q). The simulator has no warp shuffles, so it always runs v1.
    v2  warp_rows: ONE WARP per row (C <= 1024), WARPS rows per block: the max and
        the sums are butterfly shuffles (no shared memory, no barrier), the row is
        read three times (max, sum, gradient) and stays in L1/L2 between the
        passes (llm.c's fused classifier reads it twice; the third read here buys
        the register-free exact max). A row of 1000 float32 is 32 loads per lane.
    v3  block_shuffle: one block per row (C > 1024), each warp reduces by shuffles
        and the block's 32 warp results meet in shared memory once per reduction
        (2 barriers instead of log2(THREADS)).
All versions compute in the logits' dtype (version 1 of this file summed in float64:
205 float64 instructions in the float32 kernel). No GPU has timed them yet.

NaN and inf (issue 12, PyTorch's rules): the label-smoothing term
``(eps / C) * sum(z)`` is computed only when eps != 0, so a logit masked with
-inf gives the finite loss the reference gives (0 * -inf would be NaN), and the
gradient of a -inf logit is exactly 0. Logits of +-3e38 in float32 shift to
z = -inf, whose exp is 0: no NaN either.

Element-wise losses: one thread per element, grid-stride.
"""

import math

from numba import boolean, cuda, int64

from .._cuda import (
    REDUCE_THREADS,
    SIM,
    WARP,
    KernelTable,
    block_max,
    launch,
    launch_flat,
    stand_in,
    warp_max,
    warp_sum,
)

THREADS = REDUCE_THREADS  # v1: threads per row (a power of two)
WARPS = 4  # v2: rows (warps) per block
V3_THREADS = 1024 if not SIM else 64  # v3: threads per row; at most 32 warps
WARP_ROW_MAX = 1024  # v2 up to this many classes (32 values per lane)

VERSIONS = {
    "v1": "block_tree: a block per row, shared-memory tree (the simulator's)",
    "v2": "warp_rows: a warp per row, shuffles (C <= 1024)",
    "v3": "block_shuffle: a block per row, shuffles + one shared exchange (C > 1024)",
}


def choose(C, version=None):
    """(version, why) for rows of C classes; ``version`` forces one (tests, bench)."""
    if version is not None:
        return version, "asked for"
    if SIM:
        return "v1", "the simulator has no warp shuffles"
    if C <= WARP_ROW_MAX:
        return "v2", f"C = {C} <= {WARP_ROW_MAX}: a warp per row"
    return "v3", f"C = {C} > {WARP_ROW_MAX}: a block per row"


def build(T):
    """{name: (python function, signature)} for the Numba float type T (see kernels())."""
    A1, A2 = T[::1], T[:, ::1]
    zero = T(0)
    one = T(1)
    ninf = T(-math.inf)

    @cuda.jit(device=True)
    def row_loss(log_s, z_label, eps, z_sum, C):
        # loss = log s - (1 - eps) z_label - (eps / C) sum_j z_j; the smoothing terms only
        # when eps != 0 (0 * -inf is NaN: a masked logit would poison the loss)
        if eps == zero:
            return log_s - z_label
        return log_s - (one - eps) * z_label - (eps / T(C)) * z_sum

    @cuda.jit(device=True)
    def write_grad(logits, dlogits, i, j, label, m, a, q_on, q_off):
        # dlogits = gi * (p - q), p = exp(z) / s; a = gi / s. exp(-inf) = 0: a masked
        # logit gets 0 - q_off, exactly 0 without smoothing
        p = a * math.exp(logits[i, j] - m)
        dlogits[i, j] = p - (q_on if j == label else q_off)

    @cuda.jit(device=True)
    def grad_scales(g, i, N, scale, eps, C, s):
        gi = scale * (g[i] if g.shape[0] == N else g[0])
        q_off = gi * (eps / T(C)) if eps != zero else zero
        return gi / s, gi * (one - eps) + q_off, q_off

    def v1_block_tree(logits, labels, g, scale, eps, losses, dlogits, want_grad):
        # logits (N, C), labels (N,), g (N,) or (1,), losses (N,), dlogits (N, C) (unused
        # unless want_grad); grid: one block of THREADS threads per row
        N, C = logits.shape
        i = cuda.blockIdx.x
        t = cuda.threadIdx.x
        red = cuda.shared.array(THREADS, T)
        red2 = cuda.shared.array(THREADS, T)
        m = ninf
        for j in range(t, C, THREADS):
            m = max(m, logits[i, j])
        red[t] = m
        block_max(red, t, THREADS)
        m = red[0]
        cuda.syncthreads()
        s = zero
        z_sum = zero
        for j in range(t, C, THREADS):
            z = logits[i, j] - m
            s += math.exp(z)
            if eps != zero:
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
        label = labels[i]
        if t == 0:
            losses[i] = row_loss(math.log(s), logits[i, label] - m, eps, red2[0], C)
        if want_grad:
            a, q_on, q_off = grad_scales(g, i, N, scale, eps, C, s)
            for j in range(t, C, THREADS):
                write_grad(logits, dlogits, i, j, label, m, a, q_on, q_off)

    def v2_warp_rows(logits, labels, g, scale, eps, losses, dlogits, want_grad):
        # as v1; grid: ceil(N / WARPS) blocks of WARPS warps, one warp per row
        N, C = logits.shape
        lane = cuda.threadIdx.x % WARP
        i = cuda.blockIdx.x * WARPS + cuda.threadIdx.x // WARP
        if i >= N:
            return  # a whole warp leaves together: the shuffles below see full warps
        m = ninf
        for j in range(lane, C, WARP):
            m = max(m, logits[i, j])
        m = warp_max(m)
        s = zero
        z_sum = zero
        for j in range(lane, C, WARP):
            z = logits[i, j] - m
            s += math.exp(z)
            if eps != zero:
                z_sum += z
        s = warp_sum(s)
        z_sum = warp_sum(z_sum)
        label = labels[i]
        if lane == 0:
            losses[i] = row_loss(math.log(s), logits[i, label] - m, eps, z_sum, C)
        if want_grad:
            a, q_on, q_off = grad_scales(g, i, N, scale, eps, C, s)
            for j in range(lane, C, WARP):
                write_grad(logits, dlogits, i, j, label, m, a, q_on, q_off)

    def v3_block_shuffle(logits, labels, g, scale, eps, losses, dlogits, want_grad):
        # as v1; grid: one block of V3_THREADS threads per row
        N, C = logits.shape
        i = cuda.blockIdx.x
        t = cuda.threadIdx.x
        lane = t % WARP
        warp = t // WARP
        nwarps = V3_THREADS // WARP
        part = cuda.shared.array((3, WARP), T)  # per-warp max, sum, z_sum
        m = ninf
        for j in range(t, C, V3_THREADS):
            m = max(m, logits[i, j])
        m = warp_max(m)
        if lane == 0:
            part[0, warp] = m
        cuda.syncthreads()
        m = warp_max(part[0, lane] if lane < nwarps else ninf)
        s = zero
        z_sum = zero
        for j in range(t, C, V3_THREADS):
            z = logits[i, j] - m
            s += math.exp(z)
            if eps != zero:
                z_sum += z
        s = warp_sum(s)
        z_sum = warp_sum(z_sum)
        if lane == 0:
            part[1, warp] = s
            part[2, warp] = z_sum
        cuda.syncthreads()
        s = warp_sum(part[1, lane] if lane < nwarps else zero)
        z_sum = warp_sum(part[2, lane] if lane < nwarps else zero)
        label = labels[i]
        if t == 0:
            losses[i] = row_loss(math.log(s), logits[i, label] - m, eps, z_sum, C)
        if want_grad:
            a, q_on, q_off = grad_scales(g, i, N, scale, eps, C, s)
            for j in range(t, C, V3_THREADS):
                write_grad(logits, dlogits, i, j, label, m, a, q_on, q_off)

    def bce_forward(x, t, losses):
        # x, t, losses (n,): max(x, 0) - x t + log1p(exp(-|x|))
        start, step = cuda.grid(1), cuda.gridsize(1)
        for i in range(start, x.shape[0], step):
            v = x[i]
            losses[i] = max(v, zero) - v * t[i] + math.log1p(math.exp(-abs(v)))

    def bce_backward(g, scale, x, t, dx):
        # dx (n,) = scale * g * (sigmoid(x) - t); g (n,) or (1,)
        start, step = cuda.grid(1), cuda.gridsize(1)
        n = x.shape[0]
        for i in range(start, n, step):
            v = x[i]
            e = math.exp(-abs(v))
            sig = one / (one + e) if v >= zero else e / (one + e)
            dx[i] = scale * (g[i] if g.shape[0] == n else g[0]) * (sig - t[i])

    def mse_forward(x, t, losses):
        # losses (n,) = (x - t)^2
        start, step = cuda.grid(1), cuda.gridsize(1)
        for i in range(start, x.shape[0], step):
            d = x[i] - t[i]
            losses[i] = d * d

    def mse_backward(g, scale, x, t, dx):
        # dx (n,) = 2 scale g (x - t); g (n,) or (1,); scale arrives already doubled
        start, step = cuda.grid(1), cuda.gridsize(1)
        n = x.shape[0]
        for i in range(start, n, step):
            dx[i] = scale * (g[i] if g.shape[0] == n else g[0]) * (x[i] - t[i])

    ce_sig = (A2, int64[::1], A1, T, T, A1, A2, boolean)
    table = {
        "v1_block_tree": (v1_block_tree, ce_sig),
        "bce_forward": (bce_forward, (A1, A1, A1)),
        "bce_backward": (bce_backward, (A1, T, A1, A1, A1)),
        "mse_forward": (mse_forward, (A1, A1, A1)),
        "mse_backward": (mse_backward, (A1, T, A1, A1, A1)),
    }
    if not SIM:  # shuffles: the simulator cannot run (or even resolve) them
        table["v2_warp_rows"] = (v2_warp_rows, ce_sig)
        table["v3_block_shuffle"] = (v3_block_shuffle, ce_sig)
    return table


kernels = KernelTable(build)
"""``kernels(dtype)[name]``: compiled on first use."""


def _softmax_ce(logits, labels, g, scale, eps, losses, dlogits, want_grad, version=None):
    N, C = logits.shape
    if not N:
        return
    version, _ = choose(C, version)
    K = kernels(logits.dtype)
    T = logits.dtype.type
    args = (logits, labels, g, T(scale), T(eps), losses, dlogits, want_grad)
    if version == "v1":
        launch(K["v1_block_tree"], N, THREADS, *args)
    elif version == "v2":
        launch(K["v2_warp_rows"], (N + WARPS - 1) // WARPS, WARPS * WARP, *args)
    else:
        launch(K["v3_block_shuffle"], N, V3_THREADS, *args)


def softmax_ce_forward(logits, labels, losses, label_smoothing, version=None):
    """Per-row loss: logits (N, C), labels (N,) -> losses (N,)."""
    # stand-ins for g and dlogits, never touched without want_grad: not views of losses or
    # logits, since the simulator copies every argument back in order
    _softmax_ce(logits, labels, stand_in(logits.dtype), 1.0, label_smoothing, losses,
                stand_in(logits.dtype, 2), False, version)


def softmax_ce_forward_backward(logits, labels, g, scale, label_smoothing, losses, dlogits,
                                version=None):
    """Losses (N,) and dlogits (N, C) = scale * g_i * (softmax - q), one kernel launch."""
    _softmax_ce(logits, labels, g, scale, label_smoothing, losses, dlogits, True, version)


# ----------------------------------------------------------------------------
# element-wise losses: one thread per element, grid-stride


def bce_with_logits_forward(x, t, losses):
    """Element-wise BCE with logits: x, t, losses (n,)."""
    launch_flat(kernels(x.dtype)["bce_forward"], x.shape[0], x, t, losses)


def bce_with_logits_backward(g, scale, x, t, dx):
    """dx (n,) = scale * g * (sigmoid(x) - t)."""
    launch_flat(kernels(x.dtype)["bce_backward"], x.shape[0], g, x.dtype.type(scale), x, t, dx)


def mse_forward(x, t, losses):
    """Element-wise (x - t)^2: x, t, losses (n,)."""
    launch_flat(kernels(x.dtype)["mse_forward"], x.shape[0], x, t, losses)


def mse_backward(g, scale, x, t, dx):
    """dx (n,) = 2 scale g (x - t)."""
    launch_flat(kernels(x.dtype)["mse_backward"], x.shape[0], g, x.dtype.type(2.0 * scale),
                x, t, dx)
