"""bench/gpu_check.py end to end under the simulator (``--dry-run``): every step runs,
every nnkern kernel it times first agrees with an independent peer (NumPy's matmul and
maximum; PyTorch's conv, pooling, cross-entropy, batch norm, Adam and LeNet step where
PyTorch imports), and the JSON lines say so. A GPU run uses the same code on real shapes."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check")
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    run = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "gpu_check.py"),
                          "--dry-run", "--budget", "100000", "--out", str(out)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=900, check=False)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    with open(out / "gpu_check.jsonl") as fh:
        return [json.loads(line) for line in fh]


def _has_torch():
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def test_every_step_ran(records):
    done = [r["step"] for r in records if "done_s" in r]
    assert done == ["env", "compile", "kernels", "host", "lenet", "tests"]
    assert records[-1]["step"] == "done" and records[-1]["steps_failed"] == 0
    assert not [r for r in records if r.get("ok") is False]
    assert not [r for r in records if "error" in r]


def test_every_float32_kernel_compiled(records):
    from nnkern.kernels.conv import cuda as conv
    from nnkern.kernels.gemm import cuda as gemm

    compiled = {(r["family"], r["kernel"]) for r in records
                if r["step"] == "compile" and r.get("ok")}
    for family, mod in (("gemm", gemm), ("conv", conv)):
        names = set(mod.build(__import__("numba").float32))
        assert {(family, n) for n in names} <= compiled
    families = {f for f, _ in compiled}
    assert families == set(__import__("nnkern.kernels").kernels.FAMILIES)  # every family


def test_kernels_checked_against_peers(records):
    checks = [r for r in records if r["step"] == "kernels" and "check" in r]
    checked = {r["case"].split()[0] for r in checks}
    assert {"sgemm", "relu"} <= checked
    if _has_torch():
        assert {"conv", "max_pool2d", "softmax-CE", "batch", "Adam"} <= checked
        conv_passes = {r["case"].split()[-1] for r in checks if r["case"].startswith("conv")}
        assert conv_passes == {"forward", "backward-data", "backward-weights"}
    assert all(r["ok"] for r in checks)
    timed = [r for r in records if r["step"] == "kernels" and "ms" in r]
    assert {r["impl"] for r in timed if r["case"].startswith("sgemm")} >= {"nnkern v3", "numpy"}
    assert all(r["ms"] > 0 for r in timed)


def test_host_and_lenet_rows(records):
    host = {r["impl"] for r in records if r["step"] == "host" and "impl" in r}
    assert {"nnkern F.relu", "nnkern relu launcher"} <= host
    lenet = [r for r in records if r["step"] == "lenet"]
    assert any(r.get("impl") == "nnkern" and r["images_per_s"] >= 0 for r in lenet)
    if _has_torch():
        assert [r["ok"] for r in lenet if "check" in r] == [True]


def test_gpu_tests_collected(records):
    collected = [r["collected"] for r in records if r["step"] == "tests" and "collected" in r]
    assert collected and collected[0] > 0
