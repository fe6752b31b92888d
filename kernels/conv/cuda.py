"""2-D convolution in numba.cuda: direct kernels and im2col/col2im + the nnkern GEMM.

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
               share one launch.
    version 2  im2col: per sample and group, one thread per column entry builds
               col (Q, P), then nnkern.kernels.gemm.cuda.gemm computes w_g @ col;
               backward-data multiplies by w_g^T and folds the columns back with
               col2im, a gather with one thread per input pixel (no atomics).

algo="auto" picks direct (no scratch memory, one launch per pass); im2col stays
selectable. No GPU timings have been taken for these kernels yet.
"""

import functools

import numpy as np
from nnkern.kernels.gemm import cuda as gemm_cuda
from numba import config, cuda, float32, float64

# Threads per block of the element-wise kernels, and of the reductions (dw, db; a power
# of two for the tree). The simulator runs every thread of a block as a Python thread,
# idle ones included, so it gets small blocks; the code paths are the same.
SIM = bool(config.ENABLE_CUDASIM)
TPB = 32 if SIM else 128
RED = 8 if SIM else 64
NB = 8  # outputs reduced together by one block (they share its barriers); NB <= RED
MAX_RED_BLOCKS = 2 if SIM else 8192  # the reduction blocks loop over the outputs
_NUMBA_TYPE = {np.dtype(np.float32): float32, np.dtype(np.float64): float64}


def _blocks(n, tpb=TPB):
    return max(1, (n + tpb - 1) // tpb)


def _array_module(a):
    """numpy for host arrays (the simulator), cupy for GPU arrays: for scratch buffers."""
    if isinstance(a, np.ndarray):
        return np
    import cupy

    return cupy


def _dummy(like):
    # Stands in for an absent bias (never read or written): the GEMM's cached one,
    # not an alias of a real argument (see gemm_cuda._no_bias) and not a new array
    # per call
    return gemm_cuda._no_bias(like.dtype)


@functools.cache
def _kernels(dtype):
    """Build the kernels for one float dtype (the accumulators and shared memory need it
    at compile time). Returns a dict name -> kernel."""
    T = _NUMBA_TYPE[np.dtype(dtype)]

    # ------------------------------------------------------------------------
    # version 1: direct

    @cuda.jit
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

    @cuda.jit
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

    @cuda.jit
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
    # version 2: im2col / col2im (+ the nnkern GEMM)

    @cuda.jit
    def im2col(x, n, c0, col, R, S, sh, sw, ph, pw, dh, dw, OW):
        # col (Q, P)[(c*R + r)*S + s, oh*OW + ow] = x[n, c0 + c, ih, iw], 0 outside.
        H, W = x.shape[2], x.shape[3]
        Q, P = col.shape
        i = cuda.grid(1)
        if i >= Q * P:
            return
        q = i // P
        p = i % P
        c = q // (R * S)
        r = (q // S) % R
        s = q % S
        ih = (p // OW) * sh - ph + r * dh
        iw = (p % OW) * sw - pw + s * dw
        if ih >= 0 and ih < H and iw >= 0 and iw < W:
            col[q, p] = x[n, c0 + c, ih, iw]
        else:
            col[q, p] = 0

    @cuda.jit
    def col2im(col, dx, n, c0, Cg, R, S, sh, sw, ph, pw, dh, dw, OH, OW):
        # dx[n, c0 + c, ih, iw] = sum of the col entries copied from that pixel (a gather).
        H, W = dx.shape[2], dx.shape[3]
        i = cuda.grid(1)
        if i >= Cg * H * W:
            return
        iw = i % W
        ih = (i // W) % H
        c = i // (W * H)
        acc = T(0)
        for r in range(R):
            a = ih + ph - r * dh
            if a < 0 or a % sh != 0 or a // sh >= OH:
                continue
            for s in range(S):
                bb = iw + pw - s * dw
                if bb < 0 or bb % sw != 0 or bb // sw >= OW:
                    continue
                acc += col[(c * R + r) * S + s, (a // sh) * OW + bb // sw]
        dx[n, c0 + c, ih, iw] = acc

    @cuda.jit
    def add_bias(y, b):
        # y (N, K, P) += b (K,)
        N, K, P = y.shape
        i = cuda.grid(1)
        if i < N * K * P:
            y[i // (K * P), (i // P) % K, i % P] += b[(i // P) % K]

    return {
        "fwd_direct": fwd_direct,
        "bwd_data_direct": bwd_data_direct,
        "bwd_weights_direct": bwd_weights_direct,
        "im2col": im2col,
        "col2im": col2im,
        "add_bias": add_bias,
    }


# ----------------------------------------------------------------------------
# launchers


def direct_forward(x, w, b, y, stride, padding, dilation, groups):
    """y = conv2d(x, w) + b, one thread per output element (version 1)."""
    kern = _kernels(x.dtype)["fwd_direct"]
    has_bias = b is not None
    kern[_blocks(y.size), TPB](
        x, w, b if has_bias else _dummy(w), has_bias, y, *stride, *padding, *dilation, groups
    )


def direct_backward_data(g, w, dx, stride, padding, dilation, groups):
    """dx, one thread per input element gathering its taps (version 1)."""
    kern = _kernels(g.dtype)["bwd_data_direct"]
    kern[_blocks(dx.size), TPB](g, w, dx, *stride, *padding, *dilation, groups)


def direct_backward_weights(g, x, dw, db, stride, padding, dilation, groups):
    """dw (and db), one block per weight (and bias) element, in one launch (version 1)."""
    kern = _kernels(g.dtype)["bwd_weights_direct"]
    nj = dw.size + (db.size if db is not None else 0)
    kern[min(_blocks(nj, NB), MAX_RED_BLOCKS), RED](
        g, x, dw, db if db is not None else _dummy(dw), *stride, *padding, *dilation, groups,
        0, nj,
    )


def im2col_forward(x, w, b, y, stride, padding, dilation, groups):
    """y: per sample and group, col = im2col(x), y = w_g @ col by the nnkern GEMM (version 2)."""
    N = x.shape[0]
    K, Cg, R, S = w.shape
    OH, OW = y.shape[2], y.shape[3]
    G, Kg, Q, P = groups, K // groups, Cg * R * S, OH * OW
    kern = _kernels(x.dtype)
    col = _array_module(x).empty((Q, P), dtype=x.dtype)
    w2 = w.reshape(G, Kg, Q)
    y3 = y.reshape(N, K, P)
    for n in range(N):
        for grp in range(G):
            kern["im2col"][_blocks(Q * P), TPB](
                x, n, grp * Cg, col, R, S, *stride, *padding, *dilation, OW
            )
            gemm_cuda.gemm(w2[grp], col, y3[n, grp * Kg:(grp + 1) * Kg], False, False, False)
    if b is not None:
        kern["add_bias"][_blocks(y.size), TPB](y3, b)


def im2col_backward_data(g, w, dx, stride, padding, dilation, groups):
    """dx: per sample and group, dcol = w_g^T @ g, then col2im (a gather) (version 2)."""
    N, H, W = dx.shape[0], dx.shape[2], dx.shape[3]
    K, Cg, R, S = w.shape
    OH, OW = g.shape[2], g.shape[3]
    G, Kg, Q, P = groups, K // groups, Cg * R * S, OH * OW
    kern = _kernels(g.dtype)
    dcol = _array_module(g).empty((Q, P), dtype=g.dtype)
    w2 = w.reshape(G, Kg, Q)
    g3 = g.reshape(N, K, P)
    for n in range(N):
        for grp in range(G):
            gemm_cuda.gemm(w2[grp], g3[n, grp * Kg:(grp + 1) * Kg], dcol, True, False, False)
            kern["col2im"][_blocks(Cg * H * W), TPB](
                dcol, dx, n, grp * Cg, Cg, R, S, *stride, *padding, *dilation, OH, OW
            )


def im2col_backward_weights(g, x, dw, db, stride, padding, dilation, groups):
    """dw_g = sum over samples of g[n, g] @ col^T, accumulated by the GEMM; db by the
    reduction blocks of version 1 (version 2)."""
    N = x.shape[0]
    K, Cg, R, S = dw.shape
    OH, OW = g.shape[2], g.shape[3]
    G, Kg, Q, P = groups, K // groups, Cg * R * S, OH * OW
    kern = _kernels(x.dtype)
    col = _array_module(x).empty((Q, P), dtype=x.dtype)
    dw2 = dw.reshape(G, Kg, Q)
    g3 = g.reshape(N, K, P)
    for n in range(N):
        for grp in range(G):
            kern["im2col"][_blocks(Q * P), TPB](
                x, n, grp * Cg, col, R, S, *stride, *padding, *dilation, OW
            )
            gemm_cuda.gemm(g3[n, grp * Kg:(grp + 1) * Kg], col, dw2[grp], False, True, n > 0)
    if db is not None:
        # Only the bias blocks of the version-1 launch: they start past dw's K*Q blocks.
        kern["bwd_weights_direct"][min(_blocks(K, NB), MAX_RED_BLOCKS), RED](
            g, x, dw, db, *stride, *padding, *dilation, groups, dw.size, dw.size + K
        )


# ----------------------------------------------------------------------------
# the KERNELS entry points


def choose_algo(algo):
    """The algorithm "auto" stands for on the GPU: direct (see the header)."""
    return "direct" if algo == "auto" else algo


def conv2d_forward(x, w, b, y, stride, padding, dilation, groups, algo):
    """y (N, K, OH, OW) = conv2d(x (N, C, H, W), w (K, Cg, R, S)) + b (K,) or no bias."""
    if choose_algo(algo) == "im2col":
        im2col_forward(x, w, b, y, stride, padding, dilation, groups)
    else:
        direct_forward(x, w, b, y, stride, padding, dilation, groups)


def conv2d_backward_data(g, w, dx, stride, padding, dilation, groups, algo):
    """dx (N, C, H, W) = gradient of sum(conv2d(x, w) * g) w.r.t. x, g (N, K, OH, OW)."""
    if choose_algo(algo) == "im2col":
        im2col_backward_data(g, w, dx, stride, padding, dilation, groups)
    else:
        direct_backward_data(g, w, dx, stride, padding, dilation, groups)


def conv2d_backward_weights(g, x, dw, db, stride, padding, dilation, groups, algo):
    """dw (K, Cg, R, S) and db (K,) or None: gradients of sum((conv2d(x, w) + b) * g)."""
    if choose_algo(algo) == "im2col":
        im2col_backward_weights(g, x, dw, db, stride, padding, dilation, groups)
    else:
        direct_backward_weights(g, x, dw, db, stride, padding, dilation, groups)

