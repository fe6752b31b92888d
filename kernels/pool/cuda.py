"""Pooling on NVIDIA GPUs with numba.cuda: max, average, blur and fused max-blur.

Layout NCHW, C-contiguous; arrays are CuPy on a GPU (NumPy under the
simulator), passed straight to the launches. One launch per op, a 1-D grid:

- forward kernels: one thread per output element, reading its window;
- backward kernels: one thread per INPUT element, gathering from the windows
  that contain it (max: only those whose argmax is this element). No atomics,
  so results are deterministic and every dx element is written exactly once.
- blur: the binomial taps C(k-1, i) / 2^(k-1) are computed in the kernel and
  reflect padding is index arithmetic, so no filter array or padded copy is
  passed. The backward gather visits the (at most three) padded positions
  that reflect onto an input cell.
- max-blur, FUSED in one launch each way: the forward thread takes the max of
  each window its blur taps read (recomputing, instead of storing the
  stride-1 max map); the backward thread re-derives the argmax of each stride-1
  window that contains its input element and, where it is the winner, adds
  that window's blur gradient computed on the spot. No intermediate array.

Versions: version 1 (direct, one element per thread, global loads). Its second
revision (issue 14) computes in the array's dtype (taps as exact integer binomials
divided in T, divisors cast to T), compiles per dtype with explicit signatures, and
takes block sizes from kernels/_cuda.py. Its third (issue 14 too): max and average
pooling walk the R x S taps of a window (forward) or the R x S candidate windows of an
input (backward: tap r of window oh holds h when oh*SH - PH + r == h) in loops of
constant trip count, and the common 2x2 and 3x3 windows get kernels with R and S fixed
at compile time, so the loops unroll (FIXED_WINDOWS; other sizes run the same code with
R and S read at run time). Tiled shared-memory versions are future work. No GPU timing has been measured. NaN in grad_out reaches exactly the inputs a
(nonzero) binomial tap connects it to: the gathers visit only those (issue 12).
"""

import math

from numba import boolean, cuda, int64

from .._cuda import ELEMENT_THREADS, KernelTable, launch


@cuda.jit(device=True)
def _nchw(i, C, H, W):
    # flat index of a C-contiguous (N, C, H, W) array -> (n, c, h, w)
    return i // (W * H * C), (i // (W * H)) % C, (i // W) % H, i % W


@cuda.jit(device=True)
def _better(v, best):
    # first maximum in scan order wins; the first NaN beats everything
    return v > best or (math.isnan(v) and not math.isnan(best))


@cuda.jit(device=True)
def _reflect(i, H):
    if i < 0:
        i = -i
    if i > H - 1:
        i = 2 * (H - 1) - i
    return i


@cuda.jit(device=True)
def _count(o, R, SH, PH, H, count_include_pad):
    if count_include_pad:
        return R
    h0 = o * SH - PH
    return min(h0 + R, H) - max(h0, 0)


@cuda.jit(device=True)
def _padded_preimage(h, k, H, K):
    # k-th (0..2) padded index whose reflected source is input index h, or -1:
    # itself, its mirror in the top pad, its mirror in the bottom pad
    p0 = (K - 1) // 2
    p1 = K // 2
    if k == 0:
        return h + p0
    if k == 1:
        return p0 - h if 1 <= h <= p0 else -1
    return p0 + 2 * (H - 1) - h if H - 1 - p1 <= h <= H - 2 else -1


FIXED_WINDOWS = ((2, 2), (3, 3))
"""Window sizes with their own kernels, R and S compile-time constants (the loops unroll);
other sizes run the same code with R and S read at run time."""


def window_functions(T, FR, FS):
    """Max and average pooling, forward and backward, for the Numba float type T; with
    FR, FS > 0 the window is FR x FS at compile time (the R, S arguments are ignored)."""
    zero = T(0)
    FIXED = FR > 0

    def _max_forward(x, y, indices, R_, S_, SH, SW, PH, PW):
        # x (N,C,H,W) -> y, indices (N,C,OH,OW); one thread per output
        R = FR if FIXED else R_
        S = FS if FIXED else S_
        N, C, H, W = x.shape
        OH, OW = y.shape[2], y.shape[3]
        i = cuda.grid(1)
        if i >= N * C * OH * OW:
            return
        n, c, oh, ow = _nchw(i, C, OH, OW)
        h0 = oh * SH - PH
        w0 = ow * SW - PW
        hb, wb = h0 + max(0, -h0), w0 + max(0, -w0)  # the first tap inside the image
        best = x[n, c, hb, wb]
        arg = hb * W + wb
        for r in range(R):
            h = h0 + r
            if h >= 0 and h < H:
                for s in range(S):
                    w = w0 + s
                    if w >= 0 and w < W:
                        v = x[n, c, h, w]
                        if _better(v, best):
                            best = v
                            arg = h * W + w
        y[n, c, oh, ow] = best
        indices[n, c, oh, ow] = arg

    def _max_backward(grad_out, indices, dx, R_, S_, SH, SW, PH, PW):
        # grad_out, indices (N,C,OH,OW) -> dx (N,C,H,W); one thread per input, a gather over
        # the windows holding it: tap r of window oh holds h when oh*SH - PH + r == h. The
        # test is written out here and in _avg_backward: a device function for it cost 6-14
        # more registers (ptxas, sm_90: max_backward_2x2 40 -> 46-54)
        R = FR if FIXED else R_
        S = FS if FIXED else S_
        N, C, H, W = dx.shape
        OH, OW = grad_out.shape[2], grad_out.shape[3]
        i = cuda.grid(1)
        if i >= N * C * H * W:
            return
        n, c, h, w = _nchw(i, C, H, W)
        me = h * W + w
        acc = zero
        for r in range(R):
            a = h + PH - r
            if a >= 0 and a % SH == 0 and a // SH < OH:
                for s in range(S):
                    bb = w + PW - s
                    if (bb >= 0 and bb % SW == 0 and bb // SW < OW
                            and indices[n, c, a // SH, bb // SW] == me):
                        acc += grad_out[n, c, a // SH, bb // SW]
        dx[n, c, h, w] = acc

    def _avg_forward(x, y, R_, S_, SH, SW, PH, PW, count_include_pad):
        # x (N,C,H,W) -> y (N,C,OH,OW); one thread per output
        R = FR if FIXED else R_
        S = FS if FIXED else S_
        N, C, H, W = x.shape
        OH, OW = y.shape[2], y.shape[3]
        i = cuda.grid(1)
        if i >= N * C * OH * OW:
            return
        n, c, oh, ow = _nchw(i, C, OH, OW)
        h0 = oh * SH - PH
        w0 = ow * SW - PW
        acc = zero
        for r in range(R):
            h = h0 + r
            if h >= 0 and h < H:
                for s in range(S):
                    w = w0 + s
                    if w >= 0 and w < W:
                        acc += x[n, c, h, w]
        div = _count(oh, R, SH, PH, H, count_include_pad) * _count(ow, S, SW, PW, W,
                                                                  count_include_pad)
        y[n, c, oh, ow] = acc / T(div)

    def _avg_backward(grad_out, dx, R_, S_, SH, SW, PH, PW, count_include_pad):
        # grad_out (N,C,OH,OW) -> dx (N,C,H,W); one thread per input, a gather
        R = FR if FIXED else R_
        S = FS if FIXED else S_
        N, C, H, W = dx.shape
        OH, OW = grad_out.shape[2], grad_out.shape[3]
        i = cuda.grid(1)
        if i >= N * C * H * W:
            return
        n, c, h, w = _nchw(i, C, H, W)
        acc = zero
        for r in range(R):
            a = h + PH - r
            if a >= 0 and a % SH == 0 and a // SH < OH:
                hc = _count(a // SH, R, SH, PH, H, count_include_pad)
                for s in range(S):
                    bb = w + PW - s
                    if bb >= 0 and bb % SW == 0 and bb // SW < OW:
                        wc = _count(bb // SW, S, SW, PW, W, count_include_pad)
                        acc += grad_out[n, c, a // SH, bb // SW] / T(hc * wc)
        dx[n, c, h, w] = acc

    return _max_forward, _max_backward, _avg_forward, _avg_backward


def build(T):
    """Every kernel of this file for the Numba float type T: {name: (function, signature)}.
    Sums, taps and divisors are in T (version 1 summed in float64 and divided in float64
    per blur tap: 19-140 float64 instructions per float32 kernel)."""
    zero = T(0)

    @cuda.jit(device=True)
    def _tap(K, r):
        # r-th tap of the normalised binomial filter of size K: C(K-1, r) / 2^(K-1), in T
        # (the binomial in integers: exact)
        c = 1
        for j in range(r):
            c = c * (K - 1 - j) // (j + 1)
        return T(c) / T(1 << (K - 1))

    @cuda.jit(device=True)
    def _blur_grad_at(g, n, c, h, w, H, W, K, SH, SW):
        # d(sum g * blur(m)) / d m[h, w] for a map m of size (H, W) blurred into g (N,C,OH,OW)
        OH, OW = g.shape[2], g.shape[3]
        acc = zero
        for kh in range(3):
            ph = _padded_preimage(h, kh, H, K)
            if ph < 0:
                continue
            for r in range(K):
                if (ph - r) % SH != 0:
                    continue
                oh = (ph - r) // SH
                if oh < 0 or oh >= OH:
                    continue
                for kw in range(3):
                    pw = _padded_preimage(w, kw, W, K)
                    if pw < 0:
                        continue
                    for s in range(K):
                        if (pw - s) % SW != 0:
                            continue
                        ow = (pw - s) // SW
                        if 0 <= ow < OW:
                            acc += _tap(K, r) * _tap(K, s) * g[n, c, oh, ow]
        return acc

    def _blur_forward(x, y, K, SH, SW):
        # x (N,C,H,W) -> y (N,C,OH,OW); one thread per output, reflect by index arithmetic
        N, C, H, W = x.shape
        OH, OW = y.shape[2], y.shape[3]
        i = cuda.grid(1)
        if i >= N * C * OH * OW:
            return
        n, c, oh, ow = _nchw(i, C, OH, OW)
        p0 = (K - 1) // 2
        acc = zero
        for r in range(K):
            h = _reflect(oh * SH + r - p0, H)
            row = zero
            for s in range(K):
                row += _tap(K, s) * x[n, c, h, _reflect(ow * SW + s - p0, W)]
            acc += _tap(K, r) * row
        y[n, c, oh, ow] = acc

    def _blur_backward(grad_out, dx, K, SH, SW):
        # grad_out (N,C,OH,OW) -> dx (N,C,H,W); one thread per input, gather
        N, C, H, W = dx.shape
        i = cuda.grid(1)
        if i >= N * C * H * W:
            return
        n, c, h, w = _nchw(i, C, H, W)
        dx[n, c, h, w] = _blur_grad_at(grad_out, n, c, h, w, H, W, K, SH, SW)

    @cuda.jit(device=True)
    def _window_max(x, n, c, i, j, R, S):
        # max and flat argmax of the stride-1 window at (i, j), no padding
        W = x.shape[3]
        best = x[n, c, i, j]
        arg = i * W + j
        for r in range(R):
            for s in range(S):
                v = x[n, c, i + r, j + s]
                if _better(v, best):
                    best = v
                    arg = (i + r) * W + j + s
        return best, arg

    def _max_blur_forward(x, y, R, S, K, SH, SW):
        # x (N,C,H,W) -> y (N,C,OH,OW); one thread per output, max recomputed per blur tap
        N, C, H, W = x.shape
        OH, OW = y.shape[2], y.shape[3]
        Hm, Wm = H - R + 1, W - S + 1
        i = cuda.grid(1)
        if i >= N * C * OH * OW:
            return
        n, c, oh, ow = _nchw(i, C, OH, OW)
        p0 = (K - 1) // 2
        acc = zero
        for r in range(K):
            mi = _reflect(oh * SH + r - p0, Hm)
            row = zero
            for s in range(K):
                best, _ = _window_max(x, n, c, mi, _reflect(ow * SW + s - p0, Wm), R, S)
                row += _tap(K, s) * best
            acc += _tap(K, r) * row
        y[n, c, oh, ow] = acc

    def _max_blur_backward(grad_out, x, dx, R, S, K, SH, SW):
        # grad_out (N,C,OH,OW), x (N,C,H,W) -> dx (N,C,H,W); one thread per input, gather
        N, C, H, W = x.shape
        Hm, Wm = H - R + 1, W - S + 1
        t = cuda.grid(1)
        if t >= N * C * H * W:
            return
        n, c, h, w = _nchw(t, C, H, W)
        me = h * W + w
        acc = zero
        for i in range(max(0, h - R + 1), min(Hm, h + 1)):
            for j in range(max(0, w - S + 1), min(Wm, w + 1)):
                _, arg = _window_max(x, n, c, i, j, R, S)
                if arg == me:
                    acc += _blur_grad_at(grad_out, n, c, i, j, Hm, Wm, K, SH, SW)
        dx[n, c, h, w] = acc

    A4, I4 = T[:, :, :, ::1], int64[:, :, :, ::1]
    i, b = int64, boolean
    win = (i,) * 6  # R, S, SH, SW, PH, PW
    table = {}
    for FR, FS in ((0, 0),) + FIXED_WINDOWS:
        suffix = f"_{FR}x{FS}" if FR else ""
        mf, mb, af, ab = window_functions(T, FR, FS)
        table["max_forward" + suffix] = (mf, (A4, A4, I4) + win)
        table["max_backward" + suffix] = (mb, (A4, I4, A4) + win)
        table["avg_forward" + suffix] = (af, (A4, A4) + win + (b,))
        table["avg_backward" + suffix] = (ab, (A4, A4) + win + (b,))
    return {
        **table,
        "blur_forward": (_blur_forward, (A4, A4, i, i, i)),
        "blur_backward": (_blur_backward, (A4, A4, i, i, i)),
        "max_blur_forward": (_max_blur_forward, (A4, A4) + (i,) * 5),
        "max_blur_backward": (_max_blur_backward, (A4, A4, A4) + (i,) * 5),
    }


kernels = KernelTable(build)
"""``kernels(dtype)[name]``: compiled on first use."""


THREADS = ELEMENT_THREADS


def _launch(name, n, *args):
    """One launch of kernel ``name`` with a thread per element of an n-element array."""
    if n:  # an empty grid is an error in numba.cuda; an empty output needs no work
        launch(kernels(args[0].dtype)[name], (n + THREADS - 1) // THREADS, THREADS, *args)


def _window(name, R, S):
    """The kernel name for an R x S window: its own unrolled kernel where there is one."""
    return f"{name}_{R}x{S}" if (R, S) in FIXED_WINDOWS else name


# ----------------------------------------------------------------------------
# max pooling


def max_pool2d_forward(x, y, indices, R, S, SH, SW, PH, PW):
    """Max pool with argmax; see reference.max_pool2d_forward."""
    _launch(_window("max_forward", R, S), y.size, x, y, indices, R, S, SH, SW, PH, PW)


def max_pool2d_backward(grad_out, indices, dx, R, S, SH, SW, PH, PW):
    """dx gathers grad_out from the windows whose argmax is that element."""
    _launch(_window("max_backward", R, S), dx.size, grad_out, indices, dx, R, S, SH, SW, PH, PW)


# ----------------------------------------------------------------------------
# average pooling


def avg_pool2d_forward(x, y, R, S, SH, SW, PH, PW, count_include_pad):
    """Average pool; see reference.avg_pool2d_forward."""
    _launch(_window("avg_forward", R, S), y.size, x, y, R, S, SH, SW, PH, PW, count_include_pad)


def avg_pool2d_backward(grad_out, dx, R, S, SH, SW, PH, PW, count_include_pad):
    """dx gathers grad_out / divisor from every window containing it."""
    _launch(_window("avg_backward", R, S), dx.size, grad_out, dx, R, S, SH, SW, PH, PW, count_include_pad)


# ----------------------------------------------------------------------------
# blur pooling


def blur_pool2d_forward(x, y, filt_size, SH, SW):
    """Reflect-padded binomial blur at stride (SH, SW); see reference.blur_pool2d_forward."""
    _launch("blur_forward", y.size, x, y, filt_size, SH, SW)


def blur_pool2d_backward(grad_out, dx, filt_size, SH, SW):
    """dx gathers the blur's gradient (reflect folding included)."""
    _launch("blur_backward", dx.size, grad_out, dx, filt_size, SH, SW)


# ----------------------------------------------------------------------------
# max-blur pooling, fused


def max_blur_pool2d_forward(x, y, R, S, filt_size, SH, SW):
    """Fused stride-1 max + blur; see reference.max_blur_pool2d_forward."""
    _launch("max_blur_forward", y.size, x, y, R, S, filt_size, SH, SW)


def max_blur_pool2d_backward(grad_out, x, dx, R, S, filt_size, SH, SW):
    """Fused: argmax of each stride-1 window and its blur gradient, gathered per input."""
    _launch("max_blur_backward", dx.size, grad_out, x, dx, R, S, filt_size, SH, SW)
