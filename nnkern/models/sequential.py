"""``Sequential``: a plain stack of layers, each feeding the next."""

import numpy as np

from ..layers import base as layers_base
from ..layers.base import Input, unique_name
from .graph import Model


class Sequential(Model):
    """A plain stack of layers, each feeding the next.

    Start with ``layers.Input(shape)`` (or give the first layer ``input_shape=``) to build
    at once; otherwise the model is built from the first data it sees (or
    ``model.build(input_shape)``).

    >>> from nnkern import layers
    >>> mlp = Sequential([layers.Input((784,)), layers.Dense(128, activation="relu"),
    ...                   layers.Dense(64, activation="relu"), layers.Dense(10)])
    >>> mlp.count_params()
    109386
    """

    def __init__(self, layers=None, name=None, seed=0):
        super().__init__(name=name or unique_name("sequential"), seed=seed)
        self._stack = []
        for layer in layers or []:
            self._append(layer)
        first = self._stack[0] if self._stack else None
        if first is not None and not isinstance(first, Input) and first.declared_input_shape:
            self._stack.insert(0, Input(first.declared_input_shape, dtype=first.dtype or "float32"))
        if len(self._stack) > 1 and isinstance(self._stack[0], Input):
            self._chain()

    def add(self, layer):
        """Append a layer (an ``Input`` only in the first position)."""
        self._append(layer)
        if len(self._stack) > 1 and isinstance(self._stack[0], Input):
            self._chain()

    def _append(self, layer):
        if not isinstance(layer, layers_base.Layer):
            raise TypeError(f"Sequential takes layers, got {type(layer).__name__}")
        if isinstance(layer, Input) and self._stack:
            raise ValueError("an Input layer can only be the first layer of a Sequential")
        self._stack.append(layer)

    def _chain(self):
        # one call per layer, each on the previous output: the graph of a functional model
        # (a re-chain after add() replaces this model's earlier calls of its layers)
        old = {id(node) for node in self._nodes}
        for layer in self._stack[1:]:
            layer.call_nodes = [n for n in layer.call_nodes if id(n) not in old]
        tensor = self._stack[0].output
        for layer in self._stack[1:]:
            tensor = layer(tensor)
        self._init_graph(self._stack[0], tensor)

    @property
    def layers(self):
        """The layers (without the Input, as in Keras)."""
        return [layer for layer in self._stack if not isinstance(layer, Input)]

    def build(self, input_shape, dtype="float32"):
        """Build for a per-sample ``input_shape`` (a leading ``None`` batch axis is allowed)."""
        input_shape = tuple(input_shape)
        if input_shape and input_shape[0] is None:
            input_shape = input_shape[1:]
        if self._stack and isinstance(self._stack[0], Input):
            if tuple(self._stack[0].shape) != input_shape:
                raise ValueError(f"the model's Input has shape {self._stack[0].shape}, "
                                 f"build got {input_shape}")
        else:
            self._stack.insert(0, Input(input_shape, dtype=dtype))
        self._chain()

    def _ensure_built(self, x=None):
        if self.built:
            return
        if x is None or not self._stack or len(getattr(x, "shape", ())) < 2:
            self._require_built()
        shape = tuple(x.shape[1:])
        dtype = next((layer.dtype for layer in self._stack if layer.dtype is not None),
                     np.dtype(np.float32))
        self.build(shape, dtype=dtype)

    def _build(self, input_shape, dtype, seed):
        """As a layer of another model: build from the input shape of its first call."""
        if not self.built:
            self.build(input_shape, dtype)

    def compute_output_shape(self, input_shape):
        if not self.built:
            self.build(input_shape)
        return super().compute_output_shape(input_shape)


layers_base.register(Sequential)
