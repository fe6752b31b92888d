"""Layers of nnkern: each owns its weights and calls ``nnkern.functional`` for the math.

    >>> from nnkern import layers
    >>> block = [layers.Conv2D(8, 3, padding="same", activation="relu"), layers.MaxPool2D(2)]

Images are NCHW: ``(batch, channels, height, width)``; a model whose input images look
channels-last says so. Keras's names ``MaxPooling2D``, ``AveragePooling2D`` are the same
classes as ``MaxPool2D``, ``AvgPool2D``. See ``nnkern.layers.base`` for the protocol
(``build``, ``call`` on Tensors, ``compute_output_shape``, ``variables``, ``params``,
``grads``, ``trainable``).
"""

from .base import Input, Layer, SymbolicTensor
from .conv import (
    AveragePooling2D,
    AvgPool2D,
    BlurPool2D,
    Conv2D,
    GlobalAveragePooling2D,
    MaxBlurPool2D,
    MaxPool2D,
    MaxPooling2D,
)
from .core import Activation, Add, Dense, Dropout, Flatten, Lambda, ReLU, Sigmoid, Softmax, Tanh
from .lrn import LocalResponseNorm
from .norm import BatchNorm1D, BatchNorm2D

__all__ = [
    "Activation",
    "Add",
    "AveragePooling2D",
    "AvgPool2D",
    "BatchNorm1D",
    "BatchNorm2D",
    "BlurPool2D",
    "Conv2D",
    "Dense",
    "Dropout",
    "Flatten",
    "GlobalAveragePooling2D",
    "Input",
    "Lambda",
    "Layer",
    "LocalResponseNorm",
    "MaxBlurPool2D",
    "MaxPool2D",
    "MaxPooling2D",
    "ReLU",
    "Sigmoid",
    "Softmax",
    "SymbolicTensor",
    "Tanh",
]
