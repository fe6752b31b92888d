"""nnkern against Numba's runtime: threading layers and damaged cache files (issue 12,
items 12 and 13). Each case runs in a child process, since both the threading layer
and a cache load are decided once per process."""

import os
import subprocess
import sys
import textwrap

import pytest

from nnkern import _threads
from nnkern._dispatch import kernels

# Two Python threads calling parallel CPU kernels at once: relu on 200k floats (above the
# serial threshold, so a prange region) and a 192^3 SGEMM, each checked against NumPy.
THREADS = """
import threading
import numpy as np
import nnkern, nnkern.functional as F
from nnkern import _threads

nnkern.set_device("cpu")
rng = np.random.default_rng(0)
x = rng.standard_normal(200_000).astype(np.float32)
a = rng.standard_normal((192, 192)).astype(np.float32)
errors = []

def work():
    try:
        for _ in range(60):
            assert (F.relu(x) == np.maximum(x, 0)).all()
            c = F.matmul(a, a)
            assert np.abs(c - a @ a).max() < 1e-3
    except Exception as exc:  # noqa: BLE001
        errors.append(exc)

threads = [threading.Thread(target=work) for _ in range(2)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(_threads.threading_layer(), "errors:", errors)
"""


def _run(code, env_extra, timeout=600):
    env = dict(os.environ, **env_extra)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=timeout, env=env, check=False)


@pytest.mark.parametrize("layer", ["workqueue", "default"])
def test_two_threads_calling_cpu_kernels(layer):
    # workqueue aborted the process (SIGABRT) before nnkern serialised its kernels there
    done = _run(THREADS, {"NUMBA_THREADING_LAYER": layer})
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr[-2000:]}"
    used, _, errors = done.stdout.strip().partition(" errors: ")
    assert errors == "[]"
    if layer == "workqueue":
        assert used == "workqueue"


def test_kernels_are_locked_only_under_workqueue():
    K = kernels("elementwise", "cpu")
    if _threads.threading_layer() == "workqueue":
        assert isinstance(K, _threads._Serialised)
    else:
        import nnkern.kernels.elementwise.cpu as module
        assert K is module                      # no wrapper, no cost, on TBB and OpenMP


def test_serialised_module_takes_turns():
    # the stand-in holds the lock around each entry point and passes everything else through
    import types
    seen = []

    def kernel(v):
        seen.append(_threads._LOCK._is_owned())
        return v + 1

    module = types.SimpleNamespace(__name__="fake", kernel=kernel, CONSTANT=3)
    stand_in = _threads._Serialised(module, ["kernel"])
    assert stand_in.kernel(1) == 2 and seen == [True]
    assert stand_in.CONSTANT == 3
    assert not _threads._LOCK._is_owned()


RELU = """
import warnings
import numpy as np
import nnkern, nnkern.functional as F
warnings.simplefilter("always")
nnkern.set_device("cpu")
print(F.relu(np.array([-1.0, 2.0], np.float32)).tolist())
"""


def _damage(folder, pattern):
    damaged = []
    for root, _, files in os.walk(folder):
        for name in files:
            if pattern in name and name.endswith((".nbi", ".nbc")):
                path = os.path.join(root, name)
                with open(path, "r+b") as f:
                    f.truncate(max(1, os.path.getsize(path) // 3))
                damaged.append(path)
    return damaged


def test_cut_short_cache_file_is_recompiled(tmp_path):
    env = {"NUMBA_CACHE_DIR": str(tmp_path)}
    first = _run(RELU, env)
    assert first.returncode == 0, first.stderr[-2000:]
    damaged = _damage(tmp_path, "_activation_forward")
    assert any(p.endswith(".nbi") for p in damaged) and any(p.endswith(".nbc") for p in damaged)
    # before the fix: UnpicklingError on every later run, until the file was deleted by hand
    second = _run(RELU, env)
    assert second.returncode == 0, second.stderr[-2000:]
    assert second.stdout.strip() == "[0.0, 2.0]"
    assert "NumbaCacheWarning" in second.stderr and "_activation_forward" in second.stderr
    assert os.path.dirname(damaged[0]) in second.stderr       # it says which folder
    # the recompiled kernel was saved again: the next run loads it without a word
    third = _run(RELU, env)
    assert third.returncode == 0 and "NumbaCacheWarning" not in third.stderr
    assert third.stdout.strip() == "[0.0, 2.0]"


def test_damaged_cache_of_other_code_is_left_to_numba(tmp_path):
    # only nnkern's kernels are recovered: a user's own cached function fails as Numba does
    src = tmp_path / "user_mod.py"
    src.write_text("from numba import njit\n\n@njit(cache=True)\ndef f(x):\n    return x + 1\n")
    code = "import nnkern, user_mod; print(user_mod.f(1))"
    env = {"PYTHONPATH": str(tmp_path), "NUMBA_CACHE_DIR": str(tmp_path / "cache")}
    assert _run(code, env).stdout.strip() == "2"
    _damage(tmp_path / "cache", "f-3")
    again = _run(code, env)
    assert again.returncode != 0 and "NumbaCacheWarning" not in again.stderr
