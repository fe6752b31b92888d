"""The unit circle, inside (1) or outside (0)? A line fails; features fix it.

Points are uniform in the square [-1.5, 1.5]^2; about 35% fall inside the
unit circle. Logistic regression on (x0, x1) can only draw a line, so it
does no better than always answering "outside" (about 65%). Feed it the
squared features (x0^2, x1^2) instead and the circle x0^2 + x1^2 = 1 *is*
a line in the new coordinates: it succeeds. An MLP with one hidden layer
learns a good enough feature map by itself.

    python examples/unit_circle.py

Expected result (measured, 1000 training / 1000 test points):

    always "outside":                          test accuracy 0.637
    logistic regression on (x0, x1):           test accuracy 0.637
    logistic regression on (x0^2, x1^2):       test accuracy 0.988
    MLP 2-16-16-1 (relu) on (x0, x1):          test accuracy 0.968
"""

import numpy as np

import nnkern
from nnkern import data, layers


def train(X, y, hidden=(), num_epochs=60, lr=0.02, seed=0):
    stack = [layers.Input((X.shape[1],))]
    stack += [layers.Dense(h, activation="relu") for h in hidden]
    stack.append(layers.Dense(1))
    model = nnkern.Sequential(stack, seed=seed)
    model.compile(
        optimizer=nnkern.optimizers.Adam(lr=lr),
        loss="binary_crossentropy",
        metrics=["accuracy"],
    )
    model.fit(X, y, batch_size=32, epochs=num_epochs, verbose=0)
    return model


def main(num_epochs=60, verbose=True):
    """Returns {name: test accuracy}."""
    X, y = data.make_circle(1000, seed=0)
    X_test, y_test = data.make_circle(1000, seed=1)
    squared, squared_test = X**2, X_test**2
    results = {'always "outside"': float(np.mean(y_test == 0))}
    linear = train(X, y, num_epochs=num_epochs)
    results["logistic regression on (x0, x1)"] = linear.evaluate(
        X_test, y_test, return_dict=True
    )["accuracy"]
    feats = train(squared, y, num_epochs=num_epochs)
    results["logistic regression on (x0^2, x1^2)"] = feats.evaluate(
        squared_test, y_test, return_dict=True
    )["accuracy"]
    mlp = train(X, y, hidden=(16, 16), num_epochs=num_epochs)
    results["MLP 2-16-16-1 (relu) on (x0, x1)"] = mlp.evaluate(
        X_test, y_test, return_dict=True
    )["accuracy"]
    if verbose:
        for name, acc in results.items():
            print(f"{name + ':':42s} test accuracy {acc:.3f}")
    return results


if __name__ == "__main__":
    main()
