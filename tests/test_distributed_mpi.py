"""Data-parallel training on 2 MPI ranks (``mpiexec -n 2``), checked in this one process.

Each test launches ``tests/distributed_worker.py`` (or the main job, or the example) under
``mpiexec -n 2`` and compares what the ranks wrote with references computed here:

* **Equivalence.** 2 ranks with global batch B end with the weights of one process with
  batch B (``fit`` itself where no dropout or batch norm is involved; otherwise a
  one-process loop written from the definition: each part of a batch forward with its
  rank's dropout masks and its own batch statistics, the loss weighted by the part's
  size, one optimizer step, batch-norm buffers averaged).
  Tolerance: the harness's rule with rtol 1e-9 in float64 and 1e-4 in float32. The sums
  are not bit-exact (each rank sums its part of the batch, then the parts are summed,
  where one process sums the whole batch at once): float64 rounding then differs by about
  1e-16 relative per step, far inside 1e-9 after the 8 steps here, while a real error
  (an unscaled sum, a wrong weight of an uneven part, a rank training on the wrong
  samples, equal dropout masks on both ranks) moves the weights by 1e-3 or more.
* **Shards**, **resume** after both ranks are killed, **faults** (a rank killed, raising or
  hanging), the **main job** and the **example** on 2 ranks.
"""

import ast
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mpi4py", reason="the MPI tests need: pip install -e '.[distributed]'")

from distributed_cases import CASES, EPOCHS, build, case_data
from harness import assert_close

import nnkern
import nnkern.functional as F
from nnkern import distributed, layers

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
WORKER = TESTS / "distributed_worker.py"
MPIEXEC = shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or shutil.which("mpiexec")


def mpirun(*args, ranks=2, timeout=240, device="numpy", threads="1", cwd=ROOT):
    """Run ``python <args>`` on ``ranks`` MPI ranks; returns (returncode, output, seconds)."""
    if MPIEXEC is None:
        pytest.fail("mpi4py imports but no mpiexec was found: install the mpich wheel "
                    "(pip install -e '.[distributed]')")
    env = dict(os.environ, NNKERN_DEVICE=device, NUMBA_NUM_THREADS=threads,
               PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    start = time.monotonic()
    proc = subprocess.run([MPIEXEC, "-n", str(ranks), sys.executable, *map(str, args)],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                          check=False)
    return proc.returncode, proc.stdout + proc.stderr, time.monotonic() - start


def load(out, name, rank):
    with np.load(out / f"{name}-rank{rank}.npz") as f:
        weights = [f[f"w{i}"] for i in range(sum(k.startswith("w") for k in f.files))]
        extra = {k: json.loads(str(f[k])) for k in f.files if not k.startswith("w")}
    return weights, extra


# --- equivalence ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def equivalence_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("equivalence")
    code, output, _ = mpirun(WORKER, "equivalence", out)
    assert code == 0, output
    return out


def one_process_data_parallel(case, ranks=2):
    """What ``ranks`` ranks compute, in one process, written from the definition."""
    model = build(case)
    x, y, xv, yv = case_data(case)
    batch_size, n = CASES[case][4], len(x)
    steps = -(-n // batch_size)
    assert n % batch_size == 0 or n % batch_size >= 2 * ranks  # no batch folded here
    dropouts = [layer for layer in model.layers if isinstance(layer, layers.Dropout)]
    norms = [layer for layer in model.layers if isinstance(layer, layers.BatchNorm2D)]
    history = {"loss": [], "accuracy": [], "val_loss": [], "val_accuracy": []}
    for epoch in range(EPOCHS):
        order = np.random.default_rng([0, epoch]).permutation(n)
        loss_sum = correct = 0.0
        for step in range(steps):
            idx = order[step * batch_size:(step + 1) * batch_size]
            model.zero_grad()
            start_state = [{k: v.copy() for k, v in layer.state.items()} for layer in norms]
            start_steps = [layer.steps for layer in dropouts]
            end_states = []
            for rank in range(ranks):
                part = idx[rank * len(idx) // ranks:(rank + 1) * len(idx) // ranks]
                for layer, state in zip(norms, start_state):
                    for k, v in state.items():
                        layer.state[k][...] = v
                for layer, count in zip(dropouts, start_steps):
                    layer.steps = count
                distributed._rank_stream = (rank,)  # this rank's dropout masks
                try:
                    out = model.call(nnkern.tensor(x[part]), training=True)
                finally:
                    distributed._rank_stream = ()
                loss = model.loss(out, y[part])
                (loss * (len(part) / len(idx))).backward()
                loss_sum += float(loss.data) * len(part)
                correct += float(np.sum(out.numpy().argmax(axis=1) == y[part]))
                end_states.append([{k: v.copy() for k, v in layer.state.items()}
                                   for layer in norms])
            for i, layer in enumerate(norms):
                for k in layer.state:
                    layer.state[k][...] = np.mean([s[i][k] for s in end_states], axis=0)
            model.optimizer.step()
        val = model.evaluate(xv, yv, return_dict=True)
        history["loss"].append(loss_sum / n)
        history["accuracy"].append(correct / n)
        history["val_loss"].append(val["loss"])
        history["val_accuracy"].append(val["accuracy"])
    return model, history


def check_history(got, expected, dtype, what):
    for key, values in expected.items():
        assert_close(np.array(got[key]), np.array(values), dtype, f"{what} history {key}")


@pytest.mark.parametrize("case", list(CASES))
def test_two_ranks_equal_one_process_with_the_global_batch(equivalence_run, case):
    dtype = CASES[case][3]
    weights0, extra0 = load(equivalence_run, case, 0)
    weights1, extra1 = load(equivalence_run, case, 1)
    for a, b in zip(weights0, weights1):  # the replicas stay identical, bit for bit
        np.testing.assert_array_equal(a, b)
    assert extra0["history"] == extra1["history"]

    model, history = one_process_data_parallel(case)
    for i, (got, expected) in enumerate(zip(weights0, model.get_weights())):
        assert_close(got, expected, dtype, f"{case} weight {i}")
    check_history(extra0["history"], history, dtype, case)
    test = model.evaluate(*case_data(case)[2:], return_dict=True)  # the global one
    assert_close(np.array([extra0["test"]["loss"]]), np.array([test["loss"]]), dtype, "test")
    assert extra0["test"]["accuracy"] == test["accuracy"]


@pytest.mark.parametrize("case", ["sgd", "adam", "adam_batchnorm", "sgd_float32"])
def test_two_ranks_equal_plain_fit_without_dropout(equivalence_run, case):
    # no dropout: one process's own fit with batch B is the reference (batch norm's local
    # statistics make that case differ from it, so it is checked as a difference)
    weights, extra = load(equivalence_run, case, 0)
    x, y, xv, yv = case_data(case)
    model = build(case)
    history = model.fit(x, y, batch_size=CASES[case][4], epochs=EPOCHS, verbose=0,
                        validation_data=(xv, yv), seed=0)
    if case == "adam_batchnorm":
        gaps = [np.max(np.abs(a - b)) for a, b in zip(weights, model.get_weights())]
        assert max(gaps) > 1e-6, "local batch statistics should differ from global ones"
        return
    for i, (got, expected) in enumerate(zip(weights, model.get_weights())):
        assert_close(got, expected, CASES[case][3], f"{case} weight {i}")
    check_history(extra["history"], history.history, CASES[case][3], case)


def test_dropout_masks_differ_across_ranks_and_repeat_from_the_seed(equivalence_run):
    masks = [load(equivalence_run, "mask", rank)[0][0] for rank in (0, 1)]
    assert (masks[0] != masks[1]).mean() > 0.25  # independent masks of p = 0.5 differ at ~50%
    for rank, mask in enumerate(masks):
        # the documented rule: a rank draws from (layer seed, step, rank)
        seed = int(np.random.default_rng([3, 0, rank]).integers(0, 2**31 - 1))
        expected = F.dropout(np.ones((2, 64)), 0.5, training=True, seed=seed) != 0
        np.testing.assert_array_equal(mask, expected)
    first, _ = load(equivalence_run, "adam_dropout", 0)
    again, _ = load(equivalence_run, "adam_dropout-again", 0)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)


# --- shards --------------------------------------------------------------------------------------


def test_the_ranks_shards_cover_each_epoch_exactly_once(tmp_path):
    code, output, _ = mpirun(WORKER, "shards", tmp_path)
    assert code == 0, output
    seen = [load(tmp_path, "shards", rank)[1]["seen"] for rank in (0, 1)]
    n, batch = 23, 6
    for epoch in range(3):
        ids = [seen[rank][epoch] for rank in (0, 1)]
        assert sorted(ids[0] + ids[1]) == list(range(n))  # every sample once, none twice
        order = np.random.default_rng([0, epoch]).permutation(n)
        for rank in (0, 1):  # each rank's part of each global batch, in order
            expected = []
            for start in range(0, n, batch):
                b = order[start:start + batch]
                expected += b[rank * len(b) // 2:(rank + 1) * len(b) // 2].tolist()
            assert ids[rank] == expected
    assert seen[0][0] != seen[0][1]  # a new shuffle every epoch


# --- resume --------------------------------------------------------------------------------------


def test_killed_ranks_resume_to_the_weights_of_an_uninterrupted_run(tmp_path):
    full, cut = tmp_path / "full", tmp_path / "cut"
    full.mkdir()
    cut.mkdir()
    code, output, _ = mpirun(WORKER, "resume", full, full / "ckpt.npz", full / "log.csv")
    assert code == 0, output
    code, output, _ = mpirun(WORKER, "resume", cut, cut / "ckpt.npz", cut / "log.csv", 2, 1)
    assert code != 0 and not list(cut.glob("resume-*.npz")), output  # both ranks died
    assert nnkern.models.load_checkpoint(cut / "ckpt.npz")[1] == 2
    code, output, _ = mpirun(WORKER, "resume", cut, cut / "ckpt.npz", cut / "log.csv")
    assert code == 0, output

    for rank in (0, 1):
        expected, run = load(full, "resume", rank), load(cut, "resume", rank)
        for a, b in zip(run[0], expected[0]):
            np.testing.assert_array_equal(a, b)
        assert run[1]["history"] == expected[1]["history"]
    # only rank 0 wrote: the other ranks' paths were never created, the CSV has one row
    # per epoch (two writers would have doubled them)
    assert not list(tmp_path.rglob("*must-not-exist*"))
    rows = (cut / "log.csv").read_text().splitlines()
    assert len(rows) == 1 + 4 and rows == (full / "log.csv").read_text().splitlines()


# --- faults --------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode, message", [
    ("kill", "BAD TERMINATION"),                                       # mpiexec ends the others
    ("raise", "rank 1 of 2: stopped by RuntimeError: injected failure on rank 1"),
    ("hang", "rank 0 of 2: allreduce of 1 float64 waited"),            # the 3 s timeout
])
def test_a_failed_rank_ends_every_rank_with_a_clear_error(tmp_path, mode, message):
    code, output, seconds = mpirun(WORKER, "fault", mode, tmp_path, timeout=120)
    assert code != 0, output
    assert message in output, f"exit status {code} after {seconds:.1f} s; output: {output!r}"
    assert seconds < 60, f"{mode}: the job took {seconds:.0f} s to end"
    assert not list(tmp_path.glob("fault-*.npz")), "a rank finished training alone"


# --- main job and example ------------------------------------------------------------------------


def test_main_job_on_two_ranks_reaches_its_bar():
    code, output, _ = mpirun("-m", "nnkern", "--distributed", device="cpu")
    assert code == 0, output
    accuracy = float(output.split("test accuracy: ")[1].split()[0])
    assert accuracy >= 0.97, output
    assert "2 processes" in output
    assert output.count("Epoch 15/15") == 1  # only rank 0 prints


def test_resnet_data_parallel_example_runs_on_two_ranks():
    code, output, _ = mpirun(ROOT / "examples" / "resnet_data_parallel.py", "--epochs", "2",
                             device="cpu")
    assert code == 0, output
    assert output.count("time per epoch") == 1 and "2 processes" in output, output


def test_readme_script_runs_on_two_ranks(tmp_path):
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## More than one machine"):text.index("## Tests")]
    script = section.split("```python\n")[1].split("```")[0]
    (tmp_path / "train.py").write_text(script.replace("epochs=5", "epochs=5, verbose=0"))
    code, output, _ = mpirun("train.py", device="cpu", cwd=tmp_path)
    assert code == 0, output
    assert output.count("'accuracy'") == 1  # rank 0 printed, once
    scores = ast.literal_eval(output[output.index("{"):output.index("}") + 1])
    assert scores["accuracy"] > 0.8
    assert (tmp_path / "digits.npz").exists()
