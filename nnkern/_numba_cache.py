"""Recovery from a damaged Numba cache file of an nnkern kernel.

The CPU kernels are compiled with ``cache=True``: Numba writes an index
(``<function>-<line>.pyXY.nbi``) and data files (``....N.nbc``) next to each
kernel file, in ``__pycache__`` (or under ``NUMBA_CACHE_DIR``). A file cut
short (a full disk, a kill in the middle of a write on a file system without
atomic renames) made Numba raise ``UnpicklingError`` on every later load of
that kernel, until the user found the file and deleted it.

``install()`` wraps Numba's cache loader: when loading a kernel of
``nnkern.kernels`` fails, it warns once, naming the folder and the file,
deletes the damaged index (the data files it lists are rewritten under fresh
entries) and reports a cache miss, so Numba recompiles the kernel and saves it
again. Loads of anyone else's functions are left exactly as Numba does them.
"""

import os
import warnings

_PACKAGE = "nnkern.kernels."
_installed = False


class NumbaCacheWarning(UserWarning):
    """A cached kernel could not be loaded and is being recompiled."""


def install():
    """Wrap ``numba.core.caching.Cache.load_overload`` once (idempotent)."""
    global _installed
    if _installed:
        return
    from numba.core import caching

    original = caching.Cache.load_overload

    def load_overload(self, sig, target_context):
        try:
            return original(self, sig, target_context)
        except Exception as exc:
            module = getattr(getattr(self, "_py_func", None), "__module__", "") or ""
            if not module.startswith(_PACKAGE):
                raise
            _discard(self, f"{module}.{self._py_func.__qualname__}", exc)
            return None  # a cache miss: Numba compiles and saves a fresh copy

    load_overload.__wrapped__ = original
    caching.Cache.load_overload = load_overload
    _installed = True


def _discard(cache, kernel, exc):
    index = cache._cache_file._index_path
    folder = os.path.dirname(index)
    try:
        os.remove(index)
    except OSError:
        pass  # gone already, or read-only: the fresh save will say so if it cannot write
    warnings.warn(
        f"nnkern: the Numba cache of {kernel} could not be loaded "
        f"({type(exc).__name__}: {exc}); it is being recompiled. Damaged index "
        f"{os.path.basename(index)} removed from the cache folder {folder}",
        NumbaCacheWarning,
        stacklevel=2,
    )
