"""2-D convolution in numba.cuda: direct kernels, im2col + the nnkern GEMM, implicit GEMM.

Arrays are CuPy on a GPU and NumPy under the simulator; both are passed straight to
the launches. Shapes: x, dx (N, C, H, W); w, dw (K, Cg, R, S) with Cg = C/G and
Kg = K/G for G groups; y, g (N, K, OH, OW); Q = Cg*R*S, P = OH*OW.

Versions (read top to bottom):
    version 1  direct: one thread per output element y[n, k, oh, ow] looping over its
               Cg*R*S receptive field (taps outside the image are skipped).
               Backward-data is a gather, one thread per input element dx[n, c, ih, iw]
               summing the (k, r, s) taps whose output pixel it fed (oh*sh = ih + ph -
               r*dh must divide): no atomics, deterministic. Backward-weights: a block
               takes NB weight (or bias) elements at a time; its threads stride over the
               N*OH*OW pixels and tree-reduce in shared memory (no atomics); dw and db
               share one launch. Its grid is far too small for big reductions (LeNet
               conv1 backward-weights at N=64: 20 blocks for 132 SMs).
    version 2  im2col: the samples of a chunk (as many as fit IM2COL_CAP elements: the
               whole batch for every bench shape) go through one im2col launch into col
               (G, Q, m*P), one GEMM per group over the whole chunk, and one scatter into
               NCHW that adds the bias; backward-data gathers g into columns, multiplies
               by w_g^T and folds back with col2im (a gather, no atomics). Its first
               revision launched im2col and the GEMM once per sample and group (2*N*G
               launches per pass: 384 per fwd+bwd at N = 64); now 2 + G per chunk.
    version 3  implicit GEMM (issue 14): the GEMM's shared-memory tiling over operands
               computed from the NCHW tensors on the fly, no column buffer; forward
               Kg x N*OH*OW x Cg*R*S, backward-data Cg x N*H*W x Kg*R*S, backward-weights
               Kg x (Q + 1 for db) over the pixels, split-K with a fixed-order second
               pass. ``v3_plan`` picks a tile config per shape reaching at least
               MIN_BLOCKS blocks (4 per SM: bench/cuda_launches.py checks every LeNet
               and bench shape). ptxas for sm_90, float32: 122-128 registers for the
               64x64 tiles, no spills (bench/ptx_check.py).

algo="auto" and "direct" run version 3, "im2col" version 2, ``version=`` forces one.
No GPU has run these kernels yet: bench/gpu_check.py times each pass against cuDNN.
Tried and dropped: the simulator's tiles with BK = 2 (a simulated LeNet step spent 35 s
in these kernels; BK = 8 and a block target of 4 under the simulator: 12 s).
"""

import functools

import numpy as np
from numba import boolean, cuda, int64

from .._cuda import (
    ELEMENT_THREADS,
    SIM,
    SMS,
    KernelTable,
    array_module,
    launch,
    scratch,
    stand_in,
)
from ..gemm import cuda as gemm_cuda

# Threads per block of the element-wise kernels, and of the reductions (dw, db; a power
# of two for the tree). The simulator runs every thread of a block as a Python thread,
# idle ones included, so it gets small blocks; the code paths are the same.
TPB = ELEMENT_THREADS
RED = 8 if SIM else 64
NB = 8  # outputs reduced together by one block (they share its barriers); NB <= RED
MAX_RED_BLOCKS = 2 if SIM else 8192  # the reduction blocks loop over the outputs
MIN_BLOCKS = 4 if SIM else 4 * SMS
"""Blocks every version-3 launch aims for (issue 14's bar: 4 per SM). The simulator runs
blocks one after another, so it aims low (tests force splits where they want them)."""


def _blocks(n, tpb=TPB):
    return max(1, (n + tpb - 1) // tpb)


def _dummy(like):
    # Stands in for an absent bias (never read or written): a cached one, not an alias of
    # a real argument (the simulator copies arguments back) and not a new array per call
    return stand_in(like.dtype)


def build_v1_v2(T):
    """The version-1 and version-2 kernels for the Numba float type T (the accumulators and
    shared memory need it at compile time): {name: (python function, signature)}."""

    # ------------------------------------------------------------------------
    # version 1: direct

    def fwd_direct(x, w, b, has_bias, y, sh, sw, ph, pw, dh, dw, G):
        # y[n, k, oh, ow] = b[k] + sum_{c, r, s} w[k, c, r, s] * x[n, g*Cg + c, ih, iw]
        N, K, OH, OW = y.shape
        H, W = x.shape[2], x.shape[3]
        Cg, R, S = w.shape[1], w.shape[2], w.shape[3]
        i = cuda.grid(1)
        if i >= N * K * OH * OW:
            return
        ow = i % OW
        oh = (i // OW) % OH
        k = (i // (OW * OH)) % K
        n = i // (OW * OH * K)
        c0 = (k // (K // G)) * Cg
        acc = T(0)
        for c in range(Cg):
            for r in range(R):
                ih = oh * sh - ph + r * dh
                if ih < 0 or ih >= H:
                    continue
                for s in range(S):
                    iw = ow * sw - pw + s * dw
                    if iw >= 0 and iw < W:
                        acc += x[n, c0 + c, ih, iw] * w[k, c, r, s]
        if has_bias:
            acc += b[k]
        y[n, k, oh, ow] = acc

    def bwd_data_direct(g, w, dx, sh, sw, ph, pw, dh, dw, G):
        # dx[n, c, ih, iw] = sum over k of c's group, r, s with ih = oh*sh - ph + r*dh
        # (likewise iw) of g[n, k, oh, ow] * w[k, c % Cg, r, s]: a gather.
        N, C, H, W = dx.shape
        K, OH, OW = g.shape[1], g.shape[2], g.shape[3]
        Cg, R, S = w.shape[1], w.shape[2], w.shape[3]
        Kg = K // G
        i = cuda.grid(1)
        if i >= N * C * H * W:
            return
        iw = i % W
        ih = (i // W) % H
        c = (i // (W * H)) % C
        n = i // (W * H * C)
        k0 = (c // Cg) * Kg
        cc = c % Cg
        acc = T(0)
        for r in range(R):
            a = ih + ph - r * dh
            if a < 0 or a % sh != 0 or a // sh >= OH:
                continue
            oh = a // sh
            for s in range(S):
                bb = iw + pw - s * dw
                if bb < 0 or bb % sw != 0 or bb // sw >= OW:
                    continue
                ow = bb // sw
                for kk in range(Kg):
                    acc += g[n, k0 + kk, oh, ow] * w[k0 + kk, cc, r, s]
        dx[n, c, ih, iw] = acc

    def bwd_weights_direct(g, x, dw_, db, sh, sw, ph, pw, dh, dw, G, j0, j1):
        # Output elements j0 <= j < j1, NB at a time per block (grid-stride over j):
        #   j < K*Q: dw_[k, c, r, s] with j = ((k*Cg + c)*R + r)*S + s, the sum over n, oh,
        #            ow of g[n, k, oh, ow] * x[n, grp*Cg + c, ih, iw];
        #   j >= K*Q: db[k] with k = j - K*Q, the sum of g[:, k].
        # The block's threads stride over the N*OH*OW pixels, then tree-reduce in shared
        # memory (no atomics); NB outputs share each round of barriers.
        N, K, OH, OW = g.shape
        H, W = x.shape[2], x.shape[3]
        Cg, R, S = dw_.shape[1], dw_.shape[2], dw_.shape[3]
        Q = Cg * R * S
        NP = N * OH * OW
        part = cuda.shared.array((NB, RED), T)
        t = cuda.threadIdx.x
        for jb in range(j0 + cuda.blockIdx.x * NB, j1, cuda.gridDim.x * NB):
            for jj in range(NB):
                j = jb + jj
                acc = T(0)
                if j < min(j1, K * Q):
                    k = j // Q
                    c = (j // (R * S)) % Cg
                    r = (j // S) % R
                    s = j % S
                    c0 = (k // (K // G)) * Cg
                    for idx in range(t, NP, RED):
                        ow = idx % OW
                        oh = (idx // OW) % OH
                        n = idx // (OW * OH)
                        ih = oh * sh - ph + r * dh
                        iw = ow * sw - pw + s * dw
                        if ih >= 0 and ih < H and iw >= 0 and iw < W:
                            acc += g[n, k, oh, ow] * x[n, c0 + c, ih, iw]
                elif j < j1:
                    k = j - K * Q
                    for idx in range(t, NP, RED):
                        acc += g[idx // (OW * OH), k, (idx // OW) % OH, idx % OW]
                part[jj, t] = acc
            cuda.syncthreads()
            step = RED // 2
            while step > 0:
                if t < step:
                    for jj in range(NB):
                        part[jj, t] += part[jj, t + step]
                cuda.syncthreads()
                step //= 2
            if t < NB and jb + t < j1:
                j = jb + t
                if j < K * Q:
                    dw_[j // Q, (j // (R * S)) % Cg, (j // S) % R, j % S] = part[t, 0]
                else:
                    db[j - K * Q] = part[t, 0]
            cuda.syncthreads()  # part is reused by the next round

    # ------------------------------------------------------------------------
    # version 2: im2col / col2im over a chunk of samples (+ the nnkern GEMM per group)
    # col and gcol hold the m samples of a chunk side by side: column j*P + p is pixel p of
    # sample n0 + j, so one GEMM per group covers the whole chunk.

    def im2col(x, col, n0, OH, OW, geom):
        # col (G, Q, m*P)[grp, (c*R + r)*S + s, j*P + oh*OW + ow] = x[n0 + j, grp*Cg + c, ih, iw]
        # (0 outside the image); one thread per col entry, consecutive threads along j*P + p
        sh, sw, ph, pw, dh, dw = geom[0], geom[1], geom[2], geom[3], geom[4], geom[5]
        R, S = geom[7], geom[8]
        H, W = x.shape[2], x.shape[3]
        G, Q, MP = col.shape
        P = OH * OW
        i = cuda.grid(1)
        if i >= G * Q * MP:
            return
        mp = i % MP
        q = (i // MP) % Q
        grp = i // (MP * Q)
        p = mp % P
        c = q // (R * S)
        r = (q // S) % R
        s = q % S
        ih = (p // OW) * sh - ph + r * dh
        iw = (p % OW) * sw - pw + s * dw
        v = T(0)
        if ih >= 0 and ih < H and iw >= 0 and iw < W:
            v = x[n0 + mp // P, grp * (Q // (R * S)) + c, ih, iw]
        col[grp, q, mp] = v

    def col2im(dcol, dx, n0, OH, OW, geom):
        # dx[n0 + j, c, ih, iw] = sum of the dcol (G, Q, m*P) entries copied from that pixel
        # (a gather over its taps: no atomics); one thread per dx element of the chunk
        sh, sw, ph, pw, dh, dw = geom[0], geom[1], geom[2], geom[3], geom[4], geom[5]
        R, S = geom[7], geom[8]
        C, H, W = dx.shape[1], dx.shape[2], dx.shape[3]
        Q, MP = dcol.shape[1], dcol.shape[2]
        Cg = Q // (R * S)
        i = cuda.grid(1)
        if i >= (MP // (OH * OW)) * C * H * W:
            return
        iw = i % W
        ih = (i // W) % H
        c = (i // (W * H)) % C
        j = i // (W * H * C)
        grp = c // Cg
        cc = c % Cg
        col0 = j * OH * OW
        acc = T(0)
        for r in range(R):
            a = ih + ph - r * dh
            if a < 0 or a % sh != 0 or a // sh >= OH:
                continue
            for s in range(S):
                bb = iw + pw - s * dw
                if bb < 0 or bb % sw != 0 or bb // sw >= OW:
                    continue
                acc += dcol[grp, (cc * R + r) * S + s, col0 + (a // sh) * OW + bb // sw]
        dx[n0 + j, c, ih, iw] = acc

    def scatter_out(tmp, y, b, has_bias, n0):
        # y (N, K, P)[n0 + j, grp*Kg + k, p] = tmp (G, Kg, m*P)[grp, k, j*P + p] (+ b[k]);
        # one thread per y element of the chunk (coalesced stores)
        K, P = y.shape[1], y.shape[2]
        Kg = tmp.shape[1]
        m = tmp.shape[2] // P
        i = cuda.grid(1)
        if i >= m * K * P:
            return
        p = i % P
        k = (i // P) % K
        j = i // (P * K)
        v = tmp[k // Kg, k % Kg, j * P + p]
        if has_bias:
            v += b[k]
        y[n0 + j, k, p] = v

    def gather_out(g, gcol, n0):
        # gcol (G, Kg, m*P)[grp, k, j*P + p] = g (N, K, P)[n0 + j, grp*Kg + k, p]
        P = g.shape[2]
        G, Kg, MP = gcol.shape
        i = cuda.grid(1)
        if i >= G * Kg * MP:
            return
        mp = i % MP
        k = (i // MP) % Kg
        grp = i // (MP * Kg)
        gcol[grp, k, mp] = g[n0 + mp // P, grp * Kg + k, mp % P]

    A1, A3, A4 = T[::1], T[:, :, ::1], T[:, :, :, ::1]
    i, b = int64, boolean
    geom = (i,) * 7  # sh, sw, ph, pw, dh, dw, G
    G1 = int64[::1]
    return {
        "fwd_direct": (fwd_direct, (A4, A4, A1, b, A4) + geom),
        "bwd_data_direct": (bwd_data_direct, (A4, A4, A4) + geom),
        "bwd_weights_direct": (bwd_weights_direct, (A4, A4, A4, A1) + geom + (i, i)),
        "im2col": (im2col, (A4, A3, i, i, i, G1)),
        "col2im": (col2im, (A3, A4, i, i, i, G1)),
        "scatter_out": (scatter_out, (A3, A3, A1, b, i)),
        "gather_out": (gather_out, (A3, A3, i)),
    }


# ----------------------------------------------------------------------------
# version 3: implicit GEMM (no column buffer)

FWD, DATA, WGT = 0, 1, 2  # which pass a version-3 kernel computes
PASS_NAMES = {FWD: "fwd", DATA: "data", WGT: "wgt"}

# (BM, BN, BK, TM, TN) per tile config: BM rows (output channels, or input channels for
# backward-data) x BN columns (pixels, or weight taps for backward-weights) per block of
# (BN/TN) x (BM/TM) threads. `choose` takes the config that wastes the least of its tile
# among those giving MIN_BLOCKS blocks (larger tiles first on a tie: more reuse per load).
CONFIGS = {
    "64x64": (64, 64, 8, 4, 4),
    "32x32": (32, 32, 8, 2, 2),
    "16x64": (16, 64, 8, 1, 4),
    "8x32": (8, 32, 8, 1, 2),
    "8x16": (8, 16, 8, 1, 1),
}
SIM_CONFIGS = {"4x4": (4, 4, 8, 1, 1), "4x8": (4, 8, 8, 2, 2)}


def igemm_function(mode, T, BM, BN, BK, TM, TN):
    """The version-3 kernel of one pass as a GEMM over implicit operands.

    mode FWD:  y[n, k, oh, ow]   = sum_q  w[k, q] * x_col[q, (n, oh, ow)]   (+ b[k])
               M = Kg, columns = N*OH*OW, depth = Cg*R*S;
    mode DATA: dx[n, c, ih, iw]  = sum_q  w[q, c] * g_col[q, (n, ih, iw)]
               M = Cg, columns = N*H*W, depth = Kg*R*S (g_col is 0 where the stride
               skips: oh*sh != ih + ph - r*dh);
    mode WGT:  part[z, k, col]   = sum over the pixels of split z of g[k, p] * x_col[col, p]
               M = Kg, columns = Cg*R*S (+ 1: a column of ones gives db), depth =
               N*OH*OW cut into splits (split-K); ``reduce_splits`` adds them in order.
    Operand elements are computed from the NCHW tensors on the fly (never stored), staged
    in shared memory like GEMM v2 (k-major tiles, a TM x TN register tile per thread).
    Groups and splits run on gridDim.z. ``geom`` = (sh, sw, ph, pw, dh, dw, G, R, S, chunk):
    one small device array, converted once per geometry, instead of ten scalar arguments.
    """
    TX = BN // TN
    TY = BM // TM
    NT = TX * TY
    SA_W = BM + 4
    SB_W = BN + 4
    zero = T(0)
    one = T(1)
    B_K_FAST = mode == WGT  # B's contiguous axis: the depth (pixels) for WGT, else columns

    def conv_igemm(src, wt, out, bias, geom, has_bias):
        # FWD: src x (N,C,H,W), wt w (K,Cg,R,S), out y (N,K,OH,OW)
        # DATA: src g (N,K,OH,OW), wt w (K,Cg,R,S), out dx (N,C,H,W)
        # WGT: src g (N,K,OH,OW), wt x (N,C,H,W), out part (splits, K, Q + has_bias)
        sh, sw, ph, pw = geom[0], geom[1], geom[2], geom[3]
        dh, dw, G, R, S, chunk = geom[4], geom[5], geom[6], geom[7], geom[8], geom[9]
        RS = R * S
        if mode == FWD:
            N, C, H, W = src.shape
            K, OH, OW = out.shape[1], out.shape[2], out.shape[3]
            Kg, Cg = K // G, C // G
            M, NC, D = Kg, N * OH * OW, Cg * RS
        elif mode == DATA:
            N, K, OH, OW = src.shape
            C, H, W = out.shape[1], out.shape[2], out.shape[3]
            Kg, Cg = K // G, C // G
            M, NC, D = Cg, N * H * W, Kg * RS
        else:
            N, K, OH, OW = src.shape
            C, H, W = wt.shape[1], wt.shape[2], wt.shape[3]
            Kg, Cg = K // G, C // G
            M, NC, D = Kg, out.shape[2], N * OH * OW
        splits = out.shape[0] if mode == WGT else 1
        grp = cuda.blockIdx.z // splits
        z = cuda.blockIdx.z % splits
        d0 = z * chunk if mode == WGT else 0
        d1 = min(D, d0 + chunk) if mode == WGT else D
        sa = cuda.shared.array((BK, SA_W), T)
        sb = cuda.shared.array((BK, SB_W), T)
        acc = cuda.local.array((TM, TN), T)
        areg = cuda.local.array(TM, T)
        breg = cuda.local.array(TN, T)
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        tid = ty * TX + tx
        m0 = cuda.blockIdx.y * BM
        n0 = cuda.blockIdx.x * BN
        for i in range(TM):
            for j in range(TN):
                acc[i, j] = zero
        for k0 in range(d0, d1, BK):
            for e in range(tid, BM * BK, NT):  # A (M x depth), depth fastest
                kk = e % BK
                m = e // BK
                q = k0 + kk
                v = zero
                if m0 + m < M and q < d1:
                    if mode == FWD:  # w[k, q] with q = (c, r, s)
                        v = wt[grp * Kg + m0 + m, q // RS, (q % RS) // S, q % S]
                    elif mode == DATA:  # w[k, c, r, s] with q = (k, r, s), m = c
                        v = wt[grp * Kg + q // RS, m0 + m, (q % RS) // S, q % S]
                    else:  # g[n, k, oh, ow] with q = (n, oh, ow)
                        ow = q % OW
                        v = src[q // (OH * OW), grp * Kg + m0 + m, (q // OW) % OH, ow]
                sa[kk, m] = v
            for e in range(tid, BK * BN, NT):  # B (depth x columns)
                if B_K_FAST:
                    kk = e % BK
                    nn = e // BK
                else:
                    nn = e % BN
                    kk = e // BN
                q = k0 + kk
                col = n0 + nn
                v = zero
                if q < d1 and col < NC:
                    if mode == FWD:  # x at tap q = (c, r, s) of output pixel col
                        c = q // RS
                        r = (q % RS) // S
                        s = q % S
                        ow = col % OW
                        oh = (col // OW) % OH
                        n = col // (OW * OH)
                        ih = oh * sh - ph + r * dh
                        iw = ow * sw - pw + s * dw
                        if ih >= 0 and ih < H and iw >= 0 and iw < W:
                            v = src[n, grp * Cg + c, ih, iw]
                    elif mode == DATA:  # g at the output pixel tap q = (k, r, s) reads
                        k = q // RS
                        r = (q % RS) // S
                        s = q % S
                        iw = col % W
                        ih = (col // W) % H
                        n = col // (W * H)
                        a = ih + ph - r * dh
                        bb = iw + pw - s * dw
                        if (a >= 0 and bb >= 0 and a % sh == 0 and bb % sw == 0
                                and a // sh < OH and bb // sw < OW):
                            v = src[n, grp * Kg + k, a // sh, bb // sw]
                    elif col == NC - 1 and has_bias:  # the column of ones: db
                        v = one
                    else:  # x at pixel q = (n, oh, ow), tap col = (c, r, s)
                        c = col // RS
                        r = (col % RS) // S
                        s = col % S
                        ow = q % OW
                        oh = (q // OW) % OH
                        n = q // (OW * OH)
                        ih = oh * sh - ph + r * dh
                        iw = ow * sw - pw + s * dw
                        if ih >= 0 and ih < H and iw >= 0 and iw < W:
                            v = wt[n, grp * Cg + c, ih, iw]
                sb[kk, nn] = v
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
            m = m0 + ty + i * TY
            if m < M:
                for j in range(TN):
                    col = n0 + tx + j * TX
                    if col < NC:
                        v = acc[i, j]
                        if mode == FWD:
                            k = grp * Kg + m
                            if has_bias:
                                v += bias[k]
                            ow = col % OW
                            out[col // (OW * OH), k, (col // OW) % OH, ow] = v
                        elif mode == DATA:
                            iw = col % W
                            out[col // (W * H), grp * Cg + m, (col // W) % H, iw] = v
                        else:
                            out[z, grp * Kg + m, col] = v

    return conv_igemm


def reduce_splits_function(T):
    """dw (K, Q) and db (K,) from the split-K partials (splits, K, Q + has_bias), each a
    fixed-order sum over the splits (deterministic; no float atomics)."""
    zero = T(0)

    def reduce_splits(part, dw2, db, has_bias):
        splits, K, QB = part.shape
        Q = dw2.shape[1]
        i = cuda.grid(1)
        if i < K * QB:
            k = i // QB
            col = i % QB
            v = zero
            for z in range(splits):
                v += part[z, k, col]
            if col < Q:
                dw2[k, col] = v
            elif has_bias:
                db[k] = v

    return reduce_splits


def build_v3(T, configs):
    """{name: (python function, signature)} of the version-3 kernels, one per pass and tile
    config."""
    A1, A3, A4 = T[::1], T[:, :, ::1], T[:, :, :, ::1]
    sig = (A4, A4, A4, A1, int64[::1], boolean)
    wsig = (A4, A4, A3, A1, int64[::1], boolean)
    table = {}
    for name, cfg in configs.items():
        for mode, pname in PASS_NAMES.items():
            table[f"v3_{pname}_{name}"] = (igemm_function(mode, T, *cfg),
                                           wsig if mode == WGT else sig)
    table["v3_reduce"] = (reduce_splits_function(T), (A3, T[:, ::1], A1, boolean))
    return table


def v3_configs():
    """The tile configs version 3 may launch here (small ones under the simulator)."""
    return SIM_CONFIGS if SIM else CONFIGS


def build(T):
    """Every kernel of this file for the Numba float type T: {name: (function, signature)}
    (``kernels`` compiles each on first use; bench/ptx_check.py compiles the same pairs)."""
    return {**build_v1_v2(T), **build_v3(T, v3_configs())}


kernels = KernelTable(build)
"""``kernels(dtype)[name]``: compiled on first use (15 version-3 kernels per dtype exist;
a run compiles the few its shapes pick)."""


_GEOM = {}


def _geometry(like, stride, padding, dilation, groups, R, S, chunk=0):
    """The (sh, sw, ph, pw, dh, dw, G, R, S, chunk) device array of one geometry, made once
    and kept (a host-to-device copy per call would cost more than the launch)."""
    key = (*stride, *padding, *dilation, groups, R, S, chunk, isinstance(like, np.ndarray))
    geom = _GEOM.get(key)
    if geom is None:
        host = np.array(key[:10], np.int64)
        geom = host if isinstance(like, np.ndarray) else array_module(like).asarray(host)
        _GEOM[key] = geom
    return geom


# ----------------------------------------------------------------------------
# launchers


def direct_forward(x, w, b, y, stride, padding, dilation, groups):
    """y = conv2d(x, w) + b, one thread per output element (version 1)."""
    has_bias = b is not None
    launch(kernels(x.dtype)["fwd_direct"], _blocks(y.size), TPB, x, w,
           b if has_bias else _dummy(w), has_bias, y, *stride, *padding, *dilation, groups)


def direct_backward_data(g, w, dx, stride, padding, dilation, groups):
    """dx, one thread per input element gathering its taps (version 1)."""
    launch(kernels(g.dtype)["bwd_data_direct"], _blocks(dx.size), TPB, g, w, dx, *stride,
           *padding, *dilation, groups)


def direct_backward_weights(g, x, dw, db, stride, padding, dilation, groups, first=0):
    """dw (and db), one block per NB weight (and bias) elements, in one launch (version 1).
    ``first`` = dw.size computes db alone (the im2col path's bias gradient)."""
    nj = dw.size + (db.size if db is not None else 0)
    launch(kernels(g.dtype)["bwd_weights_direct"], min(_blocks(nj - first, NB), MAX_RED_BLOCKS),
           RED, g, x, dw, db if db is not None else _dummy(dw), *stride, *padding, *dilation,
           groups, first, nj)


IM2COL_CAP = 1 << 12 if SIM else 1 << 27
"""Most elements of one column buffer (512 MiB in float32 on a GPU): the samples of a pass
go through im2col and the GEMM in chunks of as many as fit, one launch per step per chunk."""


def _chunks(N, per_sample):
    """(first sample, samples) of each chunk of N samples, per_sample elements each."""
    m = max(1, min(N, IM2COL_CAP // max(1, per_sample)))
    return [(n0, min(m, N - n0)) for n0 in range(0, N, m)]


def _im2col_setup(x_like, w_shape, OH, OW, stride, padding, dilation, groups):
    K, Cg, R, S = w_shape
    G, Kg, Q, P = groups, K // groups, Cg * R * S, OH * OW
    geom = _geometry(x_like, stride, padding, dilation, groups, R, S)
    return G, Kg, Q, P, geom


def im2col_forward(x, w, b, y, stride, padding, dilation, groups):
    """y: im2col of a chunk of samples, one GEMM per group over the whole chunk, then the
    products scattered into NCHW with the bias (version 2): 2 + G launches per chunk."""
    N, K, OH, OW = y.shape
    G, Kg, Q, P, geom = _im2col_setup(x, w.shape, OH, OW, stride, padding, dilation, groups)
    kern = kernels(x.dtype)
    w2 = w.reshape(G, Kg, Q)
    y3 = y.reshape(N, K, P)
    has_bias = b is not None
    chunks = _chunks(N, G * Q * P)
    col_buf = scratch(x, (G * Q * chunks[0][1] * P,))
    tmp_buf = scratch(x, (G * Kg * chunks[0][1] * P,))
    for n0, m in chunks:
        col = col_buf[:G * Q * m * P].reshape(G, Q, m * P)
        tmp = tmp_buf[:G * Kg * m * P].reshape(G, Kg, m * P)
        launch(kern["im2col"], _blocks(col.size), TPB, x, col, n0, OH, OW, geom)
        for grp in range(G):
            gemm_cuda.gemm(w2[grp], col[grp], tmp[grp], False, False, False)
        launch(kern["scatter_out"], _blocks(m * K * P), TPB, tmp, y3,
               b if has_bias else _dummy(w), has_bias, n0)


def im2col_backward_data(g, w, dx, stride, padding, dilation, groups):
    """dx: g gathered into columns per chunk, dcol = w_g^T @ gcol per group, then col2im
    (a gather) (version 2): 2 + G launches per chunk."""
    N, K, OH, OW = g.shape
    G, Kg, Q, P, geom = _im2col_setup(g, w.shape, OH, OW, stride, padding, dilation, groups)
    kern = kernels(g.dtype)
    w2 = w.reshape(G, Kg, Q)
    g3 = g.reshape(N, K, P)
    chunks = _chunks(N, G * Q * P)
    dcol_buf = scratch(g, (G * Q * chunks[0][1] * P,))
    gcol_buf = scratch(g, (G * Kg * chunks[0][1] * P,))
    for n0, m in chunks:
        gcol = gcol_buf[:G * Kg * m * P].reshape(G, Kg, m * P)
        dcol = dcol_buf[:G * Q * m * P].reshape(G, Q, m * P)
        launch(kern["gather_out"], _blocks(gcol.size), TPB, g3, gcol, n0)
        for grp in range(G):
            gemm_cuda.gemm(w2[grp], gcol[grp], dcol[grp], True, False, False)
        launch(kern["col2im"], _blocks(m * dx[0].size), TPB, dcol, dx, n0, OH, OW, geom)


def im2col_backward_weights(g, x, dw, db, stride, padding, dilation, groups):
    """dw_g = gcol_g @ col_g^T per group, accumulated over the chunks by the GEMM; db by
    the reduction blocks of version 1 (version 2): 2 + G launches per chunk, 1 for db."""
    N, K, OH, OW = g.shape
    G, Kg, Q, P, geom = _im2col_setup(x, dw.shape, OH, OW, stride, padding, dilation, groups)
    kern = kernels(x.dtype)
    dw2 = dw.reshape(G, Kg, Q)
    g3 = g.reshape(N, K, P)
    chunks = _chunks(N, G * Q * P)
    col_buf = scratch(x, (G * Q * chunks[0][1] * P,))
    gcol_buf = scratch(x, (G * Kg * chunks[0][1] * P,))
    for n0, m in chunks:
        col = col_buf[:G * Q * m * P].reshape(G, Q, m * P)
        gcol = gcol_buf[:G * Kg * m * P].reshape(G, Kg, m * P)
        launch(kern["im2col"], _blocks(col.size), TPB, x, col, n0, OH, OW, geom)
        launch(kern["gather_out"], _blocks(gcol.size), TPB, g3, gcol, n0)
        for grp in range(G):
            gemm_cuda.gemm(gcol[grp], col[grp], dw2[grp], False, True, n0 > 0)
    if db is not None:
        direct_backward_weights(g, x, dw, db, stride, padding, dilation, groups, first=dw.size)


# version 3 launchers


@functools.lru_cache(maxsize=1024)
def v3_plan(M, NC, D, G, split=False):
    """(config name, blocks, splits) for an implicit GEMM of M x NC per group over depth D.

    ``split`` (backward-weights) cuts the depth into splits until MIN_BLOCKS blocks run, each
    split keeping at least 8 K-steps. Among the configs reaching MIN_BLOCKS, the largest
    tile (most reuse per load) that wastes at most a quarter of itself on padding; with
    none that lean, the least wasteful; with none reaching MIN_BLOCKS, the most blocks."""
    plans = []
    for name, (BM, BN, BK, _, _) in v3_configs().items():
        tiles = -(-M // BM) * -(-NC // BN) * G
        splits = 1
        if split and tiles < MIN_BLOCKS:
            splits = max(1, min(-(-MIN_BLOCKS // tiles), D // (8 * BK)))
        used = M * NC * G / (tiles * BM * BN)
        plans.append((name, tiles * splits, splits, used, BM * BN))
    reach = [p for p in plans if p[1] >= MIN_BLOCKS]
    if not reach:
        name, blocks, splits, _, _ = max(plans, key=lambda p: p[1])
        return name, blocks, splits
    lean = [p for p in reach if p[3] >= 0.75] or [max(reach, key=lambda p: p[3])]
    name, blocks, splits, _, _ = max(lean, key=lambda p: (p[4], p[3]))
    return name, blocks, splits


def _v3_launch(name, cfg_name, G, M, NC, splits, *args):
    BM, BN, _, TM, TN = v3_configs()[cfg_name]
    grid = (-(-NC // BN), -(-M // BM), G * splits)
    if grid[0] and grid[1]:
        launch(kernels(args[0].dtype)[name], grid, (BN // TN, BM // TM), *args)


def v3_forward(x, w, b, y, stride, padding, dilation, groups):
    """y by the forward implicit GEMM (version 3): one launch."""
    N, K, OH, OW = y.shape
    _, Cg, R, S = w.shape
    M, NC = K // groups, N * OH * OW
    cfg, _, _ = v3_plan(M, NC, Cg * R * S, groups)
    geom = _geometry(x, stride, padding, dilation, groups, R, S)
    has_bias = b is not None
    _v3_launch(f"v3_fwd_{cfg}", cfg, groups, M, NC, 1, x, w, y,
               b if has_bias else _dummy(w), geom, has_bias)


def v3_backward_data(g, w, dx, stride, padding, dilation, groups):
    """dx by the backward-data implicit GEMM (version 3): one launch."""
    N, _, H, W = dx.shape
    K, Cg, R, S = w.shape
    M, NC = Cg, N * H * W
    cfg, _, _ = v3_plan(M, NC, (K // groups) * R * S, groups)
    geom = _geometry(g, stride, padding, dilation, groups, R, S)
    _v3_launch(f"v3_data_{cfg}", cfg, groups, M, NC, 1, g, w, dx, _dummy(w), geom, False)


def v3_backward_weights(g, x, dw, db, stride, padding, dilation, groups):
    """dw and db by the backward-weights implicit GEMM split over the pixels (version 3):
    one launch for the partials, one for their fixed-order sum."""
    N, K, OH, OW = g.shape
    _, Cg, R, S = dw.shape
    Q = Cg * R * S
    has_bias = db is not None
    M, NC, D = K // groups, Q + has_bias, N * OH * OW
    cfg, _, splits = v3_plan(M, NC, D, groups, split=True)
    chunk = -(-D // splits)
    chunk = -(-chunk // 8) * 8  # whole K-steps per split
    splits = -(-D // chunk) if D else 1
    geom = _geometry(g, stride, padding, dilation, groups, R, S, chunk)
    part = scratch(g, (splits, K, NC))
    _v3_launch(f"v3_wgt_{cfg}", cfg, groups, M, NC, splits, g, x, part, _dummy(dw), geom,
               has_bias)
    launch(kernels(g.dtype)["v3_reduce"], _blocks(K * NC), TPB, part, dw.reshape(K, Q),
           db if has_bias else _dummy(dw), has_bias)


# ----------------------------------------------------------------------------
# the KERNELS entry points


VERSIONS = {
    "v1": "direct: a thread per output (forward), per input (backward-data), reduction "
          "blocks per weight (backward-weights)",
    "v2": "im2col: columns per sample and group + the nnkern GEMM",
    "v3": "implicit GEMM: the GEMM's tiling over operands computed on the fly, "
          "backward-weights split over the pixels",
}
_PASSES = {
    "v1": (direct_forward, direct_backward_data, direct_backward_weights),
    "v2": (im2col_forward, im2col_backward_data, im2col_backward_weights),
    "v3": (v3_forward, v3_backward_data, v3_backward_weights),
}


def choose(algo, version=None):
    """(version, why) for the op surface's ``algo``: "direct" and "auto" take the implicit
    GEMM (v3; it is the direct algorithm, tiled), "im2col" v2; ``version`` forces one."""
    if version is not None:
        return version, "asked for"
    if algo == "im2col":
        return "v2", "im2col asked for"
    return "v3", "implicit GEMM: fills the GPU at every shape (see v3_plan)"


def conv2d_forward(x, w, b, y, stride, padding, dilation, groups, algo, version=None):
    """y (N, K, OH, OW) = conv2d(x (N, C, H, W), w (K, Cg, R, S)) + b (K,) or no bias."""
    _PASSES[choose(algo, version)[0]][0](x, w, b, y, stride, padding, dilation, groups)


def conv2d_backward_data(g, w, dx, stride, padding, dilation, groups, algo, version=None):
    """dx (N, C, H, W) = gradient of sum(conv2d(x, w) * g) w.r.t. x, g (N, K, OH, OW)."""
    _PASSES[choose(algo, version)[0]][1](g, w, dx, stride, padding, dilation, groups)


def conv2d_backward_weights(g, x, dw, db, stride, padding, dilation, groups, algo,
                            version=None):
    """dw (K, Cg, R, S) and db (K,) or None: gradients of sum((conv2d(x, w) + b) * g)."""
    _PASSES[choose(algo, version)[0]][2](g, x, dw, db, stride, padding, dilation, groups)

