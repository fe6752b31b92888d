"""A Siamese network on pairs of digits: one encoder, called on both images.

Are two handwritten digits the same number? The network maps each image to a
16-dimensional embedding with ONE encoder (a small CNN) that it calls twice, so
both images go through the same weights and both calls contribute gradients.
The output is the Euclidean distance of the two embeddings; the contrastive loss
(Hadsell, Chopra and LeCun 2006) is a plain Python function of Tensors:

    same pair:       d^2                     (pull together)
    different pair:  max(margin - d, 0)^2    (push apart, up to the margin)

Autograd differentiates it; no hand-written gradient. A pair is predicted "same"
when d < margin / 2.

    Input a (1, 8, 8) --\\                        /-- embedding a --\\
                          encoder (shared weights)                    distance -> loss
    Input b (1, 8, 8) --/                        \\-- embedding b --/

    python examples/siamese_digits.py

Expected result (measured, cpu backend, 2 cores, 2 s with the kernels
compiled; pairs are half same-class, half different, test pairs from test
images only):

    epoch 12: loss 0.0251 - pair accuracy on test pairs 0.958
    encoder: 8,912 parameters shared by both branches
"""

import numpy as np

import nnkern
from nnkern import data, layers

MARGIN = 1.0


def make_pairs(x, y, n, seed):
    """``n`` pairs of images, half of one class and half of two classes, with the target
    1.0 for same and 0.0 for different."""
    rng = np.random.default_rng(seed)
    by_class = [np.flatnonzero(y == c) for c in range(10)]
    first = rng.integers(0, len(x), n)
    same = np.arange(n) % 2 == 0
    second = np.empty(n, np.int64)
    for i, j in enumerate(first):
        if same[i]:
            second[i] = rng.choice(by_class[y[j]])
        else:
            other = (y[j] + rng.integers(1, 10)) % 10
            second[i] = rng.choice(by_class[other])
    return x[first], x[second], same.astype(np.float32)


def contrastive(y_true, distance, margin=MARGIN):
    """The contrastive loss of a batch: y_true 1 for same pairs, distance (N, 1)."""
    y = y_true.reshape(-1, 1)
    return (y * distance ** 2 + (1 - y) * (margin - distance).clip(min=0) ** 2).mean()


def euclidean(pair):
    """||a - b|| per row, kept away from 0 so its gradient stays finite."""
    a, b = pair
    return ((a - b) ** 2).sum(axis=1, keepdims=True).clip(min=1e-12).sqrt()


def build(seed=0):
    encoder = nnkern.Sequential([
        layers.Input((1, 8, 8)),
        layers.Conv2D(16, 3, padding="same", activation="relu"),
        layers.MaxPool2D(2),
        layers.Flatten(),
        layers.Dense(32, activation="relu"),
        layers.Dense(16),
    ], name="encoder", seed=seed)
    a, b = layers.Input((1, 8, 8), name="image_a"), layers.Input((1, 8, 8), name="image_b")
    distance = layers.Lambda(euclidean, name="distance")([encoder(a), encoder(b)])
    siamese = nnkern.Model([a, b], distance, name="siamese", seed=seed)
    siamese.compile(optimizer=nnkern.optimizers.Adam(lr=2e-3), loss=contrastive)
    return siamese, encoder


def pair_accuracy(model, xa, xb, same):
    distance = model.predict([xa, xb], batch_size=256)[:, 0]
    return float(np.mean((distance < MARGIN / 2) == (same == 1)))


def main(num_epochs=12, n_train=4000, n_test=1000, verbose=True):
    """Train on pairs of training images; returns the pair accuracy on test pairs."""
    x, y = data.load_digits()
    x_train, x_test, y_train, y_test = data.train_test_split(x, y, 0.2, seed=0)
    norm = data.Normalizer().fit(x_train)
    x_train, x_test = norm.transform(x_train), norm.transform(x_test)
    train = make_pairs(x_train, y_train, n_train, seed=1)
    test = make_pairs(x_test, y_test, n_test, seed=2)

    siamese, encoder = build()
    for epoch in range(1, num_epochs + 1):
        history = siamese.fit([train[0], train[1]], train[2], batch_size=64, epochs=1,
                              seed=epoch, verbose=0)
        acc = pair_accuracy(siamese, *test)
        if verbose:
            print(f"epoch {epoch:2d}: loss {history.history['loss'][-1]:.4f} - pair accuracy "
                  f"on test pairs {acc:.3f}")
    if verbose:
        print(f"encoder: {encoder.count_params():,} parameters shared by both branches")
    return acc


if __name__ == "__main__":
    main()
