"""Op surface of the 'pool' kernel family: max, average, blur and max-blur pooling (NCHW).

Semantics follow ``torch.nn.functional.max_pool2d`` / ``avg_pool2d`` (floor mode,
no dilation); ``blur_pool2d`` and ``max_blur_pool2d`` follow adobe/antialiased-cnns
(normalised binomial filter, reflect padding, depthwise). Each ``<op>_backward``
takes the upstream gradient followed by the forward's own arguments and returns dx.

    >>> import numpy as np, nnkern
    >>> import nnkern.functional as F
    >>> x = np.arange(16.0).reshape(1, 1, 4, 4)
    >>> with nnkern.device("numpy"):
    ...     y, idx = F.max_pool2d(x, 2, return_indices=True)
    >>> y[0, 0]
    array([[ 5.,  7.],
           [13., 15.]])
    >>> idx[0, 0]
    array([[ 5,  7],
           [13, 15]])
"""

import weakref
from types import SimpleNamespace

import numpy as np

from ..device import array_module
from ._checks import (
    backend_kernels,
    choice,
    empty,
    flag,
    float_array,
    int_pair,
    same_dtype,
    shape_is,
    shape_tuple,
)
from ._checks import contiguous as _contiguous

__all__ = [
    "avg_pool2d",
    "avg_pool2d_backward",
    "blur_pool2d",
    "blur_pool2d_backward",
    "max_blur_pool2d",
    "max_blur_pool2d_backward",
    "max_pool2d",
    "max_pool2d_backward",
    "pool2d_output_shape",
]

MAX_FILT_SIZE = 7


def _image(op, x):
    return float_array(x, f"{op}: x", ndim=4, layout="NCHW (batch, channels, height, width)")


def _grad(op, g, x, out_shape):
    float_array(g, f"{op}: grad_out")
    same_dtype(("x", x), ("grad_out", g))
    shape_is(g, f"{op}: grad_out (the forward output's shape)", out_shape)
    return g


def _window(op, x, kernel_size, stride, padding):
    """Normalise and check a max/avg pooling window; return (R, S, SH, SW, PH, PW, OH, OW)."""
    R, S = int_pair(kernel_size, f"{op}: kernel_size", 1)
    SH, SW = int_pair(kernel_size if stride is None else stride, f"{op}: stride", 1)
    PH, PW = int_pair(padding, f"{op}: padding", 0)
    if PH > R // 2 or PW > S // 2:
        raise ValueError(
            f"{op}: padding must be at most half the kernel size (<= {(R // 2, S // 2)} for "
            f"kernel_size {(R, S)}), got padding {(PH, PW)}"
        )
    H, W = x.shape[2:]
    if R > H + 2 * PH or S > W + 2 * PW:
        raise ValueError(
            f"{op}: kernel_size {(R, S)} does not fit the padded input of size "
            f"{(H + 2 * PH, W + 2 * PW)} (input {(H, W)}, padding {(PH, PW)})"
        )
    OH = (H + 2 * PH - R) // SH + 1
    OW = (W + 2 * PW - S) // SW + 1
    return R, S, SH, SW, PH, PW, OH, OW


def _blur(op, H, W, filt_size, stride, what="input"):
    """Check a blur filter over an (H, W) map; return (SH, SW, OH, OW)."""
    if not isinstance(filt_size, (int, np.integer)) or isinstance(filt_size, bool):
        raise TypeError(f"{op}: filt_size must be an int, got {filt_size!r}")
    if not 1 <= filt_size <= MAX_FILT_SIZE:
        raise ValueError(f"{op}: filt_size must be in 1..{MAX_FILT_SIZE}, got {filt_size}")
    SH, SW = int_pair(stride, f"{op}: stride", 1)
    pad = int(filt_size) // 2  # the larger of the two reflect pads, ceil((k-1)/2)
    if pad >= H or pad >= W:
        raise ValueError(
            f"{op}: reflect padding {pad} (filt_size {filt_size}) must be smaller than the "
            f"{what} size, got {(H, W)}; use a smaller filt_size or a larger input"
        )
    return SH, SW, (H - 1) // SH + 1, (W - 1) // SW + 1


# ----------------------------------------------------------------------------
# max pooling


def max_pool2d(x, kernel_size, stride=None, padding=0, return_indices=False):
    """Max pooling of x (N, C, H, W) -> y (N, C, OH, OW), or (y, indices) with
    ``return_indices``; indices (int64) are flat ``h * W + w`` in each input plane,
    returned read-only (host backends): passed back to ``max_pool2d_backward`` unchanged,
    they need no check.

    stride defaults to kernel_size; padding (at most half the kernel) is never
    chosen. Ties go to the first maximum in window scan order; NaN wins.

    >>> x = np.array([[[[1.0, 3.0, 2.0], [4.0, 0.0, 5.0]]]])
    >>> F.max_pool2d(x, (2, 2), stride=1)
    array([[[[4., 5.]]]])
    """
    op = "max_pool2d"
    x = _image(op, x)
    R, S, SH, SW, PH, PW, OH, OW = _window(op, x, kernel_size, stride, padding)
    return_indices = flag(return_indices, "return_indices")
    K = backend_kernels("pool", ("x", x))
    x = _contiguous(x)
    N, C = x.shape[:2]
    y = empty((N, C, OH, OW), x.dtype)
    indices = empty((N, C, OH, OW), np.int64)
    K.max_pool2d_forward(x, y, indices, R, S, SH, SW, PH, PW)
    return (y, _issue(indices)) if return_indices else y


# Indices that max_pool2d handed out, by id: the read-only view the caller holds, and the
# writable array under it that the kernels take. A backward given one of these, still
# read-only, skips the window check (they are right by construction); any other indices
# array is checked. Entries leave with the caller's view (a weakref callback).
_issued = {}


def _issue(indices):
    if not isinstance(indices, np.ndarray):
        return indices  # CuPy arrays have no read-only flag: they are always checked
    view = indices.view()
    view.flags.writeable = False
    key = id(view)
    _issued[key] = (weakref.ref(view, lambda _, key=key: _issued.pop(key, None)), indices)
    return view


def _trusted(indices):
    """The kernels' writable array for indices max_pool2d issued, unmodified; else None."""
    entry = _issued.get(id(indices))
    if entry is None or entry[0]() is not indices or indices.flags.writeable:
        return None
    return entry[1]


def _check_indices(op, indices, H, W, R, S, SH, SW, PH, PW):
    """Each index must be the flat position h * W + w of a cell inside its own window (what
    max_pool2d returns): the kernels gather by window (a stray index was dropped silently)
    and the reference scatters (it added the gradient elsewhere, or raised IndexError)."""
    xp = array_module()
    OH, OW = indices.shape[2:]
    h0 = xp.arange(OH) * SH - PH
    w0 = xp.arange(OW) * SW - PW
    hlo, hhi = xp.maximum(h0, 0)[:, None], xp.minimum(h0 + R, H)[:, None]   # (OH, 1)
    wlo, whi = xp.maximum(w0, 0)[None, :], xp.minimum(w0 + S, W)[None, :]   # (1, OW)
    h, w = xp.divmod(indices, W)
    bad = (indices < 0) | (h < hlo) | (h >= hhi) | (w < wlo) | (w >= whi)
    if bool(bad.any()):
        n, c, oh, ow = (int(v) for v in xp.argwhere(bad)[0])
        raise ValueError(
            f"{op}: indices must be flat positions h * W + w inside each output's window, "
            f"as max_pool2d(..., return_indices=True) returns them; got {int(bad.sum())} "
            f"that are not, e.g. {int(indices[n, c, oh, ow])} at {(n, c, oh, ow)}, whose "
            f"window covers rows [{int(hlo[oh, 0])}, {int(hhi[oh, 0])}) and columns "
            f"[{int(wlo[0, ow])}, {int(whi[0, ow])}) of the {H}x{W} input plane"
        )


def max_pool2d_backward(
    grad_out, x, kernel_size, stride=None, padding=0, return_indices=False, *, indices=None
):
    """Gradient of max_pool2d: dx (N, C, H, W), each grad_out element added to its
    window's winner. ``indices`` from the forward skips recomputing the argmax; indices
    from anywhere else are checked to lie in their windows (a pass over them).
    ``return_indices`` is accepted for symmetry with the forward and ignored.
    """
    op = "max_pool2d_backward"
    x = _image(op, x)
    R, S, SH, SW, PH, PW, OH, OW = _window(op, x, kernel_size, stride, padding)
    flag(return_indices, "return_indices")
    N, C = x.shape[:2]
    grad_out = _grad(op, grad_out, x, (N, C, OH, OW))
    K = backend_kernels("pool", ("x", x), ("grad_out", grad_out), ("indices", indices))
    x, grad_out = _contiguous(x), _contiguous(grad_out)
    if indices is None:
        indices = empty((N, C, OH, OW), np.int64)
        K.max_pool2d_forward(x, empty((N, C, OH, OW), x.dtype), indices, R, S, SH, SW, PH, PW)
    elif (issued := _trusted(indices)) is not None:
        shape_is(indices, f"{op}: indices", (N, C, OH, OW))
        indices = issued
    else:
        if not hasattr(indices, "dtype") or indices.dtype.kind not in "iu":
            got = getattr(indices, "dtype", type(indices).__name__)
            raise TypeError(f"{op}: indices must be an integer array from max_pool2d, got {got}")
        shape_is(indices, f"{op}: indices", (N, C, OH, OW))
        indices = _contiguous(indices.astype(np.int64, copy=False))
        _check_indices(op, indices, *x.shape[2:], R, S, SH, SW, PH, PW)
    dx = empty(x.shape, x.dtype)
    K.max_pool2d_backward(grad_out, indices, dx, R, S, SH, SW, PH, PW)
    return dx


# ----------------------------------------------------------------------------
# average pooling


def avg_pool2d(x, kernel_size, stride=None, padding=0, count_include_pad=True):
    """Average pooling of x (N, C, H, W) -> (N, C, OH, OW); zero padding, counted in the
    divisor unless ``count_include_pad`` is False.

    >>> F.avg_pool2d(np.ones((1, 1, 2, 2)), 2, padding=1)[0, 0]
    array([[0.25, 0.25],
           [0.25, 0.25]])
    """
    op = "avg_pool2d"
    x = _image(op, x)
    R, S, SH, SW, PH, PW, OH, OW = _window(op, x, kernel_size, stride, padding)
    K = backend_kernels("pool", ("x", x))
    x = _contiguous(x)
    y = empty(x.shape[:2] + (OH, OW), x.dtype)
    K.avg_pool2d_forward(x, y, R, S, SH, SW, PH, PW,
                         flag(count_include_pad, "count_include_pad"))
    return y


def avg_pool2d_backward(grad_out, x, kernel_size, stride=None, padding=0, count_include_pad=True):
    """Gradient of avg_pool2d: dx (N, C, H, W)."""
    op = "avg_pool2d_backward"
    x = _image(op, x)
    R, S, SH, SW, PH, PW, OH, OW = _window(op, x, kernel_size, stride, padding)
    grad_out = _grad(op, grad_out, x, x.shape[:2] + (OH, OW))
    K = backend_kernels("pool", ("x", x), ("grad_out", grad_out))
    x, grad_out = _contiguous(x), _contiguous(grad_out)
    dx = empty(x.shape, x.dtype)
    K.avg_pool2d_backward(grad_out, dx, R, S, SH, SW, PH, PW,
                          flag(count_include_pad, "count_include_pad"))
    return dx


# ----------------------------------------------------------------------------
# blur pooling


def blur_pool2d(x, filt_size=3, stride=2):
    """Anti-aliased downsampling (BlurPool): reflect pad, then a depthwise stride-``stride``
    correlation with the normalised binomial filter of size ``filt_size`` (1..7).

    x (N, C, H, W) -> (N, C, (H - 1) // stride + 1, (W - 1) // stride + 1).

    >>> F.blur_pool2d(np.ones((1, 1, 4, 4)))[0, 0]
    array([[1., 1.],
           [1., 1.]])
    """
    op = "blur_pool2d"
    x = _image(op, x)
    SH, SW, OH, OW = _blur(op, *x.shape[2:], filt_size, stride)
    K = backend_kernels("pool", ("x", x))
    x = _contiguous(x)
    y = empty(x.shape[:2] + (OH, OW), x.dtype)
    K.blur_pool2d_forward(x, y, int(filt_size), SH, SW)
    return y


def blur_pool2d_backward(grad_out, x, filt_size=3, stride=2):
    """Gradient of blur_pool2d: dx (N, C, H, W)."""
    op = "blur_pool2d_backward"
    x = _image(op, x)
    SH, SW, OH, OW = _blur(op, *x.shape[2:], filt_size, stride)
    grad_out = _grad(op, grad_out, x, x.shape[:2] + (OH, OW))
    K = backend_kernels("pool", ("x", x), ("grad_out", grad_out))
    x, grad_out = _contiguous(x), _contiguous(grad_out)
    dx = empty(x.shape, x.dtype)
    K.blur_pool2d_backward(grad_out, dx, int(filt_size), SH, SW)
    return dx


# ----------------------------------------------------------------------------
# max-blur pooling


def pool2d_output_shape(op, x_shape, **kwargs):
    """The (N, C, OH, OW) shape pooling op ``op`` gives for an (N, C, H, W) input, with
    the op's own checks of its arguments (layers use it to build their shapes).

    >>> pool2d_output_shape("max_pool2d", (8, 3, 28, 28), kernel_size=2)
    (8, 3, 14, 14)
    >>> pool2d_output_shape("blur_pool2d", (8, 3, 7, 7), filt_size=3, stride=2)
    (8, 3, 4, 4)
    """
    choice(op, "op", tuple(_WINDOW_ARGS))
    x = SimpleNamespace(shape=shape_tuple(x_shape, "x_shape", 4))  # the checks read the shape
    allowed = _WINDOW_ARGS[op]
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise TypeError(f"{op} takes no argument {unknown[0]!r}; its window arguments are "
                        f"{', '.join(allowed)}")
    args = {**{k: v for k, v in allowed.items() if v is not _REQUIRED}, **kwargs}
    missing = [k for k, v in allowed.items() if v is _REQUIRED and k not in args]
    if missing:
        raise TypeError(f"{op} needs the argument {missing[0]!r}")
    if op in ("max_pool2d", "avg_pool2d"):
        *_, OH, OW = _window(op, x, args["kernel_size"], args["stride"], args["padding"])
    elif op == "blur_pool2d":
        *_, OH, OW = _blur(op, *x.shape[2:], args["filt_size"], args["stride"])
    else:
        *_, OH, OW = _max_blur(op, x, args["kernel_size"], args["filt_size"], args["stride"])
    return (*x.shape[:2], OH, OW)


_REQUIRED = object()
# the window arguments of each pooling op and their defaults (those of the op itself)
_WINDOW_ARGS = {
    "max_pool2d": {"kernel_size": _REQUIRED, "stride": None, "padding": 0,
                   "return_indices": False},
    "avg_pool2d": {"kernel_size": _REQUIRED, "stride": None, "padding": 0,
                   "count_include_pad": True},
    "blur_pool2d": {"filt_size": 3, "stride": 2},
    "max_blur_pool2d": {"kernel_size": 2, "filt_size": 3, "stride": 2},
}


def _max_blur(op, x, kernel_size, filt_size, stride):
    R, S = int_pair(kernel_size, f"{op}: kernel_size", 1)
    H, W = x.shape[2:]
    if R > H or S > W:
        raise ValueError(f"{op}: kernel_size {(R, S)} does not fit the input of size {(H, W)}")
    what = f"max-pooled map (input {(H, W)} after the stride-1 {(R, S)} max)"
    SH, SW, OH, OW = _blur(op, H - R + 1, W - S + 1, filt_size, stride, what)
    return R, S, SH, SW, OH, OW


def max_blur_pool2d(x, kernel_size=2, filt_size=3, stride=2):
    """Anti-aliased max pooling (MaxBlurPool): max pool ``kernel_size`` at stride 1 with no
    padding, then ``blur_pool2d(filt_size, stride)``; one fused pass on cpu and cuda.

    x (N, C, H, W) -> (N, C, (H - R) // stride + 1, (W - S) // stride + 1).

    >>> F.max_blur_pool2d(np.ones((1, 1, 5, 5))).shape
    (1, 1, 2, 2)
    """
    op = "max_blur_pool2d"
    x = _image(op, x)
    R, S, SH, SW, OH, OW = _max_blur(op, x, kernel_size, filt_size, stride)
    K = backend_kernels("pool", ("x", x))
    x = _contiguous(x)
    y = empty(x.shape[:2] + (OH, OW), x.dtype)
    K.max_blur_pool2d_forward(x, y, R, S, int(filt_size), SH, SW)
    return y


def max_blur_pool2d_backward(grad_out, x, kernel_size=2, filt_size=3, stride=2):
    """Gradient of max_blur_pool2d: dx (N, C, H, W)."""
    op = "max_blur_pool2d_backward"
    x = _image(op, x)
    R, S, SH, SW, OH, OW = _max_blur(op, x, kernel_size, filt_size, stride)
    grad_out = _grad(op, grad_out, x, x.shape[:2] + (OH, OW))
    K = backend_kernels("pool", ("x", x), ("grad_out", grad_out))
    x, grad_out = _contiguous(x), _contiguous(grad_out)
    dx = empty(x.shape, x.dtype)
    K.max_blur_pool2d_backward(grad_out, x, dx, R, S, int(filt_size), SH, SW)
    return dx
