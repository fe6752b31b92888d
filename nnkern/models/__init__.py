"""Models: ``Sequential`` and the functional ``Model(inputs, outputs)``, with the Keras
workflow (compile / fit / evaluate / predict / summary / save) and autograd underneath.

    >>> import numpy as np, nnkern
    >>> from nnkern import layers
    >>> model = nnkern.Sequential([layers.Input((1, 8, 8)),
    ...                            layers.Conv2D(6, 3, padding="same", activation="relu"),
    ...                            layers.MaxPool2D(2), layers.Flatten(), layers.Dense(10)])
    >>> model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
    ...               metrics=["accuracy"])
    >>> model.output_shape
    (None, 10)

Functional graphs allow fan-out, residual ``Add``, shared layers (one layer called on
several inputs), several inputs and outputs, and models used as layers:

    >>> inp = layers.Input((4, 8, 8))
    >>> h = layers.Conv2D(4, 3, padding="same", activation="relu")(inp)
    >>> residual = nnkern.Model(inp, layers.Add()([h, inp]))

One module per job:

    graph.py        Model: the graph of layer calls, running it, parameters, devices,
                    the array API (forward / backward)
    sequential.py   Sequential: a chain of layers
    training.py     compile / fit / evaluate / predict
    parameters.py   the flat parameter and gradient buffers (one per dtype)
    summary.py      summary()
    saving.py       save / load_weights / checkpoints / load_model (JSON + arrays, atomic)

Models run on the global device (``nnkern.set_device``) unless pinned with
``model.to(device)``.
"""

from .graph import Model
from .parameters import Parameters
from .saving import FORMAT, load_checkpoint, load_model, model_from_config
from .sequential import Sequential

__all__ = ["FORMAT", "Model", "Parameters", "Sequential", "load_checkpoint", "load_model",
           "model_from_config"]
