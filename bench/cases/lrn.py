"""Local response normalisation across channels, forward + backward, vs PyTorch (autograd).

One call = ``y = F.local_response_norm(x, 5, alpha, beta, k)`` then
``dx = F.local_response_norm_backward(g, x, 5, alpha, beta, k)``; PyTorch runs
``torch.nn.functional.local_response_norm`` and ``torch.autograd.grad``. The
shapes are AlexNet's two LRN layers (after relu1 and relu2, 96 and 256
channels) at batch 32 on the host, 128 on a GPU, and the first LRN of
examples/alexnet_digits.py (16 channels, 28x28); AlexNet's coefficients (size 5,
beta 0.75, k 2; alpha 1e-4 as Caffe's AlexNet, which divides it by size).
Memory-bound: forward reads x and writes y, backward reads g and x and writes
dx: 5 floats per element. Flops (roofline only): about 30 per element (a
window step, two square roots and a division forward; backward the same
again plus the mirrored sum).

Measured (2-vCPU Xeon, AVX-512, torch 2.13 CPU; ``python -m bench --ops lrn
--devices cpu --peers torch``, two runs on 2026-12-07 while other processes
took 30-70% of the CPUs, so every ratio was flagged unstable): nnkern 12.3x and
13.5x torch on 32x96x55x55 (50 ms, 3.7 GB/s, against 654 ms), 10.1x and 8.6x on
32x256x27x27 (23 ms, 5.2 GB/s), 10.3x and 10.9x on 32x16x28x28 (1.6 ms, 5.1
GB/s); the copy ceiling of those runs was about 25 GB/s. PyTorch builds the
window sums with a padded avg_pool3d over x^2 and differentiates that chain of
ops by autograd; nnkern slides one window per pass.
"""

from functools import partial

from bench.cases._common import nbytes, nnkern_impl, torch_impl, uniform
from bench.core import Case

SIZE, ALPHA, BETA, K = 5, 1e-4, 0.75, 2.0


def _inputs(rng, shape):
    # x >= 0 like the ReLU output AlexNet normalises; never zeros
    return {"x": uniform(rng, shape, 0.01, 3.0), "g": uniform(rng, shape)}


def _nnkern(backend):
    import nnkern.functional as F

    def run(s):
        y = F.local_response_norm(s["x"], SIZE, ALPHA, BETA, K)
        dx = F.local_response_norm_backward(s["g"], s["x"], SIZE, ALPHA, BETA, K)
        return y, dx

    return nnkern_impl(backend, "lrn", ["local_response_norm", "local_response_norm_backward"],
                       run)


def _torch(place, env):
    def prepare(inputs, T, torch):
        return {"x": T(inputs["x"], True), "g": T(inputs["g"]), "torch": torch}

    def run(s):
        torch = s["torch"]
        y = torch.nn.functional.local_response_norm(s["x"], SIZE, ALPHA, BETA, K)
        (dx,) = torch.autograd.grad(y, (s["x"],), s["g"])
        return y, dx

    return torch_impl(place, env, prepare, run)


def lrn_case(shape, places=("host", "gpu")):
    return Case(
        family="lrn", name=f"lrn fwd+bwd {'x'.join(map(str, shape))}",
        shape=f"x {shape}, size {SIZE}", make_inputs=partial(_inputs, shape=shape),
        nnkern=_nnkern, peers={"torch": _torch},
        flops=30.0 * nbytes(shape) / 4, bytes=nbytes(shape) * 5, metric="byte",
        places=places,
    )


def cases(quick):
    if quick:
        return [lrn_case((4, 16, 13, 13))]
    # AlexNet's two LRN shapes, then the first LRN of examples/alexnet_digits.py
    return [lrn_case((32, 96, 55, 55)), lrn_case((32, 256, 27, 27)), lrn_case((32, 16, 28, 28)),
            lrn_case((128, 96, 55, 55), places=("gpu",)),
            lrn_case((128, 256, 27, 27), places=("gpu",))]
