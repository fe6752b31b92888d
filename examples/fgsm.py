"""Fast gradient sign method (Goodfellow et al. 2015): adversarial digits.

``model.backward`` returns d loss / d input, the gradient of the loss with
respect to the *pixels*. Moving every pixel by ``eps`` in the direction of
that gradient's sign,

    x_adv = clip(x + eps * sign(d loss / d x), 0, 1),

raises the loss as fast as possible for a given largest pixel change, and
the prediction flips although the image barely changes. We train the
LeNet-style CNN on the digits (pixels in [0, 1]) and attack the test set.

    python examples/fgsm.py

Expected result (measured, cpu backend; float32 rounding differences between
kernel versions move the third decimal by a few units):

    eps 0.00: test accuracy 0.958
    eps 0.05: test accuracy 0.847
    eps 0.10: test accuracy 0.568
    eps 0.20: test accuracy 0.084
    test image 2: a 7, classified 7 (p=1.00); moving each pixel by at most 0.1 it is
    classified 9 (p=0.48)
"""

import numpy as np

import nnkern
from nnkern import data, layers, losses


def build(seed=0):
    model = nnkern.Sequential(
        [
            layers.Input((1, 8, 8)),
            layers.Conv2D(16, 3, padding="same", activation="relu"),
            layers.MaxPool2D(2),
            layers.Conv2D(32, 3, padding="same", activation="relu"),
            layers.MaxPool2D(2),
            layers.Flatten(),
            layers.Dense(64, activation="relu"),
            layers.Dense(10),
        ],
        seed=seed,
    )
    model.compile(
        optimizer=nnkern.optimizers.Adam(lr=3e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def input_gradient(model, X, y):
    """d loss / d X for a batch: the input is a Tensor that requires grad, the model runs
    in evaluation mode on the tape, and the loss's backward reaches the input."""
    loss_fn = losses.get("sparse_categorical_crossentropy")
    X_t = nnkern.tensor(X, requires_grad=True)
    loss = loss_fn(model(X_t, training=False), nnkern.to_device(y))
    loss.backward()
    model.zero_grad()  # the weights' gradients are not wanted
    return nnkern.to_numpy(X_t.grad)  # (N, 1, 8, 8), the shape of X


def fgsm(model, X, y, eps):
    """The adversarial images for true labels y."""
    return np.clip(
        X + eps * np.sign(input_gradient(model, X, y)), 0.0, 1.0
    ).astype(X.dtype)


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def main(num_epochs=10, epsilons=(0.0, 0.05, 0.1, 0.2), verbose=True):
    """Returns {eps: test accuracy on the adversarial images}."""
    x, y = data.load_digits()
    X_train, X_test, y_train, y_test = data.train_test_split(x, y, 0.2, seed=0)
    model = build()
    model.fit(X_train, y_train, batch_size=32, epochs=num_epochs, verbose=0)
    results = {}
    for eps in epsilons:
        X_adv = fgsm(model, X_test, y_test, eps) if eps else X_test
        results[eps] = float(
            np.mean(model.predict(X_adv).argmax(axis=1) == y_test)
        )
        if verbose:
            print(f"eps {eps:.2f}: test accuracy {results[eps]:.3f}")
    if verbose:
        eps = 0.1
        X_adv = fgsm(model, X_test, y_test, eps)
        p_clean, p_adv = (
            softmax(model.predict(X_test)),
            softmax(model.predict(X_adv)),
        )
        flipped = np.flatnonzero(
            (p_clean.argmax(1) == y_test) & (p_adv.argmax(1) != y_test)
        )
        i = flipped[0]
        print(
            f"test image {i}: a {y_test[i]}, classified {p_clean[i].argmax()} "
            f"(p={p_clean[i].max():.2f}); moving each pixel by at most {eps} it is "
            f"classified {p_adv[i].argmax()} (p={p_adv[i].max():.2f})"
        )
    return results


if __name__ == "__main__":
    main()
