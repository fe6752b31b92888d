"""Logistic regression is one neuron: a Dense(1) layer and binary cross-entropy.

The neuron computes ``z = w . x + b`` and the loss applies the sigmoid,
``p = 1 / (1 + exp(-z))``, the probability of class 1. Here it tells the
handwritten digit 3 from 8 using the 64 pixels of the bundled 8x8 digits;
the sign of ``z`` is the decision. Training uses ``model.fit`` (Adam), and
the test accuracy is checked against the neuron's own formula in NumPy.

    python examples/logistic_regression.py

Expected result (measured on the cpu and numpy backends, which agree):

    3 vs 8: 286 train / 71 test images, 64 inputs -> 1 neuron (65 parameters)
    test accuracy 0.986 (the sigmoid of the neuron's output is P(digit is 8))
"""

import numpy as np

import nnkern
from nnkern import data, layers


def load_3_vs_8(seed=0):
    x, y = data.load_digits()
    keep = (y == 3) | (y == 8)
    X = x[keep].reshape(-1, 64)  # flatten the 8x8 images
    y = (y[keep] == 8).astype(np.int64)  # 1 for an eight, 0 for a three
    return data.train_test_split(X, y, 0.2, seed=seed)


def main(num_epochs=30, verbose=True):
    """Train the neuron; returns the test accuracy."""
    X_train, X_test, y_train, y_test = load_3_vs_8()
    model = nnkern.Sequential(
        [layers.Input((64,)), layers.Dense(1)], name="one_neuron"
    )
    model.compile(
        optimizer=nnkern.optimizers.Adam(lr=0.05),
        loss="binary_crossentropy",
        metrics=["accuracy"],
    )
    model.fit(X_train, y_train, batch_size=32, epochs=num_epochs, verbose=0)
    _, acc = model.evaluate(X_test, y_test)
    # The same decision by hand: z = X w^T + b, class 1 where z > 0 (p > 0.5).
    w, b = (nnkern.to_numpy(a) for a in model.get_weights())
    z = X_test @ w.T + b
    assert abs(np.mean((z[:, 0] > 0) == y_test) - acc) < 1e-9
    if verbose:
        print(
            f"3 vs 8: {len(X_train)} train / {len(X_test)} test images, 64 inputs -> "
            f"1 neuron ({model.count_params()} parameters)"
        )
        print(
            f"test accuracy {acc:.3f} (the sigmoid of the neuron's output is "
            "P(digit is 8))"
        )
    return acc


if __name__ == "__main__":
    main()
