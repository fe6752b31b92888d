"""Device choice, array moves, dispatch errors and ``python -m nnkern info``."""

import os
import subprocess
import sys

import numpy as np
import pytest

import nnkern
from nnkern._dispatch import BackendError, kernels
from nnkern.device import cuda_simulated


def test_set_get_and_context_restore():
    assert nnkern.set_device("cpu") == "cpu"
    with nnkern.device("numpy") as name:
        assert name == "numpy" and nnkern.get_device() == "numpy"
    assert nnkern.get_device() == "cpu"


def test_context_restores_after_error():
    nnkern.set_device("cpu")
    with pytest.raises(KeyError), nnkern.device("numpy"):
        raise KeyError("boom")
    assert nnkern.get_device() == "cpu"


def test_bad_name_is_a_clear_error():
    with pytest.raises(ValueError, match=r"device must be one of .*'gpu'"):
        nnkern.set_device("gpu")


def test_auto_never_picks_the_simulator():
    assert cuda_simulated()  # conftest turns it on when no real GPU is asked for
    assert nnkern.set_device("auto") == "cpu"
    from nnkern.device import device_reason
    assert device_reason().startswith("auto chose cpu")


def _run(code, env_extra):
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    env.update(env_extra)
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False
    )


BLOCK_GPU_IMPORTS = """
import sys, importlib.abc
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('cupy', 'numba_cuda') or name.startswith('numba.cuda'):
            raise ImportError('blocked for the test: ' + name)
sys.meta_path.insert(0, Block())
"""


def test_cuda_without_gpu_is_an_error_not_a_fallback():
    code = BLOCK_GPU_IMPORTS + """
import nnkern
try:
    nnkern.set_device('cuda')
except RuntimeError as e:
    print('ERR', e)
print('AUTO', nnkern.set_device('auto'))
"""
    out = _run(code, {})
    assert out.returncode == 0, out.stderr
    assert "ERR device 'cuda' was asked for but is not usable: numba-cuda is not installed" in out.stdout
    assert "AUTO cpu" in out.stdout


def test_env_var_sets_initial_device():
    out = _run("import nnkern; print(nnkern.get_device())", {"NNKERN_DEVICE": "numpy"})
    assert out.stdout.strip() == "numpy", out.stderr


@pytest.mark.parametrize("blocked", [False, True])
def test_info_works_with_and_without_gpu_packages(blocked):
    code = (BLOCK_GPU_IMPORTS if blocked else "") + (
        "import sys\nfrom nnkern.__main__ import main\nsys.exit(main(['info']))\n"
    )
    out = _run(code, {})
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "auto device: cpu" in text
    assert "numba-cuda" in text and "CPU threads:" in text and "threading layer:" in text
    assert "GPU: none (" in text
    if blocked:
        assert "numba-cuda is not installed" in text


def test_to_device_and_back():
    x = nnkern.to_device([1, 2, 3], "cpu", dtype=np.float32)
    assert isinstance(x, np.ndarray) and x.dtype == np.float32
    np.testing.assert_array_equal(nnkern.to_numpy(x), [1, 2, 3])


def test_dispatch_names_missing_backend(monkeypatch):
    import types

    fake = types.ModuleType("nnkern.kernels.fakefam")
    fake.KERNELS = ("a",)
    ref = types.ModuleType("nnkern.kernels.fakefam.reference")
    monkeypatch.setitem(sys.modules, "nnkern.kernels.fakefam", fake)
    monkeypatch.setitem(sys.modules, "nnkern.kernels.fakefam.reference", ref)
    with pytest.raises(BackendError, match="backend 'numpy' of kernel family 'fakefam' lacks"):
        kernels("fakefam", "numpy")
    with pytest.raises(BackendError, match="has no 'cpu' backend"):
        kernels("fakefam", "cpu")
