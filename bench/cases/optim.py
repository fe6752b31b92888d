"""Adam over one flat buffer of parameters vs ``torch.optim.Adam`` in each of its
implementations, a row each: ``torch`` (the default for the device: a loop over
the parameters on the CPU), ``torch[foreach]`` (``foreach=True``: one
multi-tensor op per step) and ``torch[fused]`` (``fused=True``: one fused
kernel, on the CPU since PyTorch 2.4).

One call = ``F.adam_step(p, g, m, v, step=10, lr=1e-3)`` (in place); PyTorch:
``opt.step()`` with the same p.grad and moments, its state at step 9 before
the call (so the validated first call is step 10 for both). Later timed calls
keep updating in place, which changes values but not the work.
Memory-bound: reads p, g, m, v and writes p, m, v: 7 floats per parameter.
Flops (roofline only): about 14 per parameter.
"""

from functools import partial

from bench.cases._common import nnkern_impl, torch_impl, uniform
from bench.core import Case

STEP, LR = 10, 1e-3


def _inputs(rng, n):
    return {"p": uniform(rng, n), "g": uniform(rng, n), "m": uniform(rng, n, -0.1, 0.1),
            "v": uniform(rng, n, 1e-4, 1e-2)}


def _nnkern(backend):
    import nnkern.functional as F

    def run(s):
        out = F.adam_step(s["p"], s["g"], s["m"], s["v"], STEP, LR)
        return out[0], out[1], out[2]

    return nnkern_impl(backend, "optim", ["adam_step"], run)


def _torch(place, env, variant=""):
    def prepare(inputs, T, torch):
        p = torch.nn.Parameter(T(inputs["p"]))
        p.grad = T(inputs["g"])
        opt = torch.optim.Adam([p], lr=LR, **({variant: True} if variant else {}))
        # where torch.optim.Adam keeps its step count: on the device when fused
        step = torch.tensor(float(STEP - 1), device=p.device if variant == "fused" else "cpu")
        opt.state[p] = {"step": step, "exp_avg": T(inputs["m"]), "exp_avg_sq": T(inputs["v"])}
        return {"p": p, "opt": opt}

    def run(s):
        s["opt"].step()
        st = s["opt"].state[s["p"]]
        return s["p"], st["exp_avg"], st["exp_avg_sq"]

    return torch_impl(place, env, prepare, run, setting=variant)


def _count(n):
    return f"{n >> 20}Mi" if n >= 1 << 20 else f"{n >> 10}Ki"


def adam_case(n, places=("host", "gpu")):
    return Case(
        family="optim", name=f"adam {_count(n)} params", shape=f"{n} float32",
        make_inputs=partial(_inputs, n=n), nnkern=_nnkern,
        peers={"torch": _torch, "torch[foreach]": partial(_torch, variant="foreach"),
               "torch[fused]": partial(_torch, variant="fused")},
        flops=14.0 * n, bytes=7.0 * 4 * n, metric="byte", places=places,
    )


def cases(quick):
    if quick:
        return [adam_case(1 << 16)]
    return [adam_case(1 << 20), adam_case(1 << 24, places=("gpu",))]
