"""A LeNet-style CNN on the bundled digits, trained with a hand-written loop.

``python -m nnkern`` trains the same network with ``model.fit``; this
script writes the loop out, the way the d2l course does, so every step is
visible: mini-batches from ``data.DataLoader``, the model called on a Tensor,
the loss, ``loss.backward()`` (autograd back through the net), ``optimizer.step``.

    Input (1, 8, 8)
    Conv2D 32 3x3 same + ReLU -> MaxPool2D 2 -> (32, 4, 4)
    Conv2D 64 3x3 same + ReLU -> MaxPool2D 2 -> (64, 2, 2)
    Flatten -> Dense 128 + ReLU -> Dense 10 (logits)

    python examples/lenet_digits.py

Expected result (measured, cpu backend, 15 epochs; a few seconds of CPU time):

    epoch  1: train loss 1.1855, test accuracy 0.900
    ...
    epoch 15: train loss 0.0004, test accuracy 0.986
    53,002 parameters; test accuracy 0.986
"""

import numpy as np

import nnkern
from nnkern import data, layers, losses, optimizers


def build(seed=0):
    return nnkern.Sequential(
        [
            layers.Input((1, 8, 8)),
            layers.Conv2D(32, 3, padding="same", activation="relu"),
            layers.MaxPool2D(2),
            layers.Conv2D(64, 3, padding="same", activation="relu"),
            layers.MaxPool2D(2),
            layers.Flatten(),
            layers.Dense(128, activation="relu"),
            layers.Dense(10),
        ],
        name="lenet",
        seed=seed,
    )


def accuracy(model, X, y):
    y_hat = model.predict(X, batch_size=256).argmax(axis=1)
    return float(np.mean(y_hat == y))


def main(num_epochs=15, batch_size=32, lr=3e-3, verbose=True):
    """Train with the explicit loop; returns the final test accuracy."""
    x, y = data.load_digits()
    X_train, X_test, y_train, y_test = data.train_test_split(x, y, 0.2, seed=0)
    norm = data.Normalizer().fit(
        X_train
    )  # statistics of the training set only
    X_train, X_test = norm.transform(X_train), norm.transform(X_test)

    model = build()
    loss_fn = losses.get("sparse_categorical_crossentropy")
    trainer = optimizers.Adam(model.parameters(), lr=lr)
    train_iter = data.DataLoader(
        X_train, y_train, batch_size=batch_size, seed=0
    )
    for epoch in range(1, num_epochs + 1):
        total, count = 0.0, 0
        model.train()
        for X, y_batch in train_iter:
            X = nnkern.tensor(X)  # on the current device
            y_batch = nnkern.to_device(y_batch)
            model.zero_grad()
            y_hat = model(X)  # logits (batch, 10), recorded on the tape
            loss = loss_fn(y_hat, y_batch)  # mean softmax cross-entropy
            loss.backward()  # d loss / d every weight, back through the net
            trainer.step()
            total += float(loss) * len(X)
            count += len(X)
        model.eval()
        test_acc = accuracy(model, X_test, y_test)
        if verbose:
            print(
                f"epoch {epoch:2d}: train loss {total / count:.4f}, "
                f"test accuracy {test_acc:.3f}"
            )
    if verbose:
        print(
            f"{model.count_params():,} parameters; test accuracy {test_acc:.3f}"
        )
    return test_acc


if __name__ == "__main__":
    main()
