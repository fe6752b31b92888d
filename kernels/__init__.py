"""nnkern.kernels: the hand-written compute, one folder per kernel family.

Each family folder holds up to three backends with the same function names
and the same signatures, so a reader can put them side by side:

    reference.py   NumPy, vectorised, float64-capable: the oracle
    cpu.py         Numba CPU kernels (@njit(parallel=True), cache=True)
    cuda.py        Numba CUDA kernels on CuPy arrays (NumPy under the simulator)

and an ``__init__.py`` whose ``KERNELS`` tuple names the functions every
backend must define. ``nnkern._dispatch`` checks that list when it first
loads a backend module and raises if a name is missing, so a backend never
falls back silently to another one.

Kernels never validate, never pick a device and never allocate their
outputs: they take arrays and sizes and write into the outputs they are
given (scratch space is theirs). Validation lives in ``nnkern.functional``.

This module runs before any kernel compiles, which is why the Numba
settings that change generated code are fixed here (see shared PERF.md):
the on-disk cache does not record them, so setting them anywhere later
would silently load kernels compiled under other settings.
"""

import os

# Numba's OpenMP threads and OpenBLAS's threads spin against each other on a
# small machine (measured: 1060 ms instead of 36 ms for alternating calls).
# Passive waiting must be chosen before the OpenMP runtime loads.
os.environ.setdefault("OMP_WAIT_POLICY", "passive")

import numba

# LLVM's SLP vectorizer turns the register-tiled GEMM/conv micro-kernels into
# AVX2 FMA loops (about 10x); Numba leaves it off by default.
numba.config.SLP_VECTORIZE = 1

FAMILIES = ("gemm", "conv", "pool", "softmax_ce", "elementwise", "norm", "optim", "lrn")
