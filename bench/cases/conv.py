"""conv2d forward + backward: nnkern (direct and im2col) vs PyTorch NCHW.

One call = ``y = F.conv2d(x, w, b, padding=P, algo=A)`` then
``dx, dw, db = F.conv2d_backward(g, x, w, b, ...)``; PyTorch does the same
with autograd (``torch.autograd.grad`` of its conv2d). x is (N, C, H, W),
w is (K, C, R, S), g and y are (N, K, OH, OW).
Work: 2*N*K*OH*OW*C*R*S per pass, x3 for forward + backward-data +
backward-weights. Bytes: x, w, b, y, g, dx, dw, db once each.
Bars: CPU (N=128 C=32 28x28 K=64 3x3 pad 1) at least as fast as PyTorch
NCHW; GPU (N=64 C=K=128 56x56) against cuDNN (cudnn.benchmark on).
"""

from functools import partial

from bench.cases._common import nbytes, nnkern_impl, torch_impl, uniform
from bench.core import Case


def _inputs(rng, N, C, H, W, K, R, S, P):
    OH, OW = H + 2 * P - R + 1, W + 2 * P - S + 1
    return {"x": uniform(rng, (N, C, H, W)),
            "w": uniform(rng, (K, C, R, S), -0.2, 0.2),
            "b": uniform(rng, (K,)),
            "g": uniform(rng, (N, K, OH, OW))}


def _nnkern(backend, P, algo):
    import nnkern.functional as F

    def run(s):
        y = F.conv2d(s["x"], s["w"], s["b"], stride=1, padding=P, algo=algo)
        dx, dw, db = F.conv2d_backward(s["g"], s["x"], s["w"], s["b"], stride=1, padding=P,
                                       dilation=1, groups=1, algo=algo)
        return y, dx, dw, db

    return nnkern_impl(backend, "conv", ["conv2d", "conv2d_backward"], run)


def _torch(place, env, P):
    def prepare(inputs, T, torch):
        return {"x": T(inputs["x"], True), "w": T(inputs["w"], True),
                "b": T(inputs["b"], True), "g": T(inputs["g"]), "torch": torch}

    def run(s):
        torch = s["torch"]
        y = torch.nn.functional.conv2d(s["x"], s["w"], s["b"], padding=P)
        dx, dw, db = torch.autograd.grad(y, (s["x"], s["w"], s["b"]), s["g"])
        return y, dx, dw, db

    return torch_impl(place, env, prepare, run)


def _reference(inputs, P):
    """The numpy backend's im2col form (the faster reference; both algos agree)."""
    impl = _nnkern("numpy", P, "im2col")
    with impl.context():
        return impl.fetch(impl.run(impl.prepare(inputs)))


def conv_case(N, C, H, W, K, R, S, P, algo, places, numpy_device=True, bars=None):
    OH, OW = H + 2 * P - R + 1, W + 2 * P - S + 1
    flops = 3 * 2.0 * N * K * OH * OW * C * R * S
    return Case(
        family="conv", name=f"conv fwd+bwd {algo} N{N} C{C} K{K} {H}x{W}",
        shape=f"N={N} C={C} {H}x{W} K={K} {R}x{S} pad {P}",
        make_inputs=partial(_inputs, N=N, C=C, H=H, W=W, K=K, R=R, S=S, P=P),
        nnkern=partial(_nnkern, P=P, algo=algo),
        peers={"torch": partial(_torch, P=P)},
        flops=flops,
        bytes=nbytes((N, C, H, W), (K, C, R, S), (K,), (N, K, OH, OW)) * 2,
        metric="flop", places=places, numpy_device=numpy_device,
        reference=partial(_reference, P=P), ref_key=f"conv {N} {C} {H} {W} {K} {R} {S} {P}",
        bars=bars or {},
    )


def cases(quick):
    if quick:
        return [conv_case(8, 8, 14, 14, 16, 3, 3, 1, algo, ("host", "gpu"))
                for algo in ("direct", "im2col")]
    # the direct numpy reference takes about 20 s per call at this shape: not timed
    out = [conv_case(128, 32, 28, 28, 64, 3, 3, 1, algo, ("host", "gpu"),
                     numpy_device=algo == "im2col", bars={"host": ("torch", 1.0)})
           for algo in ("direct", "im2col")]
    out += [conv_case(64, 128, 56, 56, 128, 3, 3, 1, algo, ("gpu",))
            for algo in ("direct", "im2col")]
    return out
