"""Test set-up shared by every test.

The CUDA backend runs under Numba's simulator unless ``NNKERN_TEST_GPU=1``
asks for the real GPU; the switch must happen before numba.cuda loads, so it
lives here, before anything imports nnkern.
"""

import os
import sys

if os.environ.get("NNKERN_TEST_GPU", "0") == "0":
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

sys.path.insert(0, os.path.dirname(__file__))

import pytest

import nnkern
from nnkern.device import cuda_simulated, cuda_status


def _real_gpu():
    usable, _ = cuda_status()
    return usable and not cuda_simulated()


def pytest_collection_modifyitems(config, items):
    if _real_gpu():
        return
    skip = pytest.mark.skip(reason="needs a real CUDA GPU (run with NNKERN_TEST_GPU=1 on one)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _restore_device():
    """Every test starts on the numpy backend and cannot leak its device choice."""
    with nnkern.device("numpy"):
        yield
