"""Which backend runs the ops: "numpy" (the reference), "cpu" (Numba) or "cuda" (Numba CUDA).

The choice is global to the process, made once and changed explicitly:

    >>> import nnkern
    >>> nnkern.set_device("cpu")
    'cpu'
    >>> with nnkern.device("numpy"):
    ...     nnkern.get_device()
    'numpy'

``NNKERN_DEVICE`` sets the initial choice (default ``auto``). ``auto`` takes
CUDA when a usable GPU and CuPy are present, else the CPU. Asking for
``cuda`` where there is none raises and says why; nothing falls back.

Arrays: the host backends hold ``numpy.ndarray``; the CUDA backend holds
``cupy.ndarray``, except under Numba's CUDA simulator
(``NUMBA_ENABLE_CUDASIM=1``), where it holds NumPy arrays so the same CUDA
kernels run without a GPU. ``to_numpy`` and ``to_device`` take every array kind
that comes in (NumPy, CuPy, nnkern Tensors, torch tensors and anything else with
``__dlpack__`` or ``__cuda_array_interface__``, Numba device arrays) and copy only
when the memory must move between host and GPU.
"""

import contextlib
import os

import numpy as np

# Launch cost: by default Numba synchronises the CuPy stream of EVERY array
# argument of every launch (CUDA array interface v3). nnkern launches its
# kernels on the legacy default stream, which CuPy also uses by default and
# which is ordered against every blocking stream, so that sync buys nothing.
# It must be decided before numba.cuda loads; a user's own setting wins.
os.environ.setdefault("NUMBA_CUDA_ARRAY_INTERFACE_SYNC", "0")

BACKENDS = ("numpy", "cpu", "cuda")
INSTALL_GPU = ("install the GPU extra: pip install 'nnkern[cuda]' (CUDA 12 wheels, which also "
               "run on CUDA 13 drivers) or 'nnkern[cuda13]'")
CHOICES = ("auto",) + BACKENDS

_current = None
_auto_reason = ""
_cuda_cache = None


def cuda_simulated():
    """True when Numba's CUDA simulator is on (``NUMBA_ENABLE_CUDASIM=1``)."""
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")


def cuda_status():
    """Return ``(usable, reason)`` for the CUDA backend.

    Usable means numba-cuda finds a GPU and CuPy imports and sees it, or the
    CUDA simulator is on. The reason says what was found or what is missing.
    """
    global _cuda_cache
    if _cuda_cache is not None:
        return _cuda_cache
    if cuda_simulated():
        try:
            from numba import cuda
        except ImportError as exc:
            _cuda_cache = (False, f"NUMBA_ENABLE_CUDASIM=1 but numba-cuda is missing ({exc})")
        else:
            _cuda_cache = (True, "Numba CUDA simulator (NUMBA_ENABLE_CUDASIM=1), NumPy arrays")
        return _cuda_cache
    try:
        from numba import cuda
    except ImportError as exc:
        _cuda_cache = (False, f"numba-cuda is not installed ({exc})")
        return _cuda_cache
    try:
        available = cuda.is_available()
    except Exception as exc:  # noqa: BLE001 (a broken driver raises anything)
        available, why = False, f"CUDA driver error: {exc}"
    else:
        why = "numba-cuda finds no CUDA GPU or driver"
    if not available:
        _cuda_cache = (False, why)
        return _cuda_cache
    try:
        import cupy
        count = cupy.cuda.runtime.getDeviceCount()
    except ImportError as exc:
        why = f"a GPU is present but CuPy is not installed ({exc}); {INSTALL_GPU}"
        _cuda_cache = (False, why)
        return _cuda_cache
    except Exception as exc:  # noqa: BLE001 (CUDA runtime errors have many types)
        _cuda_cache = (False, f"a GPU is present but CuPy cannot use it ({exc})")
        return _cuda_cache
    if count < 1:
        _cuda_cache = (False, "CuPy sees no GPU")
    else:
        _cuda_cache = (True, f"GPU found: {gpu_name()}")
    return _cuda_cache


def gpu_name():
    """Name and memory of GPU 0 through CuPy, or None."""
    try:
        import cupy
        props = cupy.cuda.runtime.getDeviceProperties(0)
        name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
        return f"{name}, {props['totalGlobalMem'] / 2**30:.1f} GiB"
    except Exception:  # noqa: BLE001 (a name is optional: never fail for it)
        return None


def _resolve(name):
    global _auto_reason
    if not isinstance(name, str) or name.lower() not in CHOICES:
        raise ValueError(f"device must be one of {CHOICES}, got {name!r}")
    name = name.lower()
    if name == "auto":
        usable, reason = cuda_status()
        if usable and not cuda_simulated():
            _auto_reason = f"auto chose cuda: {reason}"
            return "cuda"
        if usable:
            reason = "the CUDA simulator is not a GPU"
        _auto_reason = f"auto chose cpu: no usable GPU ({reason})"
        return "cpu"
    if name == "cuda":
        usable, reason = cuda_status()
        if not usable:
            raise RuntimeError(f"device 'cuda' was asked for but is not usable: {reason}")
    _auto_reason = f"{name} chosen explicitly"
    return name


def set_device(name):
    """Choose the backend for all following ops; returns the resolved name.

    >>> set_device("numpy")
    'numpy'
    """
    global _current
    _current = _resolve(name)
    return _current


def get_device():
    """The current backend name: "numpy", "cpu" or "cuda" (never "auto")."""
    if _current is None:
        set_device(os.environ.get("NNKERN_DEVICE", "auto"))
    return _current


def device_reason():
    """One line saying how the current device was chosen."""
    get_device()
    return _auto_reason


@contextlib.contextmanager
def device(name):
    """Run a block on another backend, restoring the previous one after.

    >>> with device("numpy"):
    ...     pass
    """
    global _current, _auto_reason
    previous, previous_reason = get_device(), _auto_reason
    set_device(name)
    try:
        yield _current
    finally:
        _current, _auto_reason = previous, previous_reason


def is_gpu_array(x):
    """True for CuPy arrays (anything exposing ``__cuda_array_interface__``)."""
    return hasattr(x, "__cuda_array_interface__") and not isinstance(x, np.ndarray)


def cupy_module():
    """CuPy, or a ``ModuleNotFoundError`` that says how to install it."""
    try:
        import cupy
    except ImportError as exc:
        raise ModuleNotFoundError(
            f"the cuda backend needs CuPy, which cannot be imported ({exc}); {INSTALL_GPU}",
            name="cupy",
        ) from None
    return cupy


def array_module(backend=None):
    """The array library of a backend: ``numpy`` or ``cupy``."""
    backend = backend or get_device()
    if backend == "cuda" and not cuda_simulated():
        return cupy_module()
    return np


# DLPack device types (dlpack.h): where the memory of an exported array lives
_DL_CPU, _DL_CUDA, _DL_CUDA_HOST, _DL_CUDA_MANAGED = 1, 2, 3, 13


def _dlpack_device_type(x):
    """The DLPack device type of ``x``, or None when it exports no DLPack."""
    probe = getattr(x, "__dlpack_device__", None)
    if probe is None or not hasattr(x, "__dlpack__"):
        return None
    return int(probe()[0])


def _is_cupy(x):
    return type(x).__module__.startswith("cupy") and hasattr(x, "get")


def _unwrap_tensor(x):
    from .autograd.tensor import Tensor  # the autograd package imports this module

    return x.data if isinstance(x, Tensor) else x


def to_numpy(x):
    """Return ``x`` as a NumPy array: host memory is shared (NumPy, nnkern Tensors on the
    host, torch CPU tensors and anything with ``__dlpack__`` on the CPU), GPU memory is
    copied to the host (CuPy, torch CUDA tensors, Numba device arrays, anything with
    ``__cuda_array_interface__``). Lists and scalars go through ``np.asarray``.

    >>> to_numpy([1, 2]).tolist()
    [1, 2]
    """
    if isinstance(x, np.ndarray):
        return x
    x = _unwrap_tensor(x)
    if isinstance(x, np.ndarray):
        return x
    if _is_cupy(x):
        return x.get()
    if hasattr(x, "copy_to_host"):  # a Numba device array
        return x.copy_to_host()
    kind = _dlpack_device_type(x)
    if kind in (_DL_CPU, _DL_CUDA_HOST):
        return np.from_dlpack(x)
    if kind is not None or hasattr(x, "__cuda_array_interface__"):
        return _gpu_to_host(x, kind)
    return np.asarray(x)


def _gpu_to_host(x, kind):
    if kind not in (None, _DL_CUDA, _DL_CUDA_MANAGED):
        raise TypeError(f"a {type(x).__module__}.{type(x).__name__} on DLPack device type "
                        f"{kind} is neither host nor CUDA memory; nnkern cannot read it")
    try:
        import cupy
    except ImportError:
        if not hasattr(x, "__cuda_array_interface__"):
            raise ModuleNotFoundError(
                f"copying a {type(x).__module__}.{type(x).__name__} from the GPU needs CuPy; "
                f"{INSTALL_GPU}", name="cupy") from None
        from numba import cuda  # reads any __cuda_array_interface__ without CuPy

        return cuda.as_cuda_array(x).copy_to_host()
    return (cupy.from_dlpack(x) if kind is not None else cupy.asarray(x)).get()


def to_gpu(x):
    """``x`` as a CuPy array: GPU memory is shared (CuPy, torch CUDA tensors and anything with
    a CUDA ``__dlpack__`` or ``__cuda_array_interface__``), host data are copied to the GPU."""
    cp = cupy_module()
    x = _unwrap_tensor(x)
    if isinstance(x, cp.ndarray):
        return x
    kind = _dlpack_device_type(x)
    if kind in (_DL_CUDA, _DL_CUDA_MANAGED):
        return cp.from_dlpack(x)
    if kind is None and hasattr(x, "__cuda_array_interface__"):
        return cp.asarray(x)
    return cp.asarray(to_numpy(x))


def to_device(x, backend=None, dtype=None):
    """Move ``x`` to a backend's array type (a copy only where one is needed): NumPy for
    "numpy" and "cpu" (and "cuda" under the simulator), CuPy for "cuda". ``x`` may be any
    array kind ``to_numpy`` takes.

    >>> to_device([1.0, 2.0], "cpu").dtype
    dtype('float64')
    """
    backend = backend or get_device()
    xp = array_module(backend)
    if xp is np:
        return np.asarray(to_numpy(x), dtype=dtype)
    return xp.asarray(to_gpu(x), dtype=dtype)


def where(x):
    """'cuda' for a GPU array, 'host' for anything else (used in error messages)."""
    return "cuda" if is_gpu_array(x) else "host"
