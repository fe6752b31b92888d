"""Correctness of the benchmark harness itself (fast; no GPU, no PyTorch needed).

    python -m pytest -q tests/test_bench_harness.py

Checks the validation rule, the timing plan, the interleaved timer, the
ratio bookkeeping, the spread and stability of ratios, the machine-load
figures, peer keys and the fastest setting of a library, peers in a child
process, --compare, the plots' colours and labels, the work counts of the
issue-bar cases, the output folder and that a tiny run writes a table, JSON,
Markdown and plots. Most use fake timings and fake implementations.
"""

import json
import math
import os
import subprocess
import time
from functools import partial

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


# no ratio is unstable under these limits: for tests of the bookkeeping on a loaded machine
LENIENT = core.Limits(max_spread=math.inf, max_median_over_best=math.inf, max_busy=1.0,
                      min_samples=1)


def _env():
    return core.Env(devices=["numpy", "cpu"], peers={"numpy": np.__version__}, skipped=[])


def test_run_case_validates_times_and_computes_ratios():
    ceilings = {"host": {"byte": {"rate": 10.0}}}
    case = _toy_case()
    case.bars = {"host": ("numpy", 1e-6)}
    results, skipped = core.run_case(case, _env(), ["numpy", "cpu"], ["numpy"], 3,
                                     ceilings, lambda msg: None, budget_s=1.0,
                                     limits=LENIENT)
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


# --------------------------------------------------------------------------------------
# spread and stability


def _m(case, impl, samples, kind=None, place="host", solo=False, busy=0.0):
    """A fake measurement with the given samples (ms)."""
    kind = kind or ("nnkern" if impl.startswith("nnkern") else "peer")
    return core.Measurement(case, "toy", "", impl, kind, place, ms=float(np.median(samples)),
                            best_ms=float(min(samples)), samples_ms=list(samples),
                            repeats=len(samples), solo=solo, busy=busy)


def test_ratio_stats_pairs_rounds_or_crosses_all_samples():
    st = core.ratio_stats([2.0, 4.0, 6.0, 8.0, 10.0], [1.0, 2.0, 2.0, 2.0, 2.0])
    assert (st.median, st.q25, st.q75, st.count, st.paired) == (3.0, 2.0, 4.0, 5, True)
    assert st.spread == pytest.approx(2.0 / 3.0)
    un = core.ratio_stats([2.0, 4.0], [1.0, 2.0], paired=False)  # 2, 1, 4, 2
    assert (un.median, un.q25, un.q75, un.count, un.paired) == (2.0, 1.75, 2.5, 2, False)
    assert core.ratio_stats([], [1.0]) is None


def test_a_wide_spread_peer_is_unstable_and_never_a_headline():
    own = _m("c", "nnkern[cpu]", [1.0] * 7)
    steady = _m("c", "torch", [2.0, 2.02, 1.98, 2.0, 2.01, 1.99, 2.0])
    wide = _m("c", "torch[channels_last]", [1.0, 3.0, 1.0, 3.0, 1.0, 3.0, 1.0])
    results = [own, steady, wide]
    core.compute_ratios(results, {"host": ("torch[channels_last]", 1.0)}, core.Limits())
    assert own.ratios == {"torch": 2.0, "torch[channels_last]": 1.0}
    assert "torch" not in own.unstable
    assert own.unstable["torch[channels_last]"].startswith("spread 200%")
    assert own.bar.endswith("unsure (unstable)")
    # the wide one has the lower median (1.0 ms), so it is torch's fastest setting: the
    # headline must say "unstable", not 1.00
    assert report.fastest_setting(results, own, "torch") == (
        "torch[channels_last]", own.unstable["torch[channels_last]"])
    header, body = report.headline_rows(results)
    assert body[0][header.index("x torch")] == "unstable"
    assert "(unsure)" in body[0][header.index("fastest peer setting")]
    assert report.furthest(results) == []
    ratio_body = report.ratio_rows(results)[1]
    assert [r[7].startswith("UNSTABLE") for r in ratio_body] == [False, True]
    assert any("torch[channels_last]" in line for line in report.unstable_lines(results))
    # computed again once the peer is steady: nothing stale is left
    wide.samples_ms = [1.0] * 7
    core.compute_ratios(results, {}, core.Limits())
    assert own.unstable == {} and own.ratio_iqr["torch[channels_last]"] == [1.0, 1.0]


def test_a_peer_median_far_from_its_best_or_a_busy_case_is_unstable():
    own = _m("c", "nnkern[cpu]", [1.0] * 5)
    far = _m("c", "numpy", [0.3, 7.0, 7.0, 7.0, 7.0])  # issue 17: a 7 ms median, a 0.3 ms best
    core.compute_ratios([own, far], {}, core.Limits())
    assert own.unstable["numpy"] == "numpy median 23.33x its best"
    own = _m("c", "nnkern[cpu]", [1.0] * 5, busy=0.4)
    peer = _m("c", "numpy", [2.0] * 5, busy=0.4)
    core.compute_ratios([own, peer], {}, core.Limits())
    assert "busy: other processes took 40% of the CPUs" in own.unstable["numpy"]
    own = _m("c", "nnkern[cpu]", [1.0, 1.0])
    core.compute_ratios([own, _m("c", "numpy", [2.0, 2.0])], {}, core.Limits())
    assert own.unstable["numpy"].endswith("2 samples")


def test_a_steady_ratio_is_the_headline_against_the_fastest_setting():
    own = _m("c", "nnkern[cpu]", [1.0] * 5)
    slow = _m("c", "torch", [3.0, 3.3, 2.7, 3.0, 3.0])
    fast = _m("c", "torch[mkldnn]", [1.2, 1.21, 1.19, 1.2, 1.2])
    results = [own, slow, fast]
    core.compute_ratios(results, {"host": ("torch", 1.0)}, core.Limits())
    assert not own.unstable and own.bar == ">= 1x torch: met"
    assert report.fastest_setting(results, own, "torch") == ("torch[mkldnn]", "")
    header, body = report.headline_rows(results)
    assert body[0][header.index("x torch")] == "1.20 [1.20-1.20]"
    assert body[0][header.index("fastest peer setting")] == "torch[mkldnn]"
    assert report.furthest(results) == [(1.2, own, "torch[mkldnn]")]
    # a faster setting that is unstable and whose best beat the chosen median: unsure
    noisy = _m("c", "torch[channels_last]", [0.9, 3.0, 3.0, 3.0, 3.0])
    results.append(noisy)
    core.compute_ratios(results, {}, core.Limits())
    key, why = report.fastest_setting(results, own, "torch")
    assert key == "torch[mkldnn]" and "torch[channels_last] is unstable" in why


def test_run_case_marks_an_erratic_fake_peer_unstable():
    """End to end through the timer: a peer that takes 1 or 4 ms in turn."""
    turn = [0]

    def erratic(s):
        turn[0] += 1
        time.sleep(0.004 if turn[0] % 2 else 0.001)
        return 2.0 * s["x"]

    case = _toy_case()
    case.peers = {"numpy[erratic]": lambda place, env: Impl(
        label="?", kind="peer", place="host", prepare=lambda d: d, run=erratic,
        fetch=lambda o: (o,), device="numpy")}
    limits = core.Limits(max_median_over_best=math.inf, max_busy=1.0)
    results, _ = core.run_case(case, _env(), ["cpu"], ["numpy"], 8, {}, lambda msg: None,
                               budget_s=1.0, target_s=1e-6, limits=limits)
    own = {m.impl: m for m in results}["nnkern[cpu]"]
    assert own.unstable["numpy[erratic]"].startswith("spread")
    assert report.headline_rows(results)[1][0][5] == "unstable"


# --------------------------------------------------------------------------------------
# the machine's load


def _snap(total, busy, own):
    return core.CpuSnapshot(wall=0.0, total=total, busy=busy, own=own)


def test_others_cpu_is_busy_time_less_our_own():
    seconds, share = core.others_cpu(_snap(100.0, 10.0, 5.0), _snap(110.0, 18.0, 9.0))
    assert seconds == pytest.approx(4.0 - core._TICK_SLACK_S)
    assert share == pytest.approx(seconds / 10.0)
    # only our own work: nobody else, whatever a tick of rounding says
    assert core.others_cpu(_snap(0.0, 0.0, 0.0), _snap(2.0, 1.02, 1.0)) == (0.0, 0.0)
    assert core.others_cpu(_snap(None, None, 0.0), _snap(None, None, 1.0)) == (None, None)


def test_cpu_snapshot_reads_the_machine_and_counts_our_own_time(tmp_path):
    fake = tmp_path / "stat"
    fake.write_text("cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3\n")
    snap = core.cpu_snapshot(str(fake))
    tick = core._CLOCK_TICK
    assert snap.total == pytest.approx(1000 / tick) and snap.busy == pytest.approx(150 / tick)
    assert core.cpu_snapshot(str(tmp_path / "missing")).total is None
    before = core.cpu_snapshot()
    t0 = time.process_time()
    while time.process_time() - t0 < 0.2:
        pass
    after = core.cpu_snapshot()
    assert after.own - before.own >= 0.15
    if before.total is not None:  # Linux: /proc/stat saw at least our own work
        assert after.busy - before.busy >= 0.1


def test_a_busy_run_says_so_in_its_first_line(tmp_path):
    results, _ = core.run_case(_toy_case(), _env(), ["cpu"], ["numpy"], 3, {},
                               lambda msg: None, budget_s=0.5)
    for m in results:
        m.busy = 0.5
    core.compute_ratios(results, {}, core.Limits())
    limits = core.Limits()
    load = core.run_load(_snap(0.0, 0.0, 0.0), _snap(20.0, 12.0, 2.0), results, limits, [3.1])
    assert load["others_share"] == pytest.approx(0.5 - core._TICK_SLACK_S / 20)
    assert load["busy_cases"] == 1 and core.is_busy(load, limits)
    facts = core.machine_facts(_env(), ["python", "-m", "bench"])
    facts.update(load=load, busy=True)
    report.write_all(str(tmp_path), results, facts, {}, [], {}, print, plots=False)
    first = (tmp_path / "table.txt").read_text().splitlines()[0]
    assert first.startswith("BUSY MACHINE: other processes took 50% of the CPUs")
    assert "load average 3.1 at the start" in first and "1 of 1 ratios are unstable" in first
    md = (tmp_path / "results.md").read_text().splitlines()
    assert "BUSY MACHINE" in md[0]
    quiet = dict(load, others_share=0.01, busy_cases=0)
    assert not core.is_busy(quiet, limits)
    assert report.summary_line({"load": quiet}, []).startswith("Quiet machine")


# --------------------------------------------------------------------------------------
# peer keys, child processes, solo timing


def test_peer_keys_select_a_library_or_one_setting():
    keys = ["torch", "torch[channels_last]", "torch[mkldnn]", "numpy"]
    assert core.peer_library("torch[fused]") == "torch"
    assert core.select_peers(keys, ["torch"]) == keys[:3]
    assert core.select_peers(keys, ["torch[mkldnn]", "numpy"]) == ["torch[mkldnn]", "numpy"]
    from bench.run import parse_args

    assert parse_args(["--peers", "torch[fused],numpy"]).peers == ["torch[fused]", "numpy"]
    with pytest.raises(SystemExit):
        parse_args(["--peers", "tensorflow"])


def test_peers_of_pool_and_adam_include_the_fast_settings():
    full = {c.name: c for c in case_registry.load(["pool", "optim"], quick=False)}
    assert set(full["max_pool2d 2x2 fwd+bwd 128x64x28x28"].peers) == {
        "torch", "torch[channels_last]", "torch[mkldnn]"}
    assert set(full["adam 1Mi params"].peers) == {"torch", "torch[foreach]", "torch[fused]"}


def _env_peer(place, env, names):
    """A fake peer (module level: a child process unpickles it) whose output is the
    values of the environment variables ``names`` where it runs, NaN where unset."""
    def run(s):
        return np.array([float(os.environ.get(n, "nan")) for n in names]) + 0 * s["x"][0]
    return Impl(label="numpy[env]", kind="peer", place=place, prepare=lambda d: d,
                run=run, fetch=lambda o: (o,), device="numpy")


def test_a_child_peer_runs_in_its_own_environment(monkeypatch):
    from bench import START_ENV
    from bench.cases._common import child_peer

    monkeypatch.delitem(START_ENV, "OMP_WAIT_POLICY", raising=False)
    assert core.child_environment()["OMP_WAIT_POLICY"] == "passive"  # the bench's setting
    assert "OMP_WAIT_POLICY" not in core.child_environment(unset=("OMP_WAIT_POLICY",))
    names = ("NNKERN_BENCH_TEST", "NNKERN_BENCH_GONE")
    monkeypatch.setitem(START_ENV, "NNKERN_BENCH_GONE", "1")  # as if set when the bench began
    monkeypatch.setenv("NNKERN_BENCH_TEST", "3")  # set later in the parent: not inherited
    build = child_peer("numpy", partial(_env_peer, names=names), unset=("NNKERN_BENCH_GONE",),
                       setenv={"NNKERN_BENCH_TEST": "7"})
    impl = build("host", _env())
    plain = child_peer("numpy", partial(_env_peer, names=names))("host", _env())
    try:
        pid = int(impl.device.split()[-1].rstrip(")"))
        assert pid != os.getpid() and pid in core._CHILD_PIDS
        state = impl.prepare({"x": np.ones(4, np.float32)})
        (out,) = impl.fetch(impl.run(state))
        np.testing.assert_array_equal(out, [7.0, np.nan])
        (out,) = plain.fetch(plain.run(plain.prepare({"x": np.ones(4)})))
        np.testing.assert_array_equal(out, [np.nan, 1.0])
        seconds, wall = impl.sample([state], 5)
        assert seconds > 0 and wall is None
        assert impl.solo
    finally:
        impl.close()
        plain.close()
    assert pid not in core._CHILD_PIDS
    with pytest.raises(RuntimeError, match="child"):
        impl.run(state)


def test_run_case_times_a_child_peer_solo_and_unpaired():
    from bench.cases import elementwise
    from bench.cases._common import child_peer

    case = _toy_case()
    case.peers = {"numpy": child_peer("numpy", partial(elementwise._numpy, backward=False))}
    case.reference = lambda d: (np.maximum(d["x"], 0),)
    case.nnkern = lambda dev: Impl(label="nnkern[cpu]", kind="nnkern", place="host",
                                   prepare=lambda d: d, run=lambda s: np.maximum(s["x"], 0),
                                   fetch=lambda o: (o,), device="cpu")
    results, skipped = core.run_case(case, _env(), ["cpu"], ["numpy"], 3, {},
                                     lambda msg: None, budget_s=0.5)
    assert skipped == []
    by = {m.impl: m for m in results}
    assert all(m.ok() for m in results), [m.status for m in results]
    assert by["numpy"].solo and by["numpy"].repeats == 3
    assert by["nnkern[cpu]"].ratio_paired == {"numpy": False}
    assert not core._CHILD_PIDS  # closed after the case


def test_a_solo_impl_is_timed_after_the_rounds():
    order = []

    def impl(name, solo):
        return Impl(label=name, kind="peer", place="host", prepare=lambda d: d,
                    run=lambda s: order.append(name), fetch=lambda o: (), solo=solo)

    ready = [core._Ready(impl=impl(n, solo), m=core.Measurement("c", "f", "", n, "peer", "host"),
                         states=[None], timer=core.HostTimer(), number=1, repeats=2)
             for n, solo in (("a", False), ("s", True), ("b", False))]
    core.time_interleaved(_toy_case(), ready)
    assert order == ["a", "b", "a", "b", "s", "s"]


# --------------------------------------------------------------------------------------
# --compare


def _run_file(path, ratio, spread, unstable=False):
    """A results.json with one nnkern row and one numpy peer whose paired ratios have the
    given median and relative spread (or a median far from the best: unstable)."""
    own = [1.0] * 9
    factors = np.linspace(1 - spread, 1 + spread, 9)
    peer = list(ratio * factors)
    if unstable:
        peer[0] = ratio / 10
    results = [_m("c", "nnkern[cpu]", own), _m("c", "numpy", peer)]
    facts = {"machine": "m", "date_utc": "d", "git_commit": "abc", "cpu_model": "x"}
    path.write_text(report.to_json(results, facts, {}, [], {"limits": {}}))
    return str(path)


def test_compare_flags_a_2x_change_and_not_5_percent_inside_the_spread(tmp_path):
    old = _run_file(tmp_path / "old.json", 1.0, 0.10)
    twice = _run_file(tmp_path / "twice.json", 0.5, 0.10)
    near = _run_file(tmp_path / "near.json", 1.05, 0.10)
    noisy = _run_file(tmp_path / "noisy.json", 0.5, 0.10, unstable=True)
    _, old_ms = report.load_run(old)
    for path, flag, verdict in ((twice, "worse", "WORSE"), (near, "", "within the noise"),
                                (noisy, "", "unsure: unstable in NEW")):
        header, body, flags = report.compare_rows(old_ms, report.load_run(path)[1])
        assert flags == [flag], body
        assert body[0][header.index("verdict")].startswith(verdict)
    header, body, flags = report.compare_rows(report.load_run(twice)[1], old_ms)
    assert flags == ["better"] and body[0][header.index("change")] == "+100%"
    from bench.run import main

    assert main(["--compare", old, twice]) == 1
    assert main(["--compare", old, near]) == 0
    text, worse = report.compare_text(old, near)
    assert "Rule:" in text and "within the noise" in text and not worse


def test_compare_reads_a_run_written_before_spreads_were_recorded(tmp_path):
    path = _run_file(tmp_path / "r.json", 2.0, 0.05)
    with open(path) as f:
        data = json.load(f)
    for r in data["results"]:
        for k in ("ratio_iqr", "ratio_paired", "unstable", "solo", "busy", "unsteady"):
            r.pop(k)
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "results.json").write_text(json.dumps(data))
    _, ms = report.load_run(str(tmp_path / "old"))
    own = next(m for m in ms if m.kind == "nnkern")
    assert own.ratios["numpy"] == pytest.approx(2.0) and own.ratio_iqr["numpy"][0] < 2.0


# --------------------------------------------------------------------------------------
# plots and output


def test_one_colour_per_implementation_in_every_plot():
    results = [_m("c", k, [1.0]) for k in ("torch", "nnkern[cpu]", "mystery", "other")]
    colors = report.palette(results)
    assert colors["torch"][0] == report.COLORS["torch"]
    assert colors["nnkern[cpu]"][0] == report.COLORS["nnkern[cpu]"]
    assert len({c for c, _ in colors.values()}) == 4  # the unknown ones differ too
    assert report.palette(results[::-1]) == colors  # the order of the rows changes nothing


def test_every_roofline_point_gets_its_case_number():
    pts = [(10.0, 100.0, 1), (10.1, 101.0, 2), (10.0, 99.0, 3), (10.0, 300.0, 4), (1.0, 5.0, 7),
           (10.0, 103.0, 5)]
    labels = report.roofline_labels(pts, near_x=0.05, near_y=0.01)
    assert sorted(t for _, _, t in labels) == ["1-3,5", "4", "7"]
    x, y, _ = next(lab for lab in labels if lab[2] == "1-3,5")
    assert x == pytest.approx(10.1) and 99.0 < y < 103.0  # right of the group, in its middle
    assert report._number_list([5, 1, 2, 9, 8]) == "1,2,5,8,9"


def test_plots_draw_unstable_ratios_and_write_pngs(tmp_path):
    pytest.importorskip("matplotlib")
    own = _m("c", "nnkern[cpu]", [1.0] * 5)
    own.flops, own.bytes, own.rate, own.rate_unit = 1e6, 1e5, 1.0, "GFLOP/s"
    results = [own, _m("c", "torch", [2.0] * 5), _m("c", "numpy", [1.0, 3.0, 1.0, 3.0, 1.0])]
    core.compute_ratios(results, {}, core.Limits())
    assert "numpy" in own.unstable
    assert report.plot_ratios(results, str(tmp_path / "r.png"))
    ceilings = {"host": {"flop": {"rate": 100.0}, "byte": {"rate": 10.0}}}
    assert report.plot_roofline(results, ceilings, "host", str(tmp_path / "h.png"))
    assert (tmp_path / "r.png").stat().st_size > 1000 and (tmp_path / "h.png").stat().st_size


def test_the_default_output_folder_is_ignored_by_git():
    from bench.run import default_out

    out = default_out("some-machine", quick=True)
    assert out.startswith(os.path.join(core.REPO, "bench", "out"))
    probe = os.path.join(out, "results.json")
    r = subprocess.run(["git", "check-ignore", "-q", probe], cwd=core.REPO, check=False)
    assert r.returncode == 0, f"{probe} is not ignored by git"
    r = subprocess.run(["git", "check-ignore", "-q", "bench/results/m/results.json"],
                       cwd=core.REPO, check=False)
    assert r.returncode == 1  # the committed results stay visible to git
