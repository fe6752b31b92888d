"""Elementwise: relu forward + backward on an activation tensor, and the cost of
one small call through nnkern's dispatch.

relu: ``y = F.relu(x)``, ``dx = F.relu_backward(g, x)``; peers numpy
(``np.maximum``, ``np.where``) and PyTorch (autograd). Memory-bound: bytes =
x, y, g, dx once each.

dispatch: ``F.relu`` on 1024 floats, forward only: the time is the fixed cost
of validation, allocation, dispatch and (on the GPU) one kernel launch with
CuPy arrays, reported in microseconds per call (issue 4's launch-cost
figure); the peers pay their own fixed cost on the same call. Its bar (issue
13 item 5): at most 2 us per call through ``F`` on the cpu backend (an
absolute time, so it is in the case's note, not in ``bars``).

tape: the same call on an ``nnkern.Tensor`` that requires grad, so the op is recorded
on the autograd tape (issue 10: the Python cost of one recorded op), forward only and
forward + ``backward``; the peer is PyTorch with ``requires_grad`` (and numpy's bare
forward/backward for scale).
"""

from functools import partial

import numpy as np

from bench.cases._common import cupy_impl, nbytes, nnkern_impl, numpy_impl, torch_impl, uniform
from bench.core import Case


def _inputs(rng, shape, backward):
    d = {"x": uniform(rng, shape)}
    if backward:
        d["g"] = uniform(rng, shape)
    return d


def _nnkern(backend, backward):
    import nnkern.functional as F

    def run(s):
        y = F.relu(s["x"])
        if not backward:
            return y
        return y, F.relu_backward(s["g"], s["x"])

    ops = ["relu", "relu_backward"] if backward else ["relu"]
    return nnkern_impl(backend, "elementwise", ops, run)


def _nnkern_tape(backend, backward):
    import nnkern
    import nnkern.functional as F

    def prepare(dev):
        return {**dev, "t": nnkern.Tensor(dev["x"], requires_grad=True)}

    def run(s):
        t = s["t"]
        y = F.relu(t)
        if not backward:
            return y.data
        t.grad = None
        y.backward(s["g"])
        return y.data, t.grad

    ops = ["relu", "relu_backward"]
    return nnkern_impl(backend, "elementwise", ops, run, prepare=prepare)


def _numpy(place, env, backward):
    def run(s):
        y = np.maximum(s["x"], 0)
        if not backward:
            return y
        return y, np.where(s["x"] > 0, s["g"], np.float32(0))
    return numpy_impl(place, env, run)


def _torch(place, env, backward, recorded=False):
    # recorded: x requires grad even for a forward alone (the tape case's peer)
    def prepare(inputs, T, torch):
        d = {"x": T(inputs["x"], backward or recorded), "torch": torch}
        if backward:
            d["g"] = T(inputs["g"])
        return d

    def run(s):
        torch = s["torch"]
        y = torch.relu(s["x"])
        if not backward:
            return y
        (dx,) = torch.autograd.grad(y, (s["x"],), s["g"])
        return y, dx

    return torch_impl(place, env, prepare, run)


def _cupy(place, env, backward):
    cp = env.cupy

    def run(s):
        y = cp.maximum(s["x"], 0)
        if not backward:
            return y
        return y, cp.where(s["x"] > 0, s["g"], cp.float32(0))
    return cupy_impl(place, env, run)


def relu_case(shape, places=("host", "gpu")):
    n = int(np.prod(shape))
    return Case(
        family="elementwise", name=f"relu fwd+bwd {'x'.join(map(str, shape))}",
        shape=f"x {shape}", make_inputs=partial(_inputs, shape=shape, backward=True),
        nnkern=partial(_nnkern, backward=True),
        peers={p: partial(f, backward=True) for p, f in
               (("numpy", _numpy), ("torch", _torch), ("cupy", _cupy))},
        flops=2.0 * n, bytes=nbytes(shape) * 4, metric="byte", places=places,
    )


def dispatch_case(n=1024):
    return Case(
        family="elementwise", name=f"relu dispatch {n} floats", shape=f"x ({n},), forward",
        make_inputs=partial(_inputs, shape=(n,), backward=False),
        nnkern=partial(_nnkern, backward=False),
        peers={p: partial(f, backward=False) for p, f in
               (("numpy", _numpy), ("torch", _torch), ("cupy", _cupy))},
        flops=float(n), bytes=nbytes((n,)) * 2, metric="call",
        note="bar (issue 13 item 5): <= 2 us per call through F on the cpu backend",
    )


def tape_case(backward, n=1024):
    what = "forward + backward" if backward else "forward"
    return Case(
        family="elementwise", name=f"relu recorded on the tape {n} floats, {what}",
        shape=f"x ({n},) Tensor requiring grad, {what}",
        make_inputs=partial(_inputs, shape=(n,), backward=backward),
        nnkern=partial(_nnkern_tape, backward=backward),
        peers={"numpy": partial(_numpy, backward=backward),
               "torch": partial(_torch, backward=backward, recorded=True)},
        flops=float(n), bytes=nbytes((n,)) * (4 if backward else 2), metric="call",
        places=("host",),
        note="issue 10: the Python cost of one recorded op (report, no bar)",
    )


def cases(quick):
    if quick:
        return [relu_case((8, 16, 28, 28)), dispatch_case(), tape_case(False), tape_case(True)]
    return [relu_case((128, 64, 28, 28)), relu_case((128, 128, 56, 56), places=("gpu",)),
            dispatch_case(), tape_case(False), tape_case(True)]
