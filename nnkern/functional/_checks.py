"""Validation shared by every op of ``nnkern.functional``.

Every message names the argument, says what was expected and what came
(type, dtype, shape, device, range), so a user can fix the call without
reading the kernel. Each kind of argument has one helper here, so every op
refuses the same bad input the same way:

    arrays          float_array, same_dtype, shape_is, labels_array, writable
    devices         backend_kernels (also returns the backend's kernel module)
    scalars         int_pair, int_value, real_number, flag, choice, shape_tuple
    outputs         empty, empty_like, zeros, contiguous

The common case is checked first and cheaply (a small op spends most of its
time here: see ``backend_kernels`` and ``float_array``); the messages are
only built once something is wrong.
"""

import itertools
import math
import numbers

import numpy as np

from .. import device as _device
from .._dispatch import kernels
from ..device import cuda_simulated, is_gpu_array, where
from ..interop import not_an_array  # the boundary (interop) converts; this names the types

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_F32, _F64 = FLOAT_DTYPES
_NDARRAY = np.ndarray

MAX_INT = 2**31 - 1
"""The largest size, stride, padding, dilation or group count an op takes. No array a
device holds has a dimension this long, and it keeps every size the kernels derive
from it (H + 2 * padding, OH * stride) far inside int64."""

_kernel_modules = {}  # (family, backend) -> kernel module, the dispatch cache


class DeviceMismatchError(ValueError):
    """Arrays of one op live on different devices, or not on the current one."""


def backend_kernels(family, *arrays):
    """Check that ``arrays`` (``(name, array)`` pairs) live where the current backend works;
    return its kernel module for ``family``.

    Host backends take NumPy arrays; the CUDA backend takes CuPy arrays
    (NumPy under the simulator). A GPU array is never copied to the host
    silently, nor a host array to the GPU.
    """
    backend = _device._current or _device.get_device()
    module = _kernel_modules.get((family, backend))
    if module is not None and backend != "cuda":
        # the common case, a host backend and NumPy arrays: no per-array work but a type test
        for _, x in arrays:
            if type(x) is not _NDARRAY and x is not None and is_gpu_array(x):
                _device_mismatch(arrays, backend, False)
        return module
    wants_gpu = backend == "cuda" and not cuda_simulated()
    _device_mismatch(arrays, backend, wants_gpu)
    module = kernels(family, backend)
    _kernel_modules[(family, backend)] = module
    return module


def _device_mismatch(arrays, backend, wants_gpu):
    for name, x in arrays:
        if x is None:
            continue
        if is_gpu_array(x) != wants_gpu:
            raise DeviceMismatchError(
                f"{name} is a {type(x).__module__}.{type(x).__name__} on the {where(x)}, but "
                f"the current device is '{backend}', which needs "
                f"{'cupy arrays on the GPU' if wants_gpu else 'numpy arrays on the host'}; "
                f"move it with nnkern.to_device({name}, '{backend}')"
            )
    present = [(n, x) for n, x in arrays if x is not None]
    for (n1, x1), (n2, x2) in itertools.pairwise(present):
        if is_gpu_array(x1) and is_gpu_array(x2) and x1.device != x2.device:
            raise DeviceMismatchError(f"{n1} is on {x1.device} but {n2} is on {x2.device}")


def float_array(x, name, ndim=None, layout=None):
    """Check ``x`` is a float32/float64 array (of ``ndim`` dims when given); return it."""
    dtype = getattr(x, "dtype", None)
    if type(x) is not _NDARRAY or (dtype is not _F32 and dtype is not _F64):
        if dtype is None or not hasattr(x, "shape") or isinstance(x, np.generic):
            raise TypeError(not_an_array(name, x))
        if dtype not in FLOAT_DTYPES:
            raise TypeError(f"{name} must be float32 or float64, got dtype {dtype}")
    if ndim is not None and x.ndim != ndim:
        hint = f" laid out as {layout}" if layout else ""
        raise ValueError(f"{name} must have {ndim} dimensions{hint}, got shape {tuple(x.shape)}")
    return x


def same_dtype(*named):
    """Check all given (name, array) pairs share one dtype; return it."""
    first_name, first = None, None
    for name, x in named:
        if x is None:
            continue
        if first is None:
            first_name, first = name, x.dtype
        elif x.dtype is not first and x.dtype != first:
            raise TypeError(
                f"{name} has dtype {x.dtype} but {first_name} has {first}; "
                f"cast them to one float dtype"
            )
    return first


def shape_is(x, name, shape):
    """Check ``x.shape == shape``."""
    if x.shape != shape and tuple(x.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(x.shape)}")


def writable(x, name, why="it is updated in place"):
    """Check the op may write into ``x`` (NumPy's ``writeable`` flag); return it."""
    flags = getattr(x, "flags", None)
    if flags is not None and not flags.writeable:
        raise ValueError(
            f"{name} is read-only ({why}); pass a writable array, e.g. {name}.copy()"
        )
    return x


def _is_int(value):
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def int_value(value, name, minimum, maximum=MAX_INT):
    """Check ``value`` is an int (not a bool) in ``[minimum, maximum]``; return it as int."""
    if not _is_int(value):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if not minimum <= value <= maximum:
        raise ValueError(f"{name} must lie in [{minimum}, {maximum}], got {value!r}")
    return int(value)


def int_pair(value, name, minimum, maximum=MAX_INT):
    """Normalise an int or pair of ints to a tuple ``(h, w)``, each in ``[minimum, maximum]``."""
    if _is_int(value):
        pair = (int(value), int(value))
    elif isinstance(value, (tuple, list)) and len(value) == 2 and all(map(_is_int, value)):
        pair = (int(value[0]), int(value[1]))
    else:
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    if min(pair) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    if max(pair) > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value!r}")
    return pair


def real_number(value, name, lo=None, hi=None, lo_open=False, hi_open=False, expected=None):
    """Check ``value`` is a finite real number (not a bool) within the given bounds; return
    it as a float. NaN and inf are refused: they would silently poison every result.

    The message says ``{name} must {expected}, got {value!r}``; ``expected`` defaults to
    "be a number in [lo, hi]" with the bounds as given (open ends in parentheses).
    """
    if not isinstance(value, numbers.Real) or isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    v = float(value)
    ok = math.isfinite(v)
    if ok and lo is not None:
        ok = v > lo if lo_open else v >= lo
    if ok and hi is not None:
        ok = v < hi if hi_open else v <= hi
    if not ok:
        if expected is None:
            lo_s = "(-inf" if lo is None else f"{'(' if lo_open else '['}{lo}"
            hi_s = "inf)" if hi is None else f"{hi}{')' if hi_open else ']'}"
            expected = f"be a number in {lo_s}, {hi_s}"
        raise ValueError(f"{name} must {expected}, got {value!r}")
    return v


def flag(value, name):
    """Check ``value`` is a bool (Python or NumPy); return it as bool."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {value!r}")
    return bool(value)


def choice(value, name, options):
    """Check ``value`` is one of ``options``; return it."""
    if not any(value is o or (isinstance(value, str) and value == o) for o in options):
        raise ValueError(f"{name} must be one of {options}, got {value!r}")
    return value


def shape_tuple(value, name, ndim):
    """Check ``value`` is a shape: a tuple or list of ``ndim`` ints in ``[0, 2^63)``."""
    if not (isinstance(value, (tuple, list)) and len(value) == ndim
            and all(_is_int(v) and 0 <= v < 2**63 for v in value)):
        raise ValueError(f"{name} must be a shape of {ndim} non-negative ints, got {value!r}")
    return tuple(int(v) for v in value)


def labels_array(labels, name, n, num_classes):
    """Check integer labels of shape (n,) lie in [0, num_classes)."""
    if not hasattr(labels, "dtype"):
        raise TypeError(not_an_array(name, labels))
    if getattr(labels.dtype, "kind", "") not in "iu":
        got = labels.dtype
        raise TypeError(f"{name} must be an integer array of class indices, got {got}")
    if labels.ndim != 1 or labels.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},), got {tuple(labels.shape)}")
    # One reduction (one host sync on a GPU) in the common case; the range is only
    # computed for the message once a label is known to be out of range.
    if n and bool(((labels < 0) | (labels >= num_classes)).any()):
        lo, hi = int(labels.min()), int(labels.max())
        raise ValueError(
            f"{name} must lie in [0, {num_classes}) for {num_classes} classes, "
            f"got values in [{lo}, {hi}]"
        )
    return labels


_HOST = ("numpy", "cpu")


def empty(shape, dtype):
    """Allocate an uninitialised output on the current backend."""
    if _device._current in _HOST:
        return np.empty(shape, dtype)
    return _device.array_module().empty(shape, dtype=dtype)


def empty_like(x):
    """An uninitialised output of x's shape and dtype on the current backend (C order)."""
    if _device._current in _HOST:
        return np.empty(x.shape, x.dtype)
    return _device.array_module().empty(x.shape, dtype=x.dtype)


def zeros(shape, dtype):
    """Allocate a zeroed output on the current backend."""
    return _device.array_module().zeros(shape, dtype=dtype)


def contiguous(x):
    """x as a C-contiguous array of the current backend (no copy when it already is)."""
    if type(x) is _NDARRAY and x.flags.c_contiguous:
        return x
    return _device.array_module().ascontiguousarray(x)
