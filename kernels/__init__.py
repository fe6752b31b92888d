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

# How long Numba's idle OpenMP (libgomp) workers spin before they sleep, chosen
# before the OpenMP runtime loads. Measured on the 2-vCPU AVX-512 development VM:
# - libgomp's default (about 3 ms of spinning) or OMP_WAIT_POLICY=active: the
#   spinning takes the cores that OpenBLAS or PyTorch need next (alternating calls
#   1060 ms instead of 36 ms);
# - OMP_WAIT_POLICY=passive (sleep at once): every parallel region then wakes its
#   workers through the kernel, 8-70 us per region on the VM, against 2 us when a
#   worker is still spinning; SGEMM 256^3 (two regions around 130 us of work) ran at
#   0.5x OpenBLAS, whose own idle threads spin;
# - GOMP_SPINCOUNT=SPIN_COUNT: a worker spins about 40 us (measured: 0.37 ms of CPU
#   per 20 ms idle for 30000 spins, so about 12 ns a spin), long enough for the next
#   kernel of a layer or the next call of a loop, short enough to be gone before
#   another library's call gets far. SGEMM 256^3 0.26 -> 0.155 ms (1.0x OpenBLAS)
#   on a quiet machine.
# A user's OMP_WAIT_POLICY or GOMP_SPINCOUNT wins.
SPIN_COUNT = 3000
if "OMP_WAIT_POLICY" not in os.environ:
    os.environ.setdefault("GOMP_SPINCOUNT", str(SPIN_COUNT))

import numba

# LLVM's SLP vectorizer turns the register-tiled GEMM/conv micro-kernels into
# AVX2 FMA loops (about 10x); Numba leaves it off by default. The environment
# variable too: every compile re-reads NUMBA_* variables once any has changed
# and resets the attribute to the variable's value (a bench process that set one
# compiled the conv sv backward-weights tile without SLP, 17x slower, and cached it).
os.environ["NUMBA_SLP_VECTORIZE"] = "1"
numba.config.SLP_VECTORIZE = 1

FAMILIES = ("gemm", "conv", "pool", "softmax_ce", "elementwise", "norm", "optim", "lrn")


def wait_policy():
    """How Numba's idle CPU threads wait, in words (for ``python -m nnkern info``)."""
    if numba.threading_layer() != "omp":
        return f"idle threads wait as the {numba.threading_layer()} layer does"
    if "GOMP_SPINCOUNT" in os.environ:
        spins = int(os.environ["GOMP_SPINCOUNT"])
        return f"idle threads spin {spins} times (about {spins * 12 // 1000} us), then sleep"
    policy = os.environ.get("OMP_WAIT_POLICY", "")
    if policy.lower() == "passive":
        return "idle threads sleep at once (OMP_WAIT_POLICY=passive)"
    return f"idle threads wait as libgomp does by default (OMP_WAIT_POLICY={policy!r})"
