"""nnkern's kernels inside a PyTorch training script: LeNet-5 with nnkern.torch's modules.

A PyTorch LeNet-5 is trained on the bundled digits (upsampled to 28x28) twice, from the
same initial weights on the same batches: once as written, once with its ``Conv2d``,
``MaxPool2d``, ``Linear`` and ``CrossEntropyLoss`` taken from ``nnkern.torch`` instead of
``torch.nn`` (torch's constructor arguments; nnkern's kernels run forward and backward).
Everything else, the optimizer, the loop and autograd, stays PyTorch's. The two take
turns step by step, so a change of load on the machine hits both alike; the time per step
is the median of each.

Then the weights trained through nnkern.torch load into the same network written with
nnkern's Keras-like layers (``state_dict``: torch's keys and layouts), which predicts the
same class for every test image.

    python examples/torch_lenet.py

Expected result (measured on the quiet 2-vCPU Intel Xeon, AVX-512; torch 2.13 CPU,
2 threads each; 12 epochs, batch 64, Adam 1e-3, 23 steps per epoch; 6 s in all):

    pure torch:               test accuracy 0.964, 4.5 ms/step (1.00x torch's speed)
    torch + nnkern.torch:     test accuracy 0.964, 4.4 ms/step (1.02x torch's speed)
    nnkern Sequential with the nnkern.torch weights: same class for 359/359 test images

The accuracy is the same in every run (same start, same batches, the same math to
float32 rounding); the speed ratio was 1.02x in three quiet runs (4.4-4.6 against
4.5-4.8 ms/step), 0.84x to 1.01x on a busy machine (load 4 to 11 on 2 cores). The
bridge costs time per module call (torch's autograd.Function and nnkern's one-node
tape), which nnkern's faster convolutions win back.
"""

# nnkern first: its import sets a short OpenMP spin (GOMP_SPINCOUNT, about 40 us) before
# torch loads its own OpenMP runtime, so neither library's idle threads spin long while
# the other computes
import nnkern  # noqa: I001

import time

import numba
import numpy as np
import torch

import nnkern.torch as nt
from nnkern import data, layers


class LeNet(torch.nn.Module):
    """LeNet-5 for 1x28x28 images; ``nn`` is where the modules come from: ``torch.nn``, or
    ``nnkern.torch`` for nnkern's kernels."""

    def __init__(self, nn=torch.nn):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5, padding=2)
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(400, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x):
        x = self.pool(torch.relu(self.conv1(x)))
        x = self.pool(torch.relu(self.conv2(x)))
        x = torch.relu(self.fc1(x.flatten(1)))
        return self.fc3(torch.relu(self.fc2(x)))


def keras_lenet(seed=0):
    """The same network in nnkern's layers, named like LeNet's modules."""
    return nnkern.Sequential([
        layers.Input((1, 28, 28)),
        layers.Conv2D(6, 5, padding=2, activation="relu", name="conv1"),
        layers.MaxPool2D(2),
        layers.Conv2D(16, 5, activation="relu", name="conv2"),
        layers.MaxPool2D(2),
        layers.Flatten(),
        layers.Dense(120, activation="relu", name="fc1"),
        layers.Dense(84, activation="relu", name="fc2"),
        layers.Dense(10, name="fc3"),
    ], seed=seed)


def load():
    x, y = data.load_digits()
    idx = np.arange(28) * 8 // 28  # nearest-neighbour 8x8 -> 28x28
    x = np.ascontiguousarray(x[:, :, idx][:, :, :, idx])
    x_train, x_test, y_train, y_test = data.train_test_split(x, y, 0.2, seed=0)
    norm = data.Normalizer().fit(x_train)
    return norm.transform(x_train), norm.transform(x_test), y_train, y_test


def step(net, loss_fn, opt, xb, yb):
    """One training step; returns its wall time in seconds."""
    start = time.perf_counter()
    opt.zero_grad()
    loss = loss_fn(net(xb), yb)
    loss.backward()
    opt.step()
    return time.perf_counter() - start


def accuracy(net, x, y):
    with torch.no_grad():
        return float((net(torch.from_numpy(x)).argmax(1).numpy() == y).mean())


def main(num_epochs=12, batch_size=64, lr=1e-3, verbose=True):
    """Train both nets in turns; returns their accuracies, ms per step and the agreement
    of the nnkern Sequential."""
    torch.set_num_threads(numba.get_num_threads())  # the same cores for both
    nnkern.set_device("cpu")
    x_train, x_test, y_train, y_test = load()
    runs = {}
    for name, nn in (("pure torch", torch.nn), ("torch + nnkern.torch", nt)):
        torch.manual_seed(0)  # the same initial weights for both
        net = LeNet(nn)
        runs[name] = (net, nn.CrossEntropyLoss(), torch.optim.Adam(net.parameters(), lr=lr), [])
    x_t, y_t = torch.from_numpy(x_train), torch.from_numpy(y_train)
    rng = np.random.default_rng(0)
    for epoch in range(num_epochs):
        order = torch.from_numpy(rng.permutation(len(x_train)))
        for i, start in enumerate(range(0, len(order), batch_size)):
            idx = order[start:start + batch_size]
            xb, yb = x_t[idx], y_t[idx]
            for name in (list(runs) if i % 2 == 0 else list(runs)[::-1]):  # take turns
                net, loss_fn, opt, times = runs[name]
                times.append(step(net, loss_fn, opt, xb, yb))
        if verbose:
            print(f"epoch {epoch + 1:2d}: " + ", ".join(
                f"{name} {accuracy(runs[name][0], x_test, y_test):.3f}" for name in runs))
    results = {}
    for name, (net, _, _, times) in runs.items():
        warm = times[len(times) // 10:]  # past the first compilations
        results[name] = (accuracy(net, x_test, y_test), 1e3 * float(np.median(warm)))
    model = keras_lenet()
    model.load_state_dict(runs["torch + nnkern.torch"][0].state_dict())
    with torch.no_grad():
        theirs = runs["torch + nnkern.torch"][0](torch.from_numpy(x_test)).argmax(1).numpy()
    same = int((model.predict(x_test).argmax(axis=1) == theirs).sum())
    if verbose:
        base = results["pure torch"][1]
        for name, (acc, ms) in results.items():
            print(f"{name + ':':25s} test accuracy {acc:.3f}, {ms:.1f} ms/step "
                  f"({base / ms:.2f}x torch's speed)")
        print(f"nnkern Sequential with the nnkern.torch weights: same class for "
              f"{same}/{len(y_test)} test images")
    return {"results": results, "same": same, "n_test": len(y_test)}


if __name__ == "__main__":
    main()
