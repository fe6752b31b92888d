"""Correctness of the benchmark harness itself (fast; no GPU, no PyTorch needed).

    python -m pytest -q tests/test_bench_harness.py

Checks the validation rule, the timing plan, the interleaved timer, the
ratio bookkeeping, the work counts of the issue-bar cases and that a tiny
run writes a table, JSON, Markdown and plots.
"""

import json
import math

import numpy as np
import pytest

from bench import cases as case_registry
from bench import core, report
from bench.core import Case, Impl, Skip


def test_compare_accepts_rounding_and_rejects_errors():
    e = np.linspace(-1, 1, 101)
    assert core.compare((e * (1 + 1e-5),), (e,), 1e-3) is None
    wrong = e.copy()
    wrong[7] += 0.1
    msg = core.compare((wrong,), (e,), 1e-3)
    assert msg and "1/101" in msg and "(7,)" in msg
    assert "shape" in core.compare((e[:5],), (e,), 1e-3)
    nan = e.copy()
    nan[3] = np.nan
    assert "non-finite" in core.compare((nan,), (e,), 1e-3)
    assert "outputs" in core.compare((e, e), (e,), 1e-3)
    assert core.compare((None,), (None,), 1e-3) is None
    assert core.compare((np.array([1, 2]),), (np.array([1, 3]),), 1e-3)


def test_plan_sizes_samples_and_respects_the_budget():
    assert core.plan(1e-3, 7, target_s=0.01) == (10, 7)
    assert core.plan(0.5, 7, target_s=0.01, budget_s=2.0) == (1, 4)
    assert core.plan(0.9, 7, target_s=0.01, budget_s=2.0) == (1, 3)
    assert core.plan(30.0, 7, target_s=0.01, budget_s=20.0) == (1, 1)
    assert core.plan(1e-9, 3, target_s=1.0)[0] == 10_000


def _toy_case(nnkern_scale=2.0, broken_peer=False, skip_device=None):
    """y = 2 * x, with a 'nnkern' that is really NumPy (scaled by ``nnkern_scale``)."""
    def nnkern(dev):
        if dev == skip_device:
            raise Skip("no such backend here")
        return Impl(label=f"nnkern[{dev}]", kind="nnkern", place="host",
                    prepare=lambda d: d, run=lambda s: nnkern_scale * s["x"],
                    fetch=lambda o: (o,), device=dev)

    def peer(place, env):
        if broken_peer:
            raise RuntimeError("peer broke")
        return Impl(label="numpy", kind="peer", place="host", prepare=lambda d: d,
                    run=lambda s: np.multiply(s["x"], 2.0), fetch=lambda o: (o,),
                    device="numpy")

    return Case(family="toy", name="double", shape="x (1000,)",
                make_inputs=lambda rng: {"x": rng.standard_normal(1000).astype(np.float32)},
                nnkern=nnkern, peers={"numpy": peer}, bytes=8000.0, metric="byte",
                places=("host",), reference=lambda d: (2.0 * d["x"],))


def _env():
    return core.Env(devices=["numpy", "cpu"], peers={"numpy": np.__version__}, skipped=[])


def test_run_case_validates_times_and_computes_ratios():
    ceilings = {"host": {"byte": {"rate": 10.0}}}
    case = _toy_case()
    case.bars = {"host": ("numpy", 1e-6)}
    results, skipped = core.run_case(case, _env(), ["numpy", "cpu"], ["numpy"], 3,
                                     ceilings, lambda msg: None, budget_s=1.0)
    assert skipped == []
    by = {m.impl: m for m in results}
    assert set(by) == {"nnkern[numpy]", "nnkern[cpu]", "numpy"}
    for m in results:
        assert m.ok() and m.ms > 0 and m.repeats >= 1 and m.rate_unit == "GB/s"
        assert math.isclose(m.rate, 8000.0 / (m.ms / 1e3) / 1e9)
        assert math.isclose(m.ceiling_fraction, m.rate / 10.0)
    cpu = by["nnkern[cpu]"]
    assert math.isclose(cpu.ratios_of_medians["numpy"], by["numpy"].ms / cpu.ms)
    pairs = [p / o for p, o in zip(by["numpy"].samples_ms, cpu.samples_ms, strict=True)]
    assert math.isclose(cpu.ratios["numpy"], sorted(pairs)[1])
    assert by["numpy"].repeats == cpu.repeats == 3  # the numpy peer is not capped
    assert cpu.best_ms <= cpu.ms
    assert by["numpy"].ratios == {}
    assert cpu.bar == ">= 1e-06x numpy: met" and by["nnkern[numpy]"].bar == ""


def test_run_case_reports_invalid_and_skipped_without_timing_them():
    results, skipped = core.run_case(_toy_case(nnkern_scale=3.0, skip_device="cpu"), _env(),
                                     ["numpy", "cpu"], ["numpy"], 3, {}, lambda msg: None,
                                     budget_s=1.0)
    by = {m.impl: m for m in results}
    assert by["nnkern[numpy]"].status.startswith("invalid")
    assert math.isnan(by["nnkern[numpy]"].ms)
    assert by["nnkern[numpy]"].ratios == {}
    assert [s[1] for s in skipped] == ["double nnkern[cpu]"]
    with pytest.raises(RuntimeError):
        core.run_case(_toy_case(broken_peer=True), _env(), ["cpu"], ["numpy"], 3, {},
                      lambda msg: None)


def test_ceilings_keep_the_fastest_of_start_and_end():
    a = {"host": {"flop": {"rate": 50.0, "median": 40.0, "samples": [50.0], "repeats": 1}}}
    b = {"host": {"flop": {"rate": 70.0, "median": 60.0, "samples": [70.0], "repeats": 1}}}
    merged = core.merge_ceilings(a, b)["host"]["flop"]
    assert merged["rate"] == 70.0 and merged["median"] == 40.0
    assert merged["median_at_end"] == 60.0 and merged["repeats"] == 2
    m = core.Measurement("c", "f", "", "nnkern[cpu]", "nnkern", "host", rate=35.0,
                         rate_unit="GFLOP/s")
    core.apply_ceilings([m], {"host": {"flop": merged}})
    assert m.ceiling_fraction == 0.5
    peer = core.Measurement("sgemm", "gemm", "", "numpy", "peer", "host", flops=8e9,
                            samples_ms=[100.0, 80.0])
    folded = core.fold_vendor_sgemm({"host": {"flop": dict(merged)}}, [peer])
    assert folded["host"]["flop"]["rate"] == 100.0 and "numpy" in folded["host"]["flop"]["from"]


def test_paired_ratio_cancels_a_drifting_machine():
    own = [10.0, 10.0, 20.0, 20.0, 20.0]
    peer = [5.0, 5.0, 10.0, 10.0]
    assert core.paired_ratio(peer, own) == 0.5
    assert core.paired_ratio([], own) != core.paired_ratio([], own)  # NaN


def test_interleaved_timer_takes_one_sample_per_round():
    order = []

    def impl(name):
        return Impl(label=name, kind="peer", place="host", prepare=lambda d: d,
                    run=lambda s: order.append(name), fetch=lambda o: ())

    ready = [core._Ready(impl=impl(n), m=core.Measurement("c", "f", "", n, "peer", "host"),
                         states=[None], timer=core.HostTimer(), number=1, repeats=r)
             for n, r in (("a", 3), ("b", 2))]
    core.time_interleaved(_toy_case(), ready)
    assert order == ["a", "b", "a", "b", "a"]
    assert [r.m.repeats for r in ready] == [3, 2]


def test_issue_bar_cases_count_their_work():
    full = {c.name: c for c in case_registry.load(case_registry.FAMILIES, quick=False)}
    assert full["sgemm NN 2048"].flops == 2 * 2048**3
    assert {f"sgemm {t} {n}" for t in ("NN", "NT", "TN", "TT") for n in (1024, 2048)} <= set(full)
    conv = full["conv fwd+bwd direct N128 C32 K64 28x28"]
    assert conv.flops == 3 * 2 * 128 * 64 * 28 * 28 * 32 * 3 * 3
    assert full["conv fwd+bwd im2col N64 C128 K128 56x56"].places == ("gpu",)
    assert full["sgemm NN 4096"].places == ("gpu",)
    assert full["adam 1Mi params"].bytes == 7 * 4 * 2**20
    assert full["softmax-CE fwd+bwd N1024 C1000"].bytes == 8 * 1024 * 1000 + 8 * 1024
    assert {f"LeNet-5 train step batch {b}" for b in (64, 128, 256)} <= set(full)
    quick = case_registry.load(case_registry.FAMILIES, quick=True)
    assert {c.family for c in quick} == set(case_registry.FAMILIES)
    for c in quick:
        inputs = c.make_inputs(np.random.default_rng(0))
        for k, v in inputs.items():
            if v.dtype.kind == "f" and v.ndim:
                assert v.dtype == np.float32 and np.count_nonzero(v) > 0.9 * v.size, (c.name, k)


def test_outputs_are_written_and_readable(tmp_path):
    results, skipped = core.run_case(_toy_case(), _env(), ["cpu"], ["numpy"], 2,
                                     {"host": {"flop": {"rate": 110.0, "median": 100.0,
                                                        "what": "x", "repeats": 1},
                                               "byte": {"rate": 11.0, "median": 10.0,
                                                        "what": "y", "repeats": 1}}},
                                     lambda msg: None, budget_s=0.5)
    skipped.append(("peer", "torch", "not installed"))
    facts = core.machine_facts(_env(), ["python", "-m", "bench", "--quick"])
    written = report.write_all(str(tmp_path), results, facts, {}, skipped, {"quick": True},
                               print)
    assert {"table.txt", "results.json", "results.md"} <= set(written)
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["machine"]["cpu_model"] and data["machine"]["command"].endswith("--quick")
    assert data["skipped"][0]["why"] == "not installed"
    assert {r["impl"] for r in data["results"]} == {"nnkern[cpu]", "numpy"}
    md = (tmp_path / "results.md").read_text()
    assert "| double | nnkern[cpu] |" in md and "x numpy" in md
    pytest.importorskip("matplotlib")
    assert "ratios.png" in written
    assert (tmp_path / "ratios.png").stat().st_size > 1000


def test_command_line_quick_gemm_on_numpy(tmp_path):
    from bench.run import main

    rc = main(["--quick", "--ops", "gemm", "--devices", "numpy", "--peers", "numpy",
               "--repeats", "1", "--no-plots", "--out", str(tmp_path)])
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["results"], data["skipped"]
    assert rc == 0
    assert all(r["status"] == "ok" for r in data["results"])
    assert data["ceilings"]["host"]["flop"]["rate"] > 0
