"""The one place that maps (kernel family, backend) to the module holding its kernels.

A backend module is loaded on first use and checked against the family's
``KERNELS`` list; a missing kernel is an error right there, never a silent
fallback to another backend. Under Numba's workqueue threading layer the CPU
modules come back serialised across Python threads (``nnkern._threads``), and
a damaged Numba cache file of a kernel is recompiled, not fatal
(``nnkern._numba_cache``, installed here, before any kernel loads).
"""

import importlib

from . import _numba_cache, _threads
from .device import get_device

_numba_cache.install()

_BACKEND_MODULE = {"numpy": "reference", "cpu": "cpu", "cuda": "cuda"}
_loaded = {}


class BackendError(RuntimeError):
    """A backend lacks a kernel family or one of the family's kernels."""


def kernels(family, backend=None):
    """Return the kernel module of ``family`` for ``backend`` (default: the current device).

    Example::

        K = kernels("gemm", "numpy")
        K.gemm(a, b, out, False, False, False)
    """
    backend = backend or get_device()
    key = (family, backend)
    module = _loaded.get(key)
    if module is not None:
        return module
    family_pkg = importlib.import_module(f"nnkern.kernels.{family}")
    name = f"nnkern.kernels.{family}.{_BACKEND_MODULE[backend]}"
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name != name:
            raise
        raise BackendError(
            f"kernel family '{family}' has no '{backend}' backend (module {name} is missing)"
        ) from None
    missing = [k for k in family_pkg.KERNELS if not callable(getattr(module, k, None))]
    if missing:
        raise BackendError(
            f"backend '{backend}' of kernel family '{family}' lacks kernels: {', '.join(missing)}"
        )
    if backend == "cpu":
        module = _threads.serialised(module, family_pkg.KERNELS)
    _loaded[key] = module
    return module
