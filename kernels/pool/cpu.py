"""Pooling on the CPU with Numba: max, average, blur and fused max-blur, forward and backward.

Layout NCHW, C-contiguous. Every kernel runs ``prange`` over the N*C planes
(or over a few chunks of planes when a plane needs scratch space), so each
plane, and each element of dx, is written by exactly one thread: no races,
and no ``+=`` into an element another thread can touch.

Versions (VERSIONS, in reading order; choose() picks one per op and geometry and
says why; every one keeps the signatures of reference.py):

- "general" (max pool forward and backward): any window, stride and padding.
  Forward: clipped window (padding never read), argmax saved; the scan uses
  ``>`` as a select, not a branch (3x faster on random data: no
  mispredictions); a NaN seen in an output row redoes that row with the exact
  NaN-aware scan, so the tie rule (first maximum in scan order) and the NaN
  rule (first NaN wins) hold everywhere. Backward: a GATHER, each input
  element sums grad_out of the windows that contain it and whose saved
  argmax is itself (first_window .. last_window of rules.py).
- "2x2" (max pool forward, kernel 2, stride 2, no padding): the window
  unrolled into four loads compared with plain ``>`` (about 2.7x "general";
  the loop is still scalar: an exact NaN test inside it cost 4x, so NaN is
  only detected there and handled by redoing the row).
- "disjoint" (max pool backward, stride >= kernel): each input lies in at
  most one window, so its gather is one lookup.
- "separable" (average and blur pool, forward and backward): both are
  separable linear maps, y = A_h x A_w^T per plane (A: window mean with its
  divisor, or the strided binomial filter with the reflect padding folded
  in), run by one pair of kernels from small sparse tables built once per
  shape: along W through the tables, then along H a whole row at a time. The
  backward applies A^T the same way, as two gathers ("which outputs read this
  input"). No padded copy is ever made.
- "fused" (max-blur pool, forward and backward): per plane, the stride-1 max
  map is built in a thread-private scratch plane (Hm x Wm, a few KB, stays in
  cache; max along rows then down columns) and blurred straight from there;
  the full (N, C, Hm, Wm) intermediate never exists. Backward, per plane:
  recompute the stride-1 argmax into scratch, blur-backward into a scratch dM
  plane, then each window hands dM to its winner in a thread-private plane
  (race-free and deterministic: one thread owns the plane; 4x less work than
  a per-input gather for 2x2 windows).

Index rules (output sizes, reflect index, binomial taps, the windows holding an
input) come from rules.py, compiled here with njit.

Speed (2 threads, (128, 64, 28, 28) float32, forward+backward, torch 2.13 CPU
NCHW in the same run; CPU-time ratios, the steadier measure on this shared
machine; > 1 means nnkern is faster): max 2x2 3.6x, max 3x3/s2/p1 1.0x
(general kernel), avg 2x2 1.15x, avg 3x3/s2/p1 1.2x, blur 3/s2 1.65x and
max-blur 2.6x (torch peers: reflect pad + depthwise conv2d, after a stride-1
max_pool2d for max-blur). max_pool2d keeps its argmax for the backward.
"""

import contextlib
import functools
import math

import numba
import numpy as np
from numba import njit, prange

from . import rules

VERSIONS = {
    "general": ("max_pool2d_forward", "max_pool2d_backward"),
    "2x2": ("max_pool2d_forward",),
    "disjoint": ("max_pool2d_backward",),
    "separable": ("avg_pool2d_forward", "avg_pool2d_backward", "blur_pool2d_forward",
                  "blur_pool2d_backward"),
    "fused": ("max_blur_pool2d_forward", "max_blur_pool2d_backward"),
}
"""Every version (see the header) and the kernels it serves, in reading order."""

_forced = None  # a version every call runs where it applies (forced_version), or None


def applies(version, op, window):
    """Why ``version`` cannot run kernel ``op`` with window (R, S, SH, SW, PH, PW), or ""
    when it can."""
    if op not in VERSIONS[version]:
        return f"{version} has no {op}"
    R, S, SH, SW = window[:4]
    if version == "2x2" and window != (2, 2, 2, 2, 0, 0):
        return f"2x2 needs kernel 2, stride 2, no padding, got {window}"
    if version == "disjoint" and (SH < R or SW < S):
        return f"disjoint needs stride >= kernel, got stride {(SH, SW)}, kernel {(R, S)}"
    return ""


def choose(op, window=(1, 1, 1, 1, 0, 0)):
    """(version, why) for kernel ``op`` (a name in KERNELS) with pooling window
    ``(R, S, SH, SW, PH, PW)`` (max and average pooling; ignored by the others).

    >>> choose("max_pool2d_forward", (2, 2, 2, 2, 0, 0))[0]
    '2x2'
    """
    if _forced is not None and not applies(_forced, op, window):
        return _forced, f"forced to {_forced}"
    if op == "max_pool2d_forward":
        if not applies("2x2", op, window):
            return "2x2", "kernel 2, stride 2, no padding: the unrolled window"
        return "general", f"window {window}: the general scan"
    if op == "max_pool2d_backward":
        if not applies("disjoint", op, window):
            return "disjoint", "stride >= kernel: one window per input"
        return "general", "overlapping windows: the gather over every window"
    version = next(v for v, ops in VERSIONS.items() if op in ops)
    return version, f"the one version of {op}"


@contextlib.contextmanager
def forced_version(version):
    """Run every pool kernel that ``version`` serves (and whose window it fits) with it.

    >>> with forced_version("general"):
    ...     choose("max_pool2d_forward", (2, 2, 2, 2, 0, 0))[0]
    'general'
    """
    global _forced
    if version not in VERSIONS:
        raise ValueError(f"version must be one of {tuple(VERSIONS)}, got {version!r}")
    before, _forced = _forced, version
    try:
        yield
    finally:
        _forced = before


# the index rules, compiled for these kernels
first_window = njit(cache=True)(rules.first_window)
last_window = njit(cache=True)(rules.last_window)


def _chunks():
    """How many chunks of planes the scratch-using kernels split into (a few per thread)."""
    return 4 * numba.get_num_threads()


# ----------------------------------------------------------------------------
# max pooling


@njit(cache=True)
def _max_exact(xp, h0, nrows, w0, ncols, W):
    # NaN-aware scan of one window of the flat plane xp: first maximum in scan
    # order wins, the first NaN beats everything. Returns (max, flat argmax).
    arg = h0 * W + w0
    best = xp[arg]
    for r in range(nrows):
        for s in range(ncols):
            i = (h0 + r) * W + w0 + s
            v = xp[i]
            if v > best or (math.isnan(v) and not math.isnan(best)):
                best, arg = v, i
    return best, arg


@njit(parallel=True, cache=True)
def _max_forward(x, y, indices, R, S, SH, SW, PH, PW):
    # x (N,C,H,W) -> y, indices (N,C,OH,OW).
    # The scan is branch-free (`>` as a select: 3x faster than a branch on random
    # data); a NaN anywhere in an output row's windows (rare) redoes that row
    # with the exact NaN-aware scan.
    N, C, H, W = x.shape
    OH, OW = y.shape[2], y.shape[3]
    xs = x.reshape((N * C, H * W))
    ys = y.reshape((N * C, OH * OW))
    ids = indices.reshape((N * C, OH * OW))
    for p in prange(N * C):
        xp, yp, ip = xs[p], ys[p], ids[p]
        for oh in range(OH):
            h0 = oh * SH - PH
            r0, r1 = max(0, -h0), min(R, H - h0)  # window rows inside the image
            nan = 0
            for ow in range(OW):
                w0 = ow * SW - PW
                s0, s1 = max(0, -w0), min(S, W - w0)
                arg = (h0 + r0) * W + w0 + s0
                best = xp[arg]
                for r in range(r1 - r0):
                    row = (h0 + r0 + r) * W + w0 + s0
                    for s in range(s1 - s0):
                        v = xp[row + s]
                        nan |= math.isnan(v)
                        t = v > best
                        best = v if t else best
                        arg = row + s if t else arg
                yp[oh * OW + ow] = best
                ip[oh * OW + ow] = arg
            if nan:
                for ow in range(OW):
                    w0 = ow * SW - PW
                    s0, s1 = max(0, -w0), min(S, W - w0)
                    best, arg = _max_exact(xp, h0 + r0, r1 - r0, w0 + s0, s1 - s0, W)
                    yp[oh * OW + ow] = best
                    ip[oh * OW + ow] = arg


@njit(parallel=True, cache=True)
def _max_forward_2x2(x, y, indices):
    # x (N,C,H,W) -> y, indices (N,C,H//2,W//2); kernel 2, stride 2, no padding.
    # The row loop uses plain `>` (first maximum wins; 4x faster than testing the
    # NaN rule at every compare); any NaN in the row pair (rare) sends the row
    # through the exact NaN-aware scan.
    N, C, H, W = x.shape
    OH, OW = y.shape[2], y.shape[3]
    xs = x.reshape((N * C, H * W))
    ys = y.reshape((N * C, OH * OW))
    ids = indices.reshape((N * C, OH * OW))
    for p in prange(N * C):
        xp, yp, ip = xs[p], ys[p], ids[p]
        for oh in range(OH):
            top = 2 * oh * W
            o = oh * OW
            nan = 0
            for ow in range(OW):
                i0 = top + 2 * ow
                a, b, c, d = xp[i0], xp[i0 + 1], xp[i0 + W], xp[i0 + W + 1]
                nan |= math.isnan(a) | math.isnan(b) | math.isnan(c) | math.isnan(d)
                best, arg = a, i0
                if b > best:
                    best, arg = b, i0 + 1
                if c > best:
                    best, arg = c, i0 + W
                if d > best:
                    best, arg = d, i0 + W + 1
                yp[o + ow] = best
                ip[o + ow] = arg
            if nan:
                for ow in range(OW):
                    i0 = top + 2 * ow
                    best, arg = xp[i0], i0
                    for k in (1, W, W + 1):
                        v = xp[i0 + k]
                        if v > best or (math.isnan(v) and not math.isnan(best)):
                            best, arg = v, i0 + k
                    yp[o + ow] = best
                    ip[o + ow] = arg


def max_pool2d_forward(x, y, indices, R, S, SH, SW, PH, PW):
    """Max pool with argmax; see reference.max_pool2d_forward."""
    if choose("max_pool2d_forward", (R, S, SH, SW, PH, PW))[0] == "2x2":
        _max_forward_2x2(x, y, indices)
    else:
        _max_forward(x, y, indices, R, S, SH, SW, PH, PW)


@njit(cache=True)
def _windows_of(H, OH, R, SH, PH):
    """first[h], last[h]: the range of output rows whose window contains input row h
    (empty when first > last)."""
    first = np.empty(H, np.int64)
    last = np.empty(H, np.int64)
    for h in range(H):
        first[h] = first_window(h, R, SH, PH)
        last[h] = last_window(h, OH, SH, PH)
    return first, last


@njit(parallel=True, cache=True)
def _max_backward(grad_out, indices, dx, R, S, SH, SW, PH, PW):
    # grad_out, indices (N,C,OH,OW) -> dx (N,C,H,W), one gather per input element
    N, C, H, W = dx.shape
    OH, OW = grad_out.shape[2], grad_out.shape[3]
    gs = grad_out.reshape((N * C, OH, OW))
    ids = indices.reshape((N * C, OH, OW))
    dxs = dx.reshape((N * C, H, W))
    hfirst, hlast = _windows_of(H, OH, R, SH, PH)
    wfirst, wlast = _windows_of(W, OW, S, SW, PW)
    for p in prange(N * C):
        for h in range(H):
            for w in range(W):
                me = h * W + w
                acc = 0.0
                for oh in range(hfirst[h], hlast[h] + 1):
                    for ow in range(wfirst[w], wlast[w] + 1):
                        g = gs[p, oh, ow]
                        acc += g if ids[p, oh, ow] == me else 0.0  # a select, not a branch
                dxs[p, h, w] = acc


@njit(parallel=True, cache=True)
def _max_backward_disjoint(grad_out, indices, dx, SH, SW, PH, PW, R, S):
    # Non-overlapping windows (stride >= kernel): each input lies in at most one
    # window, so its gather is a single lookup.
    N, C, H, W = dx.shape
    OH, OW = grad_out.shape[2], grad_out.shape[3]
    gs = grad_out.reshape((N * C, OH, OW))
    ids = indices.reshape((N * C, OH, OW))
    dxs = dx.reshape((N * C, H, W))
    hfirst, hlast = _windows_of(H, OH, R, SH, PH)
    wfirst, wlast = _windows_of(W, OW, S, SW, PW)
    for p in prange(N * C):
        for h in range(H):
            oh = hfirst[h]
            if oh > hlast[h]:
                for w in range(W):
                    dxs[p, h, w] = 0.0
                continue
            for w in range(W):
                ow = wfirst[w]
                v = 0.0
                if ow <= wlast[w] and ids[p, oh, ow] == h * W + w:
                    v = gs[p, oh, ow]
                dxs[p, h, w] = v


def max_pool2d_backward(grad_out, indices, dx, R, S, SH, SW, PH, PW):
    """dx gathers grad_out from the windows whose argmax is that element."""
    if choose("max_pool2d_backward", (R, S, SH, SW, PH, PW))[0] == "disjoint":
        _max_backward_disjoint(grad_out, indices, dx, SH, SW, PH, PW, R, S)
    else:
        _max_backward(grad_out, indices, dx, R, S, SH, SW, PH, PW)


# ----------------------------------------------------------------------------
# average and blur pooling: both are separable linear maps, y = A_h x A_w^T per
# plane, with A (OH x H) the 1-D operator along one axis (window mean, or the
# strided binomial filter with reflection folded in). One pair of kernels runs
# both from small tables built once per shape in NumPy.


def _tables(A):
    """Sparse tables of a 1-D operator A (OH x H), both ways round.

    Returns ((src, wt), (out, owt)). src, wt (OH, 1 + L1): output o reads the
    src[o, 0] inputs src[o, 1:1+n] with weights wt[o, 1:1+n]; out, owt (H, 1 + L2):
    input h is read by the out[h, 0] outputs out[h, 1:1+n] with weights owt[h, 1:1+n]
    (the gather form of A^T). Column 0 holds the count, so no 0-weight slot ever
    multiplies a NaN or inf into the result.
    """
    def compress(M):
        n = (M != 0).sum(axis=1)
        idx = np.argsort(M == 0, axis=1, kind="stable")[:, :max(1, int(n.max()))]
        wt = np.take_along_axis(M, idx, 1)
        return (np.ascontiguousarray(np.hstack([n[:, None], idx]).astype(np.int64)),
                np.ascontiguousarray(np.hstack([np.zeros((len(n), 1)), wt])))
    return compress(A), compress(A.T)


@functools.lru_cache(maxsize=128)
def _avg_tables(H, R, SH, PH, count_include_pad):
    OH = rules.pool_out(H, R, SH, PH)
    h0 = np.arange(OH)[:, None] * SH - PH  # (OH, 1) first row of each window
    h = np.arange(H)[None, :]
    inside = (h >= h0) & (h < h0 + R)
    count = R if count_include_pad else inside.sum(axis=1, keepdims=True)
    return _tables(inside / count)


@functools.lru_cache(maxsize=128)
def _blur_tables(H, K, SH):
    # A (OH, H): output o reads padded position o*SH + r - pad_before, reflected onto the
    # input, with weight tap r (a cell read twice through the reflection adds up)
    A = np.zeros((rules.blur_out(H, SH), H))
    for o in range(A.shape[0]):
        for r in range(K):
            A[o, rules.reflect(o * SH + r - rules.pad_before(K), H)] += rules.binomial_tap(K, r)
    return _tables(A)


@njit(cache=True)
def _sep_forward_plane(x, y, t, row, hsrc, hwt, wsrc, wwt):
    # x (H,W) -> y (OH,OW) = A_h x A_w^T; scratch t (H,OW), row (OW,)
    H = x.shape[0]
    OH, OW = y.shape
    for h in range(H):  # along W: gathers through the tables
        for ow in range(OW):
            acc = 0.0
            for j in range(1, 1 + wsrc[ow, 0]):
                acc += wwt[ow, j] * x[h, wsrc[ow, j]]
            t[h, ow] = acc
    for oh in range(OH):  # along H: whole rows at a time
        row[:] = 0.0
        for i in range(1, 1 + hsrc[oh, 0]):
            wgt, src = hwt[oh, i], hsrc[oh, i]
            for ow in range(OW):
                row[ow] += wgt * t[src, ow]
        for ow in range(OW):
            y[oh, ow] = row[ow]


@njit(cache=True)
def _sep_backward_plane(g, dx, u, row, hout, hwt, wout, wwt):
    # g (OH,OW) -> dx (H,W) = A_h^T g A_w; scratch u (OH,W), row (W,); two gather passes
    OH, W = u.shape
    H = dx.shape[0]
    for oh in range(OH):
        for w in range(W):
            acc = 0.0
            for j in range(1, 1 + wout[w, 0]):
                acc += wwt[w, j] * g[oh, wout[w, j]]
            u[oh, w] = acc
    for h in range(H):
        row[:] = 0.0
        for i in range(1, 1 + hout[h, 0]):
            wgt, src = hwt[h, i], hout[h, i]
            for w in range(W):
                row[w] += wgt * u[src, w]
        for w in range(W):
            dx[h, w] = row[w]


@njit(parallel=True, cache=True)
def _sep_forward(x, y, hsrc, hwt, wsrc, wwt, chunks):
    # x (N,C,H,W) -> y (N,C,OH,OW), plane by plane
    N, C, H, W = x.shape
    OH, OW = y.shape[2], y.shape[3]
    xs = x.reshape((N * C, H, W))
    ys = y.reshape((N * C, OH, OW))
    P = N * C
    nchunks = min(P, chunks)
    for c in prange(nchunks):
        t = np.empty((H, OW), np.float64)  # thread-private scratch
        row = np.empty(OW, np.float64)
        for p in range(c * P // nchunks, (c + 1) * P // nchunks):
            _sep_forward_plane(xs[p], ys[p], t, row, hsrc, hwt, wsrc, wwt)


@njit(parallel=True, cache=True)
def _sep_backward(grad_out, dx, hout, hwt, wout, wwt, chunks):
    # grad_out (N,C,OH,OW) -> dx (N,C,H,W), plane by plane
    N, C, H, W = dx.shape
    OH, OW = grad_out.shape[2], grad_out.shape[3]
    gs = grad_out.reshape((N * C, OH, OW))
    dxs = dx.reshape((N * C, H, W))
    P = N * C
    nchunks = min(P, chunks)
    for c in prange(nchunks):
        u = np.empty((OH, W), np.float64)  # thread-private scratch
        row = np.empty(W, np.float64)
        for p in range(c * P // nchunks, (c + 1) * P // nchunks):
            _sep_backward_plane(gs[p], dxs[p], u, row, hout, hwt, wout, wwt)


def avg_pool2d_forward(x, y, R, S, SH, SW, PH, PW, count_include_pad):
    """Average pool; see reference.avg_pool2d_forward."""
    (hsrc, hwt), _ = _avg_tables(x.shape[2], R, SH, PH, count_include_pad)
    (wsrc, wwt), _ = _avg_tables(x.shape[3], S, SW, PW, count_include_pad)
    _sep_forward(x, y, hsrc, hwt, wsrc, wwt, _chunks())


def avg_pool2d_backward(grad_out, dx, R, S, SH, SW, PH, PW, count_include_pad):
    """dx gathers grad_out / divisor from every window containing it."""
    _, (hout, hwt) = _avg_tables(dx.shape[2], R, SH, PH, count_include_pad)
    _, (wout, wwt) = _avg_tables(dx.shape[3], S, SW, PW, count_include_pad)
    _sep_backward(grad_out, dx, hout, hwt, wout, wwt, _chunks())


def blur_pool2d_forward(x, y, filt_size, SH, SW):
    """Reflect-padded binomial blur at stride (SH, SW); see reference.blur_pool2d_forward."""
    (hsrc, hwt), _ = _blur_tables(x.shape[2], filt_size, SH)
    (wsrc, wwt), _ = _blur_tables(x.shape[3], filt_size, SW)
    _sep_forward(x, y, hsrc, hwt, wsrc, wwt, _chunks())


def blur_pool2d_backward(grad_out, dx, filt_size, SH, SW):
    """dx = A_h^T grad_out A_w (the blur's transpose, reflect folding included)."""
    _, (hout, hwt) = _blur_tables(dx.shape[2], filt_size, SH)
    _, (wout, wwt) = _blur_tables(dx.shape[3], filt_size, SW)
    _sep_backward(grad_out, dx, hout, hwt, wout, wwt, _chunks())


# ----------------------------------------------------------------------------
# max-blur pooling, fused per plane


@njit(cache=True)
def _max_plane_s1(x, m, arg, hm, harg, R, S):
    # x (H,W) -> m, arg (H-R+1, W-S+1): stride-1 max without padding; scratch hm, harg
    # (H, W-S+1). Separable: max along rows first (hm), then down columns, each pass a
    # branch-free loop over whole rows. Strict `>` in (r, s) order keeps the first
    # maximum in scan order; a NaN in the plane (rare) redoes it with the exact scan.
    H, W = x.shape
    Hm, Wm = m.shape
    nan = 0
    for h in range(H):
        for j in range(Wm):
            v = x[h, j]
            nan |= math.isnan(v)
            hm[h, j] = v
            harg[h, j] = h * W + j
        for s in range(1, S):
            for j in range(Wm):
                v = x[h, j + s]
                nan |= math.isnan(v)
                t = v > hm[h, j]
                hm[h, j] = v if t else hm[h, j]
                harg[h, j] = h * W + j + s if t else harg[h, j]
    for i in range(Hm):
        for j in range(Wm):
            m[i, j] = hm[i, j]
            arg[i, j] = harg[i, j]
        for r in range(1, R):
            for j in range(Wm):
                v = hm[i + r, j]
                t = v > m[i, j]
                m[i, j] = v if t else m[i, j]
                arg[i, j] = harg[i + r, j] if t else arg[i, j]
    if nan:
        xp = x.reshape(x.size)
        for i in range(Hm):
            for j in range(Wm):
                m[i, j], arg[i, j] = _max_exact(xp, i, R, j, S, W)


@njit(parallel=True, cache=True)
def _max_blur_forward(x, y, R, S, hsrc, hwt, wsrc, wwt, chunks):
    # x (N,C,H,W) -> y (N,C,OH,OW); the stride-1 max map lives in a private plane
    N, C, H, W = x.shape
    OH, OW = y.shape[2], y.shape[3]
    Hm, Wm = H - R + 1, W - S + 1
    xs = x.reshape((N * C, H, W))
    ys = y.reshape((N * C, OH, OW))
    P = N * C
    nchunks = min(P, chunks)
    for c in prange(nchunks):
        m = np.empty((Hm, Wm), x.dtype)  # thread-private scratch
        arg = np.empty((Hm, Wm), np.int64)
        hm = np.empty((H, Wm), x.dtype)
        harg = np.empty((H, Wm), np.int64)
        t = np.empty((Hm, OW), np.float64)
        row = np.empty(OW, np.float64)
        for p in range(c * P // nchunks, (c + 1) * P // nchunks):
            _max_plane_s1(xs[p], m, arg, hm, harg, R, S)
            _sep_forward_plane(m, ys[p], t, row, hsrc, hwt, wsrc, wwt)


def max_blur_pool2d_forward(x, y, R, S, filt_size, SH, SW):
    """Fused stride-1 max + blur; see reference.max_blur_pool2d_forward."""
    (hsrc, hwt), _ = _blur_tables(x.shape[2] - R + 1, filt_size, SH)
    (wsrc, wwt), _ = _blur_tables(x.shape[3] - S + 1, filt_size, SW)
    _max_blur_forward(x, y, R, S, hsrc, hwt, wsrc, wwt, _chunks())


@njit(parallel=True, cache=True)
def _max_blur_backward(grad_out, x, dx, R, S, hout, hwt, wout, wwt, chunks):
    # grad_out (N,C,OH,OW), x (N,C,H,W) -> dx (N,C,H,W)
    N, C, H, W = x.shape
    OH, OW = grad_out.shape[2], grad_out.shape[3]
    Hm, Wm = H - R + 1, W - S + 1
    xs = x.reshape((N * C, H, W))
    gs = grad_out.reshape((N * C, OH, OW))
    dxs = dx.reshape((N * C, H, W))
    P = N * C
    nchunks = min(P, chunks)
    for c in prange(nchunks):
        m = np.empty((Hm, Wm), x.dtype)  # thread-private scratch planes
        arg = np.empty((Hm, Wm), np.int64)
        hm = np.empty((H, Wm), x.dtype)
        harg = np.empty((H, Wm), np.int64)
        dm = np.empty((Hm, Wm), np.float64)
        u = np.empty((OH, Wm), np.float64)
        row = np.empty(Wm, np.float64)
        acc = np.empty(H * W, np.float64)
        for p in range(c * P // nchunks, (c + 1) * P // nchunks):
            _max_plane_s1(xs[p], m, arg, hm, harg, R, S)
            _sep_backward_plane(gs[p], dm, u, row, hout, hwt, wout, wwt)
            # each stride-1 window hands dm to its winner; the plane (and acc) belong to
            # this iteration alone, so this accumulation is race-free and deterministic
            acc[:] = 0.0
            for i in range(Hm):
                for j in range(Wm):
                    acc[arg[i, j]] += dm[i, j]
            dxp = dxs[p].reshape(H * W)
            for k in range(H * W):
                dxp[k] = acc[k]


def max_blur_pool2d_backward(grad_out, x, dx, R, S, filt_size, SH, SW):
    """Fused: stride-1 argmax, blur backward and max gather, plane by plane."""
    _, (hout, hwt) = _blur_tables(x.shape[2] - R + 1, filt_size, SH)
    _, (wout, wwt) = _blur_tables(x.shape[3] - S + 1, filt_size, SW)
    _max_blur_backward(grad_out, x, dx, R, S, hout, hwt, wout, wwt, _chunks())
