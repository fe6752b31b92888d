"""The nnkern benchmark suite: every kernel on every backend against its peers.

Run it as ``python -m bench`` (or ``python bench/run.py``); ``--help`` lists
the options. The pieces, top to bottom:

    bench/core.py        timing (perf_counter / CUDA events), validation,
                         ceilings, peers and devices found, the spread and
                         stability of every ratio, the machine's load,
                         peers in a child process, machine facts
    bench/cases/         one module per op family: the cases, their work
                         counts and their implementations (nnkern and peers)
    bench/report.py      terminal table, JSON, Markdown, PNG plots, --compare
    bench/run.py         the command line
    bench/test_bench_*.py  the same cases as pytest-benchmark tests

The package imports nothing heavy at import time, so ``import bench`` is cheap.

It changes no setting of any library. It only keeps the environment the run
started with (``START_ENV``, read before anything could load nnkern, whose
import sets ``GOMP_SPINCOUNT`` and OpenBLAS settings): a peer that must run
at its library's own defaults runs in a child process started from that
environment (``bench.cases._common.child_peer``).
"""

import os

START_ENV = dict(os.environ)
