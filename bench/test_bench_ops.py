"""The benchmark cases as pytest-benchmark tests.

    pytest bench --benchmark-only                        # the issue bars' shapes
    NNKERN_BENCH_QUICK=1 pytest bench --benchmark-only   # small shapes
    NNKERN_BENCH_DEVICES=cpu NNKERN_BENCH_PEERS=torch pytest bench --benchmark-only -k gemm

One test per (case, implementation): nnkern on each device found here
(default devices ``cpu,cuda``; add ``numpy`` for the reference backend) and
each peer key (numpy, torch, cupy where importable, every setting of each:
``NNKERN_BENCH_PEERS`` takes libraries or keys such as ``torch[fused]``). A
peer that runs in a child process (``child_peer``) is timed by ``python -m
bench`` only: here the pipe would be inside the timing. Each test validates against
nnkern's numpy reference first, warms up, then lets pytest-benchmark time
it. ``extra_info`` carries the rate (GFLOP/s, GB/s, img/s or us/call) and,
for nnkern tests, ``x_<peer>`` = peer time / nnkern time measured in the same
test with the interleaved timer of bench/core.py (median of paired samples).
"""

import os

import numpy as np
import pytest

from bench import cases as case_registry
from bench import core

QUICK = os.environ.get("NNKERN_BENCH_QUICK", "0") not in ("", "0")
DEVICES = os.environ.get("NNKERN_BENCH_DEVICES", "cpu,cuda").split(",")
PEERS = os.environ.get("NNKERN_BENCH_PEERS", "numpy,torch,cupy").split(",")

_env = None
_references = {}


def env():
    global _env
    if _env is None:
        _env = core.probe(DEVICES, PEERS)
    return _env


def _params():
    out = []
    for case in case_registry.load(case_registry.FAMILIES, QUICK):
        for dev in case.devices(DEVICES):
            out.append(pytest.param(case, ("nnkern", dev), id=f"{case.name}-nnkern[{dev}]"))
        for place in case.places:
            for p in core.select_peers(case.peers, PEERS):
                out.append(pytest.param(case, ("peer", p, place), id=f"{case.name}-{p}-{place}"))
    return out


def _reference(case, inputs):
    key = case.ref_key or case.name
    if key not in _references:
        _references[key] = core.compute_reference(case, inputs)
    return _references[key]


def _build(case, who):
    e = env()
    if who[0] == "nnkern":
        if who[1] not in e.devices:
            pytest.skip(f"device {who[1]} is not usable here")
        return case.nnkern(who[1])
    _, peer, place = who
    if core.peer_library(peer) not in e.peers:
        pytest.skip(f"peer {peer} is not available here")
    if place not in e.places():
        pytest.skip(f"no {place} device in this run")
    impl = case.peers[peer](place, e)
    impl.label = peer
    return impl


@pytest.mark.parametrize("case,who", _params())
def test_bench(benchmark, case, who):
    inputs = case.make_inputs(np.random.default_rng(0))
    try:
        impl = _build(case, who)
        reference = _reference(case, inputs)
    except core.Skip as exc:
        pytest.skip(str(exc))
    e = env()
    if impl.sample is not None:  # a child process, or calls alternating with another library
        if impl.close is not None:
            impl.close()
        pytest.skip("this implementation times its own samples: timed by python -m bench only")
    m, ready = core.setup_impl(case, impl, inputs, reference, e, 5, 10.0, lambda msg: None)
    assert ready is not None, m.status

    peers = []
    if impl.kind == "nnkern":
        for p in core.select_peers(case.peers, PEERS):
            if core.peer_library(p) not in e.peers:
                continue
            try:
                peer = case.peers[p](impl.place, e)
            except core.Skip:
                continue
            peer.label = p
            pm, pr = core.setup_impl(case, peer, inputs, reference, e, 5, 10.0,
                                     lambda msg: None)
            if pr is not None:
                peers.append((pm, pr))
        try:
            core.time_interleaved(case, [ready] + [pr for _, pr in peers])
        finally:
            for _, pr in peers:
                if pr.impl.close is not None:
                    pr.impl.close()

    timer = ready.timer
    states = ready.states

    turn = [0]

    def call():  # inside impl.context() (entering it per call would be timed too)
        impl.run(states[turn[0] % len(states)])  # the runner's rotation of input copies
        turn[0] += 1
        if impl.place == "gpu":
            timer.sync()

    with impl.context():
        benchmark.pedantic(call, rounds=max(3, ready.repeats), iterations=ready.number,
                           warmup_rounds=1)
    median = benchmark.stats.stats.median
    rate, unit = core.rate_of(case, median)
    benchmark.extra_info.update({"case": case.name, "shape": case.shape, "impl": impl.label,
                                 "place": impl.place, "rate": rate, "unit": unit})
    if unit == "GFLOP/s":
        benchmark.extra_info["gflops"] = rate
    elif unit == "GB/s":
        benchmark.extra_info["gbps"] = rate
    core.compute_ratios([m] + [pm for pm, _ in peers], {}, core.Limits())
    for key, ratio in m.ratios.items():
        benchmark.extra_info[f"x_{key}"] = ratio
        benchmark.extra_info[f"x_{key}_iqr"] = m.ratio_iqr[key]
        if key in m.unstable:
            benchmark.extra_info[f"x_{key}_unstable"] = m.unstable[key]
