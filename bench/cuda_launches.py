"""CUDA launch report without a GPU: launches per LeNet training step, and launch geometry.

1. Launches per LeNet-5 training step (forward, backward, one Adam step over a flat
   parameter buffer), counted under Numba's simulator through ``nnkern.functional`` calls
   written out here (the model API may change; the op surface is stable). Kernels are
   counted, not run (the count does not depend on the data).
2. Launch geometry of the convolution kernels (version 1, direct, and version 3, implicit
   GEMM) for the LeNet shapes and the bench's conv shape at batch 64, 128 and 256: blocks
   per launch against the H100's 132 SMs. Issue 14's bar: at least 4 blocks per SM for
   every conv kernel at batch 64 and above.

Run from the repository root (it sets the simulator itself for part 1, and reads the
geometry from kernels/conv/cuda.py's own planner for part 2):

    python bench/cuda_launches.py
"""

import os
import sys
from collections import Counter

os.environ["NUMBA_ENABLE_CUDASIM"] = "1"

import numpy as np

# LeNet-5 on 1x28x28 (the bench's train_step case): conv 6@5x5 pad 2, pool, conv 16@5x5,
# pool, dense 400-120-84-10
LENET_CONVS = [((1, 28, 28), (6, 1, 5, 5), 2), ((6, 14, 14), (16, 6, 5, 5), 0)]
BENCH_CONVS = [((32, 28, 28), (64, 32, 3, 3), 1), ((128, 56, 56), (128, 128, 3, 3), 1)]


def count_lenet_step(batch=2):
    """{kernel name: launches} of one LeNet training step on the cuda backend."""
    from numba.cuda.simulator.kernel import FakeCUDAKernel

    import nnkern
    import nnkern.functional as F

    counts = Counter()
    real_call = FakeCUDAKernel.__call__

    def counting_call(self, *args):
        if self._device:
            return real_call(self, *args)
        counts[self.fn.__name__] += 1
        return None  # counted, not run

    rng = np.random.default_rng(0)
    shapes = [(6, 1, 5, 5), (6,), (16, 6, 5, 5), (16,), (120, 400), (120,), (84, 120), (84,),
              (10, 84), (10,)]
    sizes = [int(np.prod(s)) for s in shapes]
    FakeCUDAKernel.__call__ = counting_call
    try:
        with nnkern.device("cuda"):
            flat = rng.standard_normal(sum(sizes)).astype(np.float32) * 0.1
            params, off = [], 0
            for s, n in zip(shapes, sizes):
                params.append(flat[off:off + n].reshape(s))
                off += n
            w1, b1, w2, b2, w3, b3, w4, b4, w5, b5 = params
            x = rng.standard_normal((batch, 1, 28, 28)).astype(np.float32)
            y = rng.integers(0, 10, batch)
            a1 = F.conv2d(x, w1, b1, padding=2)
            r1 = F.relu(a1)
            p1, i1 = F.max_pool2d(r1, 2, return_indices=True)
            a2 = F.conv2d(p1, w2, b2)
            r2 = F.relu(a2)
            p2, i2 = F.max_pool2d(r2, 2, return_indices=True)
            f = p2.reshape(batch, 400)
            h3 = F.linear(f, w3, b3, activation="relu")
            h4 = F.linear(h3, w4, b4, activation="relu")
            z = F.linear(h4, w5, b5)
            _, dz = F.softmax_cross_entropy_with_grad(z, y)
            dh4, dw5, db5 = F.linear_backward(dz, h4, w5, b5)
            dh3, dw4, db4 = F.linear_backward(dh4, h3, w4, b4, activation="relu", out=h4)
            df, dw3, db3 = F.linear_backward(dh3, f, w3, b3, activation="relu", out=h3)
            dp2 = df.reshape(p2.shape)
            dr2 = F.max_pool2d_backward(dp2, r2, 2, indices=i2)
            da2 = F.relu_backward(dr2, a2)
            dp1, dw2, db2 = F.conv2d_backward(da2, p1, w2, b2)
            dr1 = F.max_pool2d_backward(dp1, r1, 2, indices=i1)
            da1 = F.relu_backward(dr1, a1)
            _, dw1, db1 = F.conv2d_backward(da1, x, w1, b1, padding=2)
            grads = np.concatenate([g.reshape(-1) for g in
                                    (dw1, db1, dw2, db2, dw3, db3, dw4, db4, dw5, db5)])
            m, v = np.zeros_like(flat), np.zeros_like(flat)
            F.adam_step(flat, grads, m, v, 1, lr=1e-3)
    finally:
        FakeCUDAKernel.__call__ = real_call
    return counts


def geometry():
    """Rows (shape, pass, version, blocks, blocks per SM) for the conv kernels."""
    from nnkern.kernels import _cuda
    from nnkern.kernels.conv import cuda as conv

    conv.SIM = False  # plan with the GPU tile configs
    conv.v3_configs = lambda: conv.CONFIGS
    rows = []
    for name, cases in (("lenet", LENET_CONVS), ("bench", BENCH_CONVS)):
        for (C, H, W), (K, Cg, R, S), pad in cases:
            OH, OW = H + 2 * pad - R + 1, W + 2 * pad - S + 1
            for N in (64, 128, 256):
                shape = f"{name} N{N} C{C} {H}x{W} K{K} {R}x{S}"
                Q = Cg * R * S
                v1 = {  # version 1: 128-thread element grids; NB weights per reduction block
                    "fwd": -(-N * K * OH * OW // 128),
                    "data": -(-N * C * H * W // 128),
                    "wgt": -(-(K * Q + K) // conv.NB),
                }
                v3 = {
                    "fwd": conv.v3_plan(K, N * OH * OW, Q, 1),
                    "data": conv.v3_plan(Cg, N * H * W, K * R * S, 1),
                    "wgt": conv.v3_plan(K, Q + 1, N * OH * OW, 1, split=True),
                }
                for p in ("fwd", "data", "wgt"):
                    rows.append((shape, p, "v1", v1[p], "", v1[p] / _cuda.SMS))
                    cfg, blocks, splits = v3[p]
                    extra = f"{cfg}" + (f" x{splits} splits" if splits > 1 else "")
                    rows.append((shape, p, "v3", blocks, extra, blocks / _cuda.SMS))
    return rows


def main():
    counts = count_lenet_step()
    print("Launches per LeNet-5 training step (cuda backend, counted under the simulator):")
    for name, n in sorted(counts.items()):
        print(f"  {name:28s} {n}")
    print(f"  {'total':28s} {sum(counts.values())}")
    print()
    print("Conv launch geometry on an H100 (132 SMs); bar: >= 4 blocks/SM at batch >= 64")
    failed = 0
    for shape, p, version, blocks, extra, per_sm in geometry():
        flag = ""
        if version == "v3" and per_sm < 4:
            flag = "  <- below the bar"
            failed += 1
        print(f"  {shape:34s} {p:5s} {version} {blocks:7d} blocks {per_sm:7.1f}/SM {extra}{flag}")
    print(f"version-3 conv launches below 4 blocks/SM: {failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
