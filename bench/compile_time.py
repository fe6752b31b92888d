"""Cold compile time of nnkern's CPU kernels: the main job's first run, and every op.

Two measurements, each in child processes with an empty Numba cache directory
(cold: every kernel compiles) and then again on the filled cache (warm: every
kernel loads from disk):

- ``main job``: ``python -m nnkern`` on the cpu device, the first run a user
  makes; its kernel-compile share is cold minus warm. Also listed: the
  compile time of each kernel it compiles (Numba's compile events; a kernel's
  time includes the helpers it calls; one compiled for several argument types,
  such as _cpu._run_pieces once per piece signature, says how many).
- ``every op``: every op of nnkern.functional forward and backward once on
  the ``cpu`` backend in float32 and float64 (every kernel, both dtypes).

Times are wall seconds and CPU seconds of the child (on a busy machine the CPU
seconds are the steadier figure).

    python bench/compile_time.py              # both
    python bench/compile_time.py --main-job   # the main job only
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

EVERY_OP = r"""
import time
t0 = time.perf_counter()
import numpy as np
import nnkern
import nnkern.functional as F
nnkern.set_device("cpu")
t_import = time.perf_counter() - t0
rng = np.random.default_rng(0)
for dt in (np.float32, np.float64):
    r = lambda *s: rng.standard_normal(s).astype(dt)
    x4, w = r(2, 3, 9, 9), r(4, 3, 3, 3)
    for algo in ("direct", "im2col"):
        y = F.conv2d(x4, w, r(4), padding=1, algo=algo)
        F.conv2d_backward(np.ones_like(y), x4, w, r(4), padding=1, algo=algo)
    for trans in ((False, False), (True, False), (False, True), (True, True)):
        a = r(64, 64); b = r(64, 64)
        F.matmul_backward(F.matmul(a, b, *trans), a, b, *trans)
    a = r(300, 200); b = r(200, 300)
    F.matmul(a, b)  # the packed, threaded path
    xl, wl, bl = r(8, 5), r(6, 5), r(6)
    F.linear_backward(F.linear(xl, wl, bl, "relu"), xl, wl, bl, "relu")
    for op, kw in (("max_pool2d", {"kernel_size": 2}), ("avg_pool2d", {"kernel_size": 2}),
                   ("blur_pool2d", {}), ("max_blur_pool2d", {})):
        y = getattr(F, op)(x4, **kw)
        getattr(F, op + "_backward")(np.ones_like(y), x4, **kw)
    for op in ("relu", "sigmoid", "tanh", "softmax", "log_softmax"):
        y = getattr(F, op)(x4)
        getattr(F, op + "_backward")(y, x4)
    F.bias_add_backward(F.bias_add(x4, r(3)), x4, r(3))
    F.dropout_backward(F.dropout(x4, 0.5, True, 1), x4, 0.5, True, 1)
    logits, labels = r(8, 5), rng.integers(0, 5, 8)
    F.softmax_cross_entropy_backward(F.softmax_cross_entropy(logits, labels), logits, labels)
    F.softmax_cross_entropy_with_grad(logits, labels)
    F.binary_cross_entropy_with_logits_backward(
        F.binary_cross_entropy_with_logits(logits, r(8, 5)), logits, r(8, 5))
    F.mse_loss_backward(F.mse_loss(logits, r(8, 5)), logits, r(8, 5))
    for xb in (x4, r(6, 3)):
        g, b_, m, v = r(3), r(3), np.zeros(3, dt), np.ones(3, dt)
        F.batch_norm_backward(F.batch_norm(xb, g, b_, m, v), xb, g, b_, m, v, True, 0.1, 1e-5)
    p, gr, vel = r(100), r(100), np.zeros(100, dt)
    F.sgd_step(p, gr, vel, 0.1, 0.9)
    F.adam_step(p, gr, np.zeros(100, dt), np.zeros(100, dt), 1, 1e-3)
print(f"{t_import:.2f} {time.perf_counter() - t0:.2f}")
"""

MAIN_JOB = r"""
import contextlib, io, json, sys, time
from numba.core import event
starts, kernels = [], {}

class Compiles(event.Listener):
    def on_start(self, ev):
        starts.append(time.process_time())

    def on_end(self, ev):
        spent = time.process_time() - starts.pop()
        if not starts:  # a kernel the job called (its time includes its helpers')
            f = ev.data["dispatcher"].py_func
            name = f"{f.__module__.replace('nnkern.kernels.', '')}.{f.__qualname__}"
            seconds, count = kernels.get(name, (0.0, 0))
            kernels[name] = (seconds + spent, count + 1)

event.register("numba:compile", Compiles())
from nnkern.__main__ import main
with contextlib.redirect_stdout(io.StringIO()):
    code = main(["--device", "cpu"])
print(json.dumps({"code": code, "kernels": kernels}))
"""


def run_child(source, cache_dir):
    """Run ``source`` in a fresh interpreter on ``cache_dir``; (stdout, wall s, CPU s)."""
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", source], env=env, capture_output=True,
                         text=True, check=False)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode:
        raise SystemExit(out.stderr)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return out.stdout.strip().splitlines()[-1], wall, cpu


def main_job():
    with tempfile.TemporaryDirectory() as cache_dir:
        cold, cold_wall, cold_cpu = run_child(MAIN_JOB, cache_dir)
        _, warm_wall, warm_cpu = run_child(MAIN_JOB, cache_dir)
    kernels = json.loads(cold)["kernels"]
    print(f"main job (python -m nnkern --device cpu), cold: {cold_wall:.1f} s wall, "
          f"{cold_cpu:.1f} s CPU; warm: {warm_wall:.1f} s wall, {warm_cpu:.1f} s CPU")
    print(f"  kernel-compile share (cold - warm): {cold_wall - warm_wall:.1f} s wall, "
          f"{cold_cpu - warm_cpu:.1f} s CPU; {len(kernels)} kernels compiled in "
          f"{sum(seconds for seconds, _ in kernels.values()):.1f} s CPU:")
    for name, (seconds, count) in sorted(kernels.items(), key=lambda kv: -kv[1][0]):
        print(f"    {seconds:6.2f} s  {name}" + (f" ({count} signatures)" if count > 1 else ""))


def every_op():
    with tempfile.TemporaryDirectory() as cache_dir:
        cold, _, cold_cpu = run_child(EVERY_OP, cache_dir)
        warm, _, warm_cpu = run_child(EVERY_OP, cache_dir)
    warm_import, warm_total = (float(v) for v in warm.split())
    print(f"every CPU op fwd+bwd in float32+float64, cold (compiling every kernel): "
          f"{float(cold.split()[1]):.1f} s wall, {cold_cpu:.1f} s CPU")
    print(f"  warm, from Numba's on-disk cache: {warm_total:.2f} s wall, {warm_cpu:.1f} s CPU "
          f"(import nnkern: {warm_import:.2f} s)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--main-job", action="store_true", help="only the main job")
    args = parser.parse_args(argv)
    main_job()
    if not args.main_job:
        every_op()


if __name__ == "__main__":
    main()
