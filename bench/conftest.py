"""pytest set-up for ``pytest bench`` (never collected by the plain ``pytest``: the
project's testpaths is tests/).

Settings that must precede any import of CuPy, PyTorch or Numba's threads:
TF32 off for the peers, passive OpenMP waiting. The benchmarks run on the real
devices, never under the CUDA simulator.
"""

from bench import core

core.prepare_environment()
