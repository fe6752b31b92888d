"""SGEMM: ``F.matmul(a, b, trans_a, trans_b)`` vs numpy ``@``, ``torch.mm``, ``cupy.matmul``.

Work: 2*M*N*K flops. Bytes (for the roofline): A, B and C once each.
a is (M, K), or (K, M) when trans_a; b is (K, N), or (N, K) when trans_b.
The peers get the same transposed views, which BLAS takes without a copy.

The NumPy peer in two settings (issue 17):

- ``numpy``: OpenBLAS at its own defaults, in a child process that never
  imports nnkern (whose import shortens OpenBLAS's idle spin), sampled on its
  own (bench.cases._common.child_peer): what NumPy does alone.
- ``numpy[alternating]`` (the "... alternating" cases): NumPy in this process,
  as a user who imports both gets it, every timed call right after a call of
  the other library, and nnkern timed the same way: what each costs the other
  (OpenBLAS's threads spin 0.1 s after a call at their defaults, nnkern's
  threads briefly; see nnkern/_blas.py).

The "... small/packed" cases run one CPU version of nnkern's GEMM each
(nnkern.kernels.gemm.cpu.forced_version), the measured reasons for choose().

Bars: issue 13, against numpy on the CPU: NN 64 >= 0.5x, 256 >= 0.9x, 1024 and
2048 >= 0.95x, 1024 alternating >= 0.8x numpy[alternating]; the transposes
at 1024 and 2048 >= 0.75x (issues 3, 4). GPU: >= 0.4x cupy.matmul at 4096^3.
"""

import contextlib
import time
from functools import partial

from bench.cases._common import (
    child_peer,
    cupy_impl,
    nbytes,
    nnkern_impl,
    numpy_impl,
    torch_impl,
    uniform,
)
from bench.core import Case

TRANS = {"NN": (False, False), "NT": (False, True), "TN": (True, False), "TT": (True, True)}
SIZES = (64, 128, 256, 512, 1024, 2048)
BARS = {64: 0.5, 256: 0.9, 1024: 0.95, 2048: 0.95}  # NN against numpy, issue 13
ALTERNATING = (256, 1024)  # sizes of the alternating rows
ALTERNATING_BAR = {1024: 0.8}
VERSION_SIZES = (64, 256, 512, 1024)  # sizes of the one-version rows


def _inputs(rng, M, N, K, ta, tb):
    return {"a": uniform(rng, (K, M) if ta else (M, K)),
            "b": uniform(rng, (N, K) if tb else (K, N))}


def _numpy_product(s, ta, tb):
    return (s["a"].T if ta else s["a"]) @ (s["b"].T if tb else s["b"])


def _nnkern_product(ta, tb):
    # F imported once, here, not in every call (an import statement per call cost about
    # 0.3 us of a 6 us 64^3 call, which the NumPy side does not pay)
    import nnkern.functional as F

    def product(s):
        return F.matmul(s["a"], s["b"], trans_a=ta, trans_b=tb)
    return product


def _alternating_sample(own, other):
    # a sample that times `own` alone, each call right after an untimed call of `other`
    def sample(states, number):
        total = 0.0
        for i in range(number):
            s = states[i % len(states)]
            other(s)
            t0 = time.perf_counter()
            own(s)
            total += time.perf_counter() - t0
        return total / number, None
    return sample


def _nnkern(backend, ta, tb, version=None, alternating=False):
    impl = nnkern_impl(backend, "gemm", ["matmul"], _nnkern_product(ta, tb))
    device = impl.context
    if version is not None:
        from nnkern.kernels.gemm.cpu import forced_version

        @contextlib.contextmanager
        def context():
            with device(), forced_version(version):
                yield

        impl.context = context
    if alternating:
        impl.sample = _alternating_sample(impl.run, partial(_numpy_product, ta=ta, tb=tb))
    return impl


def _numpy(place, env, ta, tb):
    return numpy_impl(place, env, partial(_numpy_product, ta=ta, tb=tb))


def _numpy_alternating(place, env, ta, tb):
    import nnkern

    product = _nnkern_product(ta, tb)

    def nnkern_call(s):
        with nnkern.device("cpu"):
            product(s)

    impl = numpy_impl(place, env, partial(_numpy_product, ta=ta, tb=tb), setting="alternating")
    impl.sample = _alternating_sample(impl.run, nnkern_call)
    return impl


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


def sgemm_case(n, trans, places=("host", "gpu"), bars=None, version=None, alternating=False):
    """One SGEMM case: n^3 with the given transposes; ``version`` forces one CPU version,
    ``alternating`` times nnkern and NumPy each right after the other."""
    ta, tb = TRANS[trans]
    if alternating:
        peers = {"numpy[alternating]": partial(_numpy_alternating, ta=ta, tb=tb)}
    else:
        peers = {"numpy": child_peer("numpy", partial(_numpy, ta=ta, tb=tb)),
                 "torch": partial(_torch, ta=ta, tb=tb), "cupy": partial(_cupy, ta=ta, tb=tb)}
    suffix = " alternating" if alternating else f" {version}" if version else ""
    return Case(
        family="gemm", name=f"sgemm {trans} {n}{suffix}", shape=f"M=N=K={n}",
        make_inputs=partial(_inputs, M=n, N=n, K=n, ta=ta, tb=tb),
        nnkern=partial(_nnkern, ta=ta, tb=tb, version=version, alternating=alternating),
        peers=peers, flops=2.0 * n**3, bytes=nbytes((n, n), (n, n), (n, n)), metric="flop",
        places=places, bars=bars or {}, ref_key=f"sgemm {trans} {n}",
        numpy_device=not (version or alternating),  # those rows are about the cpu backend
    )


def cases(quick):
    if quick:
        return [sgemm_case(n, "NN", bars={"host": ("numpy", BARS[n])}) for n in (64, 256)] + [
            sgemm_case(256, "NN", places=("host",), alternating=True)]
    out = [sgemm_case(n, "NN", bars={"host": ("numpy", BARS[n])} if n in BARS else None)
           for n in SIZES]
    out += [sgemm_case(n, t, bars={"host": ("numpy", 0.75)}) for n in (1024, 2048)
            for t in ("NT", "TN", "TT")]
    out += [sgemm_case(n, "NN", places=("host",), alternating=True,
                       bars={"host": ("numpy[alternating]", ALTERNATING_BAR[n])}
                       if n in ALTERNATING_BAR else None) for n in ALTERNATING]
    out += [sgemm_case(n, "NN", places=("host",), version=v) for n in VERSION_SIZES
            for v in ("small", "packed")]
    out += [sgemm_case(4096, t, places=("gpu",), bars={"gpu": ("cupy", 0.4)}) for t in TRANS]
    return out
