"""The one test helper: an op on a backend against the NumPy reference in float64.

Conventions it relies on (those of ``nnkern.functional``):

* ``F.<op>(*inputs, **kwargs)`` returns an array, or a tuple whose first
  item is the differentiable output (e.g. ``max_pool2d(..., return_indices=True)``);
* ``F.<op>_backward(grad_out, *inputs, **kwargs)`` returns the gradient of
  the first input, or a tuple of gradients of the leading inputs in order
  (``None`` where an input is absent, e.g. a conv without bias).

Tolerance rule (one rule for every op): element-wise
``|actual - expected| <= rtol * (|expected| + rms(expected))``, with
``rtol = 1e-4`` for float32 and ``1e-9`` for float64. The ``|expected|`` term
lets large values carry proportionally large rounding error; the ``rms`` term
(the tensor's typical magnitude) keeps elements that cancel to near zero
from demanding more digits than their inputs had. Ops that sum many terms
may pass a larger ``rtol`` with a comment saying why.
"""

import numpy as np

import nnkern
import nnkern.functional as F
import nnkern.testing
from nnkern.device import to_device, to_numpy
from nnkern.testing import numerical_gradient

BACKENDS = ["numpy", "cpu", "cuda"]
DTYPES = [np.float32, np.float64]
RTOL = {np.dtype(np.float32): 1e-4, np.dtype(np.float64): 1e-9}


def assert_close(actual, expected, dtype, what="value", rtol=None):
    """Assert ``actual`` matches the float64 ``expected`` under the tolerance rule (the one
    rule, ``nnkern.testing.assert_close``) with the rtol of ``dtype``; integer arrays must
    match exactly."""
    if expected is None or actual is None:
        assert actual is None and expected is None, f"{what}: one of actual/expected is None"
        return
    expected = np.asarray(expected)
    if expected.dtype.kind in "iub":
        np.testing.assert_array_equal(to_numpy(actual), expected, err_msg=what)
        return
    nnkern.testing.assert_close(actual, expected,
                                RTOL[np.dtype(dtype)] if rtol is None else rtol, what)


def _as_tuple(value):
    return value if isinstance(value, tuple) else (value,)


def _cast(x, dtype):
    if isinstance(x, np.ndarray) and x.dtype.kind == "f":
        return x.astype(dtype)
    return x


def _copy(x):
    return x.copy() if isinstance(x, np.ndarray) else x


def versions(family, backend):
    """The names in a backend's version table (``VERSIONS`` of ``kernels/<family>/<backend>.py``),
    in reading order; ``[]`` when the backend has one version only.

    Example (a test parametrised over every CPU conv version)::

        @pytest.mark.parametrize("version", versions("conv", "cpu"))
        def test_conv(version):
            check_op("conv2d", [x, w], "cpu", np.float32, version=version)
    """
    from nnkern._dispatch import kernels

    return list(getattr(kernels(family, backend), "VERSIONS", ()))


def run_op(op, inputs, backend, dtype, kwargs=None, grad_out=None):
    """Run ``F.<op>`` (and its backward when ``grad_out`` is given) on a backend.

    Inputs are NumPy arrays; float ones are cast to ``dtype`` and moved to the
    backend's device, and fresh copies are made so in-place ops (running
    statistics, optimizer updates) do not leak between runs. Returns
    ``(outputs tuple, grads tuple or None, device inputs)``; arrays stay on
    the device.
    """
    kwargs = kwargs or {}
    with nnkern.device(backend):
        dev_inputs = [
            to_device(_copy(_cast(x, dtype)), backend) if isinstance(x, np.ndarray) else x
            for x in inputs
        ]
        outs = _as_tuple(getattr(F, op)(*dev_inputs, **kwargs))
        grads = None
        if grad_out is not None:
            dout = to_device(grad_out.astype(dtype), backend)
            fresh = [
                to_device(_copy(_cast(x, dtype)), backend) if isinstance(x, np.ndarray) else x
                for x in inputs
            ]
            grads = _as_tuple(getattr(F, op + "_backward")(dout, *fresh, **kwargs))
    return outs, grads, dev_inputs


def check_op(op, inputs, backend, dtype, kwargs=None, backward=True, rtol=None, seed=0,
             version=None):
    """Check forward (and backward) of ``F.<op>`` on ``backend`` in ``dtype`` against
    the numpy backend in float64. Returns the backend's ``(outputs, grads)``.

    ``version`` (a name from ``versions(family, backend)``) runs that version of the
    backend's kernels: it is passed as the op's ``algo`` keyword to the backend only,
    never to the reference.

    Example (a test body)::

        x = rng.standard_normal((2, 3, 5, 5))
        check_op("avg_pool2d", [x], "cpu", np.float32, {"kernel_size": 2})
    """
    rng = np.random.default_rng(seed)
    ref_outs, _, _ = run_op(op, inputs, "numpy", np.float64, kwargs)
    grad_out = rng.standard_normal(np.shape(ref_outs[0])) if backward else None
    if grad_out is not None:
        _, ref_grads, _ = run_op(op, inputs, "numpy", np.float64, kwargs, grad_out)
    own_kwargs = kwargs if version is None else dict(kwargs or {}, algo=version)
    outs, grads, _ = run_op(op, inputs, backend, dtype, own_kwargs, grad_out)
    assert len(outs) == len(ref_outs)
    for i, (o, r) in enumerate(zip(outs, ref_outs)):
        if hasattr(o, "dtype") and o.dtype.kind == "f":
            assert o.dtype == np.dtype(dtype), f"{op} output {i}: dtype {o.dtype} != {dtype}"
        assert_close(o, r, dtype, f"{op}[{backend},{np.dtype(dtype)}] output {i}", rtol)
    if backward:
        assert len(grads) == len(ref_grads)
        for i, (g, r) in enumerate(zip(grads, ref_grads)):
            assert_close(g, r, dtype, f"{op}_backward[{backend},{np.dtype(dtype)}] grad {i}", rtol)
    return outs, grads


def check_gradients(op, inputs, kwargs=None, wrt=None, eps=1e-6, rtol=1e-6, seed=0):
    """Check ``F.<op>_backward`` on the numpy backend in float64 against central
    differences of ``sum(F.<op>(...) * grad_out)``.

    ``wrt`` lists the input positions to check (default: every float input that
    has a gradient). Inputs must keep away from kinks (max ties, relu at 0).
    """
    kwargs = kwargs or {}
    rng = np.random.default_rng(seed)
    inputs = [_cast(x, np.float64) for x in inputs]
    out0 = _as_tuple(run_op(op, inputs, "numpy", np.float64, kwargs)[0])[0]
    grad_out = rng.standard_normal(np.shape(out0))
    _, grads, _ = run_op(op, inputs, "numpy", np.float64, kwargs, grad_out)
    if wrt is None:
        wrt = [i for i, g in enumerate(grads) if g is not None]
    assert wrt, f"{op}: nothing to check"

    def loss():
        outs, _, _ = run_op(op, inputs, "numpy", np.float64, kwargs)
        return float(np.sum(np.asarray(outs[0]) * grad_out))

    for i in wrt:
        numeric = numerical_gradient(loss, inputs[i], eps)
        assert_close(grads[i], numeric, np.float64, f"{op} d/d(input {i})", rtol)


# --- NaN and inf: PyTorch's semantics, the one rule every backend is held to ----------------

def assert_nonfinite_rule(actual, expected, dtype, what="value", rtol=None):
    """PyTorch's semantics for NaN and inf, the rule for every backend: ``actual`` has NaN
    exactly where ``expected`` has NaN, +inf and -inf exactly where it has them, and the
    finite elements meet the tolerance rule of ``assert_close``.

    ``expected`` is PyTorch's answer, or the float64 reference once it has been held to
    PyTorch's answer (``check_nonfinite`` does both).
    """
    if expected is None or actual is None:
        assert actual is None and expected is None, f"{what}: one of actual/expected is None"
        return
    actual = np.asarray(to_numpy(actual))
    expected = np.asarray(expected)
    assert actual.shape == expected.shape, (
        f"{what}: shape {actual.shape} != expected {expected.shape}"
    )
    for kind, where in (("NaN", np.isnan), ("+inf", np.isposinf), ("-inf", np.isneginf)):
        differ = where(actual) != where(expected)
        if differ.any():
            i = tuple(int(k) for k in np.argwhere(differ)[0])
            raise AssertionError(
                f"{what}: {int(differ.sum())} elements differ in being {kind}; first at {i}: "
                f"got {actual[i]!r}, expected {expected[i]!r} (PyTorch's NaN/inf semantics)"
            )
    finite = np.isfinite(expected)
    assert_close(actual[finite], expected[finite], dtype, what, rtol)


def _torch_linear(torch, x, w, b=None, activation=None):
    y = torch.nn.functional.linear(x, w, b)
    return torch.relu(y) if activation == "relu" else y


def _torch_blur(torch, x, filt_size=3, stride=2):
    from nnkern.kernels.pool.reference import binomial_filter, blur_pads
    C = x.shape[1]
    p0, p1 = blur_pads(filt_size)
    a = torch.tensor(binomial_filter(filt_size), dtype=x.dtype)
    w = torch.outer(a, a).expand(C, 1, filt_size, filt_size)
    xp = torch.nn.functional.pad(x, (p0, p1, p0, p1), mode="reflect")
    return torch.nn.functional.conv2d(xp, w, stride=stride, groups=C)


def _torch_max_blur(torch, x, kernel_size=2, filt_size=3, stride=2):
    m = torch.nn.functional.max_pool2d(x, kernel_size, stride=1)
    return _torch_blur(torch, m, filt_size, stride)


def _torch_dropout(torch, x, p, training=True, seed=0):
    # torch's formula, x * mask / (1 - p), with nnkern's mask (torch draws its own)
    with nnkern.device("numpy"):
        keep = F.dropout(np.ones(tuple(x.shape)), p, training, seed) != 0
    return x * torch.tensor(keep, dtype=x.dtype) / (1 - p)


def _torch_softmax_ce(torch, logits, labels, reduction="mean", label_smoothing=0.0):
    return torch.nn.functional.cross_entropy(logits, labels, reduction=reduction,
                                             label_smoothing=label_smoothing)


# op -> torch(torch, *tensors, **kwargs): what PyTorch computes for the same call; its
# gradients come from autograd. The oracles of check_nonfinite.
TORCH_ORACLES = {
    "relu": lambda torch, x: torch.relu(x),
    "sigmoid": lambda torch, x: torch.sigmoid(x),
    "tanh": lambda torch, x: torch.tanh(x),
    "dropout": _torch_dropout,
    "linear": _torch_linear,
    "blur_pool2d": _torch_blur,
    "max_blur_pool2d": _torch_max_blur,
    "softmax_cross_entropy": _torch_softmax_ce,
}


def torch_answer(op, inputs, kwargs, grad_out):
    """PyTorch's outputs and gradients (float64) of ``F.<op>(*inputs, **kwargs)``, or None
    when torch does not import. Gradients are None for inputs that are not float arrays."""
    try:
        import torch
    except ImportError:
        return None
    tensors = [torch.tensor(x, requires_grad=x.dtype.kind == "f")
               if isinstance(x, np.ndarray) else x for x in inputs]
    out = TORCH_ORACLES[op](torch, *tensors, **kwargs)
    wrt = [t for t in tensors if getattr(t, "requires_grad", False)]
    grads = torch.autograd.grad(out, wrt, torch.tensor(grad_out))
    grads = iter(g.numpy() for g in grads)
    return out.detach().numpy(), [next(grads) if getattr(t, "requires_grad", False) else None
                                  for t in tensors]


def check_nonfinite(op, inputs, backend, dtype, kwargs=None, grad_out=None, rtol=None):
    """Hold ``F.<op>`` on ``backend`` to PyTorch's NaN/inf semantics for inputs (and a
    ``grad_out``) that hold NaN or inf.

    The numpy reference in float64 is first held to PyTorch's answer
    (``TORCH_ORACLES``, where torch imports), then the backend in ``dtype`` to the
    reference, both under ``assert_nonfinite_rule``. Returns the backend's
    ``(outputs, grads)``.
    """
    kwargs = kwargs or {}
    ref_outs, ref_grads, _ = run_op(op, inputs, "numpy", np.float64, kwargs, grad_out)
    torch_result = torch_answer(op, [_cast(x, np.float64) for x in inputs], kwargs, grad_out)
    if torch_result is not None:
        out_t, grads_t = torch_result
        assert_nonfinite_rule(ref_outs[0], out_t, np.float64, f"{op}[numpy] vs torch")
        for i, (g, gt) in enumerate(zip(ref_grads, grads_t)):
            if gt is not None:
                assert_nonfinite_rule(g, gt, np.float64, f"{op}_backward[numpy] grad {i} vs torch")
    outs, grads, _ = run_op(op, inputs, backend, dtype, kwargs, grad_out)
    for i, (o, r) in enumerate(zip(outs, ref_outs)):
        assert_nonfinite_rule(o, r, dtype, f"{op}[{backend},{np.dtype(dtype)}] output {i}", rtol)
    for i, (g, r) in enumerate(zip(grads, ref_grads)):
        assert_nonfinite_rule(g, r, dtype, f"{op}_backward[{backend},{np.dtype(dtype)}] grad {i}",
                              rtol)
    return outs, grads
