"""Optimizers: SGD (momentum, Nesterov, weight decay) and Adam, with PyTorch semantics.

A model keeps all trainable parameters of one dtype as views into ONE flat
buffer (gradients likewise), so ``step()`` is a single ``F.sgd_step`` /
``F.adam_step`` call over the whole network, whatever its number of layers.

    >>> import nnkern
    >>> from nnkern import layers, optimizers
    >>> model = nnkern.Sequential([layers.Input((4,)), layers.Dense(2)])
    >>> opt = optimizers.Adam(model.parameters(), lr=1e-3)
    >>> # ... model.forward / loss / model.backward ...
    >>> opt.step(); opt.zero_grad()

``lr`` is a plain attribute; callbacks such as ReduceLROnPlateau change it.
"""

import numpy as np

import nnkern.functional as F
from nnkern.device import array_module, is_gpu_array, to_device, to_numpy


def _like(a, ref):
    """``a`` on the device of ``ref`` (GPU or host memory)."""
    return to_device(a, "cuda") if is_gpu_array(ref) else to_numpy(a)


class ArrayParameters:
    """Parameters given as plain lists of arrays (and their gradients) instead of a model's
    flat buffers; each array is updated by the same single optimizer call."""

    version = 0

    def __init__(self, params, grads):
        params = [params] if hasattr(params, "shape") else list(params)
        if grads is None:
            raise ValueError(
                "an optimizer given plain arrays needs their gradients too: "
                "optimizers.SGD(params, grads=grads, lr=...); or pass model.parameters()"
            )
        grads = [grads] if hasattr(grads, "shape") else list(grads)
        if len(params) != len(grads):
            raise ValueError(f"got {len(params)} parameter arrays but {len(grads)} gradients")
        self._params, self._grads = params, grads

    def arrays(self):
        return self._params

    def grad_arrays(self):
        return self._grads

    def zero_grad(self):
        for g in self._grads:
            g.fill(0)


class Optimizer:
    """Base class. ``params``: ``model.parameters()`` (or a list of arrays with ``grads=``);
    when omitted, ``model.compile`` binds the model's parameters."""

    def __init__(self, params=None, lr=0.01, grads=None, weight_decay=0.0, learning_rate=None):
        self.lr = float(lr if learning_rate is None else learning_rate)
        if self.lr < 0:
            raise ValueError(f"lr must be >= 0, got {self.lr}")
        self.weight_decay = float(weight_decay)
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        self.iterations = 0
        self.params = None
        self._state = None
        if params is not None:
            self.bind(params, grads)

    def bind(self, params, grads=None):
        """Attach the parameters to update; resets the optimizer state."""
        self.params = params if hasattr(params, "grad_arrays") else ArrayParameters(params, grads)
        self._version = self.params.version
        self._state = None

    def step(self):
        """Update every parameter in place from its gradient: one kernel launch per dtype
        group (normally one)."""
        if self.params is None:
            raise RuntimeError(
                f"{type(self).__name__} has no parameters: pass model.parameters() or compile "
                f"a model with it"
            )
        if self.params.version != self._version:
            # the model re-packed its buffers (a layer was frozen or unfrozen): start afresh
            self._version, self._state = self.params.version, None
        params, grads = self.params.arrays(), self.params.grad_arrays()
        if not params:
            return
        state = self._state
        if state is None:
            self._state = self._new_state(params)
        elif (type(params[0]) is not type(state["slots"][0][0])
              and is_gpu_array(params[0]) != is_gpu_array(state["slots"][0][0])):
            # the model moved (model.to): the state follows the parameters, not the global
            # device, so a hand-written loop outside the model's device context works too
            self._state["slots"] = [[_like(a, params[0]) for a in slot]
                                    for slot in self._state["slots"]]
        self._update(params, grads, self._state)
        self.iterations += 1  # counted after the update, so a refused step changes nothing
        mark = getattr(self.params, "mark_updated", None)
        if mark is not None:  # a backward through a graph recorded before now is refused
            mark()

    def zero_grad(self):
        """Set every gradient to zero (gradients accumulate across backward calls)."""
        self.params.zero_grad()

    def _new_state(self, params):
        xp = array_module("cuda") if is_gpu_array(params[0]) else np
        slots = [[xp.zeros_like(p) for p in params] for _ in range(self.n_slots)]
        return {"t": 0, "slots": slots}

    def state_dict(self):
        """Host copies of the optimizer state (for checkpoints)."""
        state = {"iterations": self.iterations, "lr": self.lr, "t": 0, "slots": []}
        if self._state is not None:
            state["t"] = self._state["t"]
            state["slots"] = [[to_numpy(a).copy() for a in slot] for slot in self._state["slots"]]
        return state

    def load_state_dict(self, state):
        """Restore ``state_dict()`` output onto the device of the bound parameters."""
        self.iterations = int(state["iterations"])
        self.lr = float(state["lr"])
        if not state["slots"]:
            self._state = None
            return
        params = self.params.arrays() if self.params is not None else []
        shapes = [tuple(p.shape) for p in params]
        got = [tuple(a.shape) for a in state["slots"][0]]
        if shapes != got:
            raise ValueError(
                f"optimizer state does not fit the parameters: state shapes {got}, parameter "
                f"buffers {shapes}"
            )
        self._state = {"t": int(state["t"]),
                       "slots": [[_like(np.array(a), params[0]) for a in slot]
                                 for slot in state["slots"]]}
        self._version = self.params.version

    def get_config(self):
        return {"class": type(self).__name__, "lr": self.lr, "weight_decay": self.weight_decay}


class SGD(Optimizer):
    """Stochastic gradient descent, as ``torch.optim.SGD`` (dampening 0):
    g = grad + weight_decay * p; v = momentum * v + g; p -= lr * (g + momentum * v if
    nesterov else v).

        >>> opt = SGD(lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
        >>> # model.compile(optimizer=opt, loss="sparse_categorical_crossentropy")
    """

    n_slots = 1

    def __init__(self, params=None, lr=0.01, momentum=0.0, nesterov=False, weight_decay=0.0,
                 grads=None, learning_rate=None):
        if nesterov and momentum <= 0:
            raise ValueError(f"nesterov=True needs momentum > 0, got momentum={momentum}")
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)
        super().__init__(params, lr, grads, weight_decay, learning_rate)

    def _update(self, params, grads, state):
        F.sgd_step(params, grads, state["slots"][0], self.lr, momentum=self.momentum,
                   weight_decay=self.weight_decay, nesterov=self.nesterov)

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum, "nesterov": self.nesterov}


class Adam(Optimizer):
    """Adam (Kingma & Ba), as ``torch.optim.Adam`` (L2 ``weight_decay`` added to the
    gradient, not AdamW's decoupled decay); bias-corrected first and second moments.

        >>> opt = Adam(lr=1e-3, beta1=0.9, beta2=0.999)
        >>> # model.compile(optimizer=opt, loss="sparse_categorical_crossentropy")
    """

    n_slots = 2

    def __init__(self, params=None, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0,
                 grads=None, learning_rate=None):
        self.beta1, self.beta2, self.eps = float(beta1), float(beta2), float(eps)
        super().__init__(params, lr, grads, weight_decay, learning_rate)

    def _update(self, params, grads, state):
        t = state["t"] + 1  # torch's 1-based step count
        m, v = state["slots"]
        if len(params) == 1:  # a model's one flat buffer: F's fast path for one array
            params, grads, m, v = params[0], grads[0], m[0], v[0]
        F.adam_step(params, grads, m, v, t, self.lr, self.beta1, self.beta2, self.eps,
                    self.weight_decay)
        state["t"] = t

    def get_config(self):
        return {**super().get_config(), "beta1": self.beta1, "beta2": self.beta2, "eps": self.eps}


_CLASSES = {"SGD": SGD, "Adam": Adam}


def get(identifier):
    """An Optimizer from ``"sgd"``, ``"adam"``, an instance, or a saved config dict."""
    if isinstance(identifier, Optimizer):
        return identifier
    if isinstance(identifier, dict):
        config = dict(identifier)
        return _CLASSES[config.pop("class")](**config)
    if isinstance(identifier, str) and identifier.lower() in ("sgd", "adam"):
        return {"sgd": SGD, "adam": Adam}[identifier.lower()]()
    raise ValueError(f"optimizer must be 'sgd', 'adam' or an Optimizer, got {identifier!r}")
