"""``nnkern.Tensor``: a device array (NumPy or CuPy) that can remember how it was made.

    >>> import nnkern
    >>> w = nnkern.tensor([1.0, -2.0, 3.0], requires_grad=True)
    >>> loss = (w * w).sum()
    >>> loss.backward()
    >>> w.grad
    array([ 2., -4.,  6.], dtype=float32)

Semantics follow PyTorch's autograd: ``.grad`` accumulates over backward
calls and only leaves (Tensors made by the user, and layer weights) keep one;
``detach()`` shares memory but not history; ``no_grad()`` records nothing.
The arithmetic here is glue that runs on the array library of the data (NumPy
or CuPy); the network ops of ``nnkern.functional`` run the hand-written kernels
and record themselves through ``nnkern.autograd.rules``.
"""

import numpy as np

from ..device import array_module, get_device, is_gpu_array, to_device, to_numpy
from . import engine
from .engine import Version

FLOAT_KINDS = "f"


class Tensor:
    """An array with an optional gradient and the record of the op that made it.

    Attributes:
        data: the NumPy or CuPy array (shared, never copied by the Tensor).
        requires_grad: whether gradients flow to (and, for a leaf, accumulate in) it.
        grad: the accumulated gradient of a leaf (an array of ``data``'s shape) or None.

    Create one with ``nnkern.tensor(data, requires_grad=False, device=None)``.
    """

    __slots__ = ("__weakref__", "_node", "_version", "data", "grad", "requires_grad")
    # NumPy defers to the Tensor's reflected operators (array + tensor -> Tensor)
    __array_priority__ = 1000

    def __init__(self, data, requires_grad=False, _version=None):
        self.data = data
        self.requires_grad = requires_grad
        self.grad = None
        self._node = None
        self._version = Version() if _version is None else _version

    # --- what it is ------------------------------------------------------------------------

    @property
    def shape(self):
        return tuple(self.data.shape)

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def ndim(self):
        return self.data.ndim

    @property
    def size(self):
        return int(self.data.size)

    @property
    def device(self):
        """Where the memory lives: ``"cuda"`` for a GPU array, else ``"cpu"``.
        Which kernels run is the current backend (``nnkern.get_device()``)."""
        return "cuda" if is_gpu_array(self.data) else "cpu"

    @property
    def is_leaf(self):
        """True for Tensors not made by a recorded op (user inputs, weights)."""
        return self._node is None

    @property
    def grad_fn(self):
        """The name of the op that made this Tensor, or None for a leaf."""
        return None if self._node is None else self._node.name

    def __len__(self):
        return len(self.data)

    def __repr__(self):
        grad = ", requires_grad=True" if self.requires_grad else ""
        op = f", grad_fn={self._node.name}" if self._node is not None else ""
        return f"Tensor({to_numpy(self.data)!r}{grad}{op})"

    # --- conversion --------------------------------------------------------------------------

    def numpy(self):
        """The data as a NumPy array: the array itself on the host (no copy), a copy from
        the GPU."""
        return to_numpy(self.data)

    def __array__(self, dtype=None, copy=None):
        if is_gpu_array(self.data):
            raise TypeError(
                "a Tensor on the GPU cannot become a NumPy array implicitly; call .numpy() to "
                "copy it to the host"
            )
        return np.asarray(self.data, dtype=dtype)

    def __dlpack__(self, *, stream=None, max_version=None, dl_device=None, copy=None):
        """Export the data through DLPack (``torch.from_dlpack(t)``, ``np.from_dlpack(t)``
        share its memory). As in PyTorch, a Tensor that requires grad refuses: export
        ``t.detach()``, since the consumer would not see the tape."""
        if self.requires_grad:
            raise BufferError(
                "cannot export a Tensor that requires grad through DLPack; use t.detach()"
            )
        # only the options given: older exporters (CuPy 13) take fewer keywords
        options = {k: v for k, v in (("stream", stream), ("max_version", max_version),
                                     ("dl_device", dl_device), ("copy", copy)) if v is not None}
        return self.data.__dlpack__(**options)

    def __dlpack_device__(self):
        return self.data.__dlpack_device__()

    def item(self):
        """The single value of a one-element Tensor as a Python number."""
        if self.size != 1:
            raise ValueError(f"item() needs a Tensor with one element, got shape {self.shape}")
        return to_numpy(self.data).reshape(-1)[0].item()

    def __float__(self):
        return float(self.item())

    def __int__(self):
        return int(self.item())

    def __bool__(self):
        return bool(self.item())

    def tolist(self):
        return to_numpy(self.data).tolist()

    def detach(self):
        """The same memory without history (and without requires_grad); in-place changes
        to either are seen by the version counter of both."""
        return Tensor(self.data, False, self._version)

    def requires_grad_(self, requires_grad=True):
        """Set ``requires_grad`` on a leaf in place; returns self."""
        if requires_grad and self.dtype.kind not in FLOAT_KINDS:
            raise TypeError(f"only float Tensors can require gradients, got dtype {self.dtype}")
        if not self.is_leaf and not requires_grad:
            raise RuntimeError("requires_grad can only be turned off on a leaf; use detach()")
        self.requires_grad = bool(requires_grad)
        return self

    def to(self, device):
        """A copy on another backend's memory ("numpy", "cpu", "cuda"), or self when it is
        already there; gradients flow back through the move."""
        from . import ops
        return ops.to_device(self, device)

    def astype(self, dtype):
        """A cast copy; the gradient is cast back."""
        from . import ops
        return ops.astype(self, dtype)

    # --- backward ----------------------------------------------------------------------------

    def backward(self, grad=None, retain_graph=False):
        """Compute the gradient of this Tensor with respect to every leaf that requires one,
        accumulating into their ``.grad``.

        ``grad`` is d(something)/d(self) (default 1 for a one-element Tensor). The graph
        is freed afterwards unless ``retain_graph=True``.
        """
        if not self.requires_grad:
            raise RuntimeError(
                "backward() on a Tensor that does not require grad: no input of the ops that "
                "made it requires grad (or they ran under no_grad)"
            )
        if grad is None:
            if self.size != 1:
                raise RuntimeError(
                    f"backward() without a gradient needs a one-element Tensor (a loss), got "
                    f"shape {self.shape}; pass grad= of that shape"
                )
            grad = array_module_of(self.data).ones(self.data.shape, dtype=self.dtype)
        else:
            grad = grad.data if isinstance(grad, Tensor) else grad
            if tuple(grad.shape) != self.shape:
                raise ValueError(f"grad must have shape {self.shape}, got {tuple(grad.shape)}")
            if is_gpu_array(grad) != is_gpu_array(self.data):
                raise ValueError(
                    f"grad lives on the {'GPU' if is_gpu_array(grad) else 'host'} but the "
                    f"Tensor on the {'GPU' if is_gpu_array(self.data) else 'host'}"
                )
        engine.run_backward(self, grad, retain_graph)

    def zero_grad(self):
        """Set ``.grad`` to None (the next backward starts from zero)."""
        self.grad = None

    # --- in-place changes (bump the version; never recorded) ---------------------------------

    def _check_inplace(self, what):
        if self.requires_grad and engine.is_grad_enabled():
            raise RuntimeError(
                f"{what} on a Tensor that requires grad would change a value the tape may "
                f"need; do it under nnkern.no_grad(), or on x.detach()"
            )
        self._version.count += 1

    def __setitem__(self, index, value):
        self._check_inplace("item assignment")
        self.data[_raw_index(index)] = value.data if isinstance(value, Tensor) else value

    def __iadd__(self, other):
        self._check_inplace("+=")
        self.data += other.data if isinstance(other, Tensor) else other
        return self

    def __isub__(self, other):
        self._check_inplace("-=")
        self.data -= other.data if isinstance(other, Tensor) else other
        return self

    def __imul__(self, other):
        self._check_inplace("*=")
        self.data *= other.data if isinstance(other, Tensor) else other
        return self

    def __itruediv__(self, other):
        self._check_inplace("/=")
        self.data /= other.data if isinstance(other, Tensor) else other
        return self

    def fill_(self, value):
        """Set every element to ``value`` in place; returns self."""
        self._check_inplace("fill_")
        self.data.fill(value)
        return self

    def zero_(self):
        """Set every element to 0 in place; returns self."""
        return self.fill_(0)

    def copy_(self, other):
        """Copy ``other``'s values into this Tensor in place; returns self."""
        self._check_inplace("copy_")
        self.data[...] = other.data if isinstance(other, Tensor) else other
        return self

    # --- comparisons (no gradient: they return bool Tensors) ---------------------------------

    def _compare(self, other, op):
        other = other.data if isinstance(other, Tensor) else other
        return Tensor(op(self.data, other))

    def __lt__(self, other):
        return self._compare(other, lambda a, b: a < b)

    def __le__(self, other):
        return self._compare(other, lambda a, b: a <= b)

    def __gt__(self, other):
        return self._compare(other, lambda a, b: a > b)

    def __ge__(self, other):
        return self._compare(other, lambda a, b: a >= b)

    def __eq__(self, other):
        return self._compare(other, lambda a, b: a == b)

    def __ne__(self, other):
        return self._compare(other, lambda a, b: a != b)

    __hash__ = object.__hash__

    def argmax(self, axis=None):
        """Indices of the maxima (no gradient)."""
        return Tensor(self.data.argmax(axis=axis))


_GRAD_SLOT = Tensor.__dict__["grad"]  # the slot under Parameter's ``grad`` property


class Parameter(Tensor):
    """A trainable weight: a leaf Tensor that requires grad. Layers create them; inside a
    model its ``data`` and ``grad`` are views into the model's flat buffers.

    A model's ``zero_grad()`` does not write zeros: it marks each gradient view as zero
    (``_zero_pending``), and the zeros are written when something reads ``.grad`` (or the
    flat buffer, through ``Parameters.grad_arrays``) before a backward has written it. A
    backward that writes the whole gradient (linear's, see ``rules.LinearRule``) writes it
    instead of adding to zeros: the MLP step saved a 437 KB fill and a read of every dW.
    """

    __slots__ = ("_zero_pending",)

    def __init__(self, data, requires_grad=True):
        super().__init__(data, requires_grad)

    @property
    def grad(self):
        g = _GRAD_SLOT.__get__(self)
        if self._zero_pending:
            self._zero_pending = False
            g.fill(0)
        return g

    @grad.setter
    def grad(self, value):
        _GRAD_SLOT.__set__(self, value)
        self._zero_pending = False

    def _defer_zero(self):
        """Mark the gradient as zero without writing it (a model's ``zero_grad``)."""
        self._zero_pending = _GRAD_SLOT.__get__(self) is not None

    def _fresh_grad(self):
        """The gradient array, for a backward about to write all of it: when it is marked
        zero, it is returned unwritten and counts as written from now on. Returns
        ``(array, was_marked_zero)``."""
        pending = self._zero_pending
        self._zero_pending = False
        return _GRAD_SLOT.__get__(self), pending

    def __repr__(self):
        return f"Parameter(shape={self.shape}, dtype={self.dtype})"


def array_module_of(data):
    """numpy for host arrays, cupy for GPU arrays."""
    if isinstance(data, np.ndarray):
        return np
    return array_module("cuda") if is_gpu_array(data) else np


def _raw_index(index):
    if isinstance(index, Tensor):
        return index.data
    if isinstance(index, tuple):
        return tuple(i.data if isinstance(i, Tensor) else i for i in index)
    return index


def tensor(data, requires_grad=False, device=None, dtype=None):
    """Make a Tensor from an array, a list or a number, on ``device`` (default: the
    current one's memory).

    Python floats become float32 (the working dtype), as in PyTorch; NumPy arrays
    keep their dtype unless ``dtype`` is given. Host data moves to the GPU only when
    the device (given or current) is ``"cuda"``.

    >>> t = tensor([[1.0, 2.0]], requires_grad=True)
    >>> t.shape, t.dtype.name
    ((1, 2), 'float32')
    """
    if isinstance(data, Tensor):
        data = data.data
    if dtype is None and not hasattr(data, "dtype"):
        probe = np.asarray(data)
        dtype = np.float32 if probe.dtype.kind == "f" else None
        data = probe
    array = to_device(data, device or get_device(), dtype=dtype)
    t = Tensor(array)
    if requires_grad:
        t.requires_grad_(True)
    return t
