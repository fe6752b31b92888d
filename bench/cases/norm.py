"""Batch norm in training mode, forward + backward, vs PyTorch (autograd).

One call = ``y = F.batch_norm(x, gamma, beta, rm, rv, training=True)`` (which
also updates the running statistics in place) then
``dx, dgamma, dbeta = F.batch_norm_backward(g, x, gamma, beta, rm, rv, ...)``.
The validated outputs include the running statistics after one call.
x is (N, C, H, W); gamma, beta, rm, rv are (C,).
Memory-bound: forward reads x and writes y, backward reads g and x and
writes dx: 5 floats per element (the per-channel vectors are negligible).
Flops (roofline only): about 10 per element.

Peers: ``torch`` (NCHW) and ``torch[channels_last]`` (x and g in channels_last
memory format, converted once outside the timing; the fastest setting of the
two varies from run to run on the development VM).
"""

from functools import partial

from bench.cases._common import nbytes, nnkern_impl, torch_impl, uniform
from bench.core import Case

MOMENTUM, EPS = 0.1, 1e-5


def _inputs(rng, shape):
    C = shape[1]
    return {"x": uniform(rng, shape, -2.0, 3.0), "gamma": uniform(rng, (C,), 0.5, 1.5),
            "beta": uniform(rng, (C,)), "rm": uniform(rng, (C,), -0.1, 0.1),
            "rv": uniform(rng, (C,), 0.5, 1.5), "g": uniform(rng, shape)}


def _nnkern(backend):
    import nnkern.functional as F

    def run(s):
        y = F.batch_norm(s["x"], s["gamma"], s["beta"], s["rm"], s["rv"], training=True,
                         momentum=MOMENTUM, eps=EPS)
        dx, dgamma, dbeta = F.batch_norm_backward(
            s["g"], s["x"], s["gamma"], s["beta"], s["rm"], s["rv"], training=True,
            momentum=MOMENTUM, eps=EPS)
        return y, dx, dgamma, dbeta, s["rm"], s["rv"]

    return nnkern_impl(backend, "norm", ["batch_norm", "batch_norm_backward"], run)


def _torch(place, env, channels_last=False):
    def prepare(inputs, T, torch):
        d = {k: T(inputs[k]) for k in inputs}
        if channels_last:
            for k in ("x", "g"):
                d[k] = d[k].contiguous(memory_format=torch.channels_last)
        for k in ("x", "gamma", "beta"):
            d[k].requires_grad_(True)
        d["torch"] = torch
        return d

    def run(s):
        torch = s["torch"]
        y = torch.nn.functional.batch_norm(s["x"], s["rm"], s["rv"], s["gamma"], s["beta"],
                                           training=True, momentum=MOMENTUM, eps=EPS)
        dx, dgamma, dbeta = torch.autograd.grad(y, (s["x"], s["gamma"], s["beta"]), s["g"])
        return y, dx, dgamma, dbeta, s["rm"], s["rv"]

    return torch_impl(place, env, prepare, run,
                      setting="channels_last" if channels_last else "")


def bn_case(shape, places=("host", "gpu")):
    return Case(
        family="norm", name=f"batch_norm fwd+bwd {'x'.join(map(str, shape))}",
        shape=f"x {shape}, training", make_inputs=partial(_inputs, shape=shape),
        nnkern=_nnkern,
        peers={"torch": _torch, "torch[channels_last]": partial(_torch, channels_last=True)},
        flops=10.0 * nbytes(shape) / 4, bytes=nbytes(shape) * 5, metric="byte",
        places=places,
    )


def cases(quick):
    if quick:
        return [bn_case((8, 16, 14, 14))]
    return [bn_case((128, 64, 28, 28)), bn_case((128, 128, 56, 56), places=("gpu",))]
