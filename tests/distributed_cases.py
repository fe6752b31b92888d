"""The models and data of the data-parallel tests, shared by the ranks (distributed_worker.py,
run under mpiexec) and by the one-process references in test_distributed_mpi.py."""

import numpy as np

import nnkern
from nnkern import layers, optimizers

N, N_VAL, FEATURES, CLASSES = 48, 11, 6, 3
EPOCHS = 2

# name -> (optimizer, dropout, batch norm, dtype, global batch size)
CASES = {
    "sgd": ("sgd", False, False, "float64", 12),
    "adam": ("adam", False, False, "float64", 12),
    "sgd_dropout": ("sgd", True, False, "float64", 12),
    "adam_dropout": ("adam", True, False, "float64", 12),
    "adam_batchnorm": ("adam", False, True, "float64", 12),
    "sgd_float32": ("sgd", False, False, "float32", 12),
    # 7 does not split evenly over 2 ranks (3 + 4), and 48 = 6 * 7 + 6 leaves a last batch
    # of 6 (3 + 3): the gradient is then the size-weighted mean of the ranks' gradients
    "adam_uneven": ("adam", True, False, "float64", 7),
}


def data(dtype="float64", image=False):
    """(x, y, x_val, y_val): a learnable 3-class problem, the same on every rank."""
    rng = np.random.default_rng(0)
    shape = (2, 3, 3) if image else (FEATURES,)
    x = rng.standard_normal((N + N_VAL,) + shape).astype(dtype)
    w = rng.standard_normal((int(np.prod(shape)), CLASSES))
    y = (x.reshape(len(x), -1) @ w).argmax(axis=1).astype(np.int64)
    return x[:N], y[:N], x[N:], y[N:]


def build(case, seed=0):
    """A compiled model for ``case`` (see CASES)."""
    opt, dropout, batchnorm, dtype, _ = CASES[case]
    if batchnorm:
        stack = [layers.Input((2, 3, 3), dtype=dtype),
                 layers.Conv2D(4, 2, use_bias=False), layers.BatchNorm2D(), layers.ReLU(),
                 layers.Flatten(), layers.Dense(CLASSES)]
    else:
        stack = [layers.Input((FEATURES,), dtype=dtype), layers.Dense(16, activation="tanh")]
        stack += [layers.Dropout(0.3)] if dropout else []
        stack += [layers.Dense(CLASSES)]
    model = nnkern.Sequential(stack, seed=seed)
    optimizer = (optimizers.SGD(lr=0.1, momentum=0.9) if opt == "sgd"
                 else optimizers.Adam(lr=0.01))
    model.compile(optimizer, "sparse_categorical_crossentropy", ["accuracy"])
    return model


def case_data(case):
    _, _, batchnorm, dtype, _ = CASES[case]
    return data(dtype, image=batchnorm)
