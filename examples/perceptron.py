"""Rosenblatt's perceptron learning rule (1958), in NumPy.

The perceptron predicts ``y_hat = step(w . x + b)`` and learns one example at
a time: when it is wrong it moves the weights towards the example,
``w += lr * (y - y_hat) * x``, ``b += lr * (y - y_hat)``; when it is right it
does nothing. On linearly separable data this stops after a finite number of
mistakes (the perceptron convergence theorem); on XOR it never stops,
because no line separates XOR's classes.

    python examples/perceptron.py

Expected result (measured):

    separable blobs (200 points): converged after 2 epochs, 1 mistake in all, accuracy 1.000
    AND gate: converged after 5 epochs, accuracy 1.000
    XOR gate: not converged after 100 epochs, accuracy 0.500 (no line separates XOR)
"""

import numpy as np

from nnkern import data


def perceptron(X, y, lr=1.0, num_epochs=100, seed=0):
    """Train a perceptron on X (n, d) and labels y in {0, 1}.

    Returns ``(w, b, epochs_run, mistakes, converged)``; the order of the
    examples is shuffled every epoch.
    """
    rng = np.random.default_rng(seed)
    w = np.zeros(X.shape[1])
    b = 0.0
    mistakes = 0
    for epoch in range(1, num_epochs + 1):
        errors = 0
        for i in rng.permutation(len(X)):
            y_hat = 1 if X[i] @ w + b > 0 else 0
            if y_hat != y[i]:  # the rule: learn only from mistakes
                w += lr * (y[i] - y_hat) * X[i]
                b += lr * (y[i] - y_hat)
                errors += 1
        mistakes += errors
        if errors == 0:
            return w, b, epoch, mistakes, True
    return w, b, num_epochs, mistakes, False


def predict(X, w, b):
    return (X @ w + b > 0).astype(np.int64)


def blobs(n=200, seed=0):
    """Two Gaussian clouds either side of the line x0 + x1 = 0."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    centres = np.where(y[:, None] == 1, 1.5, -1.5)
    return centres + 0.5 * rng.standard_normal((n, 2)), y


def main(verbose=True):
    """Run the three problems; returns {name: (accuracy, converged, epochs)}."""
    X_and = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=float)
    problems = {
        "separable blobs (200 points)": blobs(),
        "AND gate": (X_and, np.array([0, 0, 0, 1])),
        "XOR gate": data.make_xor(4, noise=0.0),
    }
    results = {}
    for name, (X, y) in problems.items():
        X = np.asarray(X, dtype=float)
        w, b, epochs, mistakes, converged = perceptron(X, y)
        acc = float((predict(X, w, b) == y).mean())
        results[name] = (acc, converged, epochs)
        if not verbose:
            continue
        if converged:
            plural = "s" if mistakes != 1 else ""
            extra = (
                f", {mistakes} mistake{plural} in all" if len(X) > 4 else ""
            )
            print(
                f"{name}: converged after {epochs} epochs{extra}, accuracy {acc:.3f}"
            )
        else:
            print(
                f"{name}: not converged after {epochs} epochs, accuracy {acc:.3f} "
                "(no line separates XOR)"
            )
    return results


if __name__ == "__main__":
    main()
