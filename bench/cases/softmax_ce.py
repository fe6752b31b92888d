"""Softmax cross-entropy forward + backward (mean reduction) vs PyTorch.

One call = ``loss = F.softmax_cross_entropy(logits, labels)`` then
``dlogits = F.softmax_cross_entropy_backward(1.0, logits, labels)``; PyTorch
does ``cross_entropy`` and autograd. logits is (N, C), labels (N,) int64.
Memory-bound: bytes = logits read once, dlogits written once, labels once.
Flops (roofline only): about 5 per logit (max, subtract, exp, sum, scale).
Bars: CPU N=1024 C=1000 vs PyTorch; GPU N=65536 C=1000 as a fraction of the
measured copy bandwidth.
"""

from functools import partial

import numpy as np

from bench.cases._common import nnkern_impl, torch_impl
from bench.core import Case


def _inputs(rng, N, C):
    return {"logits": (3.0 * rng.standard_normal((N, C))).astype(np.float32),
            "labels": rng.integers(0, C, size=N).astype(np.int64),
            "g": np.ones((), np.float32)}


def _nnkern(backend):
    import nnkern.functional as F

    def run(s):
        loss = F.softmax_cross_entropy(s["logits"], s["labels"])
        dlogits = F.softmax_cross_entropy_backward(s["g"], s["logits"], s["labels"])
        return loss, dlogits

    return nnkern_impl(backend, "softmax_ce",
                       ["softmax_cross_entropy", "softmax_cross_entropy_backward"], run)


def _torch(place, env):
    def prepare(inputs, T, torch):
        return {"logits": T(inputs["logits"], True), "labels": T(inputs["labels"]),
                "torch": torch}

    def run(s):
        torch = s["torch"]
        loss = torch.nn.functional.cross_entropy(s["logits"], s["labels"])
        (dlogits,) = torch.autograd.grad(loss, (s["logits"],))
        return loss, dlogits

    return torch_impl(place, env, prepare, run)


def ce_case(N, C, places=("host", "gpu")):
    return Case(
        family="softmax_ce", name=f"softmax-CE fwd+bwd N{N} C{C}", shape=f"N={N} C={C}",
        make_inputs=partial(_inputs, N=N, C=C), nnkern=_nnkern, peers={"torch": _torch},
        flops=5.0 * N * C, bytes=8.0 * N * C + 8.0 * N, metric="byte", places=places,
    )


def cases(quick):
    if quick:
        return [ce_case(128, 100)]
    return [ce_case(1024, 1000), ce_case(65536, 1000, places=("gpu",))]
