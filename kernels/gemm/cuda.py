"""GEMM and the dense layer in numba.cuda (CuPy arrays on a GPU, NumPy under the simulator).

Shapes: op(a) is (M, K), op(b) is (K, N), c is (M, N); op(x) = x.T when trans_x.
Every kernel takes the transposes as flags and reads a or b through them, so one
kernel covers the four cases; ragged edges (sizes not multiples of the tile)
load zeros into shared memory and skip the stores outside c.

Versions (read top to bottom):
    version 1  gemm_tiled: 16x16 tile of c per block, one output per thread; the
               block stages a 16x16 tile of op(a) and of op(b) in shared memory
               per step of K, so each global element is read K/16 times less.
    version 2  gemm_regtile: 64x64 tile of c per block of 16x16 threads, a 4x4
               register tile per thread (cuda.local.array with constant indices
               after unrolling), K staged 8 at a time. Each shared-memory value
               read feeds 4 FMAs instead of 1. Bias + relu fused in the store,
               which is what `linear` launched until version 3.
    version 3  gemm_v3 (issue 14): 128x64 tile of c per block of 16x16 threads, an
               8x4 register tile per thread (32 FMAs per 12 shared loads instead of
               16 per 8), op(a) stored k-major, two shared buffers per operand with the
               next step's global loads in flight during the math (one barrier per
               step), every constant a dtype(0). float64 runs the same code with
               64x64 / 4x4 tiles. An 8x8 thread tile (128x128) left its accumulators
               in local memory here (see V3_GPU_CONFIG). The published worklog this
               follows reached 69 % of cuBLAS with 8x8 tiles alone; no GPU has run
               this one yet, so no figure is claimed.
    linear_grad_out  v1 gave each column one thread (1 block for LeNet's dense
               layers); v2 is a coalesced column reduction, 32 columns x 8 row lanes
               per block, rows split over blocks when there are many, the splits
               summed in a fixed order (no float atomics).

All versions are checked under the CUDA simulator (versions 2 and 3 there with a
16-thread tile: same code, smaller constants); `choose` picks v3; tests and the
bench ask for any version by name. Inside one file the launch types follow the op
surface: C-contiguous arrays, int64 sizes, bool flags. Versions 2 and 3 read M, N and K
from the shapes (9 launch arguments; they took 12), and every launch goes through
kernels/_cuda.py's ``launch`` (nnkern's argument packing). The `gpu`-marked tests cover
1024^3 and 1000x999x1001; bench/gpu_check.py times 4096^3 against cuBLAS.
"""

import math

import numpy as np
from numba import boolean, cuda, int64

from .._cuda import SIM, SMS, KernelTable, launch, scratch, stand_in

# ----------------------------------------------------------------------------
# version 1: shared-memory tiles, one output per thread


def gemm_tiled_function(dtype, TILE):
    """The version-1 kernel's Python function for a numba float type and a square TILE."""
    zero = dtype(0)

    def gemm_tiled(a, b, c, M, N, K, trans_a, trans_b, accumulate):
        # a: (M, K) or (K, M); b: (K, N) or (N, K); c: (M, N)
        sa = cuda.shared.array((TILE, TILE), dtype)  # op(a)[rows of block, k0:k0+TILE]
        sb = cuda.shared.array((TILE, TILE), dtype)  # op(b)[k0:k0+TILE, cols of block]
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        row = cuda.blockIdx.y * TILE + ty
        col = cuda.blockIdx.x * TILE + tx
        acc = dtype(0)
        for k0 in range(0, K, TILE):
            ka = k0 + tx  # column of op(a) this thread loads
            if row < M and ka < K:
                sa[ty, tx] = a[ka, row] if trans_a else a[row, ka]
            else:
                sa[ty, tx] = zero
            kb = k0 + ty  # row of op(b) this thread loads
            if kb < K and col < N:
                sb[ty, tx] = b[col, kb] if trans_b else b[kb, col]
            else:
                sb[ty, tx] = zero
            cuda.syncthreads()
            for p in range(TILE):
                acc += sa[ty, p] * sb[p, tx]
            cuda.syncthreads()
        if row < M and col < N:
            if accumulate:
                c[row, col] += acc
            else:
                c[row, col] = acc

    return gemm_tiled


def make_gemm_tiled(dtype, TILE):
    """Build (lazily typed) the version-1 kernel for a numba float type and a square TILE."""
    return cuda.jit(gemm_tiled_function(dtype, TILE))


TILE_V1 = 16


def gemm_v1(a, b, c, trans_a, trans_b, accumulate):
    """Launch version 1."""
    M, N = c.shape
    K = a.shape[0] if trans_a else a.shape[1]
    grid = (math.ceil(N / TILE_V1), math.ceil(M / TILE_V1))
    launch(kernels(c.dtype)["v1"], grid, (TILE_V1, TILE_V1),
           a, b, c, M, N, K, bool(trans_a), bool(trans_b), bool(accumulate))


# ----------------------------------------------------------------------------
# version 2: shared-memory tiles + a TM x TN register tile per thread


def gemm_regtile_function(dtype, BM, BN, BK, TM, TN):
    """The version-2 kernel's Python function: a BM x BN tile of c per block of (BN/TN, BM/TM) threads.

    Thread (tx, ty) owns rows ty + i*(BM/TM) and columns tx + j*(BN/TN) of the tile
    (strided, so a warp's stores to c are contiguous and its shared reads of sb are
    conflict-free). The block loads BM*BK elements of op(a) and BK*BN of op(b) per
    step; each thread loads an equal share.
    """
    TX = BN // TN  # threads along columns
    TY = BM // TM  # threads along rows
    NT = TX * TY
    A_LOADS = (BM * BK) // NT
    B_LOADS = (BK * BN) // NT
    assert BN % TN == 0 and BM % TM == 0
    assert A_LOADS * NT == BM * BK and B_LOADS * NT == BK * BN
    # padded row lengths of the shared tiles, computed here so the kernel sees compile-time
    # constants (an expression like BM + 4 inside the kernel is typed as a runtime int64,
    # which cuda.shared.array rejects on the real compiler; the simulator accepts it)
    SA_W = BM + 4
    SB_W = BN + 4
    zero = dtype(0)

    def gemm_regtile(a, b, c, trans_a, trans_b, accumulate, bias, has_bias, relu):
        # a: (M, K) or (K, M); b: (K, N) or (N, K); c: (M, N); bias: (N,) when has_bias
        M, N = c.shape
        K = a.shape[0] if trans_a else a.shape[1]
        # tiles stored k-major, rows padded by 4 so the loads below (consecutive
        # threads walking k when a or b is read along K) hit distinct banks
        sa = cuda.shared.array((BK, SA_W), dtype)  # op(a) tile: sa[k, m]
        sb = cuda.shared.array((BK, SB_W), dtype)  # op(b) tile: sb[k, n]
        acc = cuda.local.array((TM, TN), dtype)
        areg = cuda.local.array(TM, dtype)
        breg = cuda.local.array(TN, dtype)
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        tid = ty * TX + tx
        m0 = cuda.blockIdx.y * BM
        n0 = cuda.blockIdx.x * BN
        for i in range(TM):
            for j in range(TN):
                acc[i, j] = zero
        for k0 in range(0, K, BK):
            for l in range(A_LOADS):
                e = tid + l * NT
                # consecutive threads walk the contiguous axis of a in global memory
                if trans_a:  # a is (K, M): element (m, k) at a[k, m]
                    m = e % BM
                    k = e // BM
                    ok = m0 + m < M and k0 + k < K
                    sa[k, m] = a[k0 + k, m0 + m] if ok else zero
                else:  # a is (M, K)
                    k = e % BK
                    m = e // BK
                    ok = m0 + m < M and k0 + k < K
                    sa[k, m] = a[m0 + m, k0 + k] if ok else zero
            for l in range(B_LOADS):
                e = tid + l * NT
                if trans_b:  # b is (N, K): element (k, n) at b[n, k]
                    k = e % BK
                    n = e // BK
                    ok = n0 + n < N and k0 + k < K
                    sb[k, n] = b[n0 + n, k0 + k] if ok else zero
                else:  # b is (K, N)
                    n = e % BN
                    k = e // BN
                    ok = n0 + n < N and k0 + k < K
                    sb[k, n] = b[k0 + k, n0 + n] if ok else zero
            cuda.syncthreads()
            for p in range(BK):
                for i in range(TM):
                    areg[i] = sa[p, ty + i * TY]
                for j in range(TN):
                    breg[j] = sb[p, tx + j * TX]
                for i in range(TM):
                    for j in range(TN):
                        acc[i, j] += areg[i] * breg[j]
            cuda.syncthreads()
        for i in range(TM):
            row = m0 + ty + i * TY
            if row < M:
                for j in range(TN):
                    col = n0 + tx + j * TX
                    if col < N:
                        v = acc[i, j]
                        if accumulate:
                            v += c[row, col]
                        if has_bias:
                            v += bias[col]
                        if relu and v < 0:  # NaN stays NaN, as on every backend
                            v = dtype(0)
                        c[row, col] = v

    return gemm_regtile


def make_gemm_regtile(dtype, BM, BN, BK, TM, TN):
    """Build (lazily typed) the version-2 kernel: a BM x BN tile of c per block of
    (BN/TN, BM/TM) threads; ``.tile`` = (BM, BN, TX, TY) for its launcher."""
    kernel = cuda.jit(gemm_regtile_function(dtype, BM, BN, BK, TM, TN))
    kernel.tile = (BM, BN, BN // TN, BM // TM)
    return kernel


# Under the simulator every CUDA thread is a Python thread, so the shipped
# 256-thread tile would make CI crawl on its tiny shapes; a 16-thread
# instantiation of the same code runs there instead (the tile sizes change
# speed, not results; the tests also launch the GPU tile once).
V2_GPU_CONFIG = {"BM": 64, "BN": 64, "BK": 8, "TM": 4, "TN": 4}
V2_SIM_CONFIG = {"BM": 8, "BN": 8, "BK": 4, "TM": 2, "TN": 2}
V2_CONFIG = V2_SIM_CONFIG if SIM else V2_GPU_CONFIG


def launch_regtile(kernel, a, b, c, trans_a, trans_b, accumulate, bias, relu, cfg=None):
    """Launch a version-2 kernel over c: one from ``make_gemm_regtile`` (its ``.tile``
    says the block), or one built with the tile sizes ``cfg``."""
    if cfg is None:
        BM, BN, TX, TY = kernel.tile
    else:
        BM, BN, TX, TY = cfg["BM"], cfg["BN"], cfg["BN"] // cfg["TN"], cfg["BM"] // cfg["TM"]
    M, N = c.shape
    if M == 0 or N == 0:
        return
    has_bias = bias is not None
    grid = (math.ceil(N / BN), math.ceil(M / BM))
    launch(kernel, grid, (TX, TY), a, b, c, bool(trans_a), bool(trans_b), bool(accumulate),
           bias if has_bias else stand_in(c.dtype), has_bias, bool(relu))


def gemm_v2(a, b, c, trans_a, trans_b, accumulate):
    """Launch version 2."""
    launch_regtile(kernels(c.dtype)["v2"], a, b, c, trans_a, trans_b, accumulate, None, False,
                   cfg=V2_CONFIG)


# ----------------------------------------------------------------------------
# version 3: double-buffered shared tiles, 8x8 register tiles, loads overlapped with math


def gemm_v3_function(dtype, BM, BN, BK, TM, TN):
    """The version-3 kernel's Python function: a BM x BN tile of c per block of
    (BN/TN) x (BM/TM) threads, each owning a TM x TN register tile (strided, as v2).

    What it adds to v2: two shared buffers per operand. While the block multiplies the
    tile in one buffer, each thread's global loads of the NEXT K-step are already in
    flight into registers (``anext``/``bnext``); they land in the other buffer after the
    math, so one barrier per K-step instead of two and the load latency hides behind
    BK * TM * TN FMAs. op(a) is stored transposed (k-major), so the inner loop reads a
    row of sa and a row of sb per k. Every constant is a dtype(0): no float64 anywhere.
    """
    TX = BN // TN
    TY = BM // TM
    NT = TX * TY
    A_LOADS = (BM * BK) // NT
    B_LOADS = (BK * BN) // NT
    assert BN % TN == 0 and BM % TM == 0
    assert A_LOADS * NT == BM * BK and B_LOADS * NT == BK * BN
    SA_W = BM + 4  # padded rows: the transposing stores hit distinct banks
    SB_W = BN + 4
    zero = dtype(0)

    def gemm_v3(a, b, c, trans_a, trans_b, accumulate, bias, has_bias, relu):
        # a: (M, K) or (K, M); b: (K, N) or (N, K); c: (M, N); bias: (N,) when has_bias
        # (the sizes come from the shapes: 3 launch arguments fewer than versions 1-2 had)
        M, N = c.shape
        K = a.shape[0] if trans_a else a.shape[1]
        sa = cuda.shared.array((2, BK, SA_W), dtype)  # op(a) tiles: sa[buf, k, m]
        sb = cuda.shared.array((2, BK, SB_W), dtype)  # op(b) tiles: sb[buf, k, n]
        acc = cuda.local.array((TM, TN), dtype)
        areg = cuda.local.array(TM, dtype)
        breg = cuda.local.array(TN, dtype)
        anext = cuda.local.array(A_LOADS, dtype)
        bnext = cuda.local.array(B_LOADS, dtype)
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        tid = ty * TX + tx
        m0 = cuda.blockIdx.y * BM
        n0 = cuda.blockIdx.x * BN
        for i in range(TM):
            for j in range(TN):
                acc[i, j] = zero
        steps = (K + BK - 1) // BK
        for kt in range(steps + 1):
            # 1. fetch step kt into registers (consecutive threads walk the contiguous axis)
            if kt < steps:
                k0 = kt * BK
                for l in range(A_LOADS):
                    e = tid + l * NT
                    if trans_a:  # a is (K, M)
                        m = e % BM
                        k = e // BM
                        ok = m0 + m < M and k0 + k < K
                        anext[l] = a[k0 + k, m0 + m] if ok else zero
                    else:  # a is (M, K)
                        k = e % BK
                        m = e // BK
                        ok = m0 + m < M and k0 + k < K
                        anext[l] = a[m0 + m, k0 + k] if ok else zero
                for l in range(B_LOADS):
                    e = tid + l * NT
                    if trans_b:  # b is (N, K)
                        k = e % BK
                        n = e // BK
                        ok = n0 + n < N and k0 + k < K
                        bnext[l] = b[n0 + n, k0 + k] if ok else zero
                    else:  # b is (K, N)
                        n = e % BN
                        k = e // BN
                        ok = n0 + n < N and k0 + k < K
                        bnext[l] = b[k0 + k, n0 + n] if ok else zero
            # 2. multiply step kt - 1 from its buffer while those loads are in flight
            if kt > 0:
                cur = (kt - 1) % 2
                for p in range(BK):
                    for i in range(TM):
                        areg[i] = sa[cur, p, ty + i * TY]
                    for j in range(TN):
                        breg[j] = sb[cur, p, tx + j * TX]
                    for i in range(TM):
                        for j in range(TN):
                            acc[i, j] += areg[i] * breg[j]
            # 3. park step kt in the other buffer; one barrier covers both buffers: nobody
            #    reads buffer kt % 2 again until after the next barrier
            if kt < steps:
                nxt = kt % 2
                for l in range(A_LOADS):
                    e = tid + l * NT
                    if trans_a:
                        sa[nxt, e // BM, e % BM] = anext[l]
                    else:
                        sa[nxt, e % BK, e // BK] = anext[l]
                for l in range(B_LOADS):
                    e = tid + l * NT
                    if trans_b:
                        sb[nxt, e % BK, e // BK] = bnext[l]
                    else:
                        sb[nxt, e // BN, e % BN] = bnext[l]
            cuda.syncthreads()
        for i in range(TM):
            row = m0 + ty + i * TY
            if row < M:
                for j in range(TN):
                    col = n0 + tx + j * TX
                    if col < N:
                        v = acc[i, j]
                        if accumulate:
                            v += c[row, col]
                        if has_bias:
                            v += bias[col]
                        if relu and v < zero:  # NaN stays NaN, as on every backend
                            v = zero
                        c[row, col] = v

    return gemm_v3


# Per dtype on a GPU: 128x64 with 8x4 thread tiles in float32 (256 threads, 32
# accumulators, 164 registers, nothing in local memory). Tried and dropped (ptxas for
# sm_90, bench/ptx_check.py): 128x128 with 8x8 tiles, 214 registers and the 64
# accumulators in 256 B of local memory (the 64-element epilogue is not fully unrolled,
# so acc gets runtime indices); 64x64 with 8x8, 120 B of spills. float64 registers are
# twice as wide: 64x64 with 4x4 (127 registers). The simulator runs a
# 16-thread instantiation of the same code.
V3_GPU_CONFIG = {
    np.dtype(np.float32): {"BM": 128, "BN": 64, "BK": 8, "TM": 8, "TN": 4},
    np.dtype(np.float64): {"BM": 64, "BN": 64, "BK": 8, "TM": 4, "TN": 4},
}
V3_SIM_CONFIG = {"BM": 8, "BN": 8, "BK": 4, "TM": 2, "TN": 2}


def v3_config(dtype):
    """Tile sizes of version 3 for a dtype (the simulator's are small)."""
    return V3_SIM_CONFIG if SIM else V3_GPU_CONFIG[np.dtype(dtype)]


# ----------------------------------------------------------------------------
# the dense layer's output gradient: dy = select(g) and db = column sums, one reduction


RY = 8  # row lanes per block of the column reduction (32 columns x RY rows of threads)
MIN_ROWS_PER_THREAD = 8  # split the rows over more blocks only beyond this


def linear_grad_out_function(dtype):
    """dy and per-split column sums of dy in one pass (version 2 of linear_grad_out).

    Version 1 gave one thread per column the whole column (1 block for LeNet's dense
    layers). Here a block of 32 x RY threads takes 32 columns (a warp reads 32
    neighbouring floats: coalesced) and the rows in RY lanes, grid-strided over
    ``gridDim.y`` splits; the lanes meet in shared memory and each split writes its
    column sums to ``part[split]`` (db itself when there is one split). No atomics:
    ``column_sum`` adds the splits in a fixed order.
    """
    zero = dtype(0)

    def linear_grad_out_v2(g, y, dy, part, relu):
        # g, y, dy: (N, OUT); part: (splits, OUT)
        N, OUT = g.shape
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        j = cuda.blockIdx.x * 32 + tx
        red = cuda.shared.array((RY, 32), dtype)
        s = zero
        if j < OUT:
            for i in range(cuda.blockIdx.y * RY + ty, N, cuda.gridDim.y * RY):
                v = g[i, j]
                if relu and y[i, j] <= zero:  # PyTorch's select on the saved output
                    v = zero
                dy[i, j] = v
                s += v
        red[ty, tx] = s
        cuda.syncthreads()
        if ty == 0 and j < OUT:
            for r in range(1, RY):
                s += red[r, tx]
            part[cuda.blockIdx.y, j] = s

    def column_sum(part, db):
        # db (OUT,) = sum over the splits of part (splits, OUT), in order
        j = cuda.grid(1)
        if j < db.shape[0]:
            s = zero
            for r in range(part.shape[0]):
                s += part[r, j]
            db[j] = s

    return linear_grad_out_v2, column_sum


# ----------------------------------------------------------------------------
# the version table, the compiled kernels, the choice

VERSIONS = {
    "v1": "gemm_tiled: 16x16 shared tiles, one output per thread",
    "v2": "gemm_regtile: 64x64 tiles, 4x4 register tiles, BK 8",
    "v3": "gemm_v3: 128x64 (float64 64x64) tiles, 8x4 (4x4) register tiles, double-buffered",
}


def build(T):
    """{name: (python function, signature)} of the shipped instantiations for the Numba
    float type T (``kernels`` compiles them; bench/ptx_check.py compiles the same pairs)."""
    dt = np.dtype(T.name)
    A1, A2 = T[::1], T[:, ::1]
    i, b = int64, boolean
    gemm_sig = (A2, A2, A2, b, b, b, A1, b, b)
    grad_out, col_sum = linear_grad_out_function(T)
    return {
        "v1": (gemm_tiled_function(T, TILE_V1), (A2, A2, A2, i, i, i, b, b, b)),
        "v2": (gemm_regtile_function(T, **V2_CONFIG), gemm_sig),
        "v3": (gemm_v3_function(T, **v3_config(dt)), gemm_sig),
        "linear_grad_out": (grad_out, (A2, A2, A2, A2, b)),
        "column_sum": (col_sum, (A2, A1)),
    }


kernels = KernelTable(build)
"""``kernels(dtype)[name]``: compiled on first use."""


def choose(M, N, K, version=None):
    """(version, why) for an M x N x K product; ``version`` forces one."""
    if version is not None:
        return version, "asked for"
    return "v3", "the fastest design here (no GPU measurement yet)"


def launch_v3(a, b, c, trans_a, trans_b, accumulate, bias, relu, kernel=None, cfg=None):
    """Launch version 3 over c: the shipped instantiation, or ``kernel`` built with the
    tile sizes ``cfg`` (tests run other instantiations of the same code)."""
    if kernel is None:
        kernel, cfg = kernels(c.dtype)["v3"], v3_config(c.dtype)
    M, N = c.shape
    if M == 0 or N == 0:
        return
    grid = (math.ceil(N / cfg["BN"]), math.ceil(M / cfg["BM"]))
    block = (cfg["BN"] // cfg["TN"], cfg["BM"] // cfg["TM"])
    has_bias = bias is not None
    launch(kernel, grid, block, a, b, c, bool(trans_a), bool(trans_b), bool(accumulate),
           bias if has_bias else stand_in(c.dtype), has_bias, bool(relu))


# ----------------------------------------------------------------------------
# the KERNELS entry points


def gemm(a, b, c, trans_a, trans_b, accumulate, version=None):
    """c = op(a) @ op(b) (or += when ``accumulate``); a, b, c C-contiguous, one dtype."""
    K = a.shape[0] if trans_a else a.shape[1]
    version, _ = choose(c.shape[0], c.shape[1], K, version)
    if version == "v1":
        gemm_v1(a, b, c, trans_a, trans_b, accumulate)
    elif version == "v2":
        gemm_v2(a, b, c, trans_a, trans_b, accumulate)
    else:
        launch_v3(a, b, c, trans_a, trans_b, accumulate, None, False)


def linear(x, w, bias, y, relu):
    """y = x @ w.T (+ bias) (then relu), bias and relu fused into the GEMM's store."""
    launch_v3(x, w, y, False, True, False, bias, relu)


def linear_grad_splits(N, OUT):
    """Row splits of the column reduction: enough blocks for 4 per SM when the rows allow
    it, each thread keeping at least MIN_ROWS_PER_THREAD rows."""
    col_blocks = (OUT + 31) // 32
    most = max(1, N // (RY * MIN_ROWS_PER_THREAD))
    want = max(1, (4 * SMS + col_blocks - 1) // col_blocks)
    return min(most, want) if not SIM else min(most, 2)


def linear_grad_out(g, y, dy, db, relu):
    """dy = 0 where y <= 0 (relu) else g; db = column sums of dy. One launch, or two when
    the rows are split over several blocks (then a fixed-order sum of the splits)."""
    N, OUT = g.shape
    if OUT == 0:
        return
    K = kernels(g.dtype)
    splits = linear_grad_splits(N, OUT)
    grid = ((OUT + 31) // 32, splits)
    if splits == 1:
        launch(K["linear_grad_out"], grid, (32, RY), g, y, dy, db.reshape(1, OUT), bool(relu))
        return
    part = scratch(g, (splits, OUT))
    launch(K["linear_grad_out"], grid, (32, RY), g, y, dy, part, bool(relu))
    launch(K["column_sum"], (OUT + 127) // 128, 128, part, db)
