"""Timing, validation, ceilings and the environment of the benchmark suite.

How every case is measured (shared PERF.md, "How to measure"):

1. Inputs are random float32 (never zeros), made once per case.
2. The float64 reference is nnkern's numpy backend on the same inputs cast to
   float64. Every implementation (nnkern backends and peers) is run once on
   fresh copies and compared with it before anything is timed; a mismatch is
   reported and that implementation is not timed.
3. Warm-up: the validation call plus one more call (Numba compiles, cuDNN
   picks algorithms) happen outside the timing.
4. Timing: ``repeats`` samples, each the mean of ``number`` back-to-back
   calls (``number`` chosen so a sample lasts tens of milliseconds); the
   reported figure is the median sample (the fastest is kept too). The
   implementations of a case are sampled in turn, round after round, so a
   change of load on a shared machine hits them alike. Host:
   ``time.perf_counter``. GPU: CUDA events around each sample, with the
   inputs rotated over several copies when one set fits in L2, so no call
   reads what the previous one left in cache.
5. Work: GEMM 2*M*N*K flops; convolution 2*N*K*OH*OW*(C/g)*R*S per pass (x3
   for forward+backward); memory-bound ops by the bytes each tensor needs to
   be read or written once. Rates are compared with ceilings measured in the
   same run (a large SGEMM and a copy), and with every peer measured in the
   same run: ``x peer`` = the median over rounds of peer sample / nnkern
   sample (above 1: nnkern is faster); the ratio of the medians is kept too.
6. Spread and stability: each ratio carries the interquartile range of its
   paired ratios. A ratio is "unstable" (never a headline) when that range is
   wider than ``Limits.max_spread`` of the median, when either side's median
   sample is more than ``Limits.max_median_over_best`` times its fastest, when
   it rests on fewer than ``Limits.min_samples`` pairs, or when other
   processes took more than ``Limits.max_busy`` of the machine's CPU time
   while the case was timed (read from /proc/stat, minus this process's own
   CPU time and that of its child processes).

Peers are named by a key: a library, optionally with a setting in brackets
(``"torch"``, ``"torch[channels_last]"``, ``"numpy[alternating]"``); each key
is a peer of its own. ``--peers torch`` selects every setting of torch.
"""

import contextlib
import datetime
import importlib
import importlib.metadata
import math
import os
import pickle
import platform
import re
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOST_DEVICES = ("numpy", "cpu")
ALL_DEVICES = ("numpy", "cpu", "cuda")
ALL_PEERS = ("numpy", "torch", "cupy")
VALIDATE_RTOL = 2e-3
GPU_L2_FALLBACK = 50 * 2**20


def prepare_environment():
    """Settings that must be in place before CuPy, PyTorch or Numba load.

    TF32 off for every peer (fair fp32 comparisons). PyTorch's OpenMP pool
    waits passively (``TORCH_SETTINGS``, set only while ``import torch`` loads
    torch's own libgomp, see probe_peers): passive waiting helps the PyTorch
    peer, measured on the 2-vCPU development VM under load (torch alone in a
    fresh process, 2 threads, medians of three runs taking turns, passive vs
    libgomp's default): Adam 1Mi 3.6-9.8 vs 51-110 ms, fused Adam 1.1-1.7 vs
    3.8-15 ms, max_pool2d channels_last fwd+bwd 20-32 vs 26-85 ms, softmax-CE
    1024x1000 3.7-4.8 vs 15-31 ms, conv 3x3 fwd+bwd 40-43 vs 83-157 ms.

    nnkern keeps the wait policy its import chooses (a short spin,
    kernels/__init__.py), as a user gets it: Numba loads the system libgomp,
    a separate copy from torch's, at its first parallel kernel, and each copy
    reads the environment once, when it loads. (Forcing passive on nnkern
    too made every parallel region wake its worker through the kernel:
    SGEMM 256^3 0.375 ms instead of 0.155-0.17 ms.)
    """
    for k, v in BENCH_SETTINGS.items():
        os.environ.setdefault(k, v)


# TF32 off: fair fp32 comparisons. PyTorch's OpenMP pool, OpenBLAS and Numba must
# not spin against each other (PERF.md): torch's pool sleeps at once (TORCH_SETTINGS,
# also given to child peers), nnkern's spins briefly (its own setting).
BENCH_SETTINGS = {"NVIDIA_TF32_OVERRIDE": "0", "CUPY_TF32": "0"}
TORCH_SETTINGS = {"OMP_WAIT_POLICY": "passive"}


@contextlib.contextmanager
def torch_loading_environment():
    """TORCH_SETTINGS in os.environ (and no GOMP_SPINCOUNT, which nnkern's import may
    have set for Numba's libgomp) while the block runs, then the environment as it was.
    The user's own OMP_WAIT_POLICY or GOMP_SPINCOUNT wins (START_ENV)."""
    from bench import START_ENV

    saved = {k: os.environ.get(k) for k in (*TORCH_SETTINGS, "GOMP_SPINCOUNT")}
    for k, v in TORCH_SETTINGS.items():
        os.environ[k] = START_ENV.get(k, v)
    if "GOMP_SPINCOUNT" not in START_ENV:
        os.environ.pop("GOMP_SPINCOUNT", None)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class Skip(Exception):
    """An implementation, device, peer or case cannot run here; the message says why."""


# --------------------------------------------------------------------------------------
# implementations and cases


@dataclass
class Impl:
    """One way of computing a case: an nnkern backend or a peer library.

    ``prepare(inputs)`` takes a dict of fresh NumPy copies and returns the
    state the calls need (device arrays, a model, ...); ``run(state)`` does
    the work once and returns the outputs to validate; ``fetch(outputs)``
    turns them into NumPy arrays. ``context`` is entered around everything
    (nnkern's device choice). ``place`` is "host" or "gpu".

    ``sample(states, number)``, when given, times ``number`` calls itself and
    returns ``(seconds per call, wall seconds per call or None)`` (a peer in a
    child process times itself there). A ``solo`` Impl is not sampled in turn
    with the others: its samples are taken in a block of their own after the
    rounds (for a library whose idle threads would spin into the next sample),
    and its ratios are unpaired. ``close()`` releases what ``prepare`` holds
    (a child process) once the case is done.
    """

    label: str
    kind: str
    place: str
    prepare: Callable[[dict], Any]
    run: Callable[[Any], Any]
    fetch: Callable[[Any], tuple]
    context: Callable[[], Any] = contextlib.nullcontext
    device: str = ""
    sample: Callable[[list, int], tuple] | None = None
    solo: bool = False
    close: Callable[[], None] | None = None


@dataclass
class Case:
    """One benchmark: an op at one shape, its work, its implementations.

    ``nnkern(backend)`` returns the Impl of an nnkern backend (raising Skip
    when an op or backend is missing); ``peers`` maps a peer name to a
    function ``(place, env) -> Impl``. ``reference(inputs64)`` gives the
    float64 outputs every Impl is checked against (by default nnkern's numpy
    backend). ``metric`` is "flop" (GFLOP/s), "byte" (GB/s), "img" (images/s)
    or "call" (microseconds per call). ``places`` says where the case runs;
    ``rotate`` allows cycling over input copies on the GPU; cases with the same
    ``ref_key`` (same op and inputs, another algorithm) share one reference.
    ``bars`` maps a place to the issue's bar ``(peer, least ratio)``.
    """

    family: str
    name: str
    shape: str
    make_inputs: Callable[[np.random.Generator], dict]
    nnkern: Callable[[str], Impl]
    peers: dict
    flops: float = 0.0
    bytes: float = 0.0
    metric: str = "flop"
    items: float = 0.0
    places: tuple = ("host", "gpu")
    rtol: float = VALIDATE_RTOL
    reference: Callable[[dict], tuple] | None = None
    numpy_device: bool = True
    rotate: bool = True
    ref_key: str = ""
    bars: dict = field(default_factory=dict)
    note: str = ""

    def devices(self, requested):
        """The requested nnkern devices this case runs on."""
        wanted = []
        for dev in requested:
            place = "gpu" if dev == "cuda" else "host"
            if place in self.places:
                wanted.append(dev)
        return wanted


@dataclass
class Measurement:
    """The timing of one Impl on one Case (or why it was not timed).

    For an nnkern row, per peer key: ``ratios`` (median of the paired ratios
    peer/nnkern), ``ratio_iqr`` (their 25th and 75th percentiles),
    ``ratio_paired`` (False when one side was timed solo: every cross pair is
    used) and ``unstable`` (why that ratio is no headline; absent when it is
    sound). ``busy``: the share of the machine's CPU time other processes took
    while the case was timed. ``unsteady``: why this measurement alone cannot
    be trusted (its median far from its fastest sample, too few samples, a
    busy machine), or "".
    """

    case: str
    family: str
    shape: str
    impl: str
    kind: str
    place: str
    status: str = "ok"
    ms: float = float("nan")
    best_ms: float = float("nan")
    samples_ms: list = field(default_factory=list)
    wall_ms: float = float("nan")
    repeats: int = 0
    number: int = 0
    rotated: int = 1
    rate: float = float("nan")
    rate_unit: str = ""
    ceiling_fraction: float = float("nan")
    ratios: dict = field(default_factory=dict)
    ratios_of_medians: dict = field(default_factory=dict)
    ratio_iqr: dict = field(default_factory=dict)
    ratio_paired: dict = field(default_factory=dict)
    unstable: dict = field(default_factory=dict)
    flops: float = 0.0
    bytes: float = 0.0
    note: str = ""
    bar: str = ""
    solo: bool = False
    busy: float | None = None
    unsteady: str = ""

    def ok(self):
        return self.status == "ok"


def peer_library(key):
    """The library of a peer key: ``"torch[channels_last]"`` -> ``"torch"``."""
    return key.split("[", 1)[0]


def select_peers(keys, requested):
    """The peer keys among ``keys`` that ``requested`` asks for: a library name asks for
    every setting of that library, a full key for that one only."""
    return [k for k in keys if k in requested or peer_library(k) in requested]


# --------------------------------------------------------------------------------------
# spread and stability


@dataclass
class Limits:
    """When a ratio is "unstable" and never shown as a headline.

    ``max_spread``: the interquartile range of the ratio's pairs, as a share of
    their median (the quiet run of 2026-11-22 stayed under 0.12 on every
    compiled-backend row but the one against PyTorch's max-pool, 0.58, whose
    samples ran 20 to 47 ms). ``max_median_over_best``: either side's median sample over its
    fastest (quiet: 1.01-1.12; the NumPy SGEMM 256 of issue 17 on a loaded
    machine: 20). ``max_busy``: the share of the machine's CPU time that other
    processes may take while a case is timed. ``min_samples``: fewer pairs
    say nothing about the spread.
    """

    max_spread: float = 0.15
    max_median_over_best: float = 1.25
    max_busy: float = 0.10
    min_samples: int = 3


@dataclass
class RatioStats:
    """A ratio (peer time / nnkern time) and its spread."""

    median: float
    q25: float
    q75: float
    count: int
    paired: bool

    @property
    def spread(self):
        """The interquartile range as a share of the median."""
        return (self.q75 - self.q25) / self.median if self.median > 0 else math.inf


def ratio_stats(peer_samples, own_samples, paired=True):
    """The median and quartiles of peer/own over the samples' pairs.

    Paired: sample i of both sides was taken in round i, back to back, so each
    pair saw the same machine. Unpaired (one side was timed solo): every
    sample of one side against every sample of the other. None when there is
    no pair.
    """
    if paired:
        pairs = [p / o for p, o in zip(peer_samples, own_samples, strict=False) if o > 0]
    else:
        pairs = [p / o for p in peer_samples for o in own_samples if o > 0]
    if not pairs:
        return None
    q25, med, q75 = np.percentile(pairs, [25, 50, 75])
    count = len(pairs) if paired else min(len(peer_samples), len(own_samples))
    return RatioStats(float(med), float(q25), float(q75), count, paired)


def unsteady_reason(m, limits):
    """Why measurement ``m`` on its own cannot be trusted, or ""."""
    if m.busy is not None and m.busy > limits.max_busy:
        return f"busy: other processes took {m.busy:.0%} of the CPUs"
    if len(m.samples_ms) < limits.min_samples:
        return f"{len(m.samples_ms)} samples"
    if m.best_ms > 0 and m.ms / m.best_ms > limits.max_median_over_best:
        return f"median {m.ms / m.best_ms:.2f}x its best"
    return ""


def unstable_reason(stats, own, peer, limits):
    """Why the ratio ``stats`` of nnkern row ``own`` to ``peer`` is no headline, or ""."""
    for m in (own, peer):
        if m.unsteady:
            return f"{m.impl} {m.unsteady}"
    if stats.count < limits.min_samples:
        return f"{stats.count} pairs"
    if stats.spread > limits.max_spread:
        return f"spread {stats.spread:.0%} of the ratio"
    return ""


# --------------------------------------------------------------------------------------
# the machine's load: CPU time taken by other processes

_CLOCK_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
# /proc/stat and the per-process times count whole clock ticks; a few ticks of
# disagreement between the two counts are not another process.
_TICK_SLACK_S = 3.0 / _CLOCK_TICK
_CHILD_PIDS = set()


@dataclass
class CpuSnapshot:
    """Where the machine's CPU time stood at one moment (seconds).

    ``total``: every CPU's time since boot, idle included; ``busy``: the part
    not idle (steal included: another virtual machine on our CPU); ``own``:
    this process's time and that of its children. ``total`` and ``busy`` are
    None where /proc/stat cannot be read.
    """

    wall: float
    total: float | None
    busy: float | None
    own: float


def _proc_cpu_seconds(pid):
    """User + system CPU seconds of a live process (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _CLOCK_TICK
    except (OSError, ValueError, IndexError):
        return 0.0


def own_cpu_seconds():
    """CPU seconds of this process, its finished children and its live child peers."""
    t = os.times()
    own = t.user + t.system + t.children_user + t.children_system
    return own + sum(_proc_cpu_seconds(pid) for pid in list(_CHILD_PIDS))


def cpu_snapshot(stat_path="/proc/stat"):
    """The machine's and this process's CPU time now (see CpuSnapshot)."""
    total = busy = None
    try:
        with open(stat_path) as f:
            fields = f.readline().split()
        if fields[0] == "cpu":
            # user nice system idle iowait irq softirq steal (guest is inside user)
            v = [int(x) for x in fields[1:9]]
            total = sum(v) / _CLOCK_TICK
            busy = (sum(v) - v[3] - v[4]) / _CLOCK_TICK
    except (OSError, ValueError, IndexError):
        pass
    return CpuSnapshot(time.perf_counter(), total, busy, own_cpu_seconds())


def others_cpu(before, after):
    """``(seconds, share)``: CPU time other processes took between two snapshots, and
    its share of the machine's CPU time; ``(None, None)`` where it cannot be known."""
    if before.total is None or after.total is None or after.total <= before.total:
        return None, None
    others = (after.busy - before.busy) - (after.own - before.own)
    others = max(0.0, others - _TICK_SLACK_S)
    return others, others / (after.total - before.total)


def run_load(start, end, results, limits, load_average_at_start=None):
    """The load figures of a whole run for its header: other processes' CPU seconds
    and share between two snapshots, the cases timed while busy, load averages."""
    seconds, share = others_cpu(start, end)
    cases = {m.case for m in results if m.busy is not None and m.busy > limits.max_busy}
    return {"others_cpu_s": seconds, "others_share": share,
            "wall_s": end.wall - start.wall, "cpus": os.cpu_count(),
            "busy_cases": len(cases), "load_average_at_start": load_average_at_start,
            "load_average_at_end": load_average()}


def is_busy(load, limits):
    """Whether a run's header must say the machine was busy."""
    share = load.get("others_share")
    return bool(load.get("busy_cases")) or (share is not None and share > limits.max_busy)


# --------------------------------------------------------------------------------------
# validation


def compare(actual, expected, rtol):
    """None when every output matches the reference, else a message saying where not.

    The tolerance rule is that of tests/harness.py, with a looser ``rtol``
    (benchmark shapes sum many more terms than the tests' shapes):
    ``|a - e| <= rtol * (|e| + rms(e))`` element-wise.
    """
    if len(actual) != len(expected):
        return f"{len(actual)} outputs, reference has {len(expected)}"
    for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
        if a is None or e is None:
            if (a is None) != (e is None):
                return f"output {i}: one of result/reference is None"
            continue
        a = np.asarray(a)
        e = np.asarray(e)
        if a.shape != e.shape:
            return f"output {i}: shape {a.shape}, reference {e.shape}"
        if e.dtype.kind in "iub":
            bad = int(np.count_nonzero(a != e))
            if bad:
                return f"output {i}: {bad}/{e.size} integer elements differ"
            continue
        a = a.astype(np.float64)
        e = e.astype(np.float64)
        if not np.isfinite(a).all():
            return f"output {i}: {int((~np.isfinite(a)).sum())} non-finite values"
        rms = float(np.sqrt(np.mean(e * e))) if e.size else 0.0
        err = np.abs(a - e)
        tol = rtol * (np.abs(e) + rms)
        bad = ~(err <= tol)
        if bad.any():
            j = tuple(int(i) for i in
                      np.unravel_index(np.argmax(np.where(bad, err - tol, -np.inf)), e.shape))
            return (
                f"output {i}: {int(bad.sum())}/{e.size} elements off, worst at {j}: "
                f"got {a[j]:.6g}, reference {e[j]:.6g} (rtol {rtol:g})"
            )
    return None


def copy_inputs(inputs, dtype=None):
    """Fresh copies of a case's inputs; float arrays cast to ``dtype`` when given."""
    out = {}
    for k, v in inputs.items():
        if isinstance(v, np.ndarray):
            if dtype is not None and v.dtype.kind == "f":
                out[k] = v.astype(dtype)
            else:
                out[k] = v.copy()
        else:
            out[k] = v
    return out


def input_bytes(inputs):
    return sum(v.nbytes for v in inputs.values() if isinstance(v, np.ndarray))


# --------------------------------------------------------------------------------------
# timers


class HostTimer:
    """perf_counter around ``number`` calls; nothing to synchronise."""

    place = "host"

    def sample(self, run, states, number):
        """Seconds per call (mean over ``number`` calls, cycling over ``states``)."""
        k = len(states)
        t0 = time.perf_counter()
        for i in range(number):
            run(states[i % k])
        return (time.perf_counter() - t0) / number, None


class GpuTimer:
    """CUDA events (CuPy) on the legacy default stream around ``number`` calls.

    Every library here (CuPy's null stream, PyTorch's default stream, Numba
    launches on the default stream) is ordered by that stream, so the events
    bracket the work. The wall time of the sample, with a device synchronise,
    is kept beside it as a cross-check.
    """

    place = "gpu"

    def __init__(self):
        import cupy

        self.cp = cupy

    def sync(self):
        self.cp.cuda.Device().synchronize()

    def sample(self, run, states, number):
        cp = self.cp
        k = len(states)
        start, end = cp.cuda.Event(), cp.cuda.Event()
        self.sync()
        t0 = time.perf_counter()
        start.record()
        for i in range(number):
            run(states[i % k])
        end.record()
        end.synchronize()
        wall = time.perf_counter() - t0
        return cp.cuda.get_elapsed_time(start, end) / 1e3 / number, wall / number


def plan(one_s, repeats, target_s=0.01, budget_s=20.0, min_repeats=3):
    """``(number, repeats)`` for a call that takes ``one_s`` seconds.

    ``number`` calls make one sample of about ``target_s``; when ``repeats``
    samples would exceed ``budget_s`` the count drops (never below
    ``min_repeats``, or to 1 for a call longer than the whole budget).
    """
    number = max(1, min(10_000, math.ceil(target_s / max(one_s, 1e-9))))
    per_sample = one_s * number
    if per_sample * repeats > budget_s:
        repeats = max(min(min_repeats, repeats), int(budget_s // per_sample))
        if one_s > budget_s:
            repeats = 1
    return number, max(1, repeats)


def measure(run, states, timer, repeats, target_s=0.01, budget_s=20.0):
    """Median seconds per call of ``run`` alone (used for the ceilings).

    Returns ``(median_s, samples_s, median_wall_s or None, repeats, number)``.
    """
    one, _ = timer.sample(run, states, 1)
    number, repeats = plan(one, repeats, target_s, budget_s)
    samples, walls = [], []
    for _ in range(repeats):
        s, w = timer.sample(run, states, number)
        samples.append(s)
        if w is not None:
            walls.append(w)
    wall = statistics.median(walls) if walls else None
    return statistics.median(samples), samples, wall, len(samples), number


# --------------------------------------------------------------------------------------
# the environment: which devices and peers exist


@dataclass
class Env:
    """What this run may use, and why anything asked for is left out."""

    devices: list
    peers: dict
    skipped: list
    torch: Any = None
    torch_cuda: bool = False
    cupy: Any = None
    gpu_l2: int = GPU_L2_FALLBACK
    threads: int = 1

    def places(self):
        out = []
        if any(d in HOST_DEVICES for d in self.devices):
            out.append("host")
        if "cuda" in self.devices:
            out.append("gpu")
        return out

    def timer(self, place):
        return GpuTimer() if place == "gpu" else HostTimer()


def probe(devices, peers):
    """Find which requested devices and peers (keys or libraries) can run; set thread
    counts alike."""
    skipped = []
    env = Env(devices=[], peers={}, skipped=skipped)
    try:
        import numba

        env.threads = numba.get_num_threads()
    except ImportError:
        env.threads = os.cpu_count() or 1
    if devices:
        try:
            from nnkern.device import cuda_simulated, cuda_status
        except Exception as exc:  # noqa: BLE001  (a broken tree still lets the peers run)
            for d in devices:
                skipped.append(("device", d, f"nnkern does not import ({exc})"))
            devices = []
    for d in devices:
        if d in HOST_DEVICES:
            env.devices.append(d)
            continue
        if d != "cuda":
            skipped.append(("device", d, f"unknown device (choose from {ALL_DEVICES})"))
            continue
        if cuda_simulated():
            skipped.append(
                ("device", "cuda", ("NUMBA_ENABLE_CUDASIM=1: the simulator is not a GPU, "
                                    "its timings would mean nothing"))
            )
            continue
        usable, why = cuda_status()
        if not usable:
            skipped.append(("device", "cuda", why))
            continue
        env.devices.append("cuda")
    libraries = list(dict.fromkeys(peer_library(p) for p in peers))
    probe_peers(env, libraries, gpu="cuda" in env.devices)
    if "cuda" in env.devices:
        try:
            import cupy

            env.cupy = env.cupy or cupy
            attrs = cupy.cuda.Device().attributes
            env.gpu_l2 = int(attrs.get("L2CacheSize", GPU_L2_FALLBACK))
        except Exception as exc:  # noqa: BLE001  (the fallback size is fine for rotation)
            skipped.append(("fact", "GPU L2 size", f"unknown ({exc}); assuming 50 MiB"))
    return env


def probe_peers(env, libraries, gpu):
    """Import the peer libraries into ``env`` (``gpu``: a GPU run), noting what is missing."""
    skipped = env.skipped
    for p in libraries:
        if p == "numpy":
            env.peers["numpy"] = np.__version__
        elif p == "torch":
            try:
                with torch_loading_environment():
                    import torch
            except ImportError as exc:
                skipped.append(("peer", "torch", f"PyTorch is not installed ({exc})"))
                continue
            torch.set_num_threads(env.threads)
            env.torch = torch
            env.peers["torch"] = torch.__version__
            if gpu:
                if torch.cuda.is_available():
                    env.torch_cuda = True
                    torch.backends.cuda.matmul.allow_tf32 = False
                    torch.backends.cudnn.allow_tf32 = False
                    torch.backends.cudnn.benchmark = True
                else:
                    skipped.append(
                        ("peer", "torch (GPU)", ("this PyTorch build has no CUDA; "
                                                 "torch is a host peer only"))
                    )
        elif p == "cupy":
            if not gpu:
                skipped.append(("peer", "cupy", "no cuda device in this run (CuPy is a GPU peer)"))
                continue
            try:
                import cupy
            except ImportError as exc:
                skipped.append(("peer", "cupy", f"CuPy is not installed ({exc})"))
                continue
            env.cupy = cupy
            env.peers["cupy"] = cupy.__version__
        else:
            skipped.append(("peer", p, f"unknown peer (choose from {ALL_PEERS})"))


# --------------------------------------------------------------------------------------
# peers in a child process


def child_environment(unset=(), setenv=None):
    """The environment ``python -m bench`` started with (``bench.START_ENV``: before
    nnkern's import added its settings) with the bench's own BENCH_SETTINGS where
    the user set nothing, less ``unset``, plus ``setenv``."""
    from bench import START_ENV

    env = dict(START_ENV)
    for k, v in {**BENCH_SETTINGS, **TORCH_SETTINGS}.items():
        env.setdefault(k, v)
    for k in unset:
        env.pop(k, None)
    env.update(setenv or {})
    return env


class ChildPeer:
    """A peer library in a Python process of its own, driven over a pipe.

    The child imports only the bench's core and the peer library, so the
    library keeps its own defaults (OpenBLAS's threads spin 0.1 s after a
    call; nnkern's import would shorten that), and nothing it sets reaches
    the parent. ``builder(place, env)`` (a module-level function or a partial
    of one: it is pickled) makes the Impl inside the child; the child times
    its own samples, so the pipe is outside the timing. Its CPU time counts
    as the benchmark's own in the load figures.
    """

    def __init__(self, builder, library, place, threads, environ):
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from bench.core import serve_child; serve_child()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=environ, cwd=REPO)
        _CHILD_PIDS.add(self.proc.pid)
        try:
            self.call("path", list(sys.path))
            self.info = self.call("build", builder, library, place, threads)
        except BaseException:
            self.close()
            raise

    def call(self, command, *args):
        """Send one command; return its result, or raise what the child raised."""
        if self.proc.stdin.closed:
            raise RuntimeError("the peer's child process was closed")
        try:
            pickle.dump((command, args), self.proc.stdin, protocol=pickle.HIGHEST_PROTOCOL)
            self.proc.stdin.flush()
            status, value = pickle.load(self.proc.stdout)
        except (EOFError, BrokenPipeError, OSError):
            code = self.proc.wait()
            raise RuntimeError(f"the peer's child process ended (exit status {code})") from None
        if status == "skip":
            raise Skip(value)
        if status == "error":
            raise RuntimeError(f"in the peer's child process: {value}")
        return value

    def close(self):
        """End the child and wait for it (its CPU time then counts as a finished child's)."""
        if self.proc.poll() is None:
            try:
                self.call("close")
            except (RuntimeError, Skip):
                pass
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout):
            f.close()
        _CHILD_PIDS.discard(self.proc.pid)


def child_impl(builder, library, place, env, unset=(), setenv=None, solo=True):
    """The Impl of a peer that runs in a ChildPeer (see bench.cases._common.child_peer)."""
    child = ChildPeer(builder, library, place, env.threads, child_environment(unset, setenv))
    label, kind, child_place, device = child.info
    return Impl(label=label, kind=kind, place=child_place,
                prepare=lambda inputs: child.call("prepare", inputs),
                run=lambda state: child.call("run", state),
                fetch=lambda _outputs: child.call("fetch"),
                device=f"{device} (child process {child.proc.pid})",
                sample=lambda states, number: child.call("sample", list(states), number),
                solo=solo, close=child.close)


def serve_child():
    """The child side of ChildPeer: read pickled commands on stdin, answer on stdout.

    Commands: path (sys.path), build (the Impl), prepare (a state; answers its
    number), run, fetch (the last run's outputs as NumPy), sample, close.
    """
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything a library prints goes to stderr, not into the answers
    commands = sys.stdin.buffer
    impl = env = timer = last = None
    states = []
    while True:
        try:
            command, args = pickle.load(commands)
        except EOFError:
            return
        try:
            value = None
            if command == "close":
                pickle.dump(("ok", None), answers)
                answers.flush()
                return
            if command == "path":
                sys.path[:] = args[0]
            elif command == "build":
                builder, library, place, threads = args
                env = Env(devices=["cuda"] if place == "gpu" else [], peers={}, skipped=[],
                          threads=threads)
                probe_peers(env, [library], gpu=place == "gpu")
                if library not in env.peers:
                    raise Skip("; ".join(why for _, _, why in env.skipped))
                impl = builder(place, env)
                timer = env.timer(impl.place)
                value = (impl.label, impl.kind, impl.place, impl.device)
            elif command == "prepare":
                with impl.context():
                    states.append(impl.prepare(args[0]))
                value = len(states) - 1
            elif command == "run":
                with impl.context():
                    last = impl.run(states[args[0]])
            elif command == "fetch":
                value = impl.fetch(last)
            elif command == "sample":
                ids, number = args
                with impl.context():
                    value = take_sample(impl, timer, [states[i] for i in ids], number)
            else:
                raise ValueError(f"unknown command {command!r}")
            answer = ("ok", value)
        except Skip as exc:
            answer = ("skip", str(exc))
        except Exception as exc:  # noqa: BLE001  (sent to the parent, which reports it)
            answer = ("error", f"{type(exc).__name__}: {exc}")
        pickle.dump(answer, answers, protocol=pickle.HIGHEST_PROTOCOL)
        answers.flush()


# --------------------------------------------------------------------------------------
# ceilings


def _ceiling(fn, work, timer, repeats):
    """Rate of ``fn`` doing ``work``: a ceiling is what the machine can do, so its
    ``rate`` is the fastest sample; the median is kept beside it."""
    med, samples, _, reps, number = measure(lambda s: fn(), [None], timer, max(repeats, 5),
                                            target_s=0.05)
    return {"rate": work / min(samples) / 1e9, "median": work / med / 1e9,
            "samples": [work / x / 1e9 for x in samples], "repeats": reps, "number": number}


def merge_ceilings(first, again):
    """Ceilings measured at the start and the end of a run: the faster of the two."""
    out = {}
    for place, kinds in first.items():
        out[place] = {}
        for kind, c in kinds.items():
            d = dict(c)
            later = again.get(place, {}).get(kind)
            if later:
                d["rate"] = max(c["rate"], later["rate"])
                d["median_at_end"] = later["median"]
                d["samples"] = c["samples"] + later["samples"]
                d["repeats"] = c["repeats"] + later["repeats"]
            out[place][kind] = d
    return out


def fold_vendor_sgemm(ceilings, results):
    """Raise the SGEMM ceiling to the fastest vendor SGEMM sample of the run.

    On a shared machine the dedicated ceiling measurement can land in a busy
    second; the peers' own SGEMM cases (numpy on the host, cupy on the GPU)
    are the same library doing the same kind of work, so their fastest sample
    is as much a measured ceiling.
    """
    vendor = {"host": "numpy", "gpu": "cupy"}
    for m in results:
        c = ceilings.get(m.place, {}).get("flop")
        if (c is None or m.family != "gemm" or m.impl != vendor.get(m.place) or not m.ok()
                or not m.samples_ms):
            continue
        best = m.flops / (min(m.samples_ms) / 1e3) / 1e9
        if best > c["rate"]:
            c["rate"] = best
            c["from"] = f"fastest sample of the {m.impl} peer in '{m.case}'"
    return ceilings


def apply_ceilings(results, ceilings):
    """Set each measurement's fraction of the ceiling of its place and metric."""
    kinds = {"GFLOP/s": "flop", "GB/s": "byte"}
    for m in results:
        c = ceilings.get(m.place, {}).get(kinds.get(m.rate_unit))
        if m.ok() and c:
            m.ceiling_fraction = m.rate / c["rate"]


def host_ceilings(quick, repeats):
    """A large numpy SGEMM (GFLOP/s) and a large copy (GB/s, read + write)."""
    n = 1024 if quick else 2048
    rng = np.random.default_rng(1)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    c = np.empty((n, n), np.float32)
    np.matmul(a, b, out=c)
    gemm = _ceiling(lambda: np.matmul(a, b, out=c), 2.0 * n**3, HostTimer(), repeats)
    gemm["what"] = f"numpy float32 matmul {n}x{n}x{n} (OpenBLAS), GFLOP/s"
    m = (16 if quick else 64) * 2**20
    src = rng.standard_normal(m, dtype=np.float32)
    dst = np.empty_like(src)
    np.copyto(dst, src)
    copy = _ceiling(lambda: np.copyto(dst, src), 2.0 * src.nbytes, HostTimer(), repeats)
    copy["what"] = f"numpy copy of {src.nbytes >> 20} MiB float32, GB/s counting read + write"
    return {"flop": gemm, "byte": copy}


def gpu_ceilings(quick, repeats):
    """cupy.matmul SGEMM with TF32 off (GFLOP/s) and a device-to-device copy (GB/s)."""
    import cupy as cp

    timer = GpuTimer()
    n = 2048 if quick else 4096
    a = cp.random.standard_normal((n, n), dtype=cp.float32)
    b = cp.random.standard_normal((n, n), dtype=cp.float32)
    c = cp.empty((n, n), cp.float32)
    cp.matmul(a, b, out=c)
    gemm = _ceiling(lambda: cp.matmul(a, b, out=c), 2.0 * n**3, timer, repeats)
    gemm["what"] = f"cupy.matmul float32 {n}^3 (cuBLAS, TF32 off), GFLOP/s"
    m = (64 if quick else 256) * 2**20
    src = cp.random.standard_normal(m, dtype=cp.float32)
    dst = cp.empty_like(src)
    cp.copyto(dst, src)
    copy = _ceiling(lambda: cp.copyto(dst, src), 2.0 * src.nbytes, timer, repeats)
    copy["what"] = f"cupy device-to-device copy of {src.nbytes >> 20} MiB, GB/s (read + write)"
    return {"flop": gemm, "byte": copy}


# --------------------------------------------------------------------------------------
# running one case


def _rotation_count(case, impl, inputs, env):
    """How many input copies to cycle on the GPU: enough to overflow L2 twice.

    A case whose state is a whole model (a training step) is not rotated: its
    weights stay hot in training too.
    """
    if impl.place != "gpu" or not case.rotate:
        return 1
    nbytes = input_bytes(inputs)
    if nbytes == 0 or nbytes >= env.gpu_l2:
        return 1
    return int(min(16, math.ceil(2 * env.gpu_l2 / nbytes)))


@dataclass
class _Ready:
    """An Impl that passed validation and warm-up, with its timing plan and samples."""

    impl: Impl
    m: Measurement
    states: list
    timer: Any
    number: int = 1
    repeats: int = 1
    samples: list = field(default_factory=list)
    walls: list = field(default_factory=list)


def setup_impl(case, impl, inputs, reference, env, repeats, budget_s, log, target_s=0.02,
               slow_limit_s=None):
    """Validate and warm up one Impl, and plan its samples.

    Returns ``(measurement, ready)``; ``ready`` is None when the Impl failed
    validation, raised, or was skipped (the measurement's status says which),
    including when its first call took longer than ``slow_limit_s``.
    """
    m = Measurement(case=case.name, family=case.family, shape=case.shape, impl=impl.label,
                    kind=impl.kind, place=impl.place, flops=case.flops, bytes=case.bytes,
                    note=case.note)
    timer = env.timer(impl.place)
    try:
        with impl.context():
            state = impl.prepare(copy_inputs(inputs))
            t0 = time.perf_counter()
            outputs = impl.fetch(impl.run(state))
            first_s = time.perf_counter() - t0
            problem = compare(outputs, reference, case.rtol)
            if problem:
                m.status = f"invalid: {problem}"
                log(f"  {impl.label:<14} INVALID ({problem}); not timed")
                return m, None
            if slow_limit_s is not None and first_s > slow_limit_s:
                raise Skip(f"too slow to time at this shape ({first_s:.1f} s for one call, "
                           f"validated)")
            k = _rotation_count(case, impl, inputs, env)
            states = [state] + [impl.prepare(copy_inputs(inputs)) for _ in range(k - 1)]
            for s in states:
                impl.run(s)
            one, _ = take_sample(impl, timer, states, 1)
    except Skip as exc:
        m.status = f"skipped: {exc}"
        log(f"  {impl.label:<14} skipped: {exc}")
        return m, None
    except Exception as exc:  # noqa: BLE001  (one broken kernel must not stop the run)
        m.status = f"error: {type(exc).__name__}: {exc}"
        log(f"  {impl.label:<14} ERROR {type(exc).__name__}: {exc}")
        return m, None
    number, reps = plan(one, repeats, target_s=target_s, budget_s=budget_s)
    m.rotated = k
    m.solo = impl.solo
    return m, _Ready(impl=impl, m=m, states=states, timer=timer, number=number, repeats=reps)


def take_sample(impl, timer, states, number):
    """One sample of ``number`` calls: ``(seconds per call, wall seconds or None)``."""
    if impl.sample is not None:
        return impl.sample(states, number)
    return timer.sample(impl.run, states, number)


# a solo peer's idle threads may spin this long after its last call (OpenBLAS at
# its defaults: 2^28 cycles, about 0.1 s); nothing is timed before they stop
SOLO_SETTLE_S = 0.25


def _rounds(ready, settle_s):
    rounds = max((r.repeats for r in ready), default=0)
    for i in range(rounds):
        for r in ready:
            if i >= r.repeats:
                continue
            try:
                with r.impl.context():
                    if r.impl.place == "host":
                        if settle_s:
                            time.sleep(settle_s)
                        if r.number > 1:
                            r.impl.run(r.states[0])
                    s, w = take_sample(r.impl, r.timer, r.states, r.number)
            except Exception as exc:  # noqa: BLE001  (recorded in the status)
                r.m.status = f"error while timing: {type(exc).__name__}: {exc}"
                r.repeats = i
                continue
            r.samples.append(s)
            if w is not None:
                r.walls.append(w)


def time_interleaved(case, ready, settle_s=0.0):
    """Sample every ready Impl in turn, round after round; solo Impls after, alone.

    On a shared machine the load changes from second to second; taking one
    sample of each implementation per round spreads that change over all of
    them alike, so their ratios stay fair even when absolute times drift.
    Before each host sample the harness idles ``settle_s`` (0 by default: an
    idle gap of 10 ms or more made the next parallel call on the 2-vCPU
    development VM start with both threads on one vCPU) and, for short
    calls, makes one untimed call so the sample starts with the
    implementation's own threads awake. A solo Impl (a library whose idle
    threads spin after each call, see Impl) takes all its samples in a block
    of its own, followed by a pause of ``SOLO_SETTLE_S``.
    """
    if any(r.impl.solo for r in ready):  # their setup calls (validation, first sample)
        time.sleep(SOLO_SETTLE_S)  # just ran: let their idle threads stop spinning first
    _rounds([r for r in ready if not r.impl.solo], settle_s)
    for r in ready:
        if r.impl.solo:
            _rounds([r], settle_s)
            time.sleep(SOLO_SETTLE_S)
    for r in ready:
        m = r.m
        if not r.samples or not m.ok():
            continue
        med = statistics.median(r.samples)
        wall = statistics.median(r.walls) if r.walls else None
        if case.metric == "call" and wall is not None:
            med = wall  # a launch cost is host time: the events would show an idle GPU
        m.ms = med * 1e3
        m.best_ms = (min(r.walls) if case.metric == "call" and r.walls else min(r.samples)) * 1e3
        m.samples_ms = [x * 1e3 for x in r.samples]
        if case.metric == "call" and r.walls:
            m.samples_ms = [x * 1e3 for x in r.walls]
        m.wall_ms = wall * 1e3 if wall is not None else float("nan")
        m.repeats, m.number = len(r.samples), r.number
        m.rate, m.rate_unit = rate_of(case, med)


def paired_ratio(peer_samples, own_samples):
    """Median over rounds of peer sample / own sample.

    Sample i of every implementation was taken in round i, back to back with
    the others, so each pair saw the same machine; the median of the pairs
    stays fair when the machine's speed drifts during the case (a shared VM
    here changed speed by 2x within a minute).
    """
    stats = ratio_stats(peer_samples, own_samples)
    return stats.median if stats else float("nan")


def compute_ratios(results, bars, limits):
    """Fill each nnkern row's ratios to the peers on its place, their spread, their
    stability and the issue bar (``bars``: place -> (peer key, least ratio))."""
    for m in results:
        if m.ok():
            m.unsteady = unsteady_reason(m, limits)
    for m in results:
        if m.kind != "nnkern" or not m.ok():
            continue
        for d in (m.ratios, m.ratios_of_medians, m.ratio_iqr, m.ratio_paired, m.unstable):
            d.clear()
        for p in results:
            if p.kind != "peer" or not p.ok() or p.place != m.place:
                continue
            stats = ratio_stats(p.samples_ms, m.samples_ms, paired=not (p.solo or m.solo))
            if stats is None:
                continue
            m.ratios[p.impl] = stats.median
            m.ratio_iqr[p.impl] = [stats.q25, stats.q75]
            m.ratio_paired[p.impl] = stats.paired
            m.ratios_of_medians[p.impl] = p.ms / m.ms
            why = unstable_reason(stats, m, p, limits)
            if why:
                m.unstable[p.impl] = why
        bar = bars.get(m.place)
        if bar and m.impl != "nnkern[numpy]" and bar[0] in m.ratios:
            if bar[0] in m.unstable:
                m.bar = f">= {bar[1]:g}x {bar[0]}: unsure (unstable)"
            else:
                met = m.ratios[bar[0]] >= bar[1]
                m.bar = f">= {bar[1]:g}x {bar[0]}: {'met' if met else 'NOT met'}"


def rate_of(case, seconds):
    """(value, unit) of the case's metric for a call of ``seconds``."""
    if case.metric == "flop":
        return case.flops / seconds / 1e9, "GFLOP/s"
    if case.metric == "byte":
        return case.bytes / seconds / 1e9, "GB/s"
    if case.metric == "img":
        return case.items / seconds, "img/s"
    return seconds * 1e6, "us/call"


def compute_reference(case, inputs):
    """The float64 outputs every Impl of ``case`` is checked against.

    ``case.reference`` when given, else nnkern's numpy backend on the inputs
    cast to float64. Raises Skip when the reference op is missing.
    """
    if case.reference is not None:
        return case.reference(copy_inputs(inputs, np.float64))
    impl = case.nnkern("numpy")
    with impl.context():
        return impl.fetch(impl.run(impl.prepare(copy_inputs(inputs, np.float64))))


def run_case(case, env, devices, peers, repeats, ceilings, log, budget_s=20.0,
             numpy_repeats=3, numpy_limit_s=10.0, target_s=0.02, ref_cache=None,
             settle_s=0.0, limits=None):
    """All requested implementations of one case; returns (measurements, skipped).

    ``peers``: peer keys or library names (see select_peers). nnkern's numpy
    backend is timed with at most ``numpy_repeats`` samples, and not at all
    when its validation call took over ``numpy_limit_s``. Cases with the same
    ``ref_key`` share one reference through ``ref_cache`` (a dict). ``limits``
    (a Limits) decide which ratios are unstable.
    """
    skipped = []
    results = []
    places = [p for p in env.places() if p in case.places]
    devs = [d for d in case.devices(devices) if d in env.devices]
    if not places or not devs:
        skipped.append(("case", case.name, ("no requested device runs this case "
                                            f"(it runs on: {', '.join(case.places)})")))
        return results, skipped
    log(f"{case.name}  [{case.shape}]")
    rng = np.random.default_rng(0)
    inputs = case.make_inputs(rng)
    key = case.ref_key or case.name
    t0 = time.perf_counter()
    try:
        if ref_cache is not None and key in ref_cache:
            reference = ref_cache[key]
        else:
            reference = compute_reference(case, inputs)
    except Exception as exc:  # noqa: BLE001  (a broken reference skips the case, says why)
        why = str(exc) if isinstance(exc, Skip) else f"{type(exc).__name__}: {exc}"
        skipped.append(("case", case.name, f"no reference to validate against: {why}"))
        log(f"  skipped: no reference ({why})")
        return results, skipped
    if ref_cache is not None:
        ref_cache[key] = reference
    ref_s = time.perf_counter() - t0
    if ref_s > 1.0:
        log(f"  (reference: {ref_s:.1f} s)")

    impls = []
    for d in devs:
        if d == "numpy" and not case.numpy_device:
            skipped.append(("impl", f"{case.name} nnkern[numpy]",
                            "the numpy reference is too slow to time at this shape"))
            log("  nnkern[numpy]  skipped: too slow at this shape")
            continue
        try:
            impls.append(case.nnkern(d))
        except Skip as exc:
            skipped.append(("impl", f"{case.name} nnkern[{d}]", str(exc)))
            log(f"  nnkern[{d}]    skipped: {exc}")
    for place in places:
        for key in select_peers(case.peers, peers):
            if peer_library(key) not in env.peers:
                continue
            try:
                impl = case.peers[key](place, env)
            except Skip as exc:
                skipped.append(("impl", f"{case.name} {key} ({place})", str(exc)))
                continue
            impl.label = key  # the key is the peer's name in every table and plot
            impls.append(impl)
    try:
        ready = []
        for impl in impls:
            reference_backend = impl.kind == "nnkern" and impl.device == "numpy"
            reps = min(repeats, numpy_repeats) if reference_backend else repeats
            limit = numpy_limit_s if reference_backend else None
            m, r = setup_impl(case, impl, inputs, reference, env, reps, budget_s, log, target_s,
                              slow_limit_s=limit)
            results.append(m)
            if r is not None:
                ready.append(r)
        before = cpu_snapshot()
        time_interleaved(case, ready, settle_s)
        _, busy = others_cpu(before, cpu_snapshot())
    finally:
        for impl in impls:
            if impl.close is not None:
                impl.close()
    for m in results:
        m.busy = busy
    apply_ceilings(results, ceilings)
    compute_ratios(results, case.bars, limits or Limits())
    for m in results:
        if m.ok():
            log(f"  {m.impl:<20} {m.ms:10.3f} ms  {fmt_rate(m.rate, m.rate_unit)}"
                + (f"  unsteady: {m.unsteady}" if m.unsteady else ""))
    return results, skipped


def fmt_rate(value, unit):
    if math.isnan(value):
        return ""
    if unit == "us/call":
        return f"{value:8.1f} us/call"
    if unit == "img/s":
        return f"{value:8.0f} img/s"
    return f"{value:8.1f} {unit}"


# --------------------------------------------------------------------------------------
# machine facts


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return [x for x in ("avx2", "fma", "avx512f", "amx_tile") if x in flags]
    except OSError:
        pass
    return []


def _physical_cores():
    try:
        out = subprocess.run(["lscpu", "-p=CORE,SOCKET"], capture_output=True, text=True,
                             timeout=5, check=False).stdout
        cores = {line for line in out.splitlines() if line and not line.startswith("#")}
        return len(cores) or None
    except Exception:  # noqa: BLE001  (lscpu is optional)
        return None


def load_average():
    """1, 5 and 15 minute load averages: how busy the shared machine was."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def machine_name():
    """A stable folder name for this machine: NNKERN_BENCH_MACHINE, or CPU model + CPU count."""
    name = os.environ.get("NNKERN_BENCH_MACHINE")
    if not name:
        model = re.sub(r"\(r\)|\(tm\)|cpu|processor|@.*", "", _cpu_model().lower())
        name = f"{model}-{os.cpu_count()}cpu"
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def _version(dist):
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git(*args):
    try:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True,
                              timeout=10, check=False).stdout.strip()
    except Exception:  # noqa: BLE001  (git is optional)
        return ""


def machine_facts(env, argv):
    """CPU, threads, GPU, library versions, date and the command line."""
    facts = {
        "machine": machine_name(),
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join(shlex.quote(a) for a in argv),
        "cpu_model": _cpu_model(),
        "cpu_flags": _cpu_flags(),
        "logical_cpus": os.cpu_count(),
        "physical_cores": _physical_cores(),
        "threads": {
            "numba": env.threads,
            "torch": env.torch.get_num_threads() if env.torch is not None else None,
            "openblas": os.environ.get("OPENBLAS_NUM_THREADS", "default (all cores)"),
        },
        "load_average": load_average(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "versions": {d: _version(d) for d in (
            "nnkern", "numpy", "numba", "numba-cuda", "torch", "cupy-cuda12x",
            "cupy-cuda13x", "matplotlib", "pytest-benchmark")},
        "gpu": None,
        "settings": {k: os.environ.get(k) for k in (
            "OMP_WAIT_POLICY", "OPENBLAS_THREAD_TIMEOUT", "NUMBA_NUM_THREADS",
            "NUMBA_THREADING_LAYER",
            "NVIDIA_TF32_OVERRIDE", "CUPY_TF32", "NUMBA_CUDA_ARRAY_INTERFACE_SYNC")},
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
    }
    try:
        import numba

        facts["settings"]["numba.config.SLP_VECTORIZE"] = numba.config.SLP_VECTORIZE
        facts["settings"]["numba_threading_layer"] = numba.config.THREADING_LAYER
    except ImportError:
        pass
    try:
        with open("/proc/meminfo") as f:
            kb = int(f.readline().split()[1])
            facts["memory_gib"] = round(kb / 2**20, 1)
    except (OSError, ValueError, IndexError):
        pass
    if "cuda" in env.devices:
        from nnkern.device import gpu_name

        facts["gpu"] = gpu_name()
        try:
            facts["gpu_driver"] = env.cupy.cuda.runtime.driverGetVersion()
            facts["gpu_l2_bytes"] = env.gpu_l2
        except Exception as exc:  # noqa: BLE001  (a fact, not a measurement)
            facts["gpu_driver"] = f"unknown ({exc})"
    return facts


