"""nnkern's CPU kernels and the user's Python threads (Numba's threading layers).

Numba runs every ``prange`` region on one of three threading layers: TBB,
OpenMP (``omp``) or its own ``workqueue``, which it falls back to when neither
runtime is installed (or when ``NUMBA_THREADING_LAYER=workqueue`` asks for it).
TBB and OpenMP take parallel regions from several Python threads at once. The
workqueue layer does not: two threads launching a region at the same time make
it print "Concurrent access has been detected" and abort the process (SIGABRT),
which no ``try`` can catch.

Decision: under the workqueue layer nnkern SERIALISES its CPU kernels, one
process-wide lock around each kernel entry point; it does not refuse to import.
- Refusing would break every program on a machine without TBB or OpenMP, and
  nearly all of those are single-threaded programs that run correctly today.
- With the lock, a threaded program stays correct: its threads take turns on
  the kernels (each kernel still uses every core), and everything else they do
  (NumPy, I/O, Python) still overlaps.
- The lock is taken only under workqueue: on TBB and OpenMP the kernel modules
  are returned as they are, at no cost per call.
A kernel called from inside another kernel's entry point (conv's im2col calls
the GEMM) is already inside the lock; the lock is reentrant.
"""

import functools
import threading

_LOCK = threading.RLock()
_layer = None


def threading_layer():
    """The layer Numba runs parallel regions on: "tbb", "omp" or "workqueue".

    Numba picks it when it first starts its threads; this starts them if no
    parallel kernel has run yet (once per process, as the first kernel would).

    >>> threading_layer() in ("tbb", "omp", "workqueue")
    True
    """
    global _layer
    if _layer is None:
        import numba
        from numba.np.ufunc import parallel

        parallel._launch_threads()
        _layer = numba.threading_layer()
    return _layer


def serialised(module, names):
    """``module`` itself, or under the workqueue layer a stand-in whose functions ``names``
    hold one process-wide lock while they run (see the module docstring)."""
    if threading_layer() != "workqueue":
        return module
    return _Serialised(module, names)


class _Serialised:
    """A kernel module whose entry points take turns across Python threads."""

    def __init__(self, module, names):
        self._module = module
        for name in names:
            setattr(self, name, _locked(getattr(module, name)))

    def __getattr__(self, name):  # anything else (constants, helpers) as the module has it
        return getattr(self._module, name)

    def __repr__(self):
        return f"<{self._module.__name__}, serialised for Numba's workqueue threading layer>"


def _locked(kernel):
    @functools.wraps(kernel)
    def call(*args, **kwargs):
        with _LOCK:
            return kernel(*args, **kwargs)

    return call
