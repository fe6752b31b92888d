"""Training throughput: one LeNet-5 training step (images/s), nnkern vs PyTorch.

The network (1x28x28 input, synthetic data): conv 6@5x5 pad 2 + relu,
max-pool 2, conv 16@5x5 + relu, max-pool 2, flatten (400), dense 120 + relu,
dense 84 + relu, dense 10; softmax cross-entropy; Adam (lr 1e-3).

One call = one step of the hand-written loop of the public model API::

    logits = model.forward(x, training=True)
    loss = loss_fn(logits, y); model.backward(loss_fn.backward())
    opt.step(); model.zero_grad()

and for PyTorch ``zero_grad, forward, cross_entropy, backward, step``. Both
start from the same weights; validation compares the first step's loss and
every parameter after it with nnkern's numpy backend (float64).
Work (roofline only): 3x the forward flops of the convolutions and dense
layers, per image.
"""

from functools import partial

import numpy as np

from bench.cases._common import check_nnkern, torch_impl
from bench.core import Case, Impl, Skip

LR = 1e-3
# (kind, out, in, kernel) in PyTorch's parameter order; dense weights are (out, in)
LAYERS = [("conv", 6, 1, 5), ("conv", 16, 6, 5), ("dense", 120, 400, 0),
          ("dense", 84, 120, 0), ("dense", 10, 84, 0)]
FWD_FLOPS = (2 * 6 * 28 * 28 * 1 * 25 + 2 * 16 * 10 * 10 * 6 * 25
             + 2 * (400 * 120 + 120 * 84 + 84 * 10))


def _weights(rng):
    out = []
    for kind, k, c, r in LAYERS:
        shape = (k, c, r, r) if kind == "conv" else (k, c)
        bound = 1.0 / np.sqrt(np.prod(shape[1:]))
        out.append(rng.uniform(-bound, bound, size=shape).astype(np.float32))
        out.append(rng.uniform(-bound, bound, size=k).astype(np.float32))
    return out


def _inputs(rng, batch):
    d = {"x": rng.uniform(0, 1, size=(batch, 1, 28, 28)).astype(np.float32),
         "y": rng.integers(0, 10, size=batch).astype(np.int64)}
    for i, w in enumerate(_weights(rng)):
        d[f"w{i}"] = w
    return d


def _nnkern_model(nnkern, dtype):
    from nnkern import layers

    return nnkern.Sequential([
        layers.Input((1, 28, 28), dtype=dtype),
        layers.Conv2D(6, 5, padding="same", activation="relu"),
        layers.MaxPool2D(2),
        layers.Conv2D(16, 5, activation="relu"),
        layers.MaxPool2D(2),
        layers.Flatten(),
        layers.Dense(120, activation="relu"),
        layers.Dense(84, activation="relu"),
        layers.Dense(10),
    ])


def _model_arrays(model):
    """The model's trainable arrays in layer order (weight, then bias, per layer)."""
    arrays = []
    for layer in model.layers:
        arrays += list(layer.params.values())
    return arrays


def _nnkern(backend):
    import nnkern

    check_nnkern(backend, ("conv", "pool", "gemm", "softmax_ce", "elementwise", "optim"),
                 ["conv2d", "max_pool2d", "linear", "softmax_cross_entropy", "relu",
                  "adam_step"])
    if not hasattr(nnkern, "Sequential"):
        raise Skip("nnkern.Sequential (the model API) is not there yet")
    from nnkern import losses, optimizers

    def prepare(inputs):
        dtype = inputs["x"].dtype
        model = _nnkern_model(nnkern, dtype)
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        x = nnkern.to_device(inputs["x"], backend)
        y = nnkern.to_device(inputs["y"], backend)
        model.forward(x[:1], training=False)  # builds every layer and places the weights
        arrays = _model_arrays(model)
        given = [inputs[f"w{i}"] for i in range(len(arrays))]
        if [a.shape for a in arrays] != [g.shape for g in given]:
            raise Skip(f"LeNet-5 parameter shapes {[a.shape for a in arrays]} are not "
                       f"PyTorch's {[g.shape for g in given]}")
        for a, g in zip(arrays, given, strict=True):
            a[...] = nnkern.to_device(g.astype(dtype), backend)
        loss_fn = losses.SparseCategoricalCrossentropy()
        opt = optimizers.Adam(model.parameters(), lr=LR)
        model.zero_grad()
        return {"model": model, "loss": loss_fn, "opt": opt, "x": x, "y": y,
                "arrays": arrays}

    def run(s):
        model, loss_fn, opt = s["model"], s["loss"], s["opt"]
        logits = model.forward(s["x"], training=True)
        loss = loss_fn(logits, s["y"])
        model.backward(loss_fn.backward())
        opt.step()
        model.zero_grad()
        return (loss, *s["arrays"])

    def fetch(outputs):
        return tuple(np.asarray(nnkern.to_numpy(o)) for o in outputs)

    return Impl(label=f"nnkern[{backend}]", kind="nnkern",
                place="gpu" if backend == "cuda" else "host", prepare=prepare, run=run,
                fetch=fetch, context=lambda: nnkern.device(backend), device=backend)


def _torch(place, env):
    def prepare(inputs, T, torch):
        nn = torch.nn
        model = nn.Sequential(
            nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10))
        model = model.to("cuda" if place == "gpu" else "cpu")
        params = list(model.parameters())
        with torch.no_grad():
            for i, p in enumerate(params):
                p.copy_(T(inputs[f"w{i}"]))
        opt = torch.optim.Adam(params, lr=LR)
        return {"model": model, "opt": opt, "params": params, "x": T(inputs["x"]),
                "y": T(inputs["y"]), "torch": torch}

    def run(s):
        s["opt"].zero_grad(set_to_none=True)
        loss = s["torch"].nn.functional.cross_entropy(s["model"](s["x"]), s["y"])
        loss.backward()
        s["opt"].step()
        return (loss, *s["params"])

    return torch_impl(place, env, prepare, run)


def train_case(batch):
    return Case(
        family="train_step", name=f"LeNet-5 train step batch {batch}",
        shape=f"x ({batch},1,28,28), Adam", make_inputs=partial(_inputs, batch=batch),
        nnkern=_nnkern, peers={"torch": _torch},
        flops=3.0 * FWD_FLOPS * batch, metric="img", items=float(batch), rtol=5e-3,
        rotate=False,
    )


def cases(quick):
    return [train_case(b) for b in ((32,) if quick else (64, 128, 256))]
