"""The glue operations of Tensors, each with its gradient next to its forward rule.

These run on the array library of the data (NumPy or CuPy), because they are
what a loss or a small model needs between the kernels, not kernels: ``+ - * /``
with broadcasting, ``@``, negation, ``**`` with a scalar, ``exp``, ``log``,
``abs``, ``sqrt``, ``clip``/``maximum``/``minimum`` with scalars, ``sum``/``mean``
over axes, ``reshape``, ``transpose``, indexing, ``concatenate``, ``stack``.

Each rule is a forward expression and a backward closure that gets the output
gradient ``g`` and returns one gradient per Tensor input. Where an input was
broadcast, its gradient is summed back to its shape (``_unbroadcast``).
Masks are applied with a select, never with a multiply by 0, so NaN in ``g``
does not leak where the gradient is 0 (PyTorch's rule).
"""

import numpy as np

from ..device import array_module, is_gpu_array, to_numpy
from ..device import to_device as move_array
from . import engine
from .tensor import Tensor, array_module_of


def _data(x):
    return x.data if isinstance(x, Tensor) else x


def _tensors(*values):
    return [v for v in values if isinstance(v, Tensor)]


def _array(x):
    """NumPy reductions over every axis return scalars; Tensors hold arrays (0-d here)."""
    return np.asarray(x) if isinstance(x, np.generic) else x


def _unbroadcast(g, shape, dtype):
    """Sum ``g`` over the axes that broadcasting added or stretched, back to ``shape``."""
    if tuple(g.shape) != tuple(shape):
        extra = g.ndim - len(shape)
        if extra:
            g = g.sum(axis=tuple(range(extra)))
        stretched = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
        if stretched:
            g = g.sum(axis=stretched, keepdims=True)
    return g if g.dtype == dtype else g.astype(dtype)


def _check_same_place(a, b):
    if is_gpu_array(a) != is_gpu_array(b) and hasattr(a, "shape") and hasattr(b, "shape"):
        raise ValueError(
            f"cannot combine arrays on two devices: a {type(a).__module__}.{type(a).__name__} "
            f"and a {type(b).__module__}.{type(b).__name__}; move one with .to(device)"
        )


def _binary(name, a, b, forward, grad_a, grad_b, saves=True):
    """A broadcasting binary op; ``grad_a(g, a, b, out)`` etc. give the full-shape grads.
    ``saves``: whether the gradients read the input values (not for + and -)."""
    ad, bd = _data(a), _data(b)
    _check_same_place(ad, bd)
    out = Tensor(_array(forward(ad, bd)))
    inputs = _tensors(a, b)
    if not engine.needs_grad(inputs):
        return out
    od = out.data

    def backward(g):
        grads = []
        if isinstance(a, Tensor):
            grads.append(_unbroadcast(grad_a(g, ad, bd, od), a.shape, a.dtype)
                         if a.requires_grad else None)
        if isinstance(b, Tensor):
            grads.append(_unbroadcast(grad_b(g, ad, bd, od), b.shape, b.dtype)
                         if b.requires_grad else None)
        return grads

    return engine.record(out, name, inputs, backward, inputs if saves else ())


def add(a, b):
    return _binary("add", a, b, lambda x, y: x + y,
                   lambda g, x, y, o: g, lambda g, x, y, o: g, saves=False)


def sub(a, b):
    return _binary("sub", a, b, lambda x, y: x - y,
                   lambda g, x, y, o: g, lambda g, x, y, o: -g, saves=False)


def mul(a, b):
    return _binary("mul", a, b, lambda x, y: x * y,
                   lambda g, x, y, o: g * y, lambda g, x, y, o: g * x)


def div(a, b):
    return _binary("div", a, b, lambda x, y: x / y,
                   lambda g, x, y, o: g / y, lambda g, x, y, o: -g * x / (y * y))


def _unary(name, a, forward, grad):
    """An element-wise op on one Tensor; ``grad(g, x, out)`` gives dx."""
    xd = a.data
    out = Tensor(_array(forward(xd)))
    if not engine.needs_grad((a,)):
        return out
    od = out.data
    return engine.record(out, name, (a,), lambda g: (grad(g, xd, od),), (a, out))


def neg(a):
    return _unary("neg", a, lambda x: -x, lambda g, x, o: -g)


def power(a, exponent):
    """``a ** exponent`` for a scalar exponent."""
    if isinstance(exponent, Tensor) or hasattr(exponent, "shape"):
        raise TypeError("Tensor ** takes a scalar exponent; for a Tensor exponent use "
                        "exp(b * log(a))")
    p = exponent
    return _unary("pow", a, lambda x: x ** p, lambda g, x, o: g * (p * x ** (p - 1)))


def exp(a):
    return _unary("exp", a, lambda x: array_module_of(x).exp(x), lambda g, x, o: g * o)


def log(a):
    return _unary("log", a, lambda x: array_module_of(x).log(x), lambda g, x, o: g / x)


def absolute(a):
    return _unary("abs", a, lambda x: abs(x), lambda g, x, o: g * array_module_of(x).sign(x))


def sqrt(a):
    return _unary("sqrt", a, lambda x: array_module_of(x).sqrt(x), lambda g, x, o: g / (2 * o))


def _select(mask, g):
    return array_module_of(g).where(mask, g, g.dtype.type(0))


def clip(a, min=None, max=None):
    """Clamp to [min, max] (either may be None); the gradient passes where
    ``min <= a <= max`` (inclusive, as torch.clamp)."""
    if min is None and max is None:
        raise ValueError("clip needs min or max")
    for name, bound in (("min", min), ("max", max)):
        if isinstance(bound, Tensor) or hasattr(bound, "shape"):
            raise TypeError(f"clip takes scalar bounds, got an array for {name}")

    def forward(x):
        return array_module_of(x).clip(x, min, max)

    def grad(g, x, o):
        inside = True
        if min is not None:
            inside = x >= min
        if max is not None:
            inside = inside & (x <= max) if min is not None else x <= max
        return _select(inside, g)

    return _unary("clip", a, forward, grad)


def maximum(a, value):
    """Element-wise max with a scalar (``clip(a, min=value)``)."""
    return clip(a, min=value)


def minimum(a, value):
    """Element-wise min with a scalar (``clip(a, max=value)``)."""
    return clip(a, max=value)


def _axes(axis, ndim):
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    return tuple(int(ax) % ndim for ax in axes)


def sum(a, axis=None, keepdims=False):
    """Sum over ``axis`` (all by default)."""
    axes = _axes(axis, a.ndim)
    shape = a.shape

    def grad(g, x, o):
        if not keepdims:
            g = g.reshape([1 if i in axes else n for i, n in enumerate(shape)])
        return array_module_of(g).broadcast_to(g, shape)

    return _unary("sum", a, lambda x: _array(x.sum(axis=axes, keepdims=keepdims)), grad)


def mean(a, axis=None, keepdims=False):
    """Mean over ``axis`` (all by default)."""
    axes = _axes(axis, a.ndim)
    count = 1
    for ax in axes:
        count *= a.shape[ax]
    shape = a.shape

    def grad(g, x, o):
        if not keepdims:
            g = g.reshape([1 if i in axes else n for i, n in enumerate(shape)])
        return array_module_of(g).broadcast_to(g / count, shape)

    return _unary("mean", a, lambda x: _array(x.mean(axis=axes, keepdims=keepdims)), grad)


def _view(name, a, forward, grad):
    """Ops whose result may share memory with the input share its version counter too."""
    out = Tensor(_array(forward(a.data)), False, a._version)
    if not engine.needs_grad((a,)):
        return out
    return engine.record(out, name, (a,), lambda g: (grad(g),))


def reshape(a, *shape):
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    old = a.shape
    return _view("reshape", a, lambda x: x.reshape(shape), lambda g: g.reshape(old))


def transpose(a, *axes):
    """Permute the axes (reverse them when none are given), as ``ndarray.transpose``."""
    if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
        axes = tuple(axes[0])
    perm = tuple(range(a.ndim))[::-1] if not axes else tuple(int(ax) % a.ndim for ax in axes)
    inverse = tuple(np.argsort(perm))
    return _view("transpose", a, lambda x: x.transpose(perm), lambda g: g.transpose(inverse))


def _is_basic(index):
    items = index if isinstance(index, tuple) else (index,)
    return all(isinstance(i, (int, np.integer, slice)) or i is None or i is Ellipsis
               for i in items)


def getitem(a, index):
    """``a[index]``: basic indexing is a view; integer/boolean arrays gather (and the
    gradient scatters back, adding where an index repeats)."""
    if isinstance(index, Tensor):
        index = index.data
    elif isinstance(index, tuple):
        index = tuple(i.data if isinstance(i, Tensor) else i for i in index)
    shape, dtype = a.shape, a.dtype
    basic = _is_basic(index)

    def grad(g):
        xp = array_module_of(g)
        dx = xp.zeros(shape, dtype)
        if basic:
            dx[index] = g
        elif xp is np:
            np.add.at(dx, index, g)
        else:
            import cupyx
            cupyx.scatter_add(dx, index, g)
        return dx

    if basic:
        return _view("getitem", a, lambda x: x[index], grad)
    out = Tensor(_array(a.data[index]))
    if not engine.needs_grad((a,)):
        return out
    return engine.record(out, "getitem", (a,), lambda g: (grad(g),))


def matmul(a, b):
    """``a @ b``: 2-D float operands of one dtype run the nnkern GEMM kernel
    (``F.matmul``); other shapes (batched, vectors) use the array library."""
    ad, bd = _data(a), _data(b)
    if (getattr(ad, "ndim", 0) == 2 and getattr(bd, "ndim", 0) == 2 and ad.dtype == bd.dtype
            and ad.dtype.kind == "f"):
        import nnkern.functional as F
        return F.matmul(a if isinstance(a, Tensor) else Tensor(ad),
                        b if isinstance(b, Tensor) else Tensor(bd))

    def swap(x):
        return x.swapaxes(-1, -2) if x.ndim >= 2 else x

    def grad_a(g, x, y, o):
        if y.ndim == 1:
            return g[..., None] * y if x.ndim > 1 else g * y
        if x.ndim == 1:
            return (g[..., None, :] @ swap(y))[..., 0, :]
        return g @ swap(y)

    def grad_b(g, x, y, o):
        if x.ndim == 1:
            return x[:, None] * g[..., None, :] if y.ndim > 1 else g * x
        if y.ndim == 1:
            return (swap(x) @ g[..., None])[..., 0]
        return swap(x) @ g

    return _binary("matmul", a, b, lambda x, y: x @ y, grad_a, grad_b)


def concatenate(tensors, axis=0):
    """Join Tensors along an existing axis; each gets its slice of the gradient."""
    tensors = list(tensors)
    if not tensors:
        raise ValueError("concatenate needs at least one Tensor")
    datas = [_data(t) for t in tensors]
    xp = array_module_of(datas[0])
    out = Tensor(xp.concatenate(datas, axis=axis))
    inputs = _tensors(*tensors)
    if not engine.needs_grad(inputs):
        return out
    ax = int(axis) % out.ndim
    bounds = np.cumsum([0] + [d.shape[ax] for d in datas])

    def backward(g):
        grads = []
        for t, lo, hi in zip(tensors, bounds[:-1], bounds[1:]):
            if isinstance(t, Tensor):
                index = (slice(None),) * ax + (slice(int(lo), int(hi)),)
                grads.append(g[index] if t.requires_grad else None)
        return grads

    return engine.record(out, "concatenate", inputs, backward)


def stack(tensors, axis=0):
    """Join Tensors of one shape along a new axis."""
    tensors = list(tensors)
    if not tensors:
        raise ValueError("stack needs at least one Tensor")
    datas = [_data(t) for t in tensors]
    xp = array_module_of(datas[0])
    out = Tensor(xp.stack(datas, axis=axis))
    inputs = _tensors(*tensors)
    if not engine.needs_grad(inputs):
        return out
    ax = int(axis) % out.ndim

    def backward(g):
        return [xp.take(g, i, axis=ax) if t.requires_grad else None
                for i, t in enumerate(tensors) if isinstance(t, Tensor)]

    return engine.record(out, "stack", inputs, backward)


def astype(a, dtype):
    dtype = np.dtype(dtype)
    source = a.dtype
    out = Tensor(a.data.astype(dtype))
    if not engine.needs_grad((a,)) or dtype.kind != "f":
        return out
    return engine.record(out, "astype", (a,), lambda g: (g.astype(source),))


def to_device(a, device):
    """Move ``a`` to a backend's memory; the gradient moves back."""
    moved = move_array(a.data, device)
    if moved is a.data:
        return a
    out = Tensor(moved)
    if not engine.needs_grad((a,)):
        return out
    source_gpu = not isinstance(a.data, np.ndarray)

    def backward(g):
        return (array_module("cuda").asarray(g) if source_gpu else to_numpy(g),)

    return engine.record(out, "to", (a,), backward)


# Tensor methods and operators, each a rule above ------------------------------------------


def _reflect(op):
    return lambda self, other: op(other, self)


Tensor.__add__ = add
Tensor.__radd__ = _reflect(add)
Tensor.__sub__ = sub
Tensor.__rsub__ = _reflect(sub)
Tensor.__mul__ = mul
Tensor.__rmul__ = _reflect(mul)
Tensor.__truediv__ = div
Tensor.__rtruediv__ = _reflect(div)
Tensor.__matmul__ = matmul
Tensor.__rmatmul__ = _reflect(matmul)
Tensor.__neg__ = neg
Tensor.__pow__ = power
Tensor.__abs__ = absolute
Tensor.__getitem__ = getitem
Tensor.exp = exp
Tensor.log = log
Tensor.abs = absolute
Tensor.sqrt = sqrt
Tensor.clip = clip
Tensor.sum = sum
Tensor.mean = mean
Tensor.reshape = reshape
Tensor.transpose = transpose
Tensor.T = property(lambda self: transpose(self))


def _iter(self):
    for i in range(len(self)):
        yield self[i]


Tensor.__iter__ = _iter
