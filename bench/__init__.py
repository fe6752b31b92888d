"""The nnkern benchmark suite: every kernel on every backend against its peers.

Run it as ``python -m bench`` (or ``python bench/run.py``); ``--help`` lists
the options. The pieces, top to bottom:

    bench/core.py        timing (perf_counter / CUDA events), validation,
                         ceilings, peers and devices found, machine facts
    bench/cases/         one module per op family: the cases, their work
                         counts and their implementations (nnkern and peers)
    bench/report.py      terminal table, JSON, Markdown and PNG plots
    bench/run.py         the command line
    bench/test_bench_*.py  the same cases as pytest-benchmark tests

The package imports nothing heavy at import time, so ``import bench`` is cheap.

It does fix one setting here, before anything can load NumPy (and its
OpenBLAS): ``OPENBLAS_THREAD_TIMEOUT=4``. OpenBLAS's worker threads otherwise
keep spinning for 2^28 cycles (about 0.1 s) after each call and take a core
from whatever runs next. Samples taken right after a numpy sample then timed
nnkern on one core (1024^3 SGEMM: 17 ms instead of 8.5). Idling between
samples instead (the ``--settle-ms`` option) lets the spinning stop, but on
the 2-vCPU development VM an idle of 10 ms or more makes the next parallel
call start with both threads on one vCPU, for several calls in a row (a
probe measured the second thread starting 1-2 ms late, when the first had
finished). With short spinning, OpenBLAS keeps its speed (7.2-7.5 ms at
1024^3 either way) and the implementations can be timed back to back.
"""

import os

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
