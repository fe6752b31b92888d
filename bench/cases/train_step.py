"""Training throughput: one training step (images/s) of LeNet-5 and of an MLP, nnkern vs
PyTorch.

LeNet-5 (1x28x28 input, synthetic data): conv 6@5x5 pad 2 + relu, max-pool 2,
conv 16@5x5 + relu, max-pool 2, flatten (400), dense 120 + relu, dense 84 + relu,
dense 10. The MLP of the course: 784 -> 128 + relu -> 64 + relu -> 10. Softmax
cross-entropy; Adam (lr 1e-3).

One call = one step of a training script on the autograd tape (what ``fit`` runs)::

    loss = loss_fn(model(nnkern.tensor(x)), y)
    loss.backward(); opt.step(); model.zero_grad()

and for PyTorch ``zero_grad, forward, cross_entropy, backward, step``, with its
default Adam (``"torch"``), its fused Adam (``"torch[fused]"``) and, for LeNet,
channels_last activations with fused Adam (``"torch[channels_last]"``): the bars
compare with the fastest. All start from the same weights; validation compares
the first step's loss and every parameter after it with nnkern's numpy backend
(float64). Work (roofline only): 3x the forward flops per image.
"""

from functools import partial

import numpy as np

from bench.cases._common import check_nnkern, torch_impl
from bench.core import Case, Impl, Skip

LR = 1e-3

# (kind, out, in, kernel) in PyTorch's parameter order; dense weights are (out, in)
NETWORKS = {
    "lenet": {
        "title": "LeNet-5", "input": (1, 28, 28),
        "layers": [("conv", 6, 1, 5), ("conv", 16, 6, 5), ("dense", 120, 400, 0),
                   ("dense", 84, 120, 0), ("dense", 10, 84, 0)],
        "flops": (2 * 6 * 28 * 28 * 1 * 25 + 2 * 16 * 10 * 10 * 6 * 25
                  + 2 * (400 * 120 + 120 * 84 + 84 * 10)),
    },
    "mlp": {
        "title": "MLP 784-128-64-10", "input": (784,),
        "layers": [("dense", 128, 784, 0), ("dense", 64, 128, 0), ("dense", 10, 64, 0)],
        "flops": 2 * (784 * 128 + 128 * 64 + 64 * 10),
    },
}


def _weights(rng, net):
    out = []
    for kind, k, c, r in NETWORKS[net]["layers"]:
        shape = (k, c, r, r) if kind == "conv" else (k, c)
        bound = 1.0 / np.sqrt(np.prod(shape[1:]))
        out.append(rng.uniform(-bound, bound, size=shape).astype(np.float32))
        out.append(rng.uniform(-bound, bound, size=k).astype(np.float32))
    return out


def _inputs(rng, batch, net):
    d = {"x": rng.uniform(0, 1, size=(batch,) + NETWORKS[net]["input"]).astype(np.float32),
         "y": rng.integers(0, 10, size=batch).astype(np.int64)}
    for i, w in enumerate(_weights(rng, net)):
        d[f"w{i}"] = w
    return d


def _nnkern_model(nnkern, net, dtype):
    from nnkern import layers

    if net == "mlp":
        return nnkern.Sequential([
            layers.Input((784,), dtype=dtype),
            layers.Dense(128, activation="relu"),
            layers.Dense(64, activation="relu"),
            layers.Dense(10),
        ])
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


def _nnkern(backend, net):
    import nnkern

    check_nnkern(backend, ("conv", "pool", "gemm", "softmax_ce", "elementwise", "optim"),
                 ["conv2d", "max_pool2d", "linear", "softmax_cross_entropy", "relu",
                  "adam_step"])
    if not hasattr(nnkern, "tensor"):
        raise Skip("nnkern.tensor (the autograd API) is not there yet")
    from nnkern import losses, optimizers

    def prepare(inputs):
        dtype = inputs["x"].dtype
        model = _nnkern_model(nnkern, net, dtype)
        x = nnkern.to_device(inputs["x"], backend)
        y = nnkern.to_device(inputs["y"], backend)
        model.to(backend)
        arrays = _model_arrays(model)
        given = [inputs[f"w{i}"] for i in range(len(arrays))]
        if [a.shape for a in arrays] != [g.shape for g in given]:
            raise Skip(f"{net} parameter shapes {[a.shape for a in arrays]} are not "
                       f"PyTorch's {[g.shape for g in given]}")
        for a, g in zip(arrays, given, strict=True):
            a[...] = nnkern.to_device(g.astype(dtype), backend)
        loss_fn = losses.SparseCategoricalCrossentropy()
        opt = optimizers.Adam(model.parameters(), lr=LR)
        model.zero_grad()
        return {"model": model, "loss": loss_fn, "opt": opt, "x": nnkern.Tensor(x), "y": y,
                "arrays": arrays}

    def run(s):
        model, opt = s["model"], s["opt"]
        loss = s["loss"](model(s["x"], training=True), s["y"])
        loss.backward()
        opt.step()
        model.zero_grad()
        return (loss.data, *s["arrays"])

    def fetch(outputs):
        return tuple(np.asarray(nnkern.to_numpy(o)) for o in outputs)

    return Impl(label=f"nnkern[{backend}]", kind="nnkern",
                place="gpu" if backend == "cuda" else "host", prepare=prepare, run=run,
                fetch=fetch, context=lambda: nnkern.device(backend), device=backend)


def _torch(place, env, net, setting=None):
    def prepare(inputs, T, torch):
        nn = torch.nn
        if net == "mlp":
            model = nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(),
                                  nn.Linear(64, 10))
        else:
            model = nn.Sequential(
                nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
                nn.Linear(84, 10))
        model = model.to("cuda" if place == "gpu" else "cpu")
        params = list(model.parameters())
        with torch.no_grad():
            for i, p in enumerate(params):
                p.copy_(T(inputs[f"w{i}"]))
        fused = {"fused": True} if setting in ("fused", "channels_last") else {}
        opt = torch.optim.Adam(params, lr=LR, **fused)
        x = T(inputs["x"])
        if setting == "channels_last":
            model = model.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        return {"model": model, "opt": opt, "params": params, "x": x,
                "y": T(inputs["y"]), "torch": torch}

    def run(s):
        s["opt"].zero_grad(set_to_none=True)
        loss = s["torch"].nn.functional.cross_entropy(s["model"](s["x"]), s["y"])
        loss.backward()
        s["opt"].step()
        return (loss, *s["params"])

    impl = torch_impl(place, env, prepare, run)
    if setting:
        impl.label = f"torch[{setting}]"
    return impl


def train_case(net, batch):
    spec = NETWORKS[net]
    peers = {"torch": partial(_torch, net=net),
             "torch[fused]": partial(_torch, net=net, setting="fused")}
    if net == "lenet":
        peers["torch[channels_last]"] = partial(_torch, net=net, setting="channels_last")
    return Case(
        family="train_step", name=f"{spec['title']} train step batch {batch}",
        shape=f"x ({batch},{','.join(map(str, spec['input']))}), Adam",
        make_inputs=partial(_inputs, batch=batch, net=net),
        nnkern=partial(_nnkern, net=net), peers=peers,
        flops=3.0 * spec["flops"] * batch, metric="img", items=float(batch), rtol=5e-3,
        rotate=False,
    )


def cases(quick):
    if quick:
        return [train_case("lenet", 32), train_case("mlp", 32)]
    return [train_case("lenet", b) for b in (64, 128, 256)] + [train_case("mlp", 32)]
