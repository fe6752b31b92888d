"""SGEMM: ``F.matmul(a, b, trans_a, trans_b)`` vs numpy ``@``, ``torch.mm``, ``cupy.matmul``.

Work: 2*M*N*K flops. Bytes (for the roofline): A, B and C once each.
a is (M, K), or (K, M) when trans_a; b is (K, N), or (N, K) when trans_b.
The peers get the same transposed views, which BLAS takes without a copy.
Bars (issues 3 and 4): CPU >= 0.75x numpy at 1024^3 and 2048^3, every
transpose case; GPU >= 0.4x cupy.matmul at 4096^3.
"""

from functools import partial

from bench.cases._common import cupy_impl, nbytes, nnkern_impl, numpy_impl, torch_impl, uniform
from bench.core import Case

TRANS = {"NN": (False, False), "NT": (False, True), "TN": (True, False), "TT": (True, True)}


def _inputs(rng, M, N, K, ta, tb):
    return {"a": uniform(rng, (K, M) if ta else (M, K)),
            "b": uniform(rng, (N, K) if tb else (K, N))}


def _nnkern(backend, ta, tb):
    import nnkern.functional as F

    def run(s):
        return F.matmul(s["a"], s["b"], trans_a=ta, trans_b=tb)

    return nnkern_impl(backend, "gemm", ["matmul"], run)


def _numpy(place, env, ta, tb):
    def run(s):
        return (s["a"].T if ta else s["a"]) @ (s["b"].T if tb else s["b"])
    return numpy_impl(place, env, run)


def _torch(place, env, ta, tb):
    def prepare(inputs, T, torch):
        return {"a": T(inputs["a"]), "b": T(inputs["b"]), "mm": torch.mm}

    def run(s):
        return s["mm"](s["a"].t() if ta else s["a"], s["b"].t() if tb else s["b"])
    return torch_impl(place, env, prepare, run)


def _cupy(place, env, ta, tb):
    cp = env.cupy

    def run(s):
        return cp.matmul(s["a"].T if ta else s["a"], s["b"].T if tb else s["b"])
    return cupy_impl(place, env, run)


def sgemm_case(n, trans, places=("host", "gpu"), bars=None):
    ta, tb = TRANS[trans]
    return Case(
        family="gemm", name=f"sgemm {trans} {n}", shape=f"M=N=K={n}",
        make_inputs=partial(_inputs, M=n, N=n, K=n, ta=ta, tb=tb),
        nnkern=partial(_nnkern, ta=ta, tb=tb),
        peers={"numpy": partial(_numpy, ta=ta, tb=tb), "torch": partial(_torch, ta=ta, tb=tb),
               "cupy": partial(_cupy, ta=ta, tb=tb)},
        flops=2.0 * n**3, bytes=nbytes((n, n), (n, n), (n, n)), metric="flop",
        places=places, bars=bars or {},
    )


def cases(quick):
    if quick:
        return [sgemm_case(256, t) for t in TRANS]
    out = [sgemm_case(n, t, bars={"host": ("numpy", 0.75)}) for n in (1024, 2048)
           for t in TRANS]
    out += [sgemm_case(4096, t, places=("gpu",), bars={"gpu": ("cupy", 0.4)}) for t in TRANS]
    return out
