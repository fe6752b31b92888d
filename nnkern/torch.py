"""nnkern's kernels inside PyTorch training scripts: autograd functions and drop-in modules.

    >>> import torch
    >>> import nnkern.torch as nt
    >>> conv = nt.Conv2d(1, 6, 5, padding=2)        # torch.nn.Conv2d's arguments and Parameters
    >>> y = conv(torch.randn(8, 1, 28, 28))
    >>> y.sum().backward()                           # through nnkern's conv2d_backward kernels
    >>> tuple(conv.weight.grad.shape)
    (6, 1, 5, 5)

This bridge is optional: ``import nnkern`` never imports torch; ``import nnkern.torch`` does.

Functions. For every differentiable op of ``nnkern.functional`` (the one table
``nnkern.autograd.rules.TABLE``: op -> its differentiable inputs) this module holds a
``torch.autograd.Function`` (``FUNCTIONS[op]``) and a function of the same name and arguments
(``nt.conv2d(x, w, b, stride=1, padding=1)``), all generated from that table. Forward runs the
F op on nnkern Tensors that share the torch tensors' memory (DLPack, no copy) and keeps the
small nnkern tape it recorded; backward runs that tape, that is the op's own
``<op>_backward`` through the same rule nnkern's autograd uses (max-pool's saved argmax, the
fused softmax cross-entropy, ...). Results share memory with nnkern's outputs. Tensors
changed in place between forward and backward raise torch's usual error (the inputs are
saved with ``save_for_backward``). Double backward is not supported.

Modules. ``Conv2d``, ``Linear``, ``MaxPool2d``, ``AvgPool2d`` and ``CrossEntropyLoss``
subclass their torch namesakes: the same constructor arguments, initialisation,
``torch.nn.Parameter``s and ``state_dict`` keys; only ``forward`` runs nnkern. Arguments
nnkern has no kernel for (``padding_mode="reflect"``, ``ceil_mode=True``, class weights)
are refused in the constructor. ``BlurPool2d`` and ``MaxBlurPool2d`` take the arguments of
adobe/antialiased-cnns' ``BlurPool`` (``channels, pad_type="reflect", filt_size=4,
stride=2, pad_off=0``).

Devices. CPU tensors run on nnkern's current host backend (``"cpu"``, or ``"numpy"`` when
that is the current device), CUDA tensors on ``"cuda"``: the torch tensors' placement
decides, as it does in torch.
"""

import contextlib
import inspect

import numpy as np
import torch
from torch.autograd.function import once_differentiable

from . import functional as F
from .autograd import Tensor, set_grad_enabled
from .autograd.rules import TABLE
from .device import device as device_ctx
from .device import get_device
from .interop import as_array

_HOST_BACKENDS = ("numpy", "cpu")


def _backend(tensors):
    """The nnkern backend for these torch tensors: "cuda" for CUDA tensors, else the current
    host backend."""
    for t in tensors:
        if t.is_cuda:
            return "cuda"
    current = get_device()
    return current if current in _HOST_BACKENDS else "cpu"


def _to_nnkern(t, name):
    """The array under a torch tensor, without a copy: ``Tensor.numpy()`` on the host (a C
    call; torch's Python-level ``__dlpack__`` costs about 10 us), CuPy through DLPack on a
    GPU."""
    t = t.detach()
    return as_array(t, name) if t.is_cuda else t.numpy()


def _to_torch(array):
    """A torch tensor on the memory of an nnkern result (NumPy or CuPy), without a copy."""
    if isinstance(array, np.ndarray):
        return torch.from_numpy(array)
    if isinstance(array, np.generic):  # a reduced loss may come back as a NumPy scalar
        return torch.from_numpy(np.asarray(array))
    return torch.from_dlpack(array)


def _on(backend):
    """The device context for ``backend``, or none when it is already the current one."""
    return contextlib.nullcontext() if get_device() == backend else device_ctx(backend)


class _Adapter(torch.autograd.Function):
    """The generic adapter; ``_make_function`` gives each op of the table its own subclass
    (so a torch graph shows ``Conv2dBackward``-like names) with its ``rule`` set: the
    object nnkern's own tape records the op with (``nnkern.functional.RULES``)."""

    rule = None

    @classmethod
    def run_forward(cls, ctx, spec, tensors):
        names, static = spec
        rule = cls.rule
        args = dict(static)
        leaves = []
        for name, t, wanted in zip(names, tensors, ctx.needs_input_grad[1:]):
            array = _to_nnkern(t, f"{rule.name}: {name}")
            if name in rule.differentiable:
                leaf = Tensor(array, requires_grad=bool(wanted))
                leaves.append(leaf)
                args[name] = leaf
            else:
                if wanted:
                    raise ValueError(
                        f"nnkern.torch.{rule.name}: {name} requires grad, but nnkern gives "
                        f"gradients only for {rule.differentiable}; pass {name}.detach()"
                    )
                leaves.append(None)
                args[name] = array
        backend = _backend(tensors)
        previous = set_grad_enabled(True)  # torch runs forward under its no_grad, not ours
        try:
            with _on(backend):
                out = rule.apply((), args)
        finally:
            set_grad_enabled(previous)
        outs = out if isinstance(out, tuple) else (out,)
        ctx.nnkern = (backend, outs[0], leaves)
        ctx.save_for_backward(*[t for t, leaf in zip(tensors, leaves) if leaf is not None])
        results = tuple(_to_torch(o.data) for o in outs)
        if len(results) > 1:  # max_pool2d's indices
            ctx.mark_non_differentiable(*results[1:])
        return results if len(results) > 1 else results[0]

    @staticmethod
    @once_differentiable
    def backward(ctx, *grads):
        _ = ctx.saved_tensors  # torch raises here if an input was changed in place
        backend, out, leaves = ctx.nnkern
        grads_in = [None] * len(leaves)
        if out.requires_grad:
            g = _to_nnkern(grads[0], "grad_output")
            with _on(backend):
                # the tape is ctx's alone: keep it for a torch backward with retain_graph
                out.backward(g, retain_graph=True)
            for i, leaf in enumerate(leaves):
                if leaf is not None and leaf.grad is not None:
                    grads_in[i] = _to_torch(leaf.grad)
                    leaf.grad = None
        return (None, *grads_in)


def _make_function(name):
    """The ``torch.autograd.Function`` of F op ``name``, from its row of the table."""
    def forward(ctx, spec, *tensors):
        return cls.run_forward(ctx, spec, tensors)

    title = "".join(part.capitalize() for part in name.split("_"))
    cls = type(title, (_Adapter,), {
        "rule": F.RULES[name], "forward": staticmethod(forward),
        "__doc__": f"``nnkern.functional.{name}`` as a torch autograd Function; gradients "
                   f"for {TABLE[name][0]}.",
    })
    return cls


def _make_op(name, function):
    """``nt.<name>(*args, **kwargs)``: F's signature; torch tensors become the Function's
    inputs, every other argument is passed through."""
    rule = F.RULES[name]

    def op(*args, **kwargs):
        bound = rule.bind(args, kwargs)
        names = tuple(k for k, v in bound.items() if isinstance(v, torch.Tensor))
        static = {k: v for k, v in bound.items() if not isinstance(v, torch.Tensor)}
        return function.apply((names, static), *[bound[k] for k in names])

    op.__name__ = op.__qualname__ = name
    op.__signature__ = inspect.signature(rule.forward)
    summary = (inspect.getdoc(rule.forward) or "").split("\n\n")[0]  # F's examples are F's
    op.__doc__ = (f"``nnkern.functional.{name}`` on torch tensors, differentiable in "
                  f"{TABLE[name][0]} through torch's autograd (returns torch tensors).\n\n"
                  f"{summary}")
    return op


FUNCTIONS = {name: _make_function(name) for name in F.RULES}
"""op name -> its ``torch.autograd.Function`` (one per row of the table)."""

OPS = {name: _make_op(name, fn) for name, fn in FUNCTIONS.items()}
"""op name -> ``nt.<op>``: every op of the table, with F's arguments, on torch tensors."""

globals().update(OPS)
# the ones the modules below call, by name (the rest are reached as nt.<op> or OPS[op])
(conv2d, linear, max_pool2d, avg_pool2d, blur_pool2d, max_blur_pool2d,
 softmax_cross_entropy) = (OPS[n] for n in (
    "conv2d", "linear", "max_pool2d", "avg_pool2d", "blur_pool2d", "max_blur_pool2d",
    "softmax_cross_entropy"))


# --- modules -----------------------------------------------------------------------------------


def _pair(value):
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def _refuse(module, **defaults):
    """Refuse constructor arguments nnkern has no kernel for (anything but its default)."""
    for arg, default in defaults.items():
        value = getattr(module, arg)
        if default is None or isinstance(default, bool):
            same = value is default
        elif isinstance(default, int):
            same = _pair(value) == (default, default)
        else:
            same = value == default
        if not same:
            raise ValueError(f"{type(module).__name__}: nnkern supports only {arg}={default!r}, "
                             f"got {arg}={value!r}")


class Conv2d(torch.nn.Conv2d):
    """``torch.nn.Conv2d`` running nnkern's conv2d kernels (same arguments and Parameters;
    ``padding_mode`` must be ``"zeros"``). ``algo`` chooses nnkern's algorithm ("auto",
    "direct", "im2col").

    >>> conv = Conv2d(3, 8, 3, stride=1, padding="same", bias=False)
    """

    def __init__(self, *args, algo="auto", **kwargs):
        super().__init__(*args, **kwargs)
        _refuse(self, padding_mode="zeros")
        self.algo = algo

    def forward(self, x):
        return conv2d(x, self.weight, self.bias, stride=self.stride,
                      padding=self.padding, dilation=self.dilation, groups=self.groups,
                      algo=self.algo)


class Linear(torch.nn.Linear):
    """``torch.nn.Linear`` running nnkern's GEMM kernels: (*, in_features) -> (*, out_features).

    >>> fc = Linear(120, 84)
    """

    def forward(self, x):
        lead = x.shape[:-1]
        y = linear(x.reshape(-1, self.in_features), self.weight, self.bias)
        return y.reshape(*lead, self.out_features)


class MaxPool2d(torch.nn.MaxPool2d):
    """``torch.nn.MaxPool2d`` running nnkern's pooling kernels (``dilation=1``,
    ``ceil_mode=False``; ``return_indices`` gives torch's flat indices).

    >>> pool = MaxPool2d(2)
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _refuse(self, dilation=1, ceil_mode=False)

    def forward(self, x):
        return max_pool2d(x, self.kernel_size, self.stride, self.padding,
                          self.return_indices)


class AvgPool2d(torch.nn.AvgPool2d):
    """``torch.nn.AvgPool2d`` running nnkern's pooling kernels (``ceil_mode=False``, no
    ``divisor_override``).

    >>> pool = AvgPool2d(2, count_include_pad=False)
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _refuse(self, ceil_mode=False, divisor_override=None)

    def forward(self, x):
        return avg_pool2d(x, self.kernel_size, self.stride, self.padding,
                          count_include_pad=self.count_include_pad)


class BlurPool2d(torch.nn.Module):
    """Anti-aliased downsampling (Zhang 2019) with the arguments of antialiased-cnns'
    ``BlurPool``: reflect padding, a normalised binomial filter of ``filt_size`` taps per
    channel, every ``stride``-th pixel kept. ``channels`` is checked against the input.

    >>> blur = BlurPool2d(16, filt_size=3, stride=2)
    """

    def __init__(self, channels, pad_type="reflect", filt_size=4, stride=2, pad_off=0):
        super().__init__()
        self.channels, self.pad_type, self.pad_off = int(channels), pad_type, pad_off
        self.filt_size, self.stride = int(filt_size), stride
        _refuse(self, pad_type="reflect", pad_off=0)

    def _check(self, x):
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise ValueError(f"{type(self).__name__}({self.channels}) takes (N, {self.channels}, "
                             f"H, W) input, got shape {tuple(x.shape)}")

    def forward(self, x):
        self._check(x)
        return blur_pool2d(x, self.filt_size, self.stride)

    def extra_repr(self):
        return f"{self.channels}, filt_size={self.filt_size}, stride={self.stride}"


class MaxBlurPool2d(BlurPool2d):
    """The antialiased replacement of ``MaxPool2d(kernel_size)`` (antialiased-cnns' recipe
    ``MaxPool2d(kernel_size, stride=1)`` then ``BlurPool(channels, stride=stride)``) in one
    nnkern op.

    >>> pool = MaxBlurPool2d(16, kernel_size=2, filt_size=3)
    """

    def __init__(self, channels, kernel_size=2, pad_type="reflect", filt_size=4, stride=2,
                 pad_off=0):
        super().__init__(channels, pad_type, filt_size, stride, pad_off)
        self.kernel_size = kernel_size

    def forward(self, x):
        self._check(x)
        return max_blur_pool2d(x, self.kernel_size, self.filt_size, self.stride)

    def extra_repr(self):
        return f"{super().extra_repr()}, kernel_size={self.kernel_size}"


class CrossEntropyLoss(torch.nn.CrossEntropyLoss):
    """``torch.nn.CrossEntropyLoss`` on (N, C) logits and class indices through nnkern's
    fused softmax cross-entropy kernel (``reduction`` and ``label_smoothing`` as torch; no
    class ``weight``; ``ignore_index`` stays at its default, and a label outside
    [0, C) is an error).

    >>> loss_fn = CrossEntropyLoss(label_smoothing=0.1)
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _refuse(self, weight=None, ignore_index=-100)

    def forward(self, input, target):
        return softmax_cross_entropy(input, target, reduction=self.reduction,
                                     label_smoothing=self.label_smoothing)


__all__ = [*sorted(FUNCTIONS), "FUNCTIONS", "OPS", "AvgPool2d", "BlurPool2d",  # noqa: PLE0604
           "Conv2d", "CrossEntropyLoss", "Linear", "MaxBlurPool2d", "MaxPool2d"]
