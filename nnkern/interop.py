"""Arrays in and out of nnkern without copies: DLPack, the CUDA array interface, and the one
conversion that every F op and layer applies to its array arguments.

    >>> import numpy as np, nnkern
    >>> a = np.zeros(3, np.float32)
    >>> t = nnkern.from_dlpack(a)          # an nnkern.Tensor on a's memory
    >>> t.data[0] = 7.0
    >>> float(a[0])
    7.0

In: ``from_dlpack(obj)`` wraps any array that exports ``__dlpack__`` (NumPy, CuPy, a torch
tensor, a JAX array) in an ``nnkern.Tensor`` sharing its memory, and every op of
``nnkern.functional`` and every layer takes such arrays (or ones with
``__cuda_array_interface__``, such as Numba device arrays) directly: they are converted once,
at the boundary, to the array type of their memory (NumPy on the host, CuPy on the GPU),
without a copy. Out: ``nnkern.Tensor`` exports ``__dlpack__``/``__dlpack_device__``, and
the results of F ops are NumPy/CuPy arrays, which export them too, so
``torch.from_dlpack(result)`` shares the memory.

A plain NumPy or CuPy argument costs the boundary one type test (``PLAIN_TYPES``);
anything that is not an array and cannot become one is a ``TypeError`` that names the type
received and the types accepted (``ACCEPTED``).
"""

import numpy as np

from .autograd.tensor import Tensor
from .device import _DL_CPU, _DL_CUDA_HOST, _dlpack_device_type, _is_cupy, array_module, to_gpu

ACCEPTED = ("numpy.ndarray, cupy.ndarray, nnkern.Tensor, or an array exporting __dlpack__ or "
            "__cuda_array_interface__ (torch.Tensor, jax.Array, a Numba device array)")

# Argument types an F op takes as they are: the boundary looks at nothing else. CuPy's
# ndarray joins the set the first time one passes (no CuPy import here). Tuples and lists
# are not in it: the optimizer steps take lists (or tuples) of arrays or Tensors.
PLAIN_TYPES = {np.ndarray, int, float, bool, str, type(None), np.float32, np.float64,
               np.int32, np.int64, np.bool_}


def type_name(x):
    """``module.Class`` of ``x`` for messages (``torch.Tensor``, ``list``)."""
    cls = type(x)
    module = cls.__module__
    return cls.__name__ if module == "builtins" else f"{module.split('.')[0]}.{cls.__name__}"


def not_an_array(name, x):
    """The message for an argument that should be an array and is not."""
    return f"{name} must be an array, got {type_name(x)} (accepted: {ACCEPTED})"


def is_foreign_array(x):
    """True for an array of another library that nnkern converts at its boundary (a torch
    tensor, a JAX array, a Numba device array), False for NumPy, CuPy and nnkern Tensors."""
    if isinstance(x, (np.ndarray, Tensor)) or _is_cupy(x):
        return False
    return hasattr(x, "__dlpack__") or hasattr(x, "__cuda_array_interface__")


def as_array(x, name="x"):
    """``x`` as the array type of its memory, sharing it: NumPy for host memory, CuPy for
    GPU memory. NumPy and CuPy arrays come back as they are, a Tensor gives its data.

    >>> as_array(np.ones(2)).tolist()
    [1.0, 1.0]
    >>> as_array([1.0], "x")
    Traceback (most recent call last):
    ...
    TypeError: x must be an array, got list (accepted: numpy.ndarray, cupy.ndarray, \
nnkern.Tensor, or an array exporting __dlpack__ or __cuda_array_interface__ (torch.Tensor, \
jax.Array, a Numba device array))

    GPU memory is converted (to CuPy) only when the current backend is "cuda"; on a host
    backend a GPU array stays as it is, so the op's device check names it.
    """
    if isinstance(x, np.ndarray):
        return x
    if isinstance(x, Tensor):
        return x.data
    if _is_cupy(x):
        return x
    if not (hasattr(x, "__dlpack__") or hasattr(x, "__cuda_array_interface__")):
        raise TypeError(not_an_array(name, x))
    try:
        kind = _dlpack_device_type(x)
        if kind in (_DL_CPU, _DL_CUDA_HOST):
            return np.from_dlpack(x)
        if array_module() is np:
            return x  # GPU memory on a host backend: the op's device check names it
        return to_gpu(x)
    except (BufferError, RuntimeError, TypeError, ValueError) as exc:
        dtype = getattr(x, "dtype", None)
        of = f" of dtype {dtype}" if dtype is not None else ""
        hint = ""
        if getattr(x, "requires_grad", False):
            hint = (f"; pass {name}.detach() for a plain array, or use nnkern.torch's functions "
                    f"and modules, which run nnkern's kernels inside torch's autograd")
        raise TypeError(f"{name}: a {type_name(x)}{of} cannot be shared with nnkern "
                        f"({type(exc).__name__}: {exc}){hint}") from None


def _convert(value, name):
    if type(value) in PLAIN_TYPES:
        return value
    if _is_cupy(value):
        PLAIN_TYPES.add(type(value))
        return value
    if isinstance(value, (list, tuple)):
        items = [_convert(v, f"{name}[{i}]") for i, v in enumerate(value)]
        if all(a is b for a, b in zip(items, value)):
            return value
        return type(value)(items)
    if is_foreign_array(value):
        return as_array(value, name)
    return value


def convert_arguments(params, args, kwargs):
    """The F-op boundary: every foreign array among ``args``/``kwargs`` (and inside list or
    tuple arguments, for the optimizer steps) becomes a NumPy/CuPy array on the same memory;
    everything else passes unchanged (the op's own checks judge it). ``params`` names the
    positional arguments for messages."""
    args = tuple(_convert(a, params[i] if i < len(params) else f"argument {i}")
                 for i, a in enumerate(args))
    kwargs = {k: _convert(v, k) for k, v in kwargs.items()}
    return args, kwargs


def from_dlpack(obj):
    """An ``nnkern.Tensor`` on the memory of ``obj``, any array exporting ``__dlpack__``
    (NumPy, CuPy, torch, JAX), without a copy: a write on either side is seen by the other.

    >>> import numpy as np
    >>> from_dlpack(np.arange(3.0)).shape
    (3,)
    """
    if isinstance(obj, Tensor):
        return obj.detach()
    if not hasattr(obj, "__dlpack__"):
        raise TypeError(f"from_dlpack takes an array exporting __dlpack__ (numpy, cupy, torch, "
                        f"jax), got {type_name(obj)}")
    return Tensor(as_array(obj, "obj"))


__all__ = ["ACCEPTED", "as_array", "convert_arguments", "from_dlpack", "is_foreign_array",
           "not_an_array"]
