"""Kernel family 'conv': 2-D convolution (cross-correlation, as in PyTorch), NCHW.

Every backend module (reference.py, cpu.py, cuda.py) defines the names in
``KERNELS`` with the same signatures:

    conv2d_forward(x, w, b, y, stride, padding, dilation, groups, algo)
        y[n, k, oh, ow] = b[k] + sum_{c, r, s} w[k, c, r, s]
                          * x[n, g*Cg + c, oh*sh - ph + r*dh, ow*sw - pw + s*dw]
        (g = k // Kg is the group of output channel k; x is zero outside the image)
    conv2d_backward_data(g, w, dx, stride, padding, dilation, groups, algo)
        dx = d(sum(y * g)) / dx
    conv2d_backward_weights(g, x, dw, db, stride, padding, dilation, groups, algo)
        dw = d(sum(y * g)) / dw;  db[k] = sum of g[:, k]  (db may be None)

Shapes: x, dx (N, C, H, W); w, dw (K, C/groups, R, S); b, db (K,) or None;
y, g (N, K, OH, OW). ``stride`` and ``dilation`` are pairs (h, w); ``padding``
is the pair (top, left): the bottom/right padding is whatever the output size
implies (it may be one more than top/left for padding="same"). ``algo`` is
"auto", "direct" or "im2col"; each backend documents what "auto" picks.
Kernels write every element of their outputs (they overwrite, never add).
"""

KERNELS = ("conv2d_forward", "conv2d_backward_data", "conv2d_backward_weights")
