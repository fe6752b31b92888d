"""Scratch memory that the CPU kernels reuse from call to call.

Why: a kernel that allocates its packing buffers on every call gets fresh
pages from the OS every call (glibc returns large freed blocks at once), and
those pages fault in inside the parallel region. Measured on the 2-vCPU
development VM, SGEMM 1024^3: 1,500 page faults per call, and the faulting
threads were then rescheduled onto one vCPU, so the call ran serially about
half the time (8.5 ms into reused scratch, 16-17 ms with fresh scratch).
BLAS libraries keep a buffer pool for the same reason.

Each Python thread has its own buffers (``threading.local``), so two threads
calling kernels at once never share scratch. A buffer only grows; its
contents are undefined on return, and a view is valid until the next request
with the same name from the same thread, so a kernel asks once per call.
``release()`` frees everything the calling thread holds.

Example::

    from nnkern.kernels._workspace import workspace
    panel = workspace("gemm.b_panel", (4, 32, 256, 32), np.float32)
"""

import threading
from math import prod

import numpy as np


class _Buffers(threading.local):
    def __init__(self):
        self.by_name = {}  # (name, dtype) -> 1-D array


_buffers = _Buffers()


def workspace(name, shape, dtype):
    """A C-contiguous ``shape`` array of ``dtype`` whose memory is reused across calls.

    The contents are whatever the last user left (like ``np.empty``); the
    first element is 64-byte aligned.
    """
    dtype = np.dtype(dtype)
    shape = tuple(int(s) for s in shape)
    size = prod(shape)
    key = (name, dtype)
    buf = _buffers.by_name.get(key)
    if buf is None or buf.size < size:
        buf = _aligned_empty(size, dtype)
        _buffers.by_name[key] = buf
    return buf[:size].reshape(shape)


ALIGN = 64  # bytes: a cache line, so a 64-byte vector load of packed data never spans two


def _aligned_empty(size, dtype):
    raw = np.empty(size * dtype.itemsize + ALIGN, np.uint8)
    skip = -raw.ctypes.data % ALIGN
    return raw[skip : skip + size * dtype.itemsize].view(dtype)


def held_bytes():
    """Bytes of scratch the calling thread holds."""
    return sum(b.nbytes for b in _buffers.by_name.values())


def release():
    """Free the calling thread's scratch (the next kernel call allocates it again)."""
    _buffers.by_name.clear()
