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
"""
