"""conv2d forward + backward: nnkern (each CPU version by name) vs PyTorch at its best.

One call = ``y = F.conv2d(x, w, b, padding=P, groups=G, algo=A)`` then
``dx, dw, db = F.conv2d_backward(g, x, w, b, ...)``; PyTorch does the same
with autograd (``torch.autograd.grad`` of its conv2d). x is (N, C, H, W),
w is (K, C/G, R, S), g and y are (N, K, OH, OW).
Work: 2*N*K*OH*OW*(C/G)*R*S per pass, x3 for forward + backward-data +
backward-weights. Bytes: x, w, b, y, g, dx, dw, db once each.

``algo`` is "direct" (the version table's rule among the direct versions), "auto" (the
rule, im2col included), "im2col", or a version name of kernels/conv/cpu.py (VERSIONS), so
each version can be timed on any shape (a version that cannot run an op gives way to the
rule for it).

Peers (one key per setting, shared naming):
    torch                 NCHW tensors (PyTorch's default)
    torch[channels_last]  x, w and g in channels_last memory format, same math: what a
                          PyTorch user picks for speed on a CPU (oneDNN's NHWC kernels)
    torch[mkldnn]         x and g as oneDNN (mkldnn) tensors, oneDNN's blocked layout;
                          w stays dense (PyTorch trains no mkldnn weights)
Layouts are converted when the state is prepared, outside the timing.

Bars (issue 13, host): LeNet conv1 and conv2 >= 1.2x the fastest torch setting;
N128 C32 28x28 and N32 C64 56x56 >= 1.0x torch[channels_last]; im2col >= 0.6x direct
on the im2col-vs-direct shape (the same shape's two rows). GPU: N=64 C=K=128 56x56
against cuDNN (cudnn.benchmark on).
"""

from functools import partial

from bench.cases._common import nbytes, nnkern_impl, torch_impl, uniform
from bench.core import Case, Skip


def _inputs(rng, N, C, H, W, K, R, S, P, G):
    OH, OW = H + 2 * P - R + 1, W + 2 * P - S + 1
    return {"x": uniform(rng, (N, C, H, W)),
            "w": uniform(rng, (K, C // G, R, S), -0.2, 0.2),
            "b": uniform(rng, (K,)),
            "g": uniform(rng, (N, K, OH, OW))}


def _nnkern(backend, P, G, algo):
    import nnkern.functional as F

    def run(s):
        y = F.conv2d(s["x"], s["w"], s["b"], stride=1, padding=P, groups=G, algo=algo)
        dx, dw, db = F.conv2d_backward(s["g"], s["x"], s["w"], s["b"], stride=1, padding=P,
                                       dilation=1, groups=G, algo=algo)
        return y, dx, dw, db

    return nnkern_impl(backend, "conv", ["conv2d", "conv2d_backward"], run)


def _torch(place, env, P, G, layout=""):
    """PyTorch with its tensors in one memory layout (see the module docstring)."""
    if layout and place != "host":
        raise Skip(f"torch[{layout}] is a host setting (the GPU peer is cuDNN in NCHW)")

    def prepare(inputs, T, torch):
        x, w, g = T(inputs["x"]), T(inputs["w"]), T(inputs["g"])
        if layout == "channels_last":
            x, w, g = (t.contiguous(memory_format=torch.channels_last) for t in (x, w, g))
        elif layout == "mkldnn":
            x, g = x.to_mkldnn(), g.to_mkldnn()
        return {"x": x.requires_grad_(True), "w": w.requires_grad_(True),
                "b": T(inputs["b"], True), "g": g, "torch": torch}

    def run(s):
        torch = s["torch"]
        y = torch.nn.functional.conv2d(s["x"], s["w"], s["b"], padding=P, groups=G)
        dx, dw, db = torch.autograd.grad(y, (s["x"], s["w"], s["b"]), s["g"])
        return y, dx, dw, db

    return torch_impl(place, env, prepare, run, setting=layout)


def _reference(inputs, P, G):
    """The numpy backend's im2col form (the faster reference; both algos agree)."""
    impl = _nnkern("numpy", P, G, "im2col")
    with impl.context():
        return impl.fetch(impl.run(impl.prepare(inputs)))


def conv_case(N, C, H, W, K, R, S, P, algo, places=("host",), G=1, numpy_device=True,
              bars=None, label=""):
    OH, OW = H + 2 * P - R + 1, W + 2 * P - S + 1
    flops = 3 * 2.0 * N * K * OH * OW * (C // G) * R * S
    grouped = f" G{G}" if G > 1 else ""
    return Case(
        family="conv",
        name=f"conv fwd+bwd {algo} N{N} C{C} K{K} {H}x{W}{grouped}{label}",
        shape=f"N={N} C={C} {H}x{W} K={K} {R}x{S} pad {P}" + (f" groups {G}" if G > 1 else ""),
        make_inputs=partial(_inputs, N=N, C=C, H=H, W=W, K=K, R=R, S=S, P=P, G=G),
        nnkern=partial(_nnkern, P=P, G=G, algo=algo),
        peers={"torch": partial(_torch, P=P, G=G),
               "torch[channels_last]": partial(_torch, P=P, G=G, layout="channels_last"),
               "torch[mkldnn]": partial(_torch, P=P, G=G, layout="mkldnn")},
        flops=flops,
        bytes=nbytes((N, C, H, W), (K, C // G, R, S), (K,), (N, K, OH, OW)) * 2,
        metric="flop", places=places, numpy_device=numpy_device,
        reference=partial(_reference, P=P, G=G),
        ref_key=f"conv {N} {C} {H} {W} {K} {R} {S} {P} {G}",
        bars=bars or {},
    )


def cases(quick):
    if quick:
        return [conv_case(8, 8, 14, 14, 16, 3, 3, 1, algo, ("host", "gpu"))
                for algo in ("direct", "im2col")]
    cl = "torch[channels_last]"
    out = [
        # LeNet-5's two convolutions at batch 128 (the train_step case's layers)
        conv_case(128, 1, 28, 28, 6, 5, 5, 2, "direct", bars={"host": (cl, 1.2)},
                  label=" (LeNet conv1)"),
        conv_case(128, 6, 14, 14, 16, 5, 5, 0, "direct", bars={"host": (cl, 1.2)},
                  label=" (LeNet conv2)"),
    ]
    # im2col vs direct on one shape (the direct numpy reference takes about 20 s per
    # call here: not timed)
    out += [conv_case(128, 32, 28, 28, 64, 3, 3, 1, algo, ("host", "gpu"),
                      numpy_device=algo == "im2col", bars={"host": (cl, 1.0)})
            for algo in ("direct", "im2col")]
    out += [
        conv_case(32, 64, 56, 56, 64, 3, 3, 1, "direct", numpy_device=False,
                  bars={"host": (cl, 1.0)}),
        # depthwise (MobileNet-style 3x3, groups = C)
        conv_case(128, 64, 28, 28, 64, 3, 3, 1, "direct", G=64, numpy_device=False),
        # one sample: backward-weights split over pixel bands
        conv_case(1, 64, 56, 56, 64, 3, 3, 1, "direct"),
        # and by the rule, which takes im2col for its backward-weights (few pixels)
        conv_case(1, 64, 56, 56, 64, 3, 3, 1, "auto", numpy_device=False),
    ]
    # the two 3x3 layers with px asked for (forward and backward-data as before wg; cl's
    # backward-weights, the rule's, in both rows): wg's gain in the same run
    out += [conv_case(128, 32, 28, 28, 64, 3, 3, 1, "px", numpy_device=False),
            conv_case(32, 64, 56, 56, 64, 3, 3, 1, "px", numpy_device=False)]
    # and with wg asked for (Winograd F(2x2, 3x3), the rule's before wg4): wg4's gain
    out += [conv_case(128, 32, 28, 28, 64, 3, 3, 1, "wg", numpy_device=False),
            conv_case(32, 64, 56, 56, 64, 3, 3, 1, "wg", numpy_device=False)]
    out += [conv_case(64, 128, 56, 56, 128, 3, 3, 1, algo, ("gpu",))
            for algo in ("direct", "im2col")]
    return out
