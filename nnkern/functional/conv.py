"""Op surface of the 'conv' kernel family: ``conv2d`` and ``conv2d_backward``.

Semantics are those of ``torch.nn.functional.conv2d`` (NCHW, cross-correlation).

    >>> import numpy as np, nnkern
    >>> import nnkern.functional as F
    >>> x = np.ones((1, 1, 4, 4)); w = np.ones((2, 1, 3, 3))
    >>> with nnkern.device("numpy"):
    ...     F.conv2d(x, w, padding="same").shape
    (1, 2, 4, 4)
"""

import numpy as np

from ..device import array_module
from ..kernels.conv.rules import output_size
from ._checks import (
    backend_kernels,
    empty,
    flag,
    float_array,
    int_pair,
    same_dtype,
    shape_is,
    shape_tuple,
)

__all__ = ["conv2d", "conv2d_backward", "conv2d_output_shape"]

ALGOS = ("auto", "direct", "im2col")


def _padding(padding, R, S, stride, dilation):
    """Return ((top, bottom), (left, right)) for an int, a pair, "valid" or "same".

    "same" follows PyTorch: only with stride 1; the total padding d*(k-1) is
    split with the odd extra pixel on the bottom/right.
    """
    if isinstance(padding, str):
        mode = padding.lower()
        if mode == "valid":
            return (0, 0), (0, 0)
        if mode == "same":
            if stride != (1, 1):
                raise ValueError(
                    f"padding='same' needs stride 1 (as in PyTorch), got stride {stride}; "
                    f"pass an explicit padding instead"
                )
            th, tw = dilation[0] * (R - 1), dilation[1] * (S - 1)
            return (th // 2, th - th // 2), (tw // 2, tw - tw // 2)
        raise ValueError(f"padding must be an int, a pair, 'valid' or 'same', got {padding!r}")
    ph, pw = int_pair(padding, "padding", 0)
    return (ph, ph), (pw, pw)


def _check(x, w, b, stride, padding, dilation, groups, algo):
    """Validate the arguments shared by conv2d and conv2d_backward.

    Returns (kernel module, output shape, stride, (top, left) padding, dilation, groups).
    """
    float_array(x, "x", 4, "NCHW (batch, channels, height, width)")
    float_array(w, "w", 4, "(out_channels, in_channels/groups, kernel_h, kernel_w)")
    if b is not None:
        float_array(b, "b", 1)
    same_dtype(("x", x), ("w", w), ("b", b))
    if isinstance(groups, bool) or not isinstance(groups, (int, np.integer)) or groups < 1:
        raise ValueError(f"groups must be an int >= 1, got {groups!r}")
    groups = int(groups)
    N, C, H, W = x.shape
    K, Cg, R, S = w.shape
    if min(x.shape[1:]) < 1 or min(w.shape) < 1:  # an empty batch (N = 0) is a valid call
        raise ValueError(
            f"x and w must have no empty dimension but the batch, got x {tuple(x.shape)}, "
            f"w {tuple(w.shape)}"
        )
    if C % groups or K % groups:
        raise ValueError(
            f"groups={groups} must divide both the input channels C={C} and the output "
            f"channels K={K}"
        )
    if C != Cg * groups:
        hint = ""
        if x.shape[3] == Cg * groups:
            hint = (
                "; x looks channels-last (NHWC): nnkern takes NCHW, "
                "use x.transpose(0, 3, 1, 2)"
            )
        raise ValueError(
            f"x has C={C} channels but w {tuple(w.shape)} with groups={groups} expects "
            f"w.shape[1]*groups = {Cg * groups}{hint}"
        )
    if b is not None:
        shape_is(b, "b", (K,))
    stride = int_pair(stride, "stride", 1)
    dilation = int_pair(dilation, "dilation", 1)
    (pt, pb), (pl, pr) = _padding(padding, R, S, stride, dilation)
    eh, ew = dilation[0] * (R - 1) + 1, dilation[1] * (S - 1) + 1
    if eh > H + pt + pb or ew > W + pl + pr:
        raise ValueError(
            f"the dilated kernel ({eh}, {ew}) is larger than the padded input "
            f"({H + pt + pb}, {W + pl + pr}) (kernel {(R, S)}, dilation {dilation}, "
            f"input {(H, W)}, padding {(pt + pb, pl + pr)} in total)"
        )
    OH = output_size(H, R, stride[0], pt, pb, dilation[0])
    OW = output_size(W, S, stride[1], pl, pr, dilation[1])
    kern = backend_kernels("conv", ("x", x), ("w", w), ("b", b))
    # Besides ALGOS, a backend's own version names (its VERSIONS table) pick one version.
    versions = tuple(getattr(kern, "VERSIONS", ()))
    if not isinstance(algo, str) or algo not in ALGOS + versions:
        raise ValueError(
            f"algo must be one of {ALGOS} or a version of this backend {versions}, "
            f"got {algo!r}"
        )
    return kern, (N, K, OH, OW), stride, (pt, pl), dilation, groups


def conv2d_output_shape(x_shape, w_shape, stride=1, padding=0, dilation=1):
    """(N, K, OH, OW) of conv2d for these shapes (the arguments are checked, not that the
    kernel fits the padded input).

    >>> conv2d_output_shape((8, 3, 32, 32), (16, 3, 5, 5), stride=2, padding=2)
    (8, 16, 16, 16)
    """
    N, _, H, W = shape_tuple(x_shape, "x_shape", 4)
    K, _, R, S = shape_tuple(w_shape, "w_shape", 4)
    stride = int_pair(stride, "stride", 1)
    dilation = int_pair(dilation, "dilation", 1)
    (pt, pb), (pl, pr) = _padding(padding, R, S, stride, dilation)
    OH = output_size(H, R, stride[0], pt, pb, dilation[0])
    OW = output_size(W, S, stride[1], pl, pr, dilation[1])
    return (N, K, OH, OW)


def conv2d(x, w, b=None, stride=1, padding=0, dilation=1, groups=1, algo="auto"):
    """2-D convolution (cross-correlation) of x (N, C, H, W) with w (K, C/groups, R, S).

    Returns y (N, K, OH, OW) of x's dtype, as ``torch.nn.functional.conv2d``.

    Args:
        b: bias (K,) or None.
        stride, dilation: int or (h, w) pair, >= 1.
        padding: int or (h, w) pair >= 0 (both sides), "valid" (0) or "same"
            (stride 1 only; an odd total padding puts the extra pixel on the
            bottom/right, as PyTorch does).
        groups: split channels into this many independent groups.
        algo: "direct" (the backend's direct kernels), "im2col" (columns + the
            nnkern GEMM) or "auto" (the backend picks among all of them; see
            kernels/conv/cpu.py and cuda.py), or the name of one version in the
            backend's VERSIONS table (e.g. "px" on the cpu backend).

    >>> import numpy as np
    >>> x = np.zeros((2, 3, 8, 8), np.float32); w = np.zeros((4, 3, 3, 3), np.float32)
    >>> conv2d(x, w, stride=2).shape
    (2, 4, 3, 3)
    """
    kern, out_shape, stride, pad, dilation, groups = _check(
        x, w, b, stride, padding, dilation, groups, algo
    )
    xp = array_module()
    y = empty(out_shape, x.dtype)  # kernels write every element
    if not y.size:
        return y
    b = None if b is None else xp.ascontiguousarray(b)
    kern.conv2d_forward(
        xp.ascontiguousarray(x), xp.ascontiguousarray(w), b, y,
        stride, pad, dilation, groups, algo,
    )
    return y


def conv2d_backward(g, x, w, b=None, stride=1, padding=0, dilation=1, groups=1, algo="auto",
                    *, input_grad=True):
    """Gradients of conv2d for the upstream gradient g (N, K, OH, OW).

    Takes the forward's own arguments; returns ``(dx, dw, db)`` with ``db``
    None when ``b`` is None. ``input_grad=False`` skips the backward-data pass
    and returns ``dx`` None (the first layer of a network: its input needs no
    gradient; the autograd tape passes it).
    """
    input_grad = flag(input_grad, "input_grad")
    kern, out_shape, stride, pad, dilation, groups = _check(
        x, w, b, stride, padding, dilation, groups, algo
    )
    float_array(g, "g", 4, "NCHW like the conv2d output")
    same_dtype(("x", x), ("g", g))
    shape_is(g, "g (the gradient of the conv2d output)", out_shape)
    backend_kernels("conv", ("g", g), ("x", x))
    xp = array_module()
    g = xp.ascontiguousarray(g)
    dx = empty(x.shape, x.dtype) if input_grad else None  # kernels write every element
    dw = empty(w.shape, w.dtype)
    db = None if b is None else empty(b.shape, b.dtype)
    if not g.size:  # an empty batch: no gradient reaches the weights
        dw[...] = 0
        if db is not None:
            db[...] = 0
        return dx, dw, db
    if input_grad:
        kern.conv2d_backward_data(
            g, xp.ascontiguousarray(w), dx, stride, pad, dilation, groups, algo
        )
    kern.conv2d_backward_weights(
        g, xp.ascontiguousarray(x), dw, db, stride, pad, dilation, groups, algo
    )
    return dx, dw, db
