"""The benchmark cases, one module per op family (the names ``--ops`` takes).

Each module defines ``cases(quick) -> list[Case]``: the issue bars' shapes in a
full run, small shapes with ``quick``. Cases whose ``places`` is ("gpu",) are
the GPU-only shapes of issue 4; they run only when a GPU is found.
"""

import importlib

FAMILIES = ("gemm", "conv", "pool", "softmax_ce", "elementwise", "optim", "norm", "lrn",
            "train_step")


def load(families, quick):
    """The cases of the given families, in the order given."""
    out = []
    for family in families:
        if family not in FAMILIES:
            raise ValueError(f"unknown op family {family!r}; choose from {', '.join(FAMILIES)}")
        out += importlib.import_module(f"bench.cases.{family}").cases(quick)
    return out
