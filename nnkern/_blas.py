"""Living beside NumPy's OpenBLAS: how long its idle threads spin, and cutting it short.

Why. After each threaded call, OpenBLAS's worker threads keep spinning for
2^28 TSC cycles (about 0.1 s here) before they sleep, so the next call finds
them awake. On a small machine the spinning takes the cores that nnkern's
threads need next: SGEMM 1024^3 timed right after a NumPy matmul, the two
alternating, ran at 0.47-0.49x NumPy (14 ms instead of 7), against 0.87-0.93x
with ``OPENBLAS_THREAD_TIMEOUT`` set (2-vCPU AVX-512 development machine).

OpenBLAS reads ``OPENBLAS_THREAD_TIMEOUT`` (the spin as a power of two of
cycles, 4 to 30) once, when it loads, and applies it whenever it starts its
threads. So nnkern:

1. when imported before NumPy, sets it (unless the user did) to TIMEOUT:
   2^16 cycles, about 25 us at 2.6 GHz. That is long enough for NumPy's own
   back-to-back calls to find the threads awake (256^3 matmul in a loop:
   0.145-0.150 ms either way, against 0.167 ms with the shortest timeout, 2^4),
   and short enough not to hold a core through nnkern's next call.
2. when imported after NumPy, where OpenBLAS has read its settings already
   and NumPy's OpenBLAS (a pthreads build) exports the entry points it uses
   for fork(): it sets the variable, has OpenBLAS read it again
   (``openblas_read_env``) and stops its thread pool
   (``blas_thread_shutdown_``); the next call starts the threads with the
   short spin. Only done while this is the process's only Python thread (a
   pool stopped during another thread's BLAS call could hang), and never when
   the user set ``OPENBLAS_THREAD_TIMEOUT`` (which is also how to opt out:
   ``OPENBLAS_THREAD_TIMEOUT=28`` is OpenBLAS's own default).
3. measures the result on request (``probe``, shown by ``python -m nnkern
   info``): one threaded NumPy matmul, then the CPU time the process's other
   threads take in the next few milliseconds (Linux ``/proc``).

Example::

    from nnkern import _blas
    _blas.status()["action"]   # what nnkern did about OpenBLAS's spinning
"""

import ctypes
import glob
import os
import sys
import threading
import time

ENV = "OPENBLAS_THREAD_TIMEOUT"
TIMEOUT = 16  # 2^16 TSC cycles of spinning after a call (about 25 us at 2.6 GHz)
SPINNING = 0.1  # share of a core the other threads take after a call: a spinning pool
# (a sleeping pool: 0.00; a spinning one: 0.2-1, less on a busy machine, as it yields)

_action = ""  # what at_import() did, in words


def at_import():
    """Run once, first thing in ``import nnkern``: set or apply the short spin."""
    global _action
    if ENV in os.environ:
        _action = f"left alone: {ENV}={os.environ[ENV]} was set by the user"
    elif "numpy" not in sys.modules:
        os.environ[ENV] = str(TIMEOUT)
        _action = f"{ENV}={TIMEOUT} set before NumPy loaded"
    else:
        _action = _restart_pool()


def _library():
    """The OpenBLAS shared library loaded in this process (path), or None."""
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "openblas" in line.lower()}
    except OSError:  # not Linux
        return None
    paths = sorted(p for p in paths if ".so" in os.path.basename(p))
    return paths[0] if paths else None


def _symbol(lib, *names):
    for name in names:
        try:
            return getattr(lib, name)
        except AttributeError:
            continue
    return None


def _parallel(lib):
    # 0 sequential, 1 pthreads, 2 OpenMP; None when the library does not say
    get = _symbol(lib, "openblas_get_parallel", "openblas_get_parallel64_",
                  "scipy_openblas_get_parallel64_", "scipy_openblas_get_parallel")
    if get is None:
        return None
    get.restype = ctypes.c_int
    return get()


def _restart_pool():
    # NumPy's OpenBLAS read its settings before nnkern was imported: read them again
    # with the short spin and stop the pool, so the next call restarts it (see above).
    if threading.active_count() > 1:
        return ("left at its default: NumPy was imported first and other Python threads "
                "run (stopping OpenBLAS's pool during their BLAS call could hang)")
    path = _library()
    if path is None:
        return "nothing to do: no OpenBLAS library is loaded"
    lib = ctypes.CDLL(path)
    read_env = _symbol(lib, "openblas_read_env")
    shutdown = _symbol(lib, "blas_thread_shutdown_")
    parallel = _parallel(lib)
    if read_env is None or shutdown is None or parallel != 1:
        return (f"left at its default: NumPy was imported first and {os.path.basename(path)} "
                "is not a pthreads OpenBLAS with the entry points nnkern uses")
    os.environ[ENV] = str(TIMEOUT)
    read_env()
    shutdown()
    return f"{ENV}={TIMEOUT} applied after NumPy loaded (OpenBLAS's thread pool restarted)"


def _other_threads_cpu_ns():
    # CPU time of every thread of this process but the calling one (Linux schedstat)
    me = str(threading.get_native_id())
    total = 0
    for path in glob.glob("/proc/self/task/*/schedstat"):
        if path.split("/")[-2] == me:
            continue
        try:
            with open(path) as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):  # a thread that just ended
            continue
    return total


def probe(window_s=0.005):
    """Share of a core the process's other threads take in the ``window_s`` seconds after a
    threaded NumPy matmul (about 1 when OpenBLAS's idle threads spin, about 0 when they
    sleep), or None where ``/proc`` is missing."""
    if not os.path.exists("/proc/self/task"):
        return None
    import numpy as np

    a = np.ones((256, 256), np.float32)  # big enough for OpenBLAS to use its threads
    a @ a
    before = _other_threads_cpu_ns()
    t0 = time.perf_counter()
    time.sleep(window_s)
    spent = _other_threads_cpu_ns() - before
    return spent / 1e9 / (time.perf_counter() - t0)


def status(measure=False):
    """What nnkern did about OpenBLAS's spinning: a dict with ``action``, ``library``,
    ``timeout`` and, when ``measure``, ``spin`` (probe()) and ``spinning`` (a bool)."""
    out = {"action": _action or "not run (nnkern was not imported)",
           "library": _library(), "timeout": os.environ.get(ENV)}
    if measure:
        share = probe()
        out["spin"] = share
        out["spinning"] = None if share is None else share > SPINNING
    return out


def info_line():
    """One line for ``python -m nnkern info``."""
    s = status(measure=True)
    if s["library"] is None:
        return f"OpenBLAS: not loaded ({s['action']})"
    if s["spin"] is None:
        seen = "not measured (no /proc)"
    else:
        verdict = ("its idle threads SPIN after each call and slow nnkern's next call; set "
                   f"{ENV}={TIMEOUT} before Python starts" if s["spinning"] else
                   "its idle threads sleep")
        seen = f"{s['spin']:.0%} of a core busy right after a call: {verdict}"
    return f"OpenBLAS ({os.path.basename(s['library'])}): {s['action']}; {seen}"
