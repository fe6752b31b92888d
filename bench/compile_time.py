"""Cold compile time of the whole CPU backend, and its warm (cached) load time.

Runs every op of nnkern.functional forward and backward once on the ``cpu``
backend in float32 and float64, in a child process with an empty Numba cache
directory (cold), then again in a fresh child on the filled cache (warm).

    python bench/compile_time.py
"""

import os
import subprocess
import sys
import tempfile

CHILD = r"""
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


def run(cache_dir):
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
    out = subprocess.run(
        [sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=False
    )
    if out.returncode:
        raise SystemExit(out.stderr)
    return [float(v) for v in out.stdout.split()]


def main():
    with tempfile.TemporaryDirectory() as cache_dir:
        _, cold_total = run(cache_dir)
        warm_import, warm_total = run(cache_dir)
    print(f"cold: every CPU op fwd+bwd in float32+float64, compiling all kernels: {cold_total:.1f} s")
    print(f"warm: the same from Numba's on-disk cache: {warm_total:.2f} s "
          f"(import nnkern: {warm_import:.2f} s)")


if __name__ == "__main__":
    main()
