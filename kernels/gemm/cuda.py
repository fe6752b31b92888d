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
               which is what `linear` launches.

Both versions are checked under the CUDA simulator (version 2 there with a
16-thread tile: same code, smaller constants); no GPU has run them yet, so no
speed is claimed here. The `gpu`-marked tests cover 1024^3 and 1000x999x1001.
"""

import math

import numpy as np
from numba import config, cuda, float32, float64

_NUMBA_TYPE = {np.dtype(np.float32): float32, np.dtype(np.float64): float64}


# ----------------------------------------------------------------------------
# version 1: shared-memory tiles, one output per thread


def make_gemm_tiled(dtype, TILE):
    """Build the version-1 kernel for a numba float type and a square TILE."""

    @cuda.jit
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
                sa[ty, tx] = 0
            kb = k0 + ty  # row of op(b) this thread loads
            if kb < K and col < N:
                sb[ty, tx] = b[col, kb] if trans_b else b[kb, col]
            else:
                sb[ty, tx] = 0
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


TILE_V1 = 16
gemm_tiled = {dt: make_gemm_tiled(nt, TILE_V1) for dt, nt in _NUMBA_TYPE.items()}


def gemm_v1(a, b, c, trans_a, trans_b, accumulate):
    """Launch version 1."""
    M, N = c.shape
    K = a.shape[0] if trans_a else a.shape[1]
    grid = (math.ceil(N / TILE_V1), math.ceil(M / TILE_V1))
    gemm_tiled[np.dtype(c.dtype)][grid, (TILE_V1, TILE_V1)](
        a, b, c, M, N, K, bool(trans_a), bool(trans_b), bool(accumulate)
    )


# ----------------------------------------------------------------------------
# version 2: shared-memory tiles + a TM x TN register tile per thread


def make_gemm_regtile(dtype, BM, BN, BK, TM, TN):
    """Build the version-2 kernel: a BM x BN tile of c per block of (BN/TN, BM/TM) threads.

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

    @cuda.jit
    def gemm_regtile(a, b, c, M, N, K, trans_a, trans_b, accumulate, bias, has_bias, relu):
        # a: (M, K) or (K, M); b: (K, N) or (N, K); c: (M, N); bias: (N,) when has_bias
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
                acc[i, j] = 0
        for k0 in range(0, K, BK):
            for l in range(A_LOADS):
                e = tid + l * NT
                # consecutive threads walk the contiguous axis of a in global memory
                if trans_a:  # a is (K, M): element (m, k) at a[k, m]
                    m = e % BM
                    k = e // BM
                    ok = m0 + m < M and k0 + k < K
                    sa[k, m] = a[k0 + k, m0 + m] if ok else 0
                else:  # a is (M, K)
                    k = e % BK
                    m = e // BK
                    ok = m0 + m < M and k0 + k < K
                    sa[k, m] = a[m0 + m, k0 + k] if ok else 0
            for l in range(B_LOADS):
                e = tid + l * NT
                if trans_b:  # b is (N, K): element (k, n) at b[n, k]
                    k = e % BK
                    n = e // BK
                    ok = n0 + n < N and k0 + k < K
                    sb[k, n] = b[n0 + n, k0 + k] if ok else 0
                else:  # b is (K, N)
                    n = e % BN
                    k = e // BN
                    ok = n0 + n < N and k0 + k < K
                    sb[k, n] = b[k0 + k, n0 + n] if ok else 0
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

    gemm_regtile.tile = (BM, BN, TX, TY)
    return gemm_regtile


# Under the simulator every CUDA thread is a Python thread, so the shipped
# 256-thread tile would make CI crawl on its tiny shapes; a 16-thread
# instantiation of the same code runs there instead (the tile sizes change
# speed, not results; the tests also launch the GPU tile once).
V2_GPU_CONFIG = {"BM": 64, "BN": 64, "BK": 8, "TM": 4, "TN": 4}
V2_SIM_CONFIG = {"BM": 8, "BN": 8, "BK": 4, "TM": 2, "TN": 2}
V2_CONFIG = V2_SIM_CONFIG if config.ENABLE_CUDASIM else V2_GPU_CONFIG
gemm_regtile = {dt: make_gemm_regtile(nt, **V2_CONFIG) for dt, nt in _NUMBA_TYPE.items()}


_NO_BIAS = {}


def _no_bias(dtype):
    """A 1-element device array standing in for an absent bias (never read).

    Not a view of c: the simulator copies every host array argument back after
    the launch, and a copied-back view would overwrite what the kernel wrote.
    """
    dtype = np.dtype(dtype)
    if dtype not in _NO_BIAS:
        _NO_BIAS[dtype] = cuda.device_array(1, dtype)
    return _NO_BIAS[dtype]


def launch_regtile(kernel, a, b, c, trans_a, trans_b, accumulate, bias, relu):
    """Launch a version-2 kernel (any instantiation) over c."""
    BM, BN, TX, TY = kernel.tile
    M, N = c.shape
    K = a.shape[0] if trans_a else a.shape[1]
    has_bias = bias is not None
    grid = (math.ceil(N / BN), math.ceil(M / BM))
    kernel[grid, (TX, TY)](
        a,
        b,
        c,
        M,
        N,
        K,
        bool(trans_a),
        bool(trans_b),
        bool(accumulate),
        bias if has_bias else _no_bias(c.dtype),
        has_bias,
        bool(relu),
    )


def gemm_v2(a, b, c, trans_a, trans_b, accumulate):
    """Launch version 2."""
    launch_regtile(
        gemm_regtile[np.dtype(c.dtype)], a, b, c, trans_a, trans_b, accumulate, None, False
    )


# ----------------------------------------------------------------------------
# the KERNELS entry points


def gemm(a, b, c, trans_a, trans_b, accumulate):
    """c = op(a) @ op(b) (or += when ``accumulate``); a, b, c C-contiguous, one dtype."""
    gemm_v2(a, b, c, trans_a, trans_b, accumulate)


def linear(x, w, bias, y, relu):
    """y = x @ w.T (+ bias) (then relu), bias and relu fused into the GEMM's store."""
    launch_regtile(gemm_regtile[np.dtype(y.dtype)], x, w, y, False, True, False, bias, relu)


@cuda.jit
def linear_grad_out_kernel(g, y, dy, db, relu):
    # g, y, dy: (N, OUT); db: (OUT,). One thread per output feature: it walks the
    # column (a gather, no atomics); neighbouring threads read neighbouring addresses.
    j = cuda.grid(1)
    N, OUT = g.shape
    if j < OUT:
        s = 0.0  # float64 sum for either dtype
        for i in range(N):
            v = g[i, j]
            if relu and not y[i, j] > 0:
                v = 0.0
            dy[i, j] = v
            s += v
        db[j] = s


def linear_grad_out(g, y, dy, db, relu):
    """dy = g * (y > 0) (or g); db = column sums of dy."""
    OUT = g.shape[1]
    threads = 128
    linear_grad_out_kernel[math.ceil(OUT / threads), threads](g, y, dy, db, bool(relu))
