"""Checking numbers: one tolerance rule, central differences, and ``gradcheck``.

``gradcheck`` compares the gradients that autograd computes for a function of
Tensors with central differences in float64. A student checks a hand-written
op in three lines:

    >>> import numpy as np, nnkern
    >>> from nnkern.testing import gradcheck
    >>> gradcheck(lambda x: (x * x.exp()).sum(), [np.linspace(-1.0, 1.0, 5)])
    True

The tolerance rule (the same for every check in the project): element-wise
``|actual - expected| <= rtol * (|expected| + rms(expected))``. The ``|expected|``
term lets large values carry proportionally large rounding error; the ``rms``
term (the array's typical magnitude) keeps elements that cancel to near zero from
demanding more digits than their inputs had.
"""

import numpy as np

from .autograd import Tensor, no_grad, tensor
from .device import get_device, to_numpy


def assert_close(actual, expected, rtol, what="value"):
    """Assert ``actual`` matches ``expected`` under the tolerance rule above; the message
    names the worst element."""
    actual = to_numpy(actual.data if isinstance(actual, Tensor) else actual)
    expected = np.asarray(to_numpy(expected))
    if actual.shape != expected.shape:
        raise AssertionError(f"{what}: shape {actual.shape} != expected {expected.shape}")
    if np.isfinite(actual).all() != np.isfinite(expected).all():
        raise AssertionError(f"{what}: NaN/inf in one of actual/expected but not the other")
    a = actual.astype(np.float64)
    e = expected.astype(np.float64)
    rms = float(np.sqrt(np.mean(e * e))) if e.size else 0.0
    tol = rtol * (np.abs(e) + rms)
    err = np.abs(a - e)
    bad = ~(err <= tol)
    if bad.any():
        i = np.unravel_index(np.argmax(np.where(bad, err - tol, -np.inf)), e.shape)
        raise AssertionError(
            f"{what}: {int(bad.sum())}/{e.size} elements off; worst at {i}: got {a[i]!r}, "
            f"expected {e[i]!r}, tolerance {tol[i]:.3g} (rtol {rtol:g})"
        )


def numerical_gradient(f, x, eps=1e-6, indices=None):
    """Central differences of the scalar function ``f()`` with respect to the array ``x``,
    which is changed in place and restored (it must be contiguous). With ``indices``,
    only at those flat positions: a 1-D array in their order."""
    if not x.flags.c_contiguous:
        raise ValueError("numerical_gradient needs a contiguous x (it perturbs a flat view)")
    flat = x.reshape(-1)
    where = range(flat.size) if indices is None else [int(i) for i in indices]
    values = np.zeros(len(where))
    for k, i in enumerate(where):
        old = flat[i].copy()
        flat[i] = old + eps
        up = float(f())
        flat[i] = old - eps
        down = float(f())
        flat[i] = old
        values[k] = (up - down) / (2 * eps)
    return values.reshape(x.shape) if indices is None else values


def gradcheck(fn, inputs, eps=1e-6, rtol=1e-6, max_elements=None, seed=0, device=None,
              wrt=None):
    """Check the autograd gradients of ``fn`` against central differences, in float64.

    Args:
        fn: a function of Tensors returning a Tensor of any shape, built from nnkern ops.
        inputs: arrays, numbers or Tensors. Float ones become float64 Tensors on ``device``
            (default the current one), leaves that require grad; others pass as they are
            (integer labels, say).
        wrt: positions of the inputs to differentiate (default: every float input); the
            other float inputs are constants (targets, say).
        eps: the central-difference step.
        rtol: the tolerance of the one rule (see the module docstring).
        max_elements: check at most this many elements of each input (a seeded random
            choice); None checks all.
        seed: seeds the random projection of the output and the element choice.

    The output is projected on a fixed random array to a scalar, so every output element
    counts. Returns True; raises AssertionError naming the input and the worst element.
    Avoid kinks (relu at 0, ties of a max): differences across a kink are not gradients.
    """
    device = device or get_device()
    rng = np.random.default_rng(seed)
    leaves = []
    args = []
    for value in inputs:
        data = value.data if isinstance(value, Tensor) else value
        host = np.asarray(to_numpy(data))
        if host.dtype.kind == "f":
            check = wrt is None or len(args) in wrt
            t = tensor(host.astype(np.float64), requires_grad=check, device=device)
            if check:
                leaves.append((len(args), t))
            args.append(t)
        else:
            args.append(value)
    if not leaves:
        raise ValueError("gradcheck needs at least one float input to differentiate")
    out = fn(*args)
    if not isinstance(out, Tensor):
        raise TypeError(f"fn must return a Tensor, got {type(out).__name__}")
    projection = rng.standard_normal(out.shape)
    weight = tensor(projection, device=device)
    (out * weight).sum().backward()

    def scalar():
        with no_grad():
            return float((fn(*args) * weight).sum().item())

    for position, t in leaves:
        analytic = np.zeros(t.shape) if t.grad is None else to_numpy(t.grad)
        indices = None
        if max_elements is not None and t.size > max_elements:
            indices = np.sort(rng.choice(t.size, max_elements, replace=False))
        numeric = numerical_gradient(scalar, t.data, eps, indices)
        got = analytic if indices is None else analytic.reshape(-1)[indices]
        assert_close(got, numeric, rtol, f"gradient of input {position}")
    return True
