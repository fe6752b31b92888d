"""One command on a GPU machine: compile, check and time every nnkern CUDA kernel.

Built for a lent GPU with little time on it (issue 14): the most truth per minute, meant
to finish in under 8 minutes including Numba compilation (``--budget`` seconds, 420 by
default: a step or case that would start after it is skipped and recorded as such; no
GPU has run it yet), installing nothing. It uses what the machine has
(numba-cuda, CuPy, PyTorch with CUDA) and says what it skipped and why. Steps, in order:

1. ``env``      the GPU, driver, library versions, git commit, command;
2. ``compile``  every float32 kernel, family by family: compile seconds, registers,
                shared memory and local memory per kernel (numba-cuda's own figures);
3. ``kernels``  each kernel timed with CUDA events against its peer in turns (cupy
                matmul with TF32 off, cuDNN through PyTorch with TF32 off, a
                device-to-device copy for the memory-bound kernels), after checking its
                result against the peer's;
4. ``host``     host microseconds per small op (``F.relu`` on 1024 floats, the launcher
                alone, with nnkern's and with numba-cuda's argument packing) against CuPy
                and PyTorch;
5. ``lenet``    LeNet-5 training steps per second, nnkern's model API against PyTorch;
6. ``tests``    the ``gpu``-marked tests, in this process (the kernels compiled above
                are reused).

Every result is one JSON line appended to ``<out>/gpu_check.jsonl`` the moment it
exists, so a run cut short still leaves what it did. ``<out>`` is ``--out``, else
``$OUT``, else a new folder under the system's temporary directory (never the tree).

    python bench/gpu_check.py                          # on a GPU machine
    python bench/gpu_check.py --steps compile,kernels  # some steps
    python bench/gpu_check.py --dry-run                # anywhere: the simulator, tiny shapes

``--dry-run`` runs every step end to end under ``NUMBA_ENABLE_CUDASIM=1`` on tiny shapes
with NumPy arrays, host timers and PyTorch on the CPU as the peer (where it imports), and
only collects the ``gpu`` tests; ``tests/kernels/test_cuda_gpu_check.py`` runs it in CI.
No number a dry run prints is a GPU figure.

From a copy of the checkout (nothing installed: the script puts the checkout's
``nnkern`` and ``kernels/`` on the import path itself)::

    python bench/gpu_check.py --out results/    # then copy results/gpu_check.jsonl back
"""

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

DRY = "--dry-run" in sys.argv
if DRY:
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
else:
    os.environ.pop("NUMBA_ENABLE_CUDASIM", None)
    os.environ["NNKERN_TEST_GPU"] = "1"
# fp32 means fp32 for every peer: no TF32 tensor-core shortcuts (set before CuPy loads)
os.environ["NVIDIA_TF32_OVERRIDE"] = "0"
os.environ["CUPY_TF32"] = "0"

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = ("env", "compile", "kernels", "host", "lenet", "tests")
FAMILIES = ("gemm", "conv", "pool", "norm", "optim", "softmax_ce", "elementwise", "lrn")


def import_nnkern():
    """nnkern from this checkout, installed or not (``kernels/`` is ``nnkern.kernels``)."""
    import importlib.util

    sys.path.insert(0, ROOT)
    try:
        import nnkern.kernels
    except ImportError:
        spec = importlib.util.spec_from_file_location(
            "nnkern.kernels", os.path.join(ROOT, "kernels", "__init__.py"),
            submodule_search_locations=[os.path.join(ROOT, "kernels")])
        module = importlib.util.module_from_spec(spec)
        sys.modules["nnkern.kernels"] = module
        spec.loader.exec_module(module)
        import nnkern

        nnkern.kernels = module
    import nnkern

    return nnkern


# ----------------------------------------------------------------------------
# output


class Log:
    """JSON lines, flushed one by one, and a short human line per record on stdout."""

    def __init__(self, out_dir):
        os.makedirs(out_dir, exist_ok=True)
        self.path = os.path.join(out_dir, "gpu_check.jsonl")
        self.fh = open(self.path, "a")  # noqa: SIM115 (kept open for the whole run)
        self.t0 = time.perf_counter()
        self.budget = float("inf")

    def over_budget(self):
        """True once the run has used its time budget (no new step or case starts)."""
        return time.perf_counter() - self.t0 > self.budget

    def __call__(self, step, **record):
        record = {"step": step, "at_s": round(time.perf_counter() - self.t0, 2), **record}
        self.fh.write(json.dumps(record, default=str) + "\n")
        self.fh.flush()
        shown = {k: v for k, v in record.items() if k not in ("step", "at_s")}
        print(f"[{record['at_s']:7.1f}s] {step:8s} " + " ".join(
            f"{k}={_short(v)}" for k, v in shown.items()), flush=True)


def _short(v):
    if isinstance(v, float):
        return f"{v:.4g}"
    text = str(v)
    return text if len(text) < 120 else text[:117] + "..."


# ----------------------------------------------------------------------------
# where the arrays live and how time is measured


class Place:
    """CuPy arrays and CUDA events on a GPU; NumPy arrays and the host clock in a dry run.
    PyTorch, where it imports (with CUDA on a GPU), is the peer for the NN kernels."""

    def __init__(self, dry):
        self.dry = dry
        if dry:
            self.xp = np
        else:
            import cupy

            self.xp = cupy
        self.torch, self.torch_why = None, None
        try:
            import torch

            if not dry and not torch.cuda.is_available():
                self.torch_why = "this PyTorch has no CUDA"
            else:
                self.torch = torch
                torch.backends.cuda.matmul.allow_tf32 = False
                torch.backends.cudnn.allow_tf32 = False
                torch.backends.cudnn.benchmark = True
        except ImportError:
            self.torch_why = "PyTorch is not installed"

    def array(self, a, dtype=np.float32):
        return self.xp.asarray(np.asarray(a, dtype))

    def numpy(self, a):
        if hasattr(a, "detach"):
            a = a.detach()
            return a.cpu().numpy() if not self.dry else a.numpy()
        return a.get() if hasattr(a, "get") and not isinstance(a, np.ndarray) else np.asarray(a)

    def tensor(self, a):
        """A PyTorch view of an array (no copy)."""
        return self.torch.from_numpy(a) if self.dry else self.torch.from_dlpack(a)

    def sync(self):
        if not self.dry:
            self.xp.cuda.Device().synchronize()

    def seconds(self, fn, number):
        """Seconds per call of ``number`` back-to-back calls: CUDA events around them on a
        GPU (the legacy default stream orders CuPy, PyTorch and nnkern's launches), the
        host clock in a dry run."""
        if self.dry:
            t0 = time.perf_counter()
            for _ in range(number):
                fn()
            return (time.perf_counter() - t0) / number
        start, end = self.xp.cuda.Event(), self.xp.cuda.Event()
        self.sync()
        start.record()
        for _ in range(number):
            fn()
        end.record()
        end.synchronize()
        return self.xp.cuda.get_elapsed_time(start, end) / 1e3 / number


def close_enough(got, want, rtol):
    """(ok, worst error / tolerance) under the tests' rule |a - e| <= rtol (|e| + rms(e))."""
    got = np.asarray(got, np.float64)
    want = np.asarray(want, np.float64)
    if got.shape != want.shape:
        return False, float("inf")
    if not want.size:
        return True, 0.0
    tol = rtol * (np.abs(want) + np.sqrt(np.mean(want * want)))
    err = np.abs(got - want)
    worst = float(np.max(np.where(tol > 0, err / np.maximum(tol, 1e-300), err)))
    return bool(np.all(err <= tol)), worst


def race(place, impls, samples, sample_s):
    """Median seconds per call of each implementation, timed in turns: every round times
    each once, so a drift of the machine hits them alike. ``impls`` {label: fn}."""
    number = dict.fromkeys(impls, 1)
    if not place.dry:  # a dry run times each once: the simulator is slow and no GPU figure
        for fn in impls.values():  # warm-up: compilation, cuDNN's algorithm search
            fn()
        place.sync()
        for label, fn in impls.items():
            one = place.seconds(fn, 1)
            number[label] = max(1, min(1000, int(sample_s / max(one, 1e-7))))
    times = {label: [] for label in impls}
    for _ in range(samples):
        for label, fn in impls.items():
            times[label].append(place.seconds(fn, number[label]))
    return {label: statistics.median(t) for label, t in times.items()}


# ----------------------------------------------------------------------------
# step 1: env


def step_env(log, place, args):
    import numba

    facts = {"dry_run": place.dry, "python": platform.python_version(),
             "numpy": np.__version__, "numba": numba.__version__,
             "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
             "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
             "host": platform.node()}
    try:
        from importlib.metadata import version

        facts["numba_cuda"] = version("numba-cuda")
    except Exception:  # noqa: BLE001 (recorded as absent)
        facts["numba_cuda"] = None
    with contextlib.suppress(Exception):
        facts["git_commit"] = subprocess.run(
            ["git", "-C", ROOT, "rev-parse", "HEAD"], capture_output=True, text=True,
            check=False).stdout.strip() or None
    if not place.dry:
        cp = place.xp
        dev = cp.cuda.Device()
        props = cp.cuda.runtime.getDeviceProperties(dev.id)
        facts.update(gpu=props["name"].decode(), sms=props["multiProcessorCount"],
                     cc=f"{props['major']}.{props['minor']}",
                     memory_gib=round(props["totalGlobalMem"] / 2**30, 1),
                     driver=cp.cuda.runtime.driverGetVersion(),
                     runtime=cp.cuda.runtime.runtimeGetVersion(), cupy=cp.__version__)
    if place.torch is not None:
        facts["torch"] = place.torch.__version__
    else:
        facts["torch_skipped"] = place.torch_why
    log("env", **facts)


# ----------------------------------------------------------------------------
# step 2: compile


def step_compile(log, place, args):
    import importlib

    for family in args.families:
        mod = importlib.import_module(f"nnkern.kernels.{family}.cuda")
        kernels = mod.kernels(np.float32)
        t_family = time.perf_counter()
        for name in kernels.names():
            t0 = time.perf_counter()
            try:
                kernel = kernels[name]
                res = {}
                if not place.dry:  # the one overload; numba-cuda links its cubin here
                    compiled = next(iter(kernel.overloads.values()))
                    res = {"regs": compiled.regs_per_thread,
                           "smem_b": compiled.shared_mem_per_block,
                           "local_b": compiled.local_mem_per_thread}
            except Exception as e:  # noqa: BLE001 (every kernel is reported)
                log("compile", family=family, kernel=name, ok=False,
                    error=f"{type(e).__name__}: {' '.join(str(e).split())[:300]}")
                continue
            log("compile", family=family, kernel=name, ok=True,
                compile_s=round(time.perf_counter() - t0, 3), **res)
        log("compile", family=family, kernel="(all)",
            compile_s=round(time.perf_counter() - t_family, 2))


# ----------------------------------------------------------------------------
# step 3: kernels against their peers


def shapes(dry):
    """The shapes each case runs at: the issue's bars on a GPU, tiny ones in a dry run."""
    if dry:  # the simulator runs a Python thread per CUDA thread: a few blocks at most
        return {"gemm": (9, 7, 5), "conv": (1, 2, 4, 5, 2, 3), "lenet_convs": None,
                "pool": (1, 2, 4, 6), "ce": (3, 37), "norm": (2, 3, 2, 3),
                "flat": 99, "adam": 101, "copy": 4096, "samples": 1, "sample_s": 0.0}
    return {"gemm": (4096, 4096, 4096), "conv": (64, 128, 56, 56, 128, 3),
            "lenet_convs": 256, "pool": (128, 128, 56, 56), "ce": (65536, 1000),
            "norm": (128, 128, 56, 56), "flat": 128 * 128 * 56 * 56, "adam": 16 * 2**20,
            "copy": 64 * 2**20, "samples": 5, "sample_s": 0.02}


class Cases:
    """Runs and records the kernel cases. Each case: validate nnkern against the peer,
    then time them in turns; one JSON line per implementation."""

    def __init__(self, log, place):
        self.log, self.place = log, place
        self.sz = shapes(place.dry)
        self.rng = np.random.default_rng(0)
        self.copy_gbs = None

    def uniform(self, *shape, low=-1.0, high=1.0):
        return self.place.array(self.rng.uniform(low, high, size=shape))

    def case(self, name, nnkern, peers, check=None, flops=None, nbytes=None, rtol=1e-3):
        """``nnkern`` and ``peers``: {label: fn}; ``check()`` -> (got, want) pairs after one
        call of each (nnkern's result first); work in flops or bytes per call."""
        place, log = self.place, self.log
        if check is not None:  # every nnkern implementation against the first peer
            for fn in list(peers.values())[:1]:
                fn()
            for label, fn in nnkern.items():
                fn()
                place.sync()
                for i, (got, want) in enumerate(check()):
                    ok, worst = close_enough(place.numpy(got), place.numpy(want), rtol)
                    log("kernels", case=name, impl=label, check=i, ok=ok,
                        worst_over_tol=round(worst, 3))
        impls = {**nnkern, **peers}
        times = race(place, impls, self.sz["samples"], self.sz["sample_s"])
        peer_best = min((times[p] for p in peers), default=None)
        for label, s in times.items():
            rec = {"case": name, "impl": label, "ms": round(s * 1e3, 4)}
            if flops:
                rec["tflops"] = round(flops / s / 1e12, 3)
            if nbytes:
                rec["gbs"] = round(nbytes / s / 1e9, 1)
                if self.copy_gbs:
                    rec["pct_copy"] = round(100 * nbytes / s / 1e9 / self.copy_gbs, 1)
            if label in nnkern and peer_best:
                rec["x_peer"] = round(peer_best / s, 3)  # above 1: nnkern faster
            log("kernels", **rec)
        return times

    def torch_or_skip(self, name):
        if self.place.torch is None:
            self.log("kernels", case=name, skipped=f"no PyTorch peer: {self.place.torch_why}")
        return self.place.torch

    # --- the cases -----------------------------------------------------------------

    def copy(self):
        xp, n = self.place.xp, self.sz["copy"]
        src, dst = self.uniform(n), self.place.xp.empty(n, np.float32)
        times = self.case(f"copy {n * 4 / 2**20:.0f} MiB device to device", {},
                          {"copy": lambda: xp.copyto(dst, src)}, nbytes=2 * 4 * n)
        self.copy_gbs = 2 * 4 * n / times["copy"] / 1e9
        self.log("kernels", case="copy ceiling", gbs=round(self.copy_gbs, 1))

    def gemm(self):
        self.gemm_case(False, False, ("v3",) if self.place.dry else ("v1", "v2", "v3"))
        self.gemm_case(False, True, ("v3",))  # the dense layer's layout

    def gemm_case(self, ta, tb, versions):
        from nnkern.kernels.gemm import cuda as G

        xp = self.place.xp
        M, N, K = self.sz["gemm"]
        a = self.uniform(*((K, M) if ta else (M, K)))
        b = self.uniform(*((N, K) if tb else (K, N)))
        c, ref = xp.empty((M, N), np.float32), xp.empty((M, N), np.float32)
        opa, opb = (a.T if ta else a), (b.T if tb else b)
        nn = {f"nnkern {v}": (lambda v=v: G.gemm(a, b, c, ta, tb, False, version=v))
              for v in versions}
        self.case(f"sgemm {M}x{N}x{K} {'NT'[ta]}{'NT'[tb]}", nn,
                  {"cupy" if not self.place.dry else "numpy":
                   lambda: xp.matmul(opa, opb, out=ref)},
                  check=lambda: [(c, ref)], flops=2.0 * M * N * K)

    def conv(self, N, C, H, W, K, R, pad, label):
        torch = self.torch_or_skip(label)
        if torch is None:
            return
        from nnkern.kernels.conv import cuda as conv

        xp = self.place.xp
        OH, OW = H + 2 * pad - R + 1, W + 2 * pad - R + 1
        x, w, b = self.uniform(N, C, H, W), self.uniform(K, C, R, R, low=-0.1, high=0.1), \
            self.uniform(K)
        g = self.uniform(N, K, OH, OW)
        y, dx = xp.empty((N, K, OH, OW), np.float32), xp.empty((N, C, H, W), np.float32)
        dw, db = xp.empty((K, C, R, R), np.float32), xp.empty(K, np.float32)
        tx, tw, tb, tg = (self.place.tensor(a) for a in (x, w, b, g))
        geo = ((1, 1), (pad, pad), (1, 1), 1)
        flops = 2.0 * N * K * OH * OW * C * R * R
        out = {}

        def t_fwd():
            out["y"] = torch.nn.functional.conv2d(tx, tw, tb, padding=pad)

        def t_bwd(mask):
            def run():
                out[tuple(mask)] = torch.ops.aten.convolution_backward(
                    tg, tx, tw, [K], [1, 1], [pad, pad], [1, 1], False, [0, 0], 1, mask)
            return run

        t_data, t_wgt = t_bwd([True, False, False]), t_bwd([False, True, True])
        total = {}
        passes = [
            ("forward", {"nnkern v3": lambda: conv.conv2d_forward(x, w, b, y, *geo, "auto")},
             t_fwd, lambda: [(y, out["y"])]),
            ("backward-data", {"nnkern v3": lambda: conv.conv2d_backward_data(
                g, w, dx, *geo, "auto")}, t_data,
             lambda: [(dx, out[(True, False, False)][0])]),
            ("backward-weights", {"nnkern v3": lambda: conv.conv2d_backward_weights(
                g, x, dw, db, *geo, "auto")}, t_wgt,
             lambda: [(dw, out[(False, True, True)][1]), (db, out[(False, True, True)][2])]),
        ]
        if label.startswith("conv N"):  # the im2col path once, for the record
            passes[0][1]["nnkern v2 im2col"] = lambda: conv.conv2d_forward(
                x, w, b, y, *geo, "im2col")
        for pname, nn, peer, check in passes:
            times = self.case(f"{label} {pname}", nn, {"torch cuDNN": peer}, check=check,
                              flops=flops, rtol=2e-3)
            for k in ("nnkern v3", "torch cuDNN"):
                total[k] = total.get(k, 0.0) + times[k]
        self.log("kernels", case=f"{label} forward+backward", ms_nnkern=total["nnkern v3"] * 1e3,
                 ms_cudnn=total["torch cuDNN"] * 1e3,
                 x_peer=round(total["torch cuDNN"] / total["nnkern v3"], 3))

    def convs(self):
        N, C, H, W, K, R = self.sz["conv"]
        self.conv(N, C, H, W, K, R, 1, f"conv N{N} C{C} {H}x{W} K{K} {R}x{R}")
        B = self.sz["lenet_convs"]
        if B:
            self.conv(B, 1, 28, 28, 6, 5, 2, f"lenet conv1 N{B}")
            self.conv(B, 6, 14, 14, 16, 5, 0, f"lenet conv2 N{B}")

    def pool(self):
        torch = self.torch_or_skip("max_pool2d")
        if torch is None:
            return
        from nnkern.kernels.pool import cuda as pool

        xp = self.place.xp
        N, C, H, W = self.sz["pool"]
        x = self.uniform(N, C, H, W)
        y, idx = xp.empty((N, C, H // 2, W // 2), np.float32), xp.empty(
            (N, C, H // 2, W // 2), np.int64)
        g, dx = self.uniform(N, C, H // 2, W // 2), xp.empty((N, C, H, W), np.float32)
        tx, tg = self.place.tensor(x), self.place.tensor(g)
        out = {}

        def t_fwd():
            out["y"], out["i"] = torch.ops.aten.max_pool2d_with_indices(tx, [2, 2], [2, 2])

        def t_bwd():
            out["dx"] = torch.ops.aten.max_pool2d_with_indices_backward(
                tg, tx, [2, 2], [2, 2], [0, 0], [1, 1], False, out["i"])

        n_in, n_out = N * C * H * W, N * C * (H // 2) * (W // 2)
        self.case(f"max_pool2d 2x2 forward ({N},{C},{H},{W})",
                  {"nnkern": lambda: pool.max_pool2d_forward(x, y, idx, 2, 2, 2, 2, 0, 0)},
                  {"torch": t_fwd}, check=lambda: [(y, out["y"])],
                  nbytes=4 * n_in + 12 * n_out)
        self.case(f"max_pool2d 2x2 backward ({N},{C},{H},{W})",
                  {"nnkern": lambda: pool.max_pool2d_backward(g, idx, dx, 2, 2, 2, 2, 0, 0)},
                  {"torch": t_bwd}, check=lambda: [(dx, out["dx"])],
                  nbytes=12 * n_out + 4 * n_in)

    def softmax_ce(self):
        torch = self.torch_or_skip("softmax-CE")
        if torch is None:
            return
        from nnkern.kernels.softmax_ce import cuda as ce

        xp = self.place.xp
        N, C = self.sz["ce"]
        z = self.uniform(N, C, low=-4, high=4)
        labels = xp.asarray(self.rng.integers(0, C, N).astype(np.int64))
        one = self.place.array(np.ones(1))
        losses, dz = xp.empty(N, np.float32), xp.empty((N, C), np.float32)
        tz, tl = self.place.tensor(z), self.place.tensor(labels)
        out = {}

        def t_run():
            zz = tz.detach().requires_grad_(True)
            loss = torch.nn.functional.cross_entropy(zz, tl)
            loss.backward()
            out["dz"] = zz.grad

        versions = ("v1", "v2", "v3") if not self.place.dry else ("v1",)
        nn = {f"nnkern {v}": (lambda v=v: ce.softmax_ce_forward_backward(
            z, labels, one, 1.0 / N, 0.0, losses, dz, version=v)) for v in versions}
        self.case(f"softmax-CE fwd+bwd N={N} C={C}", nn, {"torch": t_run},
                  check=lambda: [(dz, out["dz"])], nbytes=8.0 * N * C + 12 * N)

    def batch_norm(self):
        torch = self.torch_or_skip("batch norm")
        if torch is None:
            return
        from nnkern.kernels.norm import cuda as bn

        xp = self.place.xp
        N, C, H, W = self.sz["norm"]
        x, g = self.uniform(N, C, H * W), self.uniform(N, C, H * W)
        gamma, beta = self.uniform(C, low=0.5, high=1.5), self.uniform(C)
        rm, rv = xp.zeros(C, np.float32), xp.ones(C, np.float32)
        y, dx = xp.empty_like(x), xp.empty_like(x)
        dgamma, dbeta = xp.empty(C, np.float32), xp.empty(C, np.float32)
        tx4 = self.place.tensor(x).reshape(N, C, H, W)
        tg4 = self.place.tensor(g).reshape(N, C, H, W)
        tgam, tbet = self.place.tensor(gamma), self.place.tensor(beta)
        trm, trv = torch.zeros_like(tgam), torch.ones_like(tgam)
        out = {}

        def t_fwd():
            out["y"], out["m"], out["s"] = torch.ops.aten.native_batch_norm(
                tx4, tgam, tbet, trm, trv, True, 0.1, 1e-5)

        def t_bwd():
            out["dx"], out["dg"], out["db"] = torch.ops.aten.native_batch_norm_backward(
                tg4, tx4, tgam, trm, trv, out["m"], out["s"], True, 1e-5, [True, True, True])

        n = N * C * H * W
        self.case(f"batch norm forward ({N},{C},{H},{W}) training",
                  {"nnkern": lambda: bn.batch_norm_forward(x, gamma, beta, rm, rv, y, True,
                                                           0.1, 1e-5)},
                  {"torch": t_fwd}, check=lambda: [(y, out["y"].reshape(N, C, H * W))],
                  nbytes=8.0 * n)
        self.case(f"batch norm backward ({N},{C},{H},{W}) training",
                  {"nnkern": lambda: bn.batch_norm_backward(g, x, gamma, rm, rv, dx, dgamma,
                                                            dbeta, True, 1e-5)},
                  {"torch": t_bwd},
                  check=lambda: [(dx, out["dx"].reshape(N, C, H * W)), (dgamma, out["dg"]),
                                 (dbeta, out["db"])], nbytes=12.0 * n)

    def relu(self):
        from nnkern.kernels.elementwise import cuda as ew

        xp, n = self.place.xp, self.sz["flat"]
        x, y, y2 = self.uniform(n), xp.empty(n, np.float32), xp.empty(n, np.float32)
        peers = {"cupy" if not self.place.dry else "numpy":
                 lambda: xp.maximum(x, 0, out=y2)}
        if self.place.torch is not None:
            tx = self.place.tensor(x)
            peers["torch"] = lambda: self.place.torch.relu(tx)
        self.case(f"relu forward {n}", {"nnkern": lambda: ew.relu_forward(x, y)}, peers,
                  check=lambda: [(y, y2)], nbytes=8.0 * n)

    def adam(self):
        torch = self.torch_or_skip("adam")
        if torch is None:
            return
        from nnkern.kernels.optim import cuda as opt

        n = self.sz["adam"]
        p, g = self.uniform(n), self.uniform(n)
        m, v = self.place.xp.zeros(n, np.float32), self.place.xp.zeros(n, np.float32)
        tp = torch.nn.Parameter(self.place.tensor(p.copy()))
        tp.grad = self.place.tensor(g)
        fused = not self.place.dry
        topt = torch.optim.Adam([tp], lr=1e-3, fused=fused)
        # checked after one step each from the same state (both start at step 1)
        self.case(f"Adam step {n} params",
                  {"nnkern": lambda: opt.adam_step(p, g, m, v, 1, 1e-3, 0.9, 0.999, 1e-8, 0.0)},
                  {"torch fused" if fused else "torch": topt.step},
                  check=lambda: [(p, tp)], nbytes=28.0 * n)


def step_kernels(log, place, args):
    cases = Cases(log, place)
    for fn in (cases.copy, cases.gemm, cases.convs, cases.pool, cases.softmax_ce,
               cases.batch_norm, cases.relu, cases.adam):
        if log.over_budget():
            log("kernels", case=fn.__name__, skipped="past the time budget")
            continue
        try:
            fn()
        except Exception as e:  # noqa: BLE001 (one case failing must not stop the others)
            log("kernels", case=fn.__name__, ok=False,
                error=f"{type(e).__name__}: {' '.join(str(e).split())[:300]}")


# ----------------------------------------------------------------------------
# step 4: host cost per small op


def step_host(log, place, args):
    from nnkern.kernels import _cuda
    from nnkern.kernels.elementwise import cuda as ew

    import nnkern
    import nnkern.functional as F

    n, calls, rounds = (64, 2, 1) if place.dry else (1024, 3000, 3)
    x = place.array(np.linspace(-1, 1, n))
    y = place.xp.empty(n, np.float32)

    def per_call(fn):
        fn()
        place.sync()
        best = float("inf")
        for _ in range(rounds):
            t0 = time.perf_counter()
            for _ in range(calls):
                fn()
            place.sync()
            best = min(best, (time.perf_counter() - t0) / calls)
        return best * 1e6

    fast = _cuda.FAST_LAUNCH

    def numba_packing():
        _cuda.FAST_LAUNCH = False
        try:
            ew.relu_forward(x, y)
        finally:
            _cuda.FAST_LAUNCH = fast

    with nnkern.device("cuda"):
        rows = {"nnkern F.relu": lambda: F.relu(x),
                "nnkern relu launcher": lambda: ew.relu_forward(x, y),
                "nnkern relu launcher, numba-cuda packing": numba_packing,
                "cupy maximum": lambda: place.xp.maximum(x, 0, out=y)}
        if place.torch is not None:
            tx = place.tensor(x)
            rows["torch relu"] = lambda: place.torch.relu(tx)
        for label, fn in rows.items():
            log("host", op=f"relu on {n} floats", impl=label, us_per_call=round(per_call(fn), 2))


# ----------------------------------------------------------------------------
# step 5: LeNet-5 training steps


LENET = {"hw": 28, "widths": (6, 16, 120, 84)}
LENET_DRY = {"hw": 12, "widths": (2, 2, 4, 4)}  # the same layers, a few simulator threads


def lenet_nnkern(nnkern, hw, widths):
    """nnkern's LeNet-5 on (1, hw, hw) images and its flattened width."""
    from nnkern import layers

    c1, c2, d1, d2 = widths
    s = ((hw // 2) - 4) // 2
    return nnkern.Sequential([
        layers.Input((1, hw, hw)),
        layers.Conv2D(c1, 5, padding="same", activation="relu"),
        layers.MaxPool2D(2),
        layers.Conv2D(c2, 5, activation="relu"),
        layers.MaxPool2D(2),
        layers.Flatten(),
        layers.Dense(d1, activation="relu"),
        layers.Dense(d2, activation="relu"),
        layers.Dense(10),
    ]), c2 * s * s


def step_lenet(log, place, args):
    import nnkern
    from nnkern import losses, optimizers

    torch = place.torch
    net = LENET_DRY if place.dry else LENET
    hw, (c1, c2, d1, d2) = net["hw"], net["widths"]
    for batch in ((1,) if place.dry else (64, 128, 256)):
        if log.over_budget():
            log("lenet", batch=batch, skipped="past the time budget")
            continue
        rng = np.random.default_rng(batch)
        xh = rng.uniform(0, 1, (batch, 1, hw, hw)).astype(np.float32)
        yh = rng.integers(0, 10, batch).astype(np.int64)
        with nnkern.device("cuda"):
            model, flat = lenet_nnkern(nnkern, hw, net["widths"])
            model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
            x, y = nnkern.to_device(xh), nnkern.to_device(yh)
            model.forward(x[:1], training=False)
            arrays = [a for layer in model.layers for a in layer.params.values()]
            weights = [rng.uniform(-0.2, 0.2, a.shape).astype(np.float32) for a in arrays]
            for a, wh in zip(arrays, weights, strict=True):
                a[...] = nnkern.to_device(wh)
            loss_fn = losses.SparseCategoricalCrossentropy()
            opt = optimizers.Adam(model.parameters(), lr=1e-3)
            model.zero_grad()
            state = {}

            def nn_step(model=model, loss_fn=loss_fn, opt=opt, x=x, y=y, state=state):
                with nnkern.device("cuda"):
                    state["loss"] = loss_fn(model.forward(x, training=True), y)
                    model.backward(loss_fn.backward())
                    opt.step()
                    model.zero_grad()

            impls = {"nnkern": nn_step}
            if torch is not None:
                nn = torch.nn
                tm = nn.Sequential(
                    nn.Conv2d(1, c1, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                    nn.Conv2d(c1, c2, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                    nn.Linear(flat, d1), nn.ReLU(), nn.Linear(d1, d2), nn.ReLU(),
                    nn.Linear(d2, 10))
                dev = "cpu" if place.dry else "cuda"
                tm = tm.to(dev)
                with torch.no_grad():
                    for p, wh in zip(tm.parameters(), weights, strict=True):
                        p.copy_(torch.from_numpy(wh))
                topt = torch.optim.Adam(tm.parameters(), lr=1e-3)
                tx, ty = torch.from_numpy(xh).to(dev), torch.from_numpy(yh).to(dev)

                def t_step(tm=tm, topt=topt, tx=tx, ty=ty, state=state):
                    topt.zero_grad(set_to_none=True)
                    loss = torch.nn.functional.cross_entropy(tm(tx), ty)
                    loss.backward()
                    topt.step()
                    state["tloss"] = loss

                first = {"nnkern": place.seconds(nn_step, 1), "torch": place.seconds(t_step, 1)}
                ok, worst = close_enough(float(place.numpy(state["loss"])),
                                         float(state["tloss"].item()), 1e-3)
                log("lenet", batch=batch, check="first-step loss vs torch", ok=ok,
                    worst_over_tol=round(worst, 3))
                impls["torch"] = t_step
            if place.dry and torch is not None:
                times = first  # a simulated step takes seconds: the checked one is the sample
            else:
                times = race(place, impls, 1 if place.dry else 3, 0.0 if place.dry else 0.05)
            for label, s in times.items():
                rec = {"batch": batch, "impl": label, "ms_per_step": round(s * 1e3, 3),
                       "images_per_s": round(batch / s)}
                if label == "nnkern" and "torch" in times:
                    rec["x_peer"] = round(times["torch"] / s, 3)
                log("lenet", **rec)


# ----------------------------------------------------------------------------
# step 6: the gpu-marked tests


class _Outcomes:
    """pytest plugin: one log record per test outcome."""

    def __init__(self, log):
        self.log = log
        self.counts = {}

    def pytest_runtest_logreport(self, report):
        if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
            self.counts[report.outcome] = self.counts.get(report.outcome, 0) + 1
            rec = {"test": report.nodeid, "outcome": report.outcome,
                   "seconds": round(report.duration, 3)}
            if report.failed:
                rec["error"] = " ".join(str(report.longrepr).split())[-400:]
            self.log("tests", **rec)

    def pytest_collection_finish(self, session):
        self.log("tests", collected=len(session.items))


def step_tests(log, place, args):
    import pytest

    plugin = _Outcomes(log)
    argv = ["-q", "-m", "gpu", "-p", "no:cacheprovider", "--rootdir", ROOT,
            os.path.join(ROOT, "tests")]
    if place.dry:
        argv.append("--collect-only")  # the simulator is not a GPU: they would skip
    code = pytest.main(argv, plugins=[plugin])
    log("tests", exit_code=int(code), outcomes=plugin.counts)


# ----------------------------------------------------------------------------


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dry-run", action="store_true",
                        help="simulator, tiny shapes, host timers (no GPU figure)")
    parser.add_argument("--out", help="folder for gpu_check.jsonl (default $OUT or a temp dir)")
    parser.add_argument("--steps", default=",".join(STEPS), help=f"from {','.join(STEPS)}")
    parser.add_argument("--families", default=",".join(FAMILIES),
                        help="kernel families to compile")
    parser.add_argument("--budget", type=float, default=420.0,
                        help="seconds after which no new step or case starts")
    args = parser.parse_args(argv)
    args.steps = [s for s in args.steps.split(",") if s]
    args.families = [f for f in args.families.split(",") if f]
    unknown = [s for s in args.steps if s not in STEPS]
    if unknown:
        parser.error(f"unknown steps {unknown}; choose from {list(STEPS)}")
    out = args.out or os.environ.get("OUT") or tempfile.mkdtemp(prefix="nnkern_gpu_check_")
    log = Log(out)
    print(f"writing {log.path}", flush=True)
    import_nnkern()
    place = Place(args.dry_run)
    failed = 0
    log.budget = args.budget
    for name in args.steps:
        if log.over_budget():
            log(name, skipped=f"past the {args.budget:.0f} s budget")
            continue
        t0 = time.perf_counter()
        try:
            globals()[f"step_{name}"](log, place, args)
        except Exception as e:  # noqa: BLE001 (the next steps still run)
            failed += 1
            log(name, ok=False, error=f"{type(e).__name__}: {' '.join(str(e).split())[:400]}")
        log(name, done_s=round(time.perf_counter() - t0, 2))
    log("done", steps=args.steps, steps_failed=failed, out=log.path)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
