"""Pooling in NumPy: the oracle for the cpu and cuda backends, and the text to read first.

Layout NCHW: x is (N, C, H, W); outputs are (N, C, OH, OW). Every op is a
sliding window over each (n, c) plane on its own; the loops below run over
the R*S window taps (a handful), each tap handled for all pixels at once.

Ops (semantics of torch.nn.functional, BlurPool as adobe/antialiased-cnns):

- max pool: y = max of the window, padded cells never win; ``indices`` holds
  the flat position ``h * W + w`` of the winner in its input plane. Ties go
  to the first maximum in window scan order (row by row, left to right), a
  NaN wins over any number (the first NaN). Backward sends each upstream
  gradient to its winner.
- average pool: y = window sum / (R*S), or / (number of non-padded cells)
  when ``count_include_pad`` is False.
- blur pool: reflect-pad by ``(k-1)//2`` before and ``ceil((k-1)/2)`` after on
  each spatial axis, then a depthwise stride-(SH, SW) correlation with the
  normalised binomial filter ``f = outer(a, a)``, ``a_i = C(k-1, i) / 2^(k-1)``
  (k = filt_size; a = [1, 2, 1] / 4 for k = 3). k = 1 is plain subsampling.
- max-blur pool: max pool R x S at stride 1 without padding, then blur pool.

Output sizes, reflect indices and filter taps are the family's index rules
(rules.py, shared with the cpu and cuda kernels): max/avg
``OH = (H + 2*PH - R) // SH + 1``; blur ``OH = (H - 1) // SH + 1``; max-blur
``OH = (H - R) // SH + 1``.
"""

import numpy as np

from . import rules


def blur_pads(filt_size):
    """Reflect padding (before, after) of a blur filter of size filt_size."""
    return rules.pad_before(filt_size), rules.pad_after(filt_size)


def binomial_filter(filt_size):
    """The normalised 1-D binomial filter a (sums to 1); the 2-D filter is outer(a, a)."""
    return np.array([rules.binomial_tap(filt_size, r) for r in range(filt_size)])


def _window_positions(OH, R, SH, PH):
    """pos[r, oh] = oh * SH + r - PH: the input row tap r of output row oh reads."""
    return np.arange(R)[:, None] + SH * np.arange(OH)[None, :] - PH


def _taps(xp, r, s, OH, OW, SH, SW):
    """The (N, C, OH, OW) view of padded xp that window tap (r, s) reads."""
    return xp[:, :, r:r + SH * (OH - 1) + 1:SH, s:s + SW * (OW - 1) + 1:SW]


# ----------------------------------------------------------------------------
# max pooling


def max_pool2d_forward(x, y, indices, R, S, SH, SW, PH, PW):
    """y[n,c,oh,ow] = max over the window; indices = flat h*W+w of the (first) winner.

    x (N,C,H,W) -> y, indices (N,C,OH,OW).
    """
    N, C, H, W = x.shape
    OH, OW = y.shape[2:]
    hpos = _window_positions(OH, R, SH, PH)  # (R, OH)
    wpos = _window_positions(OW, S, SW, PW)  # (S, OW)
    # Pad with anything: padded cells are excluded by the `valid` mask, not by value.
    xp = np.pad(x, ((0, 0), (0, 0), (PH, PH), (PW, PW)))
    best = np.zeros((N, C, OH, OW), dtype=x.dtype)
    arg = np.full((N, C, OH, OW), -1, dtype=np.int64)
    for r in range(R):
        for s in range(S):
            h, w = hpos[r][:, None], wpos[s][None, :]  # (OH, 1), (1, OW)
            valid = (h >= 0) & (h < H) & (w >= 0) & (w < W)  # (OH, OW)
            v = _taps(xp, r, s, OH, OW, SH, SW)
            wins = (arg < 0) | (v > best) | (np.isnan(v) & ~np.isnan(best))
            take = valid & wins
            best = np.where(take, v, best)
            arg = np.where(take, h * W + w, arg)
    y[...] = best
    indices[...] = arg


def max_pool2d_backward(grad_out, indices, dx, R, S, SH, SW, PH, PW):
    """dx[n,c,h,w] = sum of grad_out over the windows whose winner is (h, w).

    grad_out, indices (N,C,OH,OW) -> dx (N,C,H,W).
    """
    N, C, H, W = dx.shape
    OH, OW = grad_out.shape[2:]
    planes = np.arange(N * C)[:, None]  # (N*C, 1)
    flat = np.zeros((N * C, H * W), dtype=dx.dtype)
    np.add.at(flat, (planes, indices.reshape(N * C, OH * OW)), grad_out.reshape(N * C, OH * OW))
    dx[...] = flat.reshape(N, C, H, W)


# ----------------------------------------------------------------------------
# average pooling


def _avg_divisor(H, W, OH, OW, R, S, SH, SW, PH, PW, count_include_pad):
    """(OH, OW) divisor of each window: R*S, or the count of its non-padded cells."""
    if count_include_pad:
        # padding <= kernel/2 keeps every window inside [-P, H+P): always R*S cells.
        return np.full((OH, OW), float(R * S))
    h0 = np.arange(OH) * SH - PH
    w0 = np.arange(OW) * SW - PW
    rows = np.minimum(h0 + R, H) - np.maximum(h0, 0)  # (OH,)
    cols = np.minimum(w0 + S, W) - np.maximum(w0, 0)  # (OW,)
    return (rows[:, None] * cols[None, :]).astype(np.float64)


def avg_pool2d_forward(x, y, R, S, SH, SW, PH, PW, count_include_pad):
    """y = sum of the zero-padded window / divisor.  x (N,C,H,W) -> y (N,C,OH,OW)."""
    N, C, H, W = x.shape
    OH, OW = y.shape[2:]
    xp = np.pad(x, ((0, 0), (0, 0), (PH, PH), (PW, PW)))
    total = np.zeros((N, C, OH, OW), dtype=np.float64)
    for r in range(R):
        for s in range(S):
            total += _taps(xp, r, s, OH, OW, SH, SW)
    y[...] = total / _avg_divisor(H, W, OH, OW, R, S, SH, SW, PH, PW, count_include_pad)


def avg_pool2d_backward(grad_out, dx, R, S, SH, SW, PH, PW, count_include_pad):
    """Each window spreads grad_out / divisor over its cells (padded cells dropped).

    grad_out (N,C,OH,OW) -> dx (N,C,H,W).
    """
    N, C, H, W = dx.shape
    OH, OW = grad_out.shape[2:]
    share = grad_out / _avg_divisor(H, W, OH, OW, R, S, SH, SW, PH, PW, count_include_pad)
    gp = np.zeros((N, C, H + 2 * PH, W + 2 * PW), dtype=np.float64)
    for r in range(R):
        for s in range(S):
            _taps(gp, r, s, OH, OW, SH, SW)[...] += share
    dx[...] = gp[:, :, PH:PH + H, PW:PW + W]


# ----------------------------------------------------------------------------
# blur pooling


def blur_pool2d_forward(x, y, filt_size, SH, SW):
    """Reflect pad, then depthwise stride-(SH, SW) binomial blur.  x (N,C,H,W) -> y (N,C,OH,OW)."""
    OH, OW = y.shape[2:]
    p0, p1 = blur_pads(filt_size)
    a = binomial_filter(filt_size)
    xp = np.pad(x, ((0, 0), (0, 0), (p0, p1), (p0, p1)), mode="reflect")
    total = np.zeros(y.shape, dtype=np.float64)
    for r in range(filt_size):
        for s in range(filt_size):
            total += (a[r] * a[s]) * _taps(xp, r, s, OH, OW, SH, SW)
    y[...] = total


def reflect_source(H, filt_size):
    """src (H + p0 + p1,): the input row that each row of the reflect-padded plane copies."""
    p0, p1 = blur_pads(filt_size)
    return np.array([rules.reflect(i, H) for i in range(-p0, H + p1)], dtype=np.intp)


def _fold(gp, src, axis, size):
    """Backward of reflect padding along ``axis``: each padded cell's gradient is added to
    the cell it was copied from (an index fold; a product with the 0/1 reflection matrix
    would spread a NaN of grad_out over whole rows, since 0 * NaN is NaN)."""
    out = np.zeros(gp.shape[:axis] + (size,) + gp.shape[axis + 1:], dtype=gp.dtype)
    np.add.at(np.moveaxis(out, axis, 0), src, np.moveaxis(gp, axis, 0))
    return out


def blur_pool2d_backward(grad_out, dx, filt_size, SH, SW):
    """Spread each grad_out through the filter taps onto the padded grid, then fold the
    reflected border back onto the input.  grad_out (N,C,OH,OW) -> dx (N,C,H,W).

    A NaN or inf in grad_out reaches exactly the input cells its (nonzero) taps touch,
    as in torch's transposed convolution."""
    N, C, H, W = dx.shape
    OH, OW = grad_out.shape[2:]
    p0, p1 = blur_pads(filt_size)
    a = binomial_filter(filt_size)
    gp = np.zeros((N, C, H + p0 + p1, W + p0 + p1), dtype=np.float64)
    for r in range(filt_size):
        for s in range(filt_size):
            _taps(gp, r, s, OH, OW, SH, SW)[...] += (a[r] * a[s]) * grad_out
    dx[...] = _fold(_fold(gp, reflect_source(H, filt_size), 2, H),
                    reflect_source(W, filt_size), 3, W)


# ----------------------------------------------------------------------------
# max-blur pooling (antialiased max pooling: MaxPool(stride 1) then BlurPool(stride))


def max_blur_pool2d_forward(x, y, R, S, filt_size, SH, SW):
    """Max pool R x S at stride 1, no padding, then blur pool.  x (N,C,H,W) -> y (N,C,OH,OW)."""
    N, C, H, W = x.shape
    m = np.empty((N, C, H - R + 1, W - S + 1), dtype=x.dtype)
    arg = np.empty(m.shape, dtype=np.int64)
    max_pool2d_forward(x, m, arg, R, S, 1, 1, 0, 0)
    blur_pool2d_forward(m, y, filt_size, SH, SW)


def max_blur_pool2d_backward(grad_out, x, dx, R, S, filt_size, SH, SW):
    """Blur backward onto the stride-1 max map, then max backward onto x.

    grad_out (N,C,OH,OW), x (N,C,H,W) -> dx (N,C,H,W).
    """
    N, C, H, W = x.shape
    m = np.empty((N, C, H - R + 1, W - S + 1), dtype=x.dtype)
    arg = np.empty(m.shape, dtype=np.int64)
    max_pool2d_forward(x, m, arg, R, S, 1, 1, 0, 0)
    dm = np.empty(m.shape, dtype=np.float64)
    blur_pool2d_backward(grad_out, dm, filt_size, SH, SW)
    max_pool2d_backward(dm, arg, dx, R, S, 1, 1, 0, 0)
