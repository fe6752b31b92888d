"""Losses: callables on (predictions, targets) that return a differentiable value.

Every built-in loss takes the network's raw outputs (logits), not probabilities:
the softmax or sigmoid is part of the loss, which is both faster and numerically
stable. The argument order is PyTorch's, predictions first. On Tensors a loss
returns a 0-d Tensor on the tape (``loss.backward()`` trains):

    >>> import numpy as np, nnkern
    >>> from nnkern import losses
    >>> loss_fn = losses.get("sparse_categorical_crossentropy")
    >>> with nnkern.device("numpy"):
    ...     logits = nnkern.tensor(np.zeros((2, 3)), requires_grad=True)
    ...     value = loss_fn(logits, np.array([0, 2]))
    ...     value.backward()
    >>> round(float(value), 4), logits.grad.shape
    (1.0986, (2, 3))

On plain arrays it returns the value as an array and ``loss_fn.backward()`` gives
d loss / d predictions (the array API of a hand-written loop).

``compile(loss=fn)`` also takes a plain Python function of ``(y_true, y_pred)``
Tensors (Keras's order) composed of nnkern ops, e.g. a contrastive loss:

    >>> def contrastive(y_true, distance, margin=1.0):
    ...     return (y_true * distance ** 2
    ...             + (1 - y_true) * (margin - distance).clip(min=0) ** 2).mean()

Each loss checks its own targets (``check_targets``) and the model's last layer
(``check_head``), so a model needs no knowledge of particular loss classes.
"""

import numpy as np

import nnkern.functional as F
from nnkern.autograd import Tensor, enable_grad
from nnkern.device import array_module, is_gpu_array, to_numpy


def _ones_like_scalar(ref, shape=()):
    xp = array_module("cuda") if is_gpu_array(ref) else np
    return xp.ones(shape, dtype=ref.dtype)


def _is_tensor(value):
    if isinstance(value, (list, tuple)):
        return any(isinstance(v, Tensor) for v in value)
    return isinstance(value, Tensor)


class Loss:
    """Base class: ``value = loss(y_pred, y_true)``; subclasses implement ``forward`` on
    Tensors with ``nnkern.functional`` ops.

    ``reduction`` is ``"mean"`` (default), ``"sum"`` or ``"none"`` (per-sample).
    ``prediction_threshold`` is where a one-column output splits the two classes for the
    metrics (0 for logits).
    """

    name = None
    prediction_threshold = 0.0

    def __init__(self, reduction="mean"):
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
        self.reduction = reduction
        self._saved = None

    def forward(self, y_pred, y_true):
        """The loss of Tensor predictions against targets, as a Tensor on the tape."""
        raise NotImplementedError

    def __call__(self, y_pred, y_true):
        if _is_tensor(y_pred):
            return self.forward(y_pred, y_true)
        # the array API: the value now, d loss / d y_pred from backward()
        pred = Tensor(y_pred, requires_grad=True)
        with enable_grad():
            value = self.forward(pred, y_true)
        self._saved = (pred, value)
        return value.data

    def value(self, y_pred, y_true):
        """The loss alone, for evaluation: nothing is kept for ``backward()`` (and a
        fused loss computes no gradient)."""
        if _is_tensor(y_pred):
            y_pred = y_pred.data
        return self._value(y_pred, y_true)

    def _value(self, y_pred, y_true):
        return self.forward(Tensor(y_pred), y_true).data

    def backward(self, grad=None):
        """Gradient of the loss with respect to ``y_pred`` of the last call on arrays;
        ``grad`` is the upstream gradient of the loss value (default 1)."""
        if self._saved is None:
            raise RuntimeError(f"{type(self).__name__}.backward() called before the loss")
        pred, value = self._saved
        if grad is None:
            grad = _ones_like_scalar(pred.data, tuple(value.shape))
        pred.grad = None
        value.backward(grad, retain_graph=True)
        return pred.grad

    # --- checks the training loop asks the loss for ------------------------------------------

    def check_targets(self, y, n, output_shape, dtype, what="y", x_what="x"):
        """Validate the targets of ``n`` samples (of the inputs named ``x_what``) for a model
        output of per-sample ``output_shape``; return them as the array the loss takes."""
        y = _host_targets(y, n, what, x_what)
        if y.dtype.kind not in "fiub":
            raise TypeError(f"{what} must be numeric, got dtype {y.dtype}")
        if int(np.prod(y.shape[1:])) != int(np.prod(output_shape)):
            raise ValueError(
                f"{what} must have shape (N, {', '.join(map(str, output_shape))}) to match the "
                f"model's output, got {y.shape}"
            )
        y = np.ascontiguousarray(y.reshape((n,) + tuple(output_shape)), dtype=dtype)
        if not np.isfinite(y).all():
            raise ValueError(f"{what} contains NaN or infinite values")
        return y

    def check_head(self, model):
        """Refuse a model whose last layer already applies what this loss applies."""

    def get_config(self):
        return {"class": type(self).__name__, "reduction": self.reduction}


class SparseCategoricalCrossentropy(Loss):
    """Softmax cross-entropy of logits (N, C) against integer class labels (N,).

    ``label_smoothing`` mixes the one-hot target with the uniform distribution. On the
    tape, the loss and its gradient come from one fused kernel pass.
    """

    name = "sparse_categorical_crossentropy"

    def __init__(self, reduction="mean", label_smoothing=0.0):
        super().__init__(reduction)
        self.label_smoothing = float(label_smoothing)

    def forward(self, y_pred, y_true):
        return F.softmax_cross_entropy(y_pred, y_true, self.reduction, self.label_smoothing)

    def _value(self, y_pred, y_true):
        return F.softmax_cross_entropy(y_pred, y_true, self.reduction, self.label_smoothing)

    def check_targets(self, y, n, output_shape, dtype, what="y", x_what="x"):
        y = _host_targets(y, n, what, x_what)
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.ndim == 2 and y.shape[1] == output_shape[0]:
            raise ValueError(
                f"{what} looks one-hot with shape {y.shape}; this loss takes class indices "
                f"of shape ({n},): pass {what}.argmax(axis=1)"
            )
        if y.ndim != 1:
            raise ValueError(f"{what} must be class indices of shape ({n},), got {y.shape}")
        if y.dtype.kind == "f":
            if not np.isfinite(y).all() or (y != np.rint(y)).any():
                raise ValueError(f"{what} must hold integer class indices, got non-integer "
                                 f"or NaN floats")
        elif y.dtype.kind not in "iub":
            raise TypeError(f"{what} must be integer class indices, got dtype {y.dtype}")
        y = y.astype(np.int64)
        classes = output_shape[0]
        if n and (y.min() < 0 or y.max() >= classes):
            raise ValueError(
                f"{what} labels must lie in [0, {classes}) for the model's {classes} "
                f"outputs, got values in [{y.min()}, {y.max()}]"
            )
        return y

    def check_head(self, model):
        _refuse_head(self, model, "softmax")

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


class BinaryCrossentropy(Loss):
    """Binary cross-entropy of logits against float targets in [0, 1] of the same shape
    (the sigmoid is inside the loss)."""

    name = "binary_crossentropy"

    def forward(self, y_pred, y_true):
        return F.binary_cross_entropy_with_logits(y_pred, y_true, self.reduction)

    def check_targets(self, y, n, output_shape, dtype, what="y", x_what="x"):
        y = super().check_targets(y, n, output_shape, dtype, what, x_what)
        if n and (y.min() < 0 or y.max() > 1):
            raise ValueError(
                f"{what} must lie in [0, 1] for binary cross-entropy, got values in "
                f"[{y.min()}, {y.max()}]"
            )
        return y

    def check_head(self, model):
        _refuse_head(self, model, "sigmoid")


class MeanSquaredError(Loss):
    """Mean of (y_pred - y_true)**2 over all elements."""

    name = "mse"
    prediction_threshold = 0.5

    def forward(self, y_pred, y_true):
        return F.mse_loss(y_pred, y_true, self.reduction)


class FunctionLoss(Loss):
    """A loss given as a plain function ``fn(y_true, y_pred) -> Tensor`` (Keras's argument
    order) composed of nnkern ops; a per-sample result is averaged (or summed, per
    ``reduction``). Float targets are cast to the predictions' dtype."""

    def __init__(self, fn, reduction="mean"):
        super().__init__(reduction)
        self.fn = fn
        self.name = getattr(fn, "__name__", "loss")

    def forward(self, y_pred, y_true):
        dtype = (y_pred[0] if isinstance(y_pred, (list, tuple)) else y_pred).dtype
        target = y_true
        if hasattr(target, "dtype") and target.dtype.kind in "fiub" and target.dtype != dtype:
            target = target.astype(dtype)
        if not isinstance(target, (Tensor, list, tuple)):
            target = Tensor(target)
        value = self.fn(target, y_pred)
        if not isinstance(value, Tensor):
            raise TypeError(
                f"the loss function {self.name!r} returned a {type(value).__name__}; it must "
                f"return an nnkern.Tensor built from nnkern ops on its arguments (Tensors), so "
                f"it can be differentiated"
            )
        if value.ndim and self.reduction != "none":
            value = value.mean() if self.reduction == "mean" else value.sum()
        return value

    def check_targets(self, y, n, output_shape, dtype, what="y", x_what="x"):
        if isinstance(y, (list, tuple)):
            return [np.asarray(to_numpy(v)) for v in y]
        y = _host_targets(y, n, what, x_what)
        if y.dtype.kind not in "fiub":
            raise TypeError(f"{what} must be numeric, got dtype {y.dtype}")
        return np.ascontiguousarray(y)

    def get_config(self):
        # files never store code: only the name, to find the function again at load time
        return {"class": "FunctionLoss", "function": self.name, "reduction": self.reduction}


def _host_targets(y, n, what, x_what):
    """``y`` as a host array of ``n`` targets (one per sample of ``x_what``)."""
    y = np.asarray(to_numpy(y))
    if len(y) != n:
        raise ValueError(
            f"{x_what} and {what} have different lengths: {n} samples in {x_what} but "
            f"{len(y)} in {what}"
        )
    return y


def _refuse_head(loss, model, bad):
    last = model.output_layer
    if getattr(last, "activation", None) == bad:
        raise ValueError(
            f"the last layer {last.name} applies a {bad}, but the loss {loss.name!r} takes "
            f"logits and applies the {bad} itself; remove the final {bad} (for probabilities, "
            f"apply it to predict()'s output)"
        )


SoftmaxCrossEntropy = SparseCategoricalCrossentropy

_ALIASES = {
    "sparse_categorical_crossentropy": SparseCategoricalCrossentropy,
    "softmax_cross_entropy": SparseCategoricalCrossentropy,
    "cross_entropy": SparseCategoricalCrossentropy,
    "binary_crossentropy": BinaryCrossentropy,
    "binary_cross_entropy": BinaryCrossentropy,
    "mse": MeanSquaredError,
    "mean_squared_error": MeanSquaredError,
}
_CLASSES = {c.__name__: c for c in (SparseCategoricalCrossentropy, BinaryCrossentropy,
                                    MeanSquaredError)}


def get(identifier, custom_objects=None):
    """A Loss from a name (``"sparse_categorical_crossentropy"``, ``"softmax_cross_entropy"``,
    ``"binary_crossentropy"``, ``"mse"``), a Loss instance, a saved config dict, or a plain
    function of ``(y_true, y_pred)`` Tensors. A saved loss function is looked up by name in
    ``custom_objects``."""
    if isinstance(identifier, Loss):
        return identifier
    if isinstance(identifier, dict):
        config = dict(identifier)
        cls = config.pop("class")
        if cls == "FunctionLoss":
            name = config.pop("function")
            fn = (custom_objects or {}).get(name)
            if fn is None:
                raise ValueError(
                    f"the model was compiled with the loss function {name!r}, which files do "
                    f"not store (never code); pass custom_objects={{{name!r}: {name}}} or load "
                    f"with compile=False and compile again"
                )
            return FunctionLoss(fn, **config)
        if cls not in _CLASSES:
            raise ValueError(f"unknown loss class {cls!r} in a saved file; known: "
                             f"{sorted(_CLASSES)}")
        return _CLASSES[cls](**config)
    if isinstance(identifier, str) and identifier.lower() in _ALIASES:
        return _ALIASES[identifier.lower()]()
    if callable(identifier) and not isinstance(identifier, type):
        return FunctionLoss(identifier)
    raise ValueError(
        f"loss must be a Loss, a function of (y_true, y_pred) Tensors, or one of "
        f"{sorted(_ALIASES)}, got {identifier!r}"
    )
