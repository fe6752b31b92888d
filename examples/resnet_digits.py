"""A small residual network on the digits: a functional ``Model`` with ``Add``.

A residual block computes ``relu(x + F(x))`` with ``F`` = conv-BN-relu-conv-BN:
the ``Add`` gives the gradient a path around ``F``, which is what lets very
deep networks train (He et al. 2016). The graph has fan-out (``x`` feeds
both ``F`` and the ``Add``), and ``model.backward`` sums the two gradients.

    stem:   Conv2D 16 3x3 same + BatchNorm2D + ReLU       (16, 8, 8)
    block:  x -> Conv-BN-ReLU-Conv-BN -> Add(x) -> ReLU    (16, 8, 8)
    MaxPool2D 2                                            (16, 4, 4)
    block                                                  (16, 4, 4)
    MaxPool2D 2 -> Flatten -> Dense 10                     (10,)

    python examples/resnet_digits.py

Expected result (measured, cpu backend, 10 epochs): the summary table with
its "Connected to" column, then

    residual network: 10,330 parameters (10,170 trainable), test accuracy 0.978
"""

import nnkern
from nnkern import data, layers


def residual_block(x, channels):
    h = layers.Conv2D(channels, 3, padding="same", use_bias=False)(x)
    h = layers.BatchNorm2D()(h)
    h = layers.ReLU()(h)
    h = layers.Conv2D(channels, 3, padding="same", use_bias=False)(h)
    h = layers.BatchNorm2D()(h)
    return layers.ReLU()(layers.Add()([h, x]))  # the skip connection


def build(seed=0):
    inp = layers.Input((1, 8, 8))
    h = layers.Conv2D(16, 3, padding="same", use_bias=False)(inp)
    h = layers.ReLU()(layers.BatchNorm2D()(h))
    h = residual_block(h, 16)
    h = layers.MaxPool2D(2)(h)
    h = residual_block(h, 16)
    h = layers.MaxPool2D(2)(h)
    out = layers.Dense(10)(layers.Flatten()(h))
    model = nnkern.Model(inp, out, name="resnet_digits", seed=seed)
    model.compile(
        optimizer=nnkern.optimizers.Adam(lr=3e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def main(num_epochs=10, verbose=True):
    """Train and evaluate; returns the test accuracy."""
    x, y = data.load_digits()
    X_train, X_test, y_train, y_test = data.train_test_split(x, y, 0.2, seed=0)
    model = build()
    if verbose:
        model.summary()
    model.fit(X_train, y_train, batch_size=32, epochs=num_epochs, verbose=0)
    _, acc = model.evaluate(X_test, y_test)
    if verbose:
        total = model.count_params()
        trainable = sum(layer.count_params()[0] for layer in model.layers)
        print(
            f"residual network: {total:,} parameters ({trainable:,} trainable), "
            f"test accuracy {acc:.3f}"
        )
    return acc


if __name__ == "__main__":
    main()
