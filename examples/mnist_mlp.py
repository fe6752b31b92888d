"""The course's Keras MNIST MLP: 784-128-64-10 with ReLU, Adam, 5 epochs.

    python examples/mnist_mlp.py                 # no download: the bundled digits
    python examples/mnist_mlp.py ~/data/mnist    # the four MNIST IDX files (gz or not)

With a folder, it reads train-images-idx3-ubyte, train-labels-idx1-ubyte,
t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte (``nnkern.data.load_mnist``;
nothing is downloaded). Without one it uses the bundled 8x8 digits upsampled
to 28x28 (nearest neighbour), so the network is exactly the course's: the
summary shows 109,386 parameters either way.

Expected result on the bundled digits (measured, cpu backend):

    Model: "mnist_mlp"
    ________________________________________________________________
     Layer (type)                 Output Shape              Param #
    ================================================================
     dense (Dense)                (None, 128)               100,480
    ________________________________________________________________
     dense_1 (Dense)              (None, 64)                  8,256
    ________________________________________________________________
     dense_2 (Dense)              (None, 10)                    650
    ================================================================
     Total params: 109,386 (427.29 KB)
     Trainable params: 109,386 (427.29 KB)
     Non-trainable params: 0 (0.00 B)
    ________________________________________________________________
    digits upsampled to 28x28: 1438 train / 359 test images
    test accuracy after 5 epochs: 0.958
"""

import sys

import numpy as np

import nnkern
from nnkern import data, layers


def upsample(x, size=28):
    """Nearest-neighbour resize of (N, C, H, W) images to (N, C, size, size)."""
    H, W = x.shape[2:]
    rows = np.arange(size) * H // size
    cols = np.arange(size) * W // size
    return x[:, :, rows[:, None], cols[None, :]]


def load(folder=None):
    """(x_train, y_train, x_test, y_test, description) with x flattened to 784 features."""
    if folder:
        (x_train, y_train), (x_test, y_test) = data.load_mnist(folder)
        what = f"MNIST from {folder}"
    else:
        x, y = data.load_digits()
        x_train, x_test, y_train, y_test = data.train_test_split(
            upsample(x), y, 0.2, seed=0
        )
        what = "digits upsampled to 28x28"
    # 784 features per image, as Keras' Flatten of a 28x28 image
    return (
        x_train.reshape(len(x_train), -1),
        y_train,
        x_test.reshape(len(x_test), -1),
        y_test,
        what,
    )


def build():
    model = nnkern.Sequential(
        [
            layers.Input((784,)),
            layers.Dense(128, activation="relu"),
            layers.Dense(64, activation="relu"),
            layers.Dense(10),
        ],
        name="mnist_mlp",
    )
    model.compile(
        optimizer="adam",
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def main(folder=None, num_epochs=5, verbose=True):
    """Train and evaluate; returns (model, test accuracy)."""
    x_train, y_train, x_test, y_test, what = load(folder)
    model = build()
    if verbose:
        model.summary()
        print(f"{what}: {len(x_train)} train / {len(x_test)} test images")
    model.fit(
        x_train,
        y_train,
        batch_size=32,
        epochs=num_epochs,
        verbose=1 if verbose else 0,
    )
    _, acc = model.evaluate(x_test, y_test)  # [loss, accuracy], as Keras
    if verbose:
        print(f"test accuracy after {num_epochs} epochs: {acc:.3f}")
    return model, acc


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
