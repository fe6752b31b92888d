"""Validation shared by every op of ``nnkern.functional``.

Every message says what was expected and what came, so a user can fix the
call without reading the kernel.
"""

import itertools

import numpy as np

from .._dispatch import kernels
from ..device import cuda_simulated, get_device, is_gpu_array, where
from ..interop import not_an_array  # the boundary (interop) converts; this names the types

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


class DeviceMismatchError(ValueError):
    """Arrays of one op live on different devices, or not on the current one."""


def backend_kernels(family, *arrays):
    """Check that ``arrays`` live where the current backend works; return its kernels.

    Host backends take NumPy arrays; the CUDA backend takes CuPy arrays
    (NumPy under the simulator). A GPU array is never copied to the host
    silently, nor a host array to the GPU.
    """
    backend = get_device()
    wants_gpu = backend == "cuda" and not cuda_simulated()
    for name, x in arrays:
        if x is None:
            continue
        on_gpu = is_gpu_array(x)
        if on_gpu != wants_gpu:
            raise DeviceMismatchError(
                f"{name} is a {type(x).__module__}.{type(x).__name__} on the {where(x)}, but the "
                f"current device is '{backend}', which needs "
                f"{'cupy arrays on the GPU' if wants_gpu else 'numpy arrays on the host'}; "
                f"move it with nnkern.to_device({name}, '{backend}')"
            )
    present = [(n, x) for n, x in arrays if x is not None]
    for (n1, x1), (n2, x2) in itertools.pairwise(present):
        if is_gpu_array(x1) and is_gpu_array(x2) and x1.device != x2.device:
            raise DeviceMismatchError(f"{n1} is on {x1.device} but {n2} is on {x2.device}")
    return kernels(family, backend)


def float_array(x, name, ndim=None, layout=None):
    """Check ``x`` is a float32/float64 array (of ``ndim`` dims when given)."""
    if not hasattr(x, "dtype") or not hasattr(x, "shape"):
        raise TypeError(not_an_array(name, x))
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32 or float64, got dtype {x.dtype}")
    if ndim is not None and x.ndim != ndim:
        hint = f" laid out as {layout}" if layout else ""
        raise ValueError(f"{name} must have {ndim} dimensions{hint}, got shape {tuple(x.shape)}")
    return x


def same_dtype(*named):
    """Check all given (name, array) pairs share one dtype; return it."""
    present = [(n, x) for n, x in named if x is not None]
    first_name, first = present[0]
    for name, x in present[1:]:
        if x.dtype != first.dtype:
            raise TypeError(
                f"{name} has dtype {x.dtype} but {first_name} has {first.dtype}; "
                f"cast them to one float dtype"
            )
    return first.dtype


def shape_is(x, name, shape):
    """Check ``x.shape == shape``."""
    if tuple(x.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(x.shape)}")


def int_pair(value, name, minimum):
    """Normalise an int or pair of ints to a tuple ``(h, w)``, each >= ``minimum``."""
    if isinstance(value, (int, np.integer)):
        pair = (int(value), int(value))
    elif isinstance(value, (tuple, list)) and len(value) == 2 and all(
        isinstance(v, (int, np.integer)) for v in value
    ):
        pair = (int(value[0]), int(value[1]))
    else:
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    if min(pair) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return pair


def labels_array(labels, name, n, num_classes):
    """Check integer labels of shape (n,) lie in [0, num_classes)."""
    if not hasattr(labels, "dtype"):
        raise TypeError(not_an_array(name, labels))
    if getattr(labels.dtype, "kind", "") not in "iu":
        got = labels.dtype
        raise TypeError(f"{name} must be an integer array of class indices, got {got}")
    if labels.ndim != 1 or labels.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},), got {tuple(labels.shape)}")
    # One reduction (one host sync on a GPU) in the common case; the range is
    # only computed for the message once a label is known to be out of range.
    if n and bool(((labels < 0) | (labels >= num_classes)).any()):
        lo, hi = int(labels.min()), int(labels.max())
        raise ValueError(
            f"{name} must lie in [0, {num_classes}) for {num_classes} classes, "
            f"got values in [{lo}, {hi}]"
        )
    return labels


def empty(shape, dtype):
    """Allocate an uninitialised output on the current backend."""
    from ..device import array_module
    return array_module().empty(shape, dtype=dtype)


def zeros(shape, dtype):
    """Allocate a zeroed output on the current backend."""
    from ..device import array_module
    return array_module().zeros(shape, dtype=dtype)


def contiguous(x):
    """x as a C-contiguous array of the current backend (no copy when it already is)."""
    from ..device import array_module
    return array_module().ascontiguousarray(x)
