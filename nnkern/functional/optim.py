"""Op surface of the 'optim' kernel family: in-place SGD and Adam updates.

Each op takes one array or equal-length lists of arrays (any shapes, each
C-contiguous), updates parameters and optimizer state IN PLACE with
torch.optim semantics, and returns the updated arrays as a tuple so callers
and tests can use them directly. The backend kernel runs once per array; the
model layer passes one flat buffer per dtype, so a training step is one call.

    >>> import numpy as np, nnkern
    >>> import nnkern.functional as F
    >>> p, g, buf = np.ones(3), np.full(3, 0.5), np.zeros(3)
    >>> with nnkern.device("numpy"):
    ...     p, buf = F.sgd_step(p, g, buf, lr=0.1, momentum=0.9)
    >>> p
    array([0.95, 0.95, 0.95])
"""

import math
import numbers

import numpy as np

from ._checks import (
    FLOAT_DTYPES,
    backend_kernels,
    flag,
    float_array,
    real_number,
    same_dtype,
    writable,
)

_F32, _F64 = FLOAT_DTYPES
_NDARRAY = np.ndarray

__all__ = ["adam_step", "sgd_step"]


def _is_array(x):
    return hasattr(x, "dtype") and hasattr(x, "shape")


def _as_list(value, name, count=None):
    """(list of arrays, was it one array) for one array or a list/tuple of arrays."""
    if _is_array(value):
        items, single = [value], True
    elif isinstance(value, (list, tuple)):
        items, single = list(value), False
    else:
        raise TypeError(f"{name} must be an array or a list of arrays, got {type(value).__name__}")
    if count is not None and len(items) != count:
        raise ValueError(
            f"{name} must hold as many arrays as params ({count}), got {len(items)}"
        )
    return items, single


def _groups(params, **state):
    """Validate params and same-length state lists; return (lists dict, single flag, count)."""
    ps, single = _as_list(params, "params")
    lists = {"params": ps}
    for name, value in state.items():
        items, s = _as_list(value, name, len(ps))
        if s != single:
            raise TypeError(
                f"params and {name} must both be arrays or both be lists, "
                f"got {type(params).__name__} and {type(value).__name__}"
            )
        lists[name] = items
    for i in range(len(ps)):
        where = "" if single else f"[{i}]"
        for name, items in lists.items():  # params first: the others are checked against it
            x = items[i]
            float_array(x, f"{name}{where}")
            if name != "params" and tuple(x.shape) != tuple(ps[i].shape):
                raise ValueError(
                    f"{name}{where} must have shape {tuple(ps[i].shape)}, got "
                    f"{tuple(x.shape)} (it pairs with params{where})"
                )
            if name != "grads":
                if not x.flags.c_contiguous:
                    raise ValueError(
                        f"{name}{where} must be C-contiguous (it is updated in place), got a "
                        f"non-contiguous array of shape {tuple(x.shape)}"
                    )
                writable(x, f"{name}{where}")
        same_dtype(*[(f"{name}{where}", items[i]) for name, items in lists.items()])
    return lists, single, len(ps)


def _plain_floats(lr, beta1, beta2, eps, weight_decay):
    """True when the hyperparameters are Python floats that pass adam_step's checks."""
    return (type(lr) is float and type(beta1) is float and type(beta2) is float
            and type(eps) is float and type(weight_decay) is float
            and 0.0 <= lr < math.inf and 0.0 <= beta1 < 1.0 and 0.0 <= beta2 < 1.0
            and 0.0 <= eps < math.inf and 0.0 <= weight_decay < math.inf)


def _plain_buffers(params, *others):
    """True when every argument is a C-contiguous NumPy array of params' shape and float
    dtype, and every one but the gradient (the first of ``others``) is writable: what
    _groups checks, for one array each."""
    if type(params) is not _NDARRAY:
        return False
    dtype, shape = params.dtype, params.shape
    if dtype is not _F32 and dtype is not _F64:
        return False
    for i, x in enumerate((params, *others)):
        if type(x) is not _NDARRAY or x.dtype is not dtype or x.shape != shape:
            return False
        flags = x.flags  # a new object at each access
        if not flags.c_contiguous or (i != 1 and not flags.writeable):
            return False
    return True


def _flat(x):
    """A 1-D view of a C-contiguous array (a copy only for a non-contiguous read-only grad)."""
    if x.flags.c_contiguous:
        return x if x.ndim == 1 else x.reshape(-1)  # a flat buffer as it is: no new view
    return x.ravel()


def _result(lists, names, single):
    if single:
        return tuple(lists[n][0] if lists[n] is not None else None for n in names)
    return tuple(lists[n] for n in names)


def sgd_step(params, grads, velocities, lr, momentum=0.0, weight_decay=0.0, nesterov=False):
    """One SGD step in place (torch.optim.SGD, dampening 0); returns ``(params, velocities)``.

    ``d = grad + weight_decay * p; buf = momentum * buf + d;
    d = d + momentum * buf if nesterov else buf; p -= lr * d``.
    ``velocities`` start at zero (torch's first-step ``buf = d`` is the same
    update). With ``momentum == 0`` no buffer is used: ``velocities`` may be
    None and is left untouched.
    """
    lr = real_number(lr, "lr", 0.0)
    momentum = real_number(momentum, "momentum", 0.0)
    weight_decay = real_number(weight_decay, "weight_decay", 0.0)
    nesterov = flag(nesterov, "nesterov")
    if nesterov and momentum == 0:
        raise ValueError("nesterov=True requires momentum > 0, got momentum=0")
    if velocities is None:
        if momentum != 0:
            raise ValueError(
                f"velocities must be arrays like params when momentum > 0, got None "
                f"(momentum={momentum})"
            )
        lists, single, count = _groups(params, grads=grads)
        lists["velocities"] = None
    else:
        lists, single, count = _groups(params, grads=grads, velocities=velocities)
    for i in range(count):
        p, g = lists["params"][i], lists["grads"][i]
        if velocities is not None:
            buf = lists["velocities"][i]
            K = backend_kernels("optim", ("params", p), ("grads", g), ("velocities", buf))
            buf = _flat(buf)
        else:
            # never read at momentum 0; an empty slice, not p itself: the CUDA simulator
            # copies each argument back in order, and a second copy of p would undo the step
            K = backend_kernels("optim", ("params", p), ("grads", g))
            buf = _flat(p)[:0]
        K.sgd_step(_flat(p), _flat(g), buf, lr, momentum, weight_decay, nesterov)
    return _result(lists, ("params", "velocities"), single)


def adam_step(params, grads, m, v, step, lr, beta1=0.9, beta2=0.999, eps=1e-8,
              weight_decay=0.0):
    """One Adam step in place (torch.optim.Adam, amsgrad off); returns ``(params, m, v)``.

    ``step`` is the 1-based count of this step (torch increments before
    updating). ``d = grad + weight_decay * p``; ``m``, ``v`` are the first and
    second moments (start at zero); the bias corrections use ``step``.
    """
    if (type(step) is int and 1 <= step < 2**63
            and _plain_floats(lr, beta1, beta2, eps, weight_decay)
            and _plain_buffers(params, grads, m, v)):
        # the optimizer's call (one flat buffer per dtype, float hyperparameters) passes
        # every check below in these two tests: 12 of the 52 us of the MLP step's Adam were
        # the full checks. Anything else takes them, and they say what is wrong.
        K = backend_kernels("optim", ("params", params))
        K.adam_step(_flat(params), _flat(grads), _flat(m), _flat(v), step, lr, beta1, beta2,
                    eps, weight_decay)
        return params, m, v
    if (isinstance(step, (bool, np.bool_)) or not isinstance(step, numbers.Integral)
            or not 1 <= step < 2**63):
        raise ValueError(
            f"step must be an int >= 1 (the 1-based step count) and < 2^63, got {step!r}")
    lr = real_number(lr, "lr", 0.0)
    beta1 = real_number(beta1, "beta1", 0.0, 1.0, hi_open=True)
    beta2 = real_number(beta2, "beta2", 0.0, 1.0, hi_open=True)
    eps = real_number(eps, "eps", 0.0)
    weight_decay = real_number(weight_decay, "weight_decay", 0.0)
    lists, single, count = _groups(params, grads=grads, m=m, v=v)
    for i in range(count):
        arrays = [(name, lists[name][i]) for name in ("params", "grads", "m", "v")]
        K = backend_kernels("optim", *arrays)
        p, g, m_i, v_i = (_flat(a) for _, a in arrays)
        K.adam_step(p, g, m_i, v_i, int(step), lr, beta1, beta2, eps, weight_decay)
    return _result(lists, ("params", "m", "v"), single)
