"""What every CUDA kernel file shares: the simulator switch, block sizes, launches, reductions.

Kernel files (``kernels/<family>/cuda.py``) import these names instead of each
detecting the simulator and sizing blocks its own way. Nothing here imports
``nnkern`` outside ``nnkern.kernels``.

Under Numba's simulator (``NUMBA_ENABLE_CUDASIM=1``, no GPU) every CUDA thread
is a Python thread and arrays are NumPy arrays, so blocks are small there; the
code paths are the same. The simulator has no warp shuffles: a kernel that
shuffles has a shared-memory twin selected by its file's ``choose``.

Two things every launcher goes through:

- ``KernelTable(build)``: a family's kernels, each compiled from ``build(T)``'s
  (function, explicit signature) pair the first time it is launched, its compile seconds
  kept (``bench/gpu_check.py`` reports them per kernel).
- ``launch(kernel, grid, block, *args)``: on a GPU, the arguments are packed by hand the
  way numba-cuda packs them (an array is meminfo, parent, size, itemsize, data pointer,
  shape, strides) and handed to the same ``cuda.core`` launch numba-cuda calls. numba's
  own path types every argument and wraps every CuPy array in two objects per launch
  (``bench/cuda_launches.py --host`` measures both). The first launch of each kernel
  packs the arguments both ways and compares them; a kernel whose packing differs (a
  numba-cuda version with another calling convention) or an argument it does not know
  (a non-contiguous view) goes through numba's launch instead, so a surprise costs
  time, never a wrong result. ``NNKERN_CUDA_FAST_LAUNCH=0`` turns the packing off.

    >>> from nnkern.kernels import _cuda
    >>> _cuda.blocks(1000, 256)
    4
"""

import ctypes
import math
import os
import time
import warnings

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
        launch(kernel, blocks(n, threads, MAX_BLOCKS), threads, *args)


# ----------------------------------------------------------------------------
# compiled kernels, per family


class KernelTable:
    """A family's kernels, compiled on first use from ``build(T)``.

    ``table(dtype)[name]`` is the compiled kernel of ``name`` for a float dtype; each
    compile is timed into ``table.seconds[(dtype name, kernel name)]``.

        >>> table = KernelTable(lambda T: {})
        >>> table("float32").names()
        []
    """

    def __init__(self, build):
        self.build = build
        self.seconds = {}
        self._per_dtype = {}

    def __call__(self, dtype):
        dtype = np.dtype(dtype)
        kernels = self._per_dtype.get(dtype)
        if kernels is None:
            kernels = self._per_dtype[dtype] = _Kernels(self, dtype)
        return kernels


class _Kernels:
    """The kernels of one family and dtype, compiled one by one when first asked for."""

    def __init__(self, table, dtype):
        self._table = table
        self._dtype = dtype
        self._defs = None
        self._compiled = {}

    def _definitions(self):
        if self._defs is None:
            self._defs = self._table.build(numba_type(self._dtype))
        return self._defs

    def names(self):
        """Every kernel name of the family (compiled or not)."""
        return list(self._definitions())

    def __getitem__(self, name):
        kernel = self._compiled.get(name)
        if kernel is None:
            fn, sig = self._definitions()[name]
            t0 = time.perf_counter()
            kernel = cuda.jit(sig)(fn)
            self._table.seconds[(self._dtype.name, name)] = time.perf_counter() - t0
            self._compiled[name] = kernel
        return kernel


# ----------------------------------------------------------------------------
# launches


FAST_LAUNCH = not SIM and os.environ.get("NNKERN_CUDA_FAST_LAUNCH", "1") != "0"
"""Pack kernel arguments by hand on a GPU (see the module docstring)."""

_SCALARS = {"int64": ctypes.c_int64, "int32": ctypes.c_int32, "uint64": ctypes.c_uint64,
            "float32": ctypes.c_float, "float64": ctypes.c_double}  # numba-cuda's ctypes
_LAUNCHERS = {}  # dispatcher -> _Packed, or None where numba's own launch is used
_CONFIGS = {}  # (grid, block) -> cuda.core LaunchConfig


def launch(kernel, grid, block, *args):
    """``kernel[grid, block](*args)`` for a kernel compiled with one explicit signature
    (a ``KernelTable`` entry), with the arguments packed by hand on a GPU."""
    if FAST_LAUNCH:
        packed = _LAUNCHERS.get(kernel, False)
        if packed is False:
            packed = _LAUNCHERS[kernel] = _Packed.of(kernel)
        if packed is not None:
            kernelargs = packed.pack(args)
            if kernelargs is not None:
                if packed.launched:
                    packed.launch(grid, block, kernelargs)
                    return
                if packed.first_launch(args, kernelargs, grid, block):
                    return
                _LAUNCHERS[kernel] = None
    kernel[grid, block](*args)


def _dims(d):
    return (d, 1, 1) if isinstance(d, int) else tuple(d) + (1,) * (3 - len(d))


class _Packed:
    """How one compiled kernel's arguments become ``cuda.core`` kernel parameters, the
    way ``numba.cuda.dispatcher._Kernel._prepare_args`` makes them."""

    @classmethod
    def of(cls, dispatcher):
        """A packer for the kernel's one overload, or None when it has another shape."""
        overloads = list(getattr(dispatcher, "overloads", {}).values())
        if len(overloads) != 1 or dispatcher.targetoptions.get("extensions"):
            return None
        kernel = overloads[0]
        kinds = []
        for ty in kernel.argument_types:
            name = str(ty)
            if type(ty).__name__ == "Array" and ty.layout == "C":
                kinds.append(("array", np.dtype(str(ty.dtype)), ty.ndim))
            elif name == "bool":
                kinds.append(("bool", None, 0))
            elif name in _SCALARS:
                kinds.append(("scalar", _SCALARS[name], 0))
            else:
                return None
        return cls(kernel, kinds)

    def __init__(self, kernel, kinds):
        self.kernel = kernel
        self.kinds = kinds
        self.checked = False
        self.launched = False
        self.cufunc = None

    def first_launch(self, args, kernelargs, grid, block):
        """Check the packing against numba-cuda's, then launch; False (and a warning) when
        either fails, so the caller launches through numba-cuda instead."""
        try:
            if not self.check(args, kernelargs):
                return False
            self.launch(grid, block, kernelargs)
        except Exception as e:  # noqa: BLE001 (numba-cuda internals changed: its own launch)
            warnings.warn(f"nnkern: packed launch unavailable ({type(e).__name__}: {e}); "
                          "using numba-cuda's launch", stacklevel=3)
            return False
        self.launched = True
        return True

    def pack(self, args):
        """The parameter list, or None when an argument is not a C-contiguous device array
        of the signature's dtype and rank where one is expected (numba's launch then
        converts it, or raises its own type error)."""
        out = []
        for (kind, what, ndim), a in zip(self.kinds, args):
            if kind == "array":
                data = getattr(a, "data", None)
                ptr = getattr(data, "ptr", None)
                if ptr is None:  # not CuPy: read the CUDA array interface
                    cai = getattr(a, "__cuda_array_interface__", None)
                    if cai is None:
                        return None
                    ptr = cai["data"][0]
                    shape = tuple(cai["shape"])
                    dtype = np.dtype(cai["typestr"])
                    strides = cai.get("strides")
                else:
                    shape, dtype, strides = a.shape, a.dtype, a.strides
                itemsize = dtype.itemsize
                if dtype != what or len(shape) != ndim:
                    return None
                c_strides, step = [], itemsize
                for n in reversed(shape):
                    c_strides.append(step)
                    step *= n
                c_strides.reverse()
                if strides is not None and tuple(strides) != tuple(c_strides):
                    return None
                out += (0, 0, step // itemsize, itemsize, ptr, *shape, *c_strides)
            elif kind == "bool":
                out.append(a)
            else:
                out.append(what(a))
        return out

    def check(self, args, packed):
        """True when numba-cuda packs the same arguments into the same parameters (asked
        once per kernel); a warning and False otherwise."""
        retr, reference = [], []
        stream = _default_stream()  # the stream numba-cuda's own launch would pass
        for ty, a in zip(self.kernel.argument_types, args):
            self.kernel._prepare_args(ty, a, stream, retr, reference)
        self.checked = params(packed) == params(reference)
        if not self.checked:
            warnings.warn(f"nnkern: hand-packed arguments of {self.kernel.entry_name} differ "
                          "from numba-cuda's; using numba's launch for it", stacklevel=3)
        return self.checked

    def launch(self, grid, block, kernelargs):
        dispatcher = _DISPATCHER[0] if _DISPATCHER else _dispatcher_module()
        if self.cufunc is None:
            self.cufunc = self.kernel._codelibrary.get_cufunc().kernel
        key = (grid, block)
        config_ = _CONFIGS.get(key)
        if config_ is None:
            from numba.cuda._compat import CUDA_CORE_GE_1_0

            coop = {"is_cooperative" if CUDA_CORE_GE_1_0 else "cooperative_launch": False}
            config_ = _CONFIGS[key] = dispatcher.LaunchConfig(
                grid=_dims(grid), block=_dims(block), shmem_size=0, **coop)
        dispatcher.launch(_default_stream(), config_, self.cufunc, *kernelargs)


def params(kernelargs):
    """Kernel parameters as comparable (type, value) pairs (ctypes scalars by their value)."""
    return [(type(v), v.value) if isinstance(v, ctypes._SimpleCData) else (int, int(v))
            for v in kernelargs]


_STREAM = []
_DISPATCHER = []


def _dispatcher_module():
    """numba-cuda's dispatcher module, whose ``launch`` and ``LaunchConfig`` (cuda.core's)
    nnkern's packing hands its parameters to (looked up once: an import statement in the
    launch path costs microseconds)."""
    from numba.cuda import dispatcher

    _DISPATCHER.append(dispatcher)
    return dispatcher


def _default_stream():
    """The stream numba-cuda launches on when none is given (the legacy default stream,
    which CuPy's and PyTorch's default streams are ordered with)."""
    if not _STREAM:
        from numba.cuda.cudadrv import driver

        _STREAM.append(driver._to_core_stream(0))
    return _STREAM[0]


_STAND_INS = {}


def stand_in(dtype, ndim=1):
    """A one-element device array for an absent optional argument (never read or written).

    Not a view of a real argument: the simulator copies every host array argument
    back after the launch, and a copied-back alias would overwrite what the kernel wrote.
    """
    key = (np.dtype(dtype), ndim)
    if key not in _STAND_INS:
        try:  # a CuPy array: the launch packs it the fast way (a CuPy array's pointer)
            import cupy

            _STAND_INS[key] = cupy.empty((1,) * ndim, key[0])
        except ImportError:
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
