"""XOR with a one-hidden-layer MLP: what one neuron cannot do, two layers can.

No line separates XOR's classes, so logistic regression (and Rosenblatt's
perceptron, see perceptron.py) is stuck at 75% or below on the truth table.
A hidden layer of a few tanh units bends the input space so that the output
neuron can separate it. We train on 200 noisy samples around the four
corners and test on the exact truth table and 200 fresh noisy samples.

    python examples/xor_mlp.py

Expected result (measured):

    one neuron (logistic regression): truth table accuracy 0.50
    MLP 2-8-1 (tanh): truth table accuracy 1.00, noisy test accuracy 1.000
    truth table: 0 xor 0 -> 0.00, 0 xor 1 -> 1.00, 1 xor 0 -> 1.00, 1 xor 1 -> 0.00
"""

import numpy as np

import nnkern
from nnkern import data, layers


def build(hidden, seed=0):
    """``hidden`` tanh units then one output neuron (logit); 0 hidden = logistic regression."""
    stack = [layers.Input((2,))]
    if hidden:
        stack.append(layers.Dense(hidden, activation="tanh"))
    stack.append(layers.Dense(1))
    model = nnkern.Sequential(stack, seed=seed)
    model.compile(
        optimizer=nnkern.optimizers.Adam(lr=0.05),
        loss="binary_crossentropy",
        metrics=["accuracy"],
    )
    return model


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def main(num_epochs=100, verbose=True):
    """Returns (linear truth-table accuracy, MLP truth-table accuracy, MLP noisy accuracy)."""
    X, y = data.make_xor(200, noise=0.1, seed=0)
    X_table, y_table = data.make_xor(4, noise=0.0)
    X_test, y_test = data.make_xor(200, noise=0.1, seed=1)
    results = []
    for hidden in (0, 8):
        model = build(hidden)
        model.fit(X, y, batch_size=16, epochs=num_epochs, verbose=0)
        results.append((model, model.evaluate(X_table, y_table)[1]))
    (_, linear_acc), (mlp, mlp_acc) = results
    _, noisy_acc = mlp.evaluate(X_test, y_test)
    p = sigmoid(mlp.predict(X_table)[:, 0])
    if verbose:
        print(
            f"one neuron (logistic regression): truth table accuracy {linear_acc:.2f}"
        )
        print(
            f"MLP 2-8-1 (tanh): truth table accuracy {mlp_acc:.2f}, "
            f"noisy test accuracy {noisy_acc:.3f}"
        )
        print(
            "truth table: "
            + ", ".join(
                f"{int(a)} xor {int(b)} -> {q:.2f}"
                for (a, b), q in zip(X_table, p)
            )
        )
    return linear_acc, mlp_acc, noisy_acc


if __name__ == "__main__":
    main()
