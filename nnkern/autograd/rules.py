"""One table from each op of ``nnkern.functional`` to its gradient rule.

Every forward op ``F.<op>`` has a backward twin ``F.<op>_backward(grad_out, *inputs,
**kwargs)`` that returns the gradients of its leading inputs, in order. So one
generic rule records any op: run the forward on the arrays, and on backward call
the twin with the same arguments. The table only says which inputs are
differentiable and which extra value the backward can reuse:

    differentiable  names of the inputs that get a gradient, in the order the
                    backward returns them
    reuse_output    the backward accepts the forward output as ``out=`` (sigmoid,
                    tanh, softmax, log_softmax, linear with relu) and skips
                    recomputing it

Ops with something to add beyond that have a small custom rule below (max-pool
passes its argmax to the backward; softmax cross-entropy runs its fused
forward+backward kernel once and scales the saved gradient).

``wrap(namespace)`` replaces each op in ``F``'s namespace by a wrapper: plain
arrays go straight to the op (a type check is all they pay), arrays of other
libraries (torch, anything with ``__dlpack__``) are converted once without a copy
(``nnkern.interop``), Tensors are unwrapped, the op runs, and the result is a
Tensor, recorded when an input requires grad. Non-differentiable ops (the
backward twins themselves, optimizer steps, shape helpers) accept Tensors too
and return Tensors (or None) without recording.
"""

import functools
import inspect
import sys

import numpy as np

from ..interop import PLAIN_TYPES, convert_arguments
from . import engine
from .tensor import Parameter, Tensor

# op -> (differentiable inputs in the order <op>_backward returns their gradients, reuse_output)
TABLE = {
    "relu": (("x",), False),
    "sigmoid": (("x",), True),
    "tanh": (("x",), True),
    "softmax": (("x",), True),
    "log_softmax": (("x",), True),
    "bias_add": (("x", "b"), False),
    "dropout": (("x",), False),
    "matmul": (("a", "b"), False),
    "linear": (("x", "w", "b"), True),
    "conv2d": (("x", "w", "b"), False),
    "max_pool2d": (("x",), False),
    "avg_pool2d": (("x",), False),
    "blur_pool2d": (("x",), False),
    "max_blur_pool2d": (("x",), False),
    "batch_norm": (("x", "gamma", "beta"), False),
    "local_response_norm": (("x",), False),
    "softmax_cross_entropy": (("logits",), False),
    "binary_cross_entropy_with_logits": (("logits",), False),
    "mse_loss": (("pred", "target"), False),
}

# ops that take ``out=`` in their backward only for some arguments
_REUSE_WHEN = {"linear": lambda kw: kw.get("activation") == "relu"}


_TENSOR_TYPES = {Tensor, Parameter}
_NDARRAY = np.ndarray


def _requires_grad(inputs):
    if not engine.is_grad_enabled():
        return False
    for t in inputs:
        if type(t) in _TENSOR_TYPES and t.requires_grad:
            return True
    return False


class Rule:
    """How one F op records itself: its signature, differentiable inputs and backward."""

    def __init__(self, name, forward, backward, differentiable, reuse_output):
        self.name = name
        self.forward = forward
        self.backward = backward
        self.params = list(inspect.signature(forward).parameters)
        self.differentiable = differentiable
        # (position, name) of each differentiable input, to find it among args or kwargs
        self.positions = [(self.params.index(name), name) for name in differentiable]
        self.reuse_output = reuse_output
        self.reuse_when = _REUSE_WHEN.get(name)
        # backward twins that can skip the first input's gradient (conv2d, linear: the
        # backward-data pass of a network's first layer, whose input needs none)
        self.skips_input = "input_grad" in inspect.signature(backward).parameters

    def bind(self, args, kwargs):
        """All arguments by name (positional ones included), as the op received them."""
        bound = dict(zip(self.params, args))
        bound.update(kwargs)
        return bound

    def apply(self, args, kwargs):
        """Run the op on Tensor arguments: unwrap, run, wrap the result; record it when an
        input requires grad (the argument dict by name is built only then)."""
        n = len(args)
        inputs = [args[i] if i < n else kwargs.get(name) for i, name in self.positions]
        raw_args = [a.data if type(a) in _TENSOR_TYPES else a for a in args]
        raw_kwargs = ({k: v.data if type(v) in _TENSOR_TYPES else v for k, v in kwargs.items()}
                      if kwargs else kwargs)
        if not _requires_grad(inputs):
            result = self.forward(*raw_args, **raw_kwargs)
            return Tensor(result) if type(result) is _NDARRAY else _to_tensors(result)
        raw = dict(zip(self.params, raw_args))
        raw.update(raw_kwargs)
        return self.record(raw, inputs)

    def record(self, raw, inputs):
        """Run the op on ``raw`` (this call's own argument dict, which the backward keeps
        and extends) and record it."""
        result = self.forward(**raw)
        out = Tensor(result)
        backward, sinks = self.backward, self.sinks
        if self.reuse_output and (self.reuse_when is None or self.reuse_when(raw)):
            raw["out"] = result
        first = inputs[0]
        if self.skips_input and not (type(first) in _TENSOR_TYPES and first.requires_grad):
            raw["input_grad"] = False
        tensors = [t for t in inputs if isinstance(t, Tensor)]
        # one closure: the backward twin's gradients of the Tensor inputs that require one
        wanted = [isinstance(t, Tensor) for t in inputs]

        def grads_of(g):
            grads = backward(g, **raw, **sinks(inputs)) if sinks else backward(g, **raw)
            if not isinstance(grads, tuple):
                grads = (grads,)
            return [gi if t.requires_grad else None
                    for t, gi, w in zip(inputs, grads, wanted) if w]

        return engine.record(out, self.name, tensors, grads_of, tensors)

    # (inputs) -> keyword arguments of the backward naming arrays it adds gradients into
    sinks = None


def _aligned(grads_of, inputs):
    """Backward that keeps the gradients of the Tensor inputs that require one."""
    def backward(g):
        grads = grads_of(g)
        return [gi if t.requires_grad else None
                for t, gi in zip(inputs, grads) if isinstance(t, Tensor)]
    return backward


def _grad_buffer(t):
    """``(array, was_zero)``: the ``.grad`` array of a leaf Tensor that requires grad, when a
    backward may write into it in place (a host array of the Tensor's shape and dtype,
    C-contiguous, writable: a model's gradient buffer), and whether it was marked zero
    (``Parameter._defer_zero``: then it is to be written, not added to, and counts as
    written from now on); ``(None, False)`` otherwise."""
    if type(t) not in _TENSOR_TYPES or not t.requires_grad or t._node is not None:
        return None, False
    g, was_zero = t._fresh_grad() if type(t) is Parameter else (t.grad, False)
    if (type(g) is not _NDARRAY or g.dtype is not t.data.dtype or g.shape != t.data.shape
            or not g.flags.c_contiguous or not g.flags.writeable):
        if was_zero:
            t._defer_zero()  # not ours to write: leave it marked
        return None, False
    return g, was_zero


class LinearRule(Rule):
    """linear's backward writes dw and db straight into the ``.grad`` of a weight and bias
    that are leaves with a gradient buffer: the dW GEMM accumulates into it (or writes it,
    when the model's ``zero_grad`` marked it zero), instead of writing a temporary that the
    tape then adds (MLP 784-128-64-10 step: the 400 KB temporary of the first layer, its
    addition, and the zero fill before it). Later contributions (a layer called twice) add
    to the same buffer, as the tape would.

    A Dense layer's call, ``linear(x, w, b, activation=...)`` on three Tensors whose
    arrays pass F's one-test check (``plain``), is recorded by straight-line code: the
    forward runs the kernel (``run``), and the backward, for an upstream gradient of the
    output's shape, dtype and layout, calls linear_backward's body (``checked``) on the
    arrays the forward checked. Anything else takes the generic path, which checks again
    (glue only, kernels stubbed: 6.2 -> 4.5 us per recorded call, 8.3 -> 5.7 us per
    backward; the MLP step's glue 105-110 -> 93-95 us).
    """

    def __init__(self, *args, plain=None, run=None, checked=None, kernels=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.plain, self.run, self.checked, self.kernels = plain, run, checked, kernels

    def apply(self, args, kwargs):
        if len(args) == 3 and (not kwargs or (len(kwargs) == 1 and "activation" in kwargs)):
            x, w, b = args
            activation = kwargs["activation"] if kwargs else None
            if (type(x) in _TENSOR_TYPES and type(w) in _TENSOR_TYPES
                    and type(b) in _TENSOR_TYPES
                    and (x.requires_grad or w.requires_grad or b.requires_grad)
                    and engine.is_grad_enabled()
                    and self.plain(x.data, w.data, b.data, activation)):
                return self._record_plain(x, w, b, activation == "relu")
        return super().apply(args, kwargs)

    def _record_plain(self, x, w, b, relu):
        xd, wd, bd = x.data, w.data, b.data
        y = self.run(xd, wd, bd, relu)
        out = Tensor(y)
        dtype, shape, input_grad = y.dtype, y.shape, x.requires_grad
        checked, kernels, generic, sinks = self.checked, self.kernels, self.backward, self.sinks
        activation = "relu" if relu else None

        def grads_of(g):
            extra = sinks((x, w, b))
            if (type(g) is _NDARRAY and g.dtype is dtype and g.shape == shape
                    and g.flags.c_contiguous):
                return checked(kernels("gemm", ("x", xd)), g, xd, wd, bd, relu,
                               y if relu else None, input_grad, extra.get("grad_w"),
                               extra.get("grad_b"), extra.get("add_w", True),
                               extra.get("add_b", True))
            return generic(g, xd, wd, bd, activation, out=y if relu else None,
                           input_grad=input_grad, **extra)

        return engine.record(out, self.name, [x, w, b], grads_of, [x, w, b])

    def record_chain(self, x, layers):
        """``linear`` applied layer after layer, recorded as ONE node: ``layers`` lists the
        ``(w, b, activation)`` of a chain of Dense layers (a model that is one, such as
        the MLP of the course). The forward runs each layer's kernel as the straight path
        of ``apply`` would; the backward walks the layers in reverse with the same
        ``checked`` body, the same gradient sinks asked in the same order (so the gradients,
        and a layer called twice, come out exactly as with one node per layer), and gives
        the input's gradient when ``x`` requires one. Why: per layer, the node, its Tensor,
        the rule's dispatch and the engine's visit are glue, and inside a training step glue
        runs two to three times slower than alone (Adam's 1.75 MB stream leaves the
        interpreter's objects in L3). MLP 784-128-64-10 step, main -> this, alternating
        (/work/scratch/mlp4/ab_phases.sh): glue with the kernels stubbed 77-85 -> 64-65 us,
        the step 442-462 -> 415-423 us.

        Returns None, having recorded nothing, when a layer would not take the straight
        path (a bias missing, another activation, arrays that fail F's one-test check) or
        when the first layer records nothing (its input and weights need no gradient): the
        caller then calls the layers one by one.
        """
        if type(x) not in _TENSOR_TYPES or not engine.is_grad_enabled():
            return None
        w0, b0, _ = layers[0]
        if not (type(w0) in _TENSOR_TYPES and type(b0) in _TENSOR_TYPES
                and (x.requires_grad or w0.requires_grad or b0.requires_grad)):
            return None
        tensors, xs, arrays, relus = [x], [], [], []
        h = x.data
        for w, b, activation in layers:
            if type(w) not in _TENSOR_TYPES or type(b) not in _TENSOR_TYPES:
                return None
            wd, bd = w.data, b.data
            if not self.plain(h, wd, bd, activation):
                return None
            relu = activation == "relu"
            xs.append(h)
            h = self.run(h, wd, bd, relu)
            tensors += (w, b)
            arrays.append((wd, bd, h))
            relus.append(relu)
        out = Tensor(h)
        dtype, shape, input_grad = h.dtype, h.shape, x.requires_grad
        checked, kernels, generic = self.checked, self.kernels, self.backward

        def grads_of(g):
            grads = [None] * len(tensors)
            K = kernels("gemm", ("x", xs[0]))
            top = len(xs) - 1
            for i in range(top, -1, -1):
                # the sinks of sinks(), asked layer by layer from the top as one node per
                # layer would: a buffer marked zero is written, any other added to
                grad_w, zero_w = _grad_buffer(tensors[2 * i + 1])
                grad_b, zero_b = _grad_buffer(tensors[2 * i + 2])
                (wd, bd, y), relu = arrays[i], relus[i]
                if i < top or (type(g) is _NDARRAY and g.dtype is dtype and g.shape == shape
                               and g.flags.c_contiguous):  # below the top, g is our own dx
                    g, dw, db = checked(K, g, xs[i], wd, bd, relu, y if relu else None,
                                        input_grad or i > 0, grad_w, grad_b, not zero_w,
                                        not zero_b)
                else:
                    g, dw, db = generic(g, xs[i], wd, bd, "relu" if relu else None,
                                        out=y if relu else None, input_grad=input_grad or i > 0,
                                        grad_w=grad_w, grad_b=grad_b, add_w=not zero_w,
                                        add_b=not zero_b)
                grads[2 * i + 1], grads[2 * i + 2] = dw, db
            grads[0] = g
            return grads

        return engine.record(out, self.name, tensors, grads_of, tensors)

    @staticmethod
    def sinks(inputs):
        extra = {}
        for name, add, t in (("grad_w", "add_w", inputs[1]), ("grad_b", "add_b", inputs[2])):
            buffer, was_zero = _grad_buffer(t)
            if buffer is not None:
                extra[name] = buffer
                if was_zero:
                    extra[add] = False
        return extra


class MaxPoolRule(Rule):
    """max_pool2d keeps its argmax so the backward is a pure scatter (no recompute)."""

    def record(self, raw, inputs):
        want_indices = bool(raw.get("return_indices", False))
        y, indices = self.forward(**{**raw, "return_indices": True})
        out = Tensor(y)
        kwargs = {k: v for k, v in raw.items() if k != "return_indices"}
        backward = self.backward

        def grads_of(g):
            return (backward(g, indices=indices, **kwargs),)

        x = inputs[0]
        engine.record(out, self.name, [x], _aligned(grads_of, inputs), [x])
        return (out, Tensor(indices)) if want_indices else out


class SoftmaxCrossEntropyRule(Rule):
    """The loss and d loss / d logits for an upstream gradient of 1 come from ONE fused
    kernel pass; the backward scales that saved gradient (and runs the plain backward
    for per-sample losses, whose upstream gradient is a vector)."""

    def __init__(self, *args, fused=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.fused = fused

    def apply(self, args, kwargs):
        # a loss's call, F.softmax_cross_entropy(logits, labels, reduction, smoothing) on
        # logits that require grad and NumPy labels, skips the generic unwrapping (2-3 us)
        if len(args) == 4 and not kwargs:
            logits, labels, reduction, label_smoothing = args
            if (type(logits) in _TENSOR_TYPES and logits.requires_grad
                    and type(labels) is _NDARRAY and reduction != "none"
                    and engine.is_grad_enabled()):
                value, unit_grad = self.fused(logits.data, labels, reduction, label_smoothing)
                return self._recorded(value, unit_grad, logits)
        return super().apply(args, kwargs)

    def record(self, raw, inputs):
        if raw.get("reduction", "mean") == "none":
            return super().record(raw, inputs)
        value, unit_grad = self.fused(**raw)
        return self._recorded(value, unit_grad, inputs[0])

    def _recorded(self, value, unit_grad, logits):
        out = Tensor(value)

        def backward(g):
            if not logits.requires_grad:
                return [None]
            # g is the loss's 0-d upstream gradient: 1 for a loss that is the root
            return [unit_grad if _is_one(g) else unit_grad * g]

        return engine.record(out, self.name, [logits], backward, [logits])


def _is_one(g):
    return getattr(g, "ndim", 1) == 0 and type(g).__module__ == "numpy" and g == 1


class MSERule(Rule):
    """mse_loss_backward gives d/d pred; the target gets its negative."""

    def record(self, raw, inputs):
        out = Tensor(self.forward(**raw))
        backward = self.backward
        tensors = [t for t in inputs if isinstance(t, Tensor)]

        def grads_of(g):
            d = backward(g, **raw)
            return (d, -d)

        return engine.record(out, self.name, tensors, _aligned(grads_of, inputs), tensors)


class BatchNormRule(Rule):
    """In evaluation the backward reads the running statistics: keep a copy of those the
    forward used (C values each), since a later training forward updates them in place."""

    def record(self, raw, inputs):
        if not raw.get("training", True):
            raw = dict(raw)
            for key in ("running_mean", "running_var"):
                if raw.get(key) is not None:
                    raw[key] = raw[key].copy()
        return super().record(raw, inputs)


_CUSTOM = {"linear": LinearRule, "max_pool2d": MaxPoolRule,
           "softmax_cross_entropy": SoftmaxCrossEntropyRule, "mse_loss": MSERule,
           "batch_norm": BatchNormRule}


def _to_tensors(result):
    if result is None:
        return None
    if isinstance(result, tuple):
        return tuple(_to_tensors(r) for r in result)
    if isinstance(result, list):
        return [_to_tensors(r) for r in result]
    if hasattr(result, "shape") and hasattr(result, "dtype"):
        return Tensor(result)
    return result


def _has_tensor(args, kwargs):
    for a in args:
        if isinstance(a, Tensor):
            return True
        if isinstance(a, (list, tuple)):
            for item in a:
                if isinstance(item, Tensor):
                    return True
    for a in kwargs.values():
        if isinstance(a, Tensor):
            return True
    return False


def _unwrap_all(value):
    if isinstance(value, Tensor):
        return value.data
    if isinstance(value, list):
        return [_unwrap_all(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_unwrap_all(v) for v in value)
    return value


def _recorded(fn, rule):
    # plain arrays and scalars pay one type test each (PLAIN_TYPES); anything else (a
    # Tensor, a foreign array) takes the boundary: nnkern.interop converts foreign arrays
    @functools.wraps(fn)
    def op(*args, **kwargs):
        tensors = False
        for a in args:
            kind = type(a)
            if kind not in PLAIN_TYPES and kind is not tuple:
                if kind not in _TENSOR_TYPES:
                    return _boundary(fn, rule, args, kwargs)
                tensors = True
        if kwargs:
            for a in kwargs.values():
                kind = type(a)
                if kind not in PLAIN_TYPES and kind is not tuple:
                    if kind not in _TENSOR_TYPES:
                        return _boundary(fn, rule, args, kwargs)
                    tensors = True
        if tensors:  # Tensors and plain arrays only: nothing to convert
            return rule.apply(args, kwargs)
        return fn(*args, **kwargs)

    op.rule = rule
    return op


def _boundary(fn, rule, args, kwargs):
    args, kwargs = convert_arguments(rule.params, args, kwargs)
    for a in args:
        if isinstance(a, Tensor):
            return rule.apply(args, kwargs)
    for a in kwargs.values():
        if isinstance(a, Tensor):
            return rule.apply(args, kwargs)
    return fn(*args, **kwargs)


def _plain(fn, in_place):
    """A non-differentiable op: Tensors are unwrapped; results come back as Tensors, except
    for in-place ops (optimizer steps), whose Tensor arguments get a new version."""
    params = list(inspect.signature(fn).parameters)

    @functools.wraps(fn)
    def op(*args, **kwargs):
        for a in args:
            if type(a) not in PLAIN_TYPES:
                break
        else:
            for a in kwargs.values():
                if type(a) not in PLAIN_TYPES:
                    break
            else:
                return fn(*args, **kwargs)
        args, kwargs = convert_arguments(params, args, kwargs)
        if not _has_tensor(args, kwargs):
            return fn(*args, **kwargs)
        result = fn(*[_unwrap_all(a) for a in args],
                    **{k: _unwrap_all(v) for k, v in kwargs.items()})
        if in_place:
            _bump_versions(args, kwargs)
            return result
        return _to_tensors(result)

    return op


def _bump_versions(args, kwargs):
    for a in list(args) + list(kwargs.values()):
        items = a if isinstance(a, (list, tuple)) else [a]
        for t in items:
            if isinstance(t, Tensor):
                t._version.count += 1


IN_PLACE = ("sgd_step", "adam_step")


def wrap(namespace, names):
    """Replace each op named in ``names`` inside ``namespace`` (F's globals) by its
    Tensor-aware wrapper; returns the rules by op name."""
    rules = {}
    for name in names:
        fn = namespace[name]
        if not callable(fn) or isinstance(fn, type):
            continue
        spec = TABLE.get(name)
        if spec is None:
            namespace[name] = _plain(fn, name in IN_PLACE)
            continue
        backward = namespace[name + "_backward"]
        cls = _CUSTOM.get(name, Rule)
        extra = {}
        if cls is SoftmaxCrossEntropyRule:
            extra["fused"] = namespace["softmax_cross_entropy_with_grad"]
        if cls is LinearRule:  # the family module's own helpers of its one-test path
            module = sys.modules[fn.__module__]
            extra.update(plain=module._plain_linear, run=module._linear_plain,
                         checked=module._linear_backward_checked,
                         kernels=module.backend_kernels)
        rule = cls(name, fn, backward, *spec, **extra)
        rules[name] = rule
        namespace[name] = _recorded(fn, rule)
    return rules
