"""What every CUDA kernel file shares: the simulator switch, block sizes, launches, reductions.

Kernel files (``kernels/<family>/cuda.py``) import these names instead of each
detecting the simulator and sizing blocks its own way. Nothing here imports
``nnkern`` outside ``nnkern.kernels``.

Under Numba's simulator (``NUMBA_ENABLE_CUDASIM=1``, no GPU) every CUDA thread
is a Python thread and arrays are NumPy arrays, so blocks are small there; the
code paths are the same. The simulator has no warp shuffles: a kernel that
shuffles has a shared-memory twin selected by its file's ``choose``.

    >>> from nnkern.kernels import _cuda
    >>> _cuda.blocks(1000, 256)
    4
"""

import math

import numpy as np
from numba import config, cuda, float32, float64

SIM = bool(config.ENABLE_CUDASIM)
"""True under Numba's CUDA simulator: the one place the kernels ask."""

SMS = 132
"""Streaming multiprocessors of the H100 SXM / H200 the launch geometry is sized for."""

WARP = 32
ELEMENT_THREADS = 32 if SIM else 256
"""Threads per block of the one-thread-per-element kernels."""
REDUCE_THREADS = 16 if SIM else 128
"""Threads per block of the tree reductions in shared memory (a power of two)."""
MAX_BLOCKS = 8 * SMS * 16 if not SIM else 64
"""Grid cap of the grid-stride loops: 16 resident blocks of 128 threads on each SM, 8 times
over; more blocks only add scheduling. The simulator runs blocks one after another."""

NUMBA_TYPE = {np.dtype(np.float32): float32, np.dtype(np.float64): float64}


def numba_type(dtype):
    """The Numba scalar type of a float NumPy dtype (float32 or float64)."""
    return NUMBA_TYPE[np.dtype(dtype)]


def blocks(n, threads=ELEMENT_THREADS, cap=None):
    """Blocks of ``threads`` that cover n items (at least 1), at most ``cap``."""
    b = max(1, (n + threads - 1) // threads)
    return b if cap is None else min(b, cap)


def launch_flat(kernel, n, *args, threads=ELEMENT_THREADS):
    """Launch a grid-stride kernel over n items; nothing when n == 0 (an empty grid is an
    error in numba.cuda, and an empty output needs no work)."""
    if n:
        kernel[blocks(n, threads, MAX_BLOCKS), threads](*args)


def device_arrays(*arrays):
    """Each CuPy array as a Numba device array, converted ONCE per op (a launch converts
    every CUDA-array-interface argument again; a Numba device array it passes as is).
    NumPy arrays (the simulator), Numba device arrays and None come back unchanged.

    Returns a list (one item per argument)."""
    if SIM:
        return list(arrays)
    from numba.cuda.cudadrv.devicearray import DeviceNDArray

    return [
        cuda.as_cuda_array(a, sync=False)
        if hasattr(a, "__cuda_array_interface__") and not isinstance(a, DeviceNDArray)
        else a
        for a in arrays
    ]


_STAND_INS = {}


def stand_in(dtype, ndim=1):
    """A one-element device array for an absent optional argument (never read or written).

    Not a view of a real argument: the simulator copies every host array argument
    back after the launch, and a copied-back alias would overwrite what the kernel wrote.
    """
    key = (np.dtype(dtype), ndim)
    if key not in _STAND_INS:
        _STAND_INS[key] = cuda.device_array((1,) * ndim, key[0])
    return _STAND_INS[key]


def array_module(a):
    """numpy for host arrays (the simulator), cupy for GPU arrays: for scratch buffers."""
    if isinstance(a, np.ndarray):
        return np
    import cupy

    return cupy


def scratch(like, shape, dtype=None):
    """An uninitialised scratch array on the device of ``like``."""
    dtype = like.dtype if dtype is None else dtype
    if isinstance(like, np.ndarray):
        return np.empty(shape, dtype)
    if hasattr(like, "get_ipc_handle"):  # a Numba device array
        return cuda.device_array(shape, dtype)
    return array_module(like).empty(shape, dtype)


# ----------------------------------------------------------------------------
# reductions inside a block


@cuda.jit(device=True)
def block_sum(buf, t, n):
    """Tree-sum buf[0:n] (shared, n a power of two) into buf[0]; every thread of the block
    calls it after writing its own buf[t]. The caller's barrier before reading buf[0] is
    included (the last round ends on one)."""
    cuda.syncthreads()
    stride = n // 2
    while stride > 0:
        if t < stride:
            buf[t] += buf[t + stride]
        cuda.syncthreads()
        stride //= 2


@cuda.jit(device=True)
def block_max(buf, t, n):
    """Tree-max of buf[0:n] into buf[0] (NaN wins, as in the reference's max); see block_sum."""
    cuda.syncthreads()
    stride = n // 2
    while stride > 0:
        if t < stride:
            other = buf[t + stride]
            if other > buf[t] or math.isnan(other):
                buf[t] = other
        cuda.syncthreads()
        stride //= 2


# Warp shuffles: GPU only (the simulator has none). Butterfly (xor) so every lane ends
# with the result and no broadcast is needed.
FULL_MASK = 0xFFFFFFFF


@cuda.jit(device=True)
def warp_sum(v):
    """Sum of v over the 32 lanes of the warp, in every lane."""
    off = 16
    while off > 0:
        v += cuda.shfl_xor_sync(FULL_MASK, v, off)
        off //= 2
    return v


@cuda.jit(device=True)
def warp_max(v):
    """Max of v over the 32 lanes of the warp, in every lane (NaN wins)."""
    off = 16
    while off > 0:
        other = cuda.shfl_xor_sync(FULL_MASK, v, off)
        if other > v or math.isnan(other):
            v = other
        off //= 2
    return v
