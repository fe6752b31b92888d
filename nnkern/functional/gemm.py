"""Op surface of the 'gemm' kernel family: matrix multiply and the dense (linear) layer.

    matmul(a, b, trans_a=False, trans_b=False)      -> op(a) @ op(b), (M, N)
    linear(x, w, b=None, activation=None)           -> act(x @ w.T + b), (N, OUT)

Each has a ``_backward`` twin taking the upstream gradient followed by the same
arguments. Inputs that are not C-contiguous are copied to contiguous ones
(the kernels read raw rows); transposes are free, pass ``trans_a``/``trans_b``
instead of ``a.T``.
"""


import numpy as np

from ..device import array_module
from ._checks import (
    FLOAT_DTYPES,
    backend_kernels,
    choice,
    empty,
    flag,
    float_array,
    same_dtype,
    shape_is,
    writable,
    zeros,
)
from ._checks import contiguous as _contiguous

__all__ = ["linear", "linear_backward", "matmul", "matmul_backward"]

ACTIVATIONS = (None, "relu")
_F32, _F64 = FLOAT_DTYPES
_NDARRAY = np.ndarray


def _run_gemm(K, a, b, c, trans_a, trans_b, accumulate=False):
    """c = op(a) @ op(b) (c += with ``accumulate``) through the backend kernel; empty sizes
    handled here."""
    inner = a.shape[0] if trans_a else a.shape[1]
    if c.size == 0:
        return c
    if inner == 0:
        if not accumulate:
            c[...] = 0
        return c
    K.gemm(a, b, c, trans_a, trans_b, accumulate)
    return c


def _matmul_checks(a, b, trans_a, trans_b, K=None):
    # K: the kernel module when the caller has already dispatched on a and b
    if K is None:
        K = backend_kernels("gemm", ("a", a), ("b", b))
    float_array(a, "a", 2)
    float_array(b, "b", 2)
    same_dtype(("a", a), ("b", b))
    trans_a = flag(trans_a, "trans_a")
    trans_b = flag(trans_b, "trans_b")
    M, ka = (a.shape[1], a.shape[0]) if trans_a else a.shape
    kb, N = (b.shape[1], b.shape[0]) if trans_b else b.shape
    if ka != kb:
        raise ValueError(
            f"matmul: op(a) is {(M, ka)} and op(b) is {(kb, N)} "
            f"(a {tuple(a.shape)}, trans_a={trans_a}; b {tuple(b.shape)}, trans_b={trans_b}); "
            f"the inner dimensions must be equal, got {ka} and {kb}"
        )
    return K, _contiguous(a), _contiguous(b), trans_a, trans_b, M, N


def matmul(a, b, trans_a=False, trans_b=False):
    """Matrix product ``op(a) @ op(b)`` with ``op(x) = x.T`` when ``trans_x``.

    a is (M, K) (or (K, M) with trans_a), b is (K, N) (or (N, K) with trans_b);
    returns (M, N) in their dtype.

    >>> import numpy as np, nnkern
    >>> with nnkern.device("numpy"):
    ...     matmul(np.ones((2, 3)), np.ones((4, 3)), trans_b=True).shape
    (2, 4)
    """
    K = backend_kernels("gemm", ("a", a), ("b", b))
    # The common call (two C-contiguous 2-D float32/float64 NumPy arrays of one dtype,
    # bool flags, matching inner sizes, nothing empty) passes every check of
    # _matmul_checks in one test and goes straight to the kernel with one allocation:
    # 64^3 cost 2.8 us of Python around a 5.7 us kernel (issue 13). Anything else takes
    # the full checks, which say what is wrong.
    if (type(a) is _NDARRAY and type(b) is _NDARRAY and type(trans_a) is bool
            and type(trans_b) is bool):
        dtype = a.dtype
        if (dtype is b.dtype and (dtype is _F32 or dtype is _F64) and a.ndim == 2
                and b.ndim == 2 and a.flags.c_contiguous and b.flags.c_contiguous):
            M, ka = (a.shape[1], a.shape[0]) if trans_a else a.shape
            kb, N = (b.shape[1], b.shape[0]) if trans_b else b.shape
            if ka == kb and M and N and ka:
                c = empty((M, N), dtype)
                K.gemm(a, b, c, trans_a, trans_b, False)
                return c
    K, a, b, trans_a, trans_b, M, N = _matmul_checks(a, b, trans_a, trans_b, K)
    c = empty((M, N), a.dtype)
    return _run_gemm(K, a, b, c, trans_a, trans_b)


def matmul_backward(g, a, b, trans_a=False, trans_b=False):
    """Gradients ``(da, db)`` of ``matmul(a, b, trans_a, trans_b)`` for the upstream ``g`` (M, N).

    With C = op(A) op(B): d op(A) = G op(B)^T and d op(B) = op(A)^T G; each is
    one GEMM with the transposes chosen so no transposed copy is made.
    """
    K, a, b, trans_a, trans_b, M, N = _matmul_checks(a, b, trans_a, trans_b)
    backend_kernels("gemm", ("g", g), ("a", a))
    float_array(g, "g", 2)
    same_dtype(("a", a), ("g", g))
    shape_is(g, "g (the gradient of matmul's output)", (M, N))
    g = _contiguous(g)
    da = empty(a.shape, a.dtype)
    db = empty(b.shape, b.dtype)
    if trans_a:  # da = (G op(B)^T)^T = op(B) G^T
        _run_gemm(K, b, g, da, trans_b, True)
    else:  # da = G op(B)^T
        _run_gemm(K, g, b, da, False, not trans_b)
    if trans_b:  # db = (op(A)^T G)^T = G^T op(A)
        _run_gemm(K, g, a, db, True, trans_a)
    else:  # db = op(A)^T G
        _run_gemm(K, a, g, db, not trans_a, False)
    return da, db


def _linear_checks(x, w, b, activation):
    K = backend_kernels("gemm", ("x", x), ("w", w), ("b", b))
    float_array(x, "x", 2, "(N, in_features)")
    float_array(w, "w", 2, "(out_features, in_features)")
    if b is not None:
        float_array(b, "b", 1, "(out_features,)")
    same_dtype(("x", x), ("w", w), ("b", b))
    if x.shape[1] != w.shape[1]:
        raise ValueError(
            f"linear: x is (N, in_features) = {tuple(x.shape)} and w is "
            f"(out_features, in_features) = {tuple(w.shape)}; in_features must match, "
            f"got {x.shape[1]} and {w.shape[1]}"
        )
    if b is not None:
        shape_is(b, "b", (w.shape[0],))
        b = _contiguous(b)
    choice(activation, "activation", ACTIVATIONS)
    return K, _contiguous(x), _contiguous(w), b


def linear(x, w, b=None, activation=None):
    """Dense layer ``act(x @ w.T + b)``; bias and relu are fused into the GEMM's epilogue.

    x is (N, in_features), w is (out_features, in_features) (torch layout), b is
    (out_features,) or None, activation None or "relu". Returns (N, out_features).

    >>> import numpy as np, nnkern
    >>> with nnkern.device("numpy"):
    ...     linear(np.ones((2, 3)), np.ones((4, 3)), np.zeros(4), activation="relu")[0]
    array([3., 3., 3., 3.])
    """
    if _plain_linear(x, w, b, activation):
        return _linear_plain(x, w, b, activation == "relu")
    K, x, w, b = _linear_checks(x, w, b, activation)
    N, OUT = x.shape[0], w.shape[0]
    y = empty((N, OUT), x.dtype)
    if y.size == 0:
        return y
    if x.shape[1] == 0:  # no inputs: the output is the bias alone
        y[...] = 0
        if b is not None:
            y += b
        if activation == "relu":
            y[...] = array_module().maximum(y, 0)
        return y
    K.linear(x, w, b, y, activation == "relu")
    return y


def _plain_linear(x, w, b, activation):
    """True when a call of linear passes every check of _linear_checks in one test: NumPy
    C-contiguous 2-D arrays of one float dtype, nothing empty, fitting shapes (a layer's
    call; the tape's linear rule asks it too)."""
    if (type(x) is not _NDARRAY or type(w) is not _NDARRAY
            or (b is not None and type(b) is not _NDARRAY)
            or (activation is not None and activation != "relu")):
        return False
    dtype = x.dtype
    return bool((dtype is _F32 or dtype is _F64) and w.dtype is dtype and x.ndim == 2
                and w.ndim == 2 and x.shape[1] == w.shape[1] and x.shape[1] and x.shape[0]
                and w.shape[0] and x.flags.c_contiguous and w.flags.c_contiguous
                and (b is None or (b.dtype is dtype and b.shape == (w.shape[0],)
                                   and b.flags.c_contiguous)))


def _linear_plain(x, w, b, relu):
    """linear on arguments that passed _plain_linear."""
    y = empty((x.shape[0], w.shape[0]), x.dtype)
    backend_kernels("gemm", ("x", x)).linear(x, w, b, y, relu)
    return y


def _plain_linear_backward(g, x, w, b, activation, out, input_grad, grad_w, grad_b):
    """True when the arguments pass every check of linear_backward: NumPy arrays of one
    float dtype, C-contiguous, of fitting shapes (the tape's own call, whose forward
    already checked x, w and b)."""
    if (type(x) is not _NDARRAY or type(w) is not _NDARRAY or type(g) is not _NDARRAY
            or type(input_grad) is not bool):
        return False
    dtype = x.dtype
    if (dtype is not _F32 and dtype is not _F64) or x.ndim != 2 or w.ndim != 2:
        return False
    N, OUT = x.shape[0], w.shape[0]
    for a, shape, write in ((g, (N, OUT), False), (w, (OUT, x.shape[1]), False),
                            (x, x.shape, False), (b, (OUT,), False), (out, (N, OUT), False),
                            (grad_w, (OUT, x.shape[1]), True), (grad_b, (OUT,), True)):
        if a is None:
            continue
        if (type(a) is not _NDARRAY or a.dtype is not dtype or not a.flags.c_contiguous
                or a.shape != shape or (write and not a.flags.writeable)):
            return False
    return (activation is None or activation == "relu") and (grad_b is None or b is not None)


def _grad_into(target, name, like):
    """Check an array linear_backward adds a gradient into: ``like``'s shape and dtype,
    C-contiguous, writable."""
    float_array(target, name)
    same_dtype((name, target), ("x", like))
    shape_is(target, name, like.shape)
    if not target.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous (the gradient is added into it in "
                         f"place), got a non-contiguous array of shape {tuple(target.shape)}")
    writable(target, name, "the gradient is added into it in place")


def linear_backward(g, x, w, b=None, activation=None, *, out=None, input_grad=True,
                    grad_w=None, grad_b=None, add_w=True, add_b=True):
    """Gradients ``(dx, dw, db)`` of ``linear(x, w, b, activation)`` for the upstream ``g``.

    ``g`` is (N, out_features); ``db`` is None when ``b`` is None. With relu the
    gradient passes where the forward output is positive: pass that output as
    ``out=`` to skip recomputing it. ``input_grad=False`` skips ``dx`` (None).
    ``grad_w`` / ``grad_b``: arrays of w's / b's shape to ADD dw / db into, in place
    (the tape passes a model's gradient buffers: the GEMM accumulates into them, with
    no temporary and no separate addition); their places in the result are then None.
    ``add_w=False`` / ``add_b=False`` WRITE dw / db into them instead (their old values
    are ignored: a buffer marked zero is not zeroed first).

    >>> import numpy as np, nnkern
    >>> gw = np.ones((4, 3))
    >>> with nnkern.device("numpy"):
    ...     dx, dw, db = linear_backward(np.ones((2, 4)), np.ones((2, 3)), np.ones((4, 3)),
    ...                                  grad_w=gw)
    >>> dw is None, float(gw[0, 0])
    (True, 3.0)
    """
    if (type(add_w) is bool and type(add_b) is bool
            and _plain_linear_backward(g, x, w, b, activation, out, input_grad, grad_w, grad_b)):
        K = backend_kernels("gemm", ("x", x))
    else:
        input_grad = flag(input_grad, "input_grad")
        add_w = flag(add_w, "add_w")
        add_b = flag(add_b, "add_b")
        K, x, w, b = _linear_checks(x, w, b, activation)
        backend_kernels("gemm", ("g", g), ("out", out), ("grad_w", grad_w), ("grad_b", grad_b))
        N, OUT = x.shape[0], w.shape[0]
        float_array(g, "g", 2)
        same_dtype(("x", x), ("g", g))
        shape_is(g, "g (the gradient of linear's output)", (N, OUT))
        g = _contiguous(g)
        if activation == "relu" and out is not None:
            float_array(out, "out", 2)
            same_dtype(("x", x), ("out", out))
            shape_is(out, "out (the forward output of linear)", (N, OUT))
            out = _contiguous(out)
        if grad_w is not None:
            _grad_into(grad_w, "grad_w", w)
        if grad_b is not None:
            if b is None:
                raise ValueError("grad_b was given but linear has no bias (b is None)")
            _grad_into(grad_b, "grad_b", b)
    relu = activation == "relu"
    if relu and out is None:
        out = linear(x, w, b, activation)
    return _linear_backward_checked(K, g, x, w, b, relu, out, input_grad, grad_w, grad_b,
                                    add_w, add_b)


def _linear_backward_checked(K, g, x, w, b, relu, out, input_grad, grad_w, grad_b, add_w,
                             add_b):
    """linear_backward after its checks (``out``: the forward output, given when ``relu``);
    the tape's linear rule calls it straight for arguments its forward checked."""
    N, OUT = x.shape[0], w.shape[0]
    db = None
    dy = g
    write_b = grad_b is not None and not add_b  # db written straight into grad_b
    if relu or b is not None:
        db = grad_b if write_b else zeros((OUT,), x.dtype)
        if g.size:
            dy = empty((N, OUT), x.dtype)
            K.linear_grad_out(g, out if relu else g, dy, db, relu)
        elif write_b:
            db[...] = 0
    dx = None
    if input_grad:
        dx = _run_gemm(K, dy, w, empty(x.shape, x.dtype), False, False)  # (N,OUT) @ (OUT,IN)
    dw = None
    if grad_w is None:
        dw = _run_gemm(K, dy, x, empty(w.shape, w.dtype), True, False)  # (N,OUT)^T @ (N,IN)
    else:
        _run_gemm(K, dy, x, grad_w, True, False, accumulate=add_w)
    if b is None or grad_b is not None:
        if grad_b is not None and not write_b:
            grad_b += db
        db = None
    return dx, dw, db
