"""2-D convolution in NumPy: the oracle of the conv family and the text to read first.

What the op computes (PyTorch's conv2d, a cross-correlation), for x (N, C, H, W)
and w (K, C/G, R, S) with G groups, Cg = C/G input and Kg = K/G output
channels per group:

    y[n, k, oh, ow] = b[k] + sum_{c < Cg, r < R, s < S} w[k, c, r, s]
                      * x[n, g*Cg + c, oh*sh - ph + r*dh, ow*sw - pw + s*dw]

where g = k // Kg, (sh, sw) is the stride, (ph, pw) the top/left padding,
(dh, dw) the dilation, and x reads as zero outside the image. Output size:
OH = (H + ph + ph_bottom - dh*(R-1) - 1) // sh + 1 (likewise OW). These size
rules (output size, padded extent) are written once, in rules.py, for every
backend.

Two ways to compute it, both here because the CPU and CUDA files have both:

1. direct ("tap loop"): for each of the R*S kernel taps (r, s), the input
   pixels that tap sees form a strided view of the padded input, shaped like
   the output; the tap adds ``w[:, :, r, s] @ view`` (a matrix product over
   channels). Only R*S Python iterations, no loop over pixels.
2. im2col: copy those R*S views into one column matrix
   col (N, G, Cg*R*S, OH*OW), after which the convolution is ONE matrix
   product per group, w_g (Kg, Cg*R*S) @ col. The backward pass multiplies by
   the transposes and folds the columns back onto the image (col2im).

Backward (g is the upstream gradient dL/dy, shaped like y):
    dx = sum over taps of w[:, :, r, s]^T @ g, added back at the pixels the
         tap read (a scatter-add onto the padded input, then cropped);
    dw[:, :, r, s] = sum over n and pixels of g @ view^T;
    db[k] = sum of g[:, k].
"""

import numpy as np

from .rules import padded_extent


def _pad(x, ph, pw, OH, OW, R, S, stride, dilation):
    """Zero-pad x (N, C, H, W) by (ph, pw) at the top/left and as much as the
    output size needs at the bottom/right (never less than zero).
    Returns xp (N, C, Hp, Wp)."""
    N, C, H, W = x.shape
    (sh, sw), (dh, dw) = stride, dilation
    Hp = padded_extent(H, ph, OH, R, sh, dh)
    Wp = padded_extent(W, pw, OW, S, sw, dw)
    xp = np.zeros((N, C, Hp, Wp), dtype=x.dtype)
    xp[:, :, ph:ph + H, pw:pw + W] = x
    return xp


def _tap(xp, r, s, OH, OW, stride, dilation):
    """The input pixels kernel tap (r, s) reads for every output pixel:
    a strided view of xp (N, C, Hp, Wp), shaped (N, C, OH, OW)."""
    (sh, sw), (dh, dw) = stride, dilation
    h0, w0 = r * dh, s * dw
    return xp[:, :, h0:h0 + (OH - 1) * sh + 1:sh, w0:w0 + (OW - 1) * sw + 1:sw]


def im2col(x, R, S, OH, OW, stride, padding, dilation, groups):
    """Column matrix of x (N, C, H, W): col (N, G, Cg*R*S, OH*OW), rows ordered (c, r, s)
    like the flattened weights w.reshape(G, Kg, Cg*R*S)."""
    N, C = x.shape[0], x.shape[1]
    G, Cg = groups, C // groups
    xp = _pad(x, padding[0], padding[1], OH, OW, R, S, stride, dilation)
    col = np.empty((N, C, R, S, OH, OW), dtype=x.dtype)
    for r in range(R):
        for s in range(S):
            col[:, :, r, s] = _tap(xp, r, s, OH, OW, stride, dilation)
    return col.reshape(N, G, Cg * R * S, OH * OW)


def col2im(col, H, W, R, S, OH, OW, stride, padding, dilation):
    """Fold col (N, G, Cg*R*S, OH*OW) back onto the image: every column entry is added
    to the input pixel it was copied from. Returns (N, C, H, W)."""
    N, G, Q, _ = col.shape
    C = G * (Q // (R * S))
    ph, pw = padding
    col = col.reshape(N, C, R, S, OH, OW)
    xp = _pad(np.zeros((N, C, H, W), dtype=col.dtype), ph, pw, OH, OW, R, S, stride, dilation)
    for r in range(R):
        for s in range(S):
            # One tap touches each pixel at most once, so += on the view is exact.
            _tap(xp, r, s, OH, OW, stride, dilation)[...] += col[:, :, r, s]
    return xp[:, :, ph:ph + H, pw:pw + W]


def conv2d_forward(x, w, b, y, stride, padding, dilation, groups, algo):
    """y (N, K, OH, OW) = conv2d(x (N, C, H, W), w (K, Cg, R, S)) + b (K,) or no bias.

    ``algo`` "im2col" builds the column matrix; "direct" and "auto" loop over taps.
    """
    N = x.shape[0]
    K, Cg, R, S = w.shape
    _, _, OH, OW = y.shape
    G, Kg = groups, K // groups
    wg = w.reshape(G, Kg, Cg, R, S)
    if algo == "im2col":
        col = im2col(x, R, S, OH, OW, stride, padding, dilation, groups)  # (N, G, Q, P)
        out = wg.reshape(G, Kg, Cg * R * S) @ col                          # (N, G, Kg, P)
    else:
        xp = _pad(x, padding[0], padding[1], OH, OW, R, S, stride, dilation)
        out = np.zeros((N, G, Kg, OH * OW), dtype=np.result_type(x, w))
        for r in range(R):
            for s in range(S):
                view = _tap(xp, r, s, OH, OW, stride, dilation)  # (N, C, OH, OW)
                # (G, Kg, Cg) @ (N, G, Cg, P) -> (N, G, Kg, P)
                out += wg[:, :, :, r, s] @ view.reshape(N, G, Cg, OH * OW)
    y[...] = out.reshape(N, K, OH, OW)
    if b is not None:
        y += b.reshape(1, K, 1, 1)


def conv2d_backward_data(g, w, dx, stride, padding, dilation, groups, algo):
    """dx (N, C, H, W) = gradient of sum(y * g) with respect to x, for g (N, K, OH, OW)."""
    N, C, H, W = dx.shape
    K, Cg, R, S = w.shape
    _, _, OH, OW = g.shape
    G, Kg = groups, K // groups
    wg = w.reshape(G, Kg, Cg, R, S)
    gg = g.reshape(N, G, Kg, OH * OW)
    if algo == "im2col":
        # (G, Q, Kg) @ (N, G, Kg, P) -> dcol (N, G, Q, P), then fold back onto the image.
        dcol = wg.reshape(G, Kg, Cg * R * S).transpose(0, 2, 1) @ gg
        dx[...] = col2im(dcol, H, W, R, S, OH, OW, stride, padding, dilation)
        return
    ph, pw = padding
    dxp = _pad(np.zeros_like(dx), ph, pw, OH, OW, R, S, stride, dilation)
    for r in range(R):
        for s in range(S):
            # (G, Cg, Kg) @ (N, G, Kg, P) -> (N, G, Cg, P): what tap (r, s) sent back.
            back = wg[:, :, :, r, s].transpose(0, 2, 1) @ gg
            _tap(dxp, r, s, OH, OW, stride, dilation)[...] += back.reshape(N, C, OH, OW)
    dx[...] = dxp[:, :, ph:ph + H, pw:pw + W]


def conv2d_backward_weights(g, x, dw, db, stride, padding, dilation, groups, algo):
    """dw (K, Cg, R, S) and db (K,) (or None) = gradients of sum(y * g) for g (N, K, OH, OW)."""
    N = x.shape[0]
    K, Cg, R, S = dw.shape
    _, _, OH, OW = g.shape
    G, Kg = groups, K // groups
    gg = g.reshape(N, G, Kg, OH * OW)
    if algo == "im2col":
        col = im2col(x, R, S, OH, OW, stride, padding, dilation, groups)  # (N, G, Q, P)
        # sum over n of (Kg, P) @ (P, Q): (N, G, Kg, Q) summed over N.
        dw[...] = (gg @ col.transpose(0, 1, 3, 2)).sum(axis=0).reshape(K, Cg, R, S)
    else:
        xp = _pad(x, padding[0], padding[1], OH, OW, R, S, stride, dilation)
        dwg = dw.reshape(G, Kg, Cg, R, S)
        for r in range(R):
            for s in range(S):
                view = _tap(xp, r, s, OH, OW, stride, dilation).reshape(N, G, Cg, OH * OW)
                # (N, G, Kg, P) @ (N, G, P, Cg) -> (N, G, Kg, Cg), summed over the batch.
                dwg[:, :, :, r, s] = (gg @ view.transpose(0, 1, 3, 2)).sum(axis=0)
    if db is not None:
        db[...] = g.sum(axis=(0, 2, 3))
