"""max_pool2d 2x2 stride 2, forward + backward, vs PyTorch (autograd) at its best.

One call = ``y, idx = F.max_pool2d(x, 2, return_indices=True)`` then
``dx = F.max_pool2d_backward(g, x, 2, indices=idx)`` (the argmax saved by the
forward, as a training layer would keep it; PyTorch's autograd keeps its own).
x is (N, C, H, W); y, idx, g are (N, C, H/2, W/2).
Memory-bound: bytes = x, y, g and dx once each (4 bytes per element; the
saved indices are an implementation's choice and not counted).

Peers, each a row of its own (the same math, inputs converted once, outside
the timing):

- ``torch``: NCHW tensors, PyTorch's defaults.
- ``torch[channels_last]``: x and g in channels_last memory format, as a
  PyTorch user who wants speed on a CPU keeps them.
- ``torch[mkldnn]``: x and g in oneDNN's own blocked layout
  (``Tensor.to_mkldnn()``): with ``torch.backends.mkldnn`` on (the default),
  this layout is how pooling reaches oneDNN on a CPU; the GPU has no such
  layout.
"""

from functools import partial

import numpy as np

from bench.cases._common import nbytes, nnkern_impl, torch_impl
from bench.core import Case, Skip


def _inputs(rng, shape):
    N, C, H, W = shape
    # a random permutation: no ties, so every implementation picks the same argmax
    x = rng.permutation(N * C * H * W).astype(np.float32).reshape(shape)
    x /= x.size
    g = rng.uniform(-1, 1, size=(N, C, H // 2, W // 2)).astype(np.float32)
    return {"x": x, "g": g}


def _nnkern(backend):
    import nnkern.functional as F

    def run(s):
        y, idx = F.max_pool2d(s["x"], 2, return_indices=True)
        dx = F.max_pool2d_backward(s["g"], s["x"], 2, indices=idx)
        return y, dx

    return nnkern_impl(backend, "pool", ["max_pool2d", "max_pool2d_backward"], run)


def _torch(place, env, layout=""):
    if layout == "mkldnn" and place == "gpu":
        raise Skip("oneDNN's layout is a CPU layout")

    def prepare(inputs, T, torch):
        x, g = T(inputs["x"]), T(inputs["g"])
        if layout == "channels_last":
            x = x.contiguous(memory_format=torch.channels_last)
            g = g.contiguous(memory_format=torch.channels_last)
        elif layout == "mkldnn":
            x, g = x.to_mkldnn(), g.to_mkldnn()
        return {"x": x.requires_grad_(True), "g": g, "torch": torch}

    def run(s):
        torch = s["torch"]
        y = torch.nn.functional.max_pool2d(s["x"], 2, 2)  # oneDNN's layout needs the stride
        (dx,) = torch.autograd.grad(y, (s["x"],), s["g"])
        return y, dx

    return torch_impl(place, env, prepare, run, setting=layout)


def pool_case(shape, places=("host", "gpu")):
    N, C, H, W = shape
    return Case(
        family="pool", name=f"max_pool2d 2x2 fwd+bwd {N}x{C}x{H}x{W}",
        shape=f"x ({N},{C},{H},{W})",
        make_inputs=partial(_inputs, shape=shape), nnkern=_nnkern,
        peers={"torch": _torch,
               "torch[channels_last]": partial(_torch, layout="channels_last"),
               "torch[mkldnn]": partial(_torch, layout="mkldnn")},
        flops=float(N * C * H * W), bytes=nbytes(shape, shape) * 1.25,
        metric="byte", places=places,
    )


def cases(quick):
    if quick:
        return [pool_case((8, 16, 28, 28))]
    return [pool_case((128, 64, 28, 28)), pool_case((128, 128, 56, 56), places=("gpu",))]
