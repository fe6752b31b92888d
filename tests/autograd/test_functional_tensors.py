"""Every differentiable op of ``nnkern.functional`` on Tensors, on every backend: the
recorded gradient matches central differences in float64 (the CUDA backend runs under
Numba's simulator, on tiny shapes)."""

import numpy as np
import pytest

import nnkern
import nnkern.functional as F
from nnkern.autograd.rules import TABLE
from nnkern.testing import gradcheck

BACKENDS = ["numpy", "cpu", "cuda"]


def _rng(seed=0):
    return np.random.default_rng(seed)


def _distinct(shape, seed=1):
    # distinct values one apart: no ties for max-pooling, no kinks within eps
    n = int(np.prod(shape))
    return _rng(seed).permutation(n).reshape(shape).astype(np.float64) * 0.1


def _away_from_zero(shape, seed=2):
    x = _rng(seed).standard_normal(shape)
    return np.where(np.abs(x) < 0.1, 0.5, x)


R = _rng(3)
CASES = {
    "relu": (lambda x: F.relu(x), [_away_from_zero((2, 3, 4))]),
    "sigmoid": (lambda x: F.sigmoid(x), [R.standard_normal((3, 4))]),
    "tanh": (lambda x: F.tanh(x), [R.standard_normal((3, 4))]),
    "softmax": (lambda x: F.softmax(x, axis=1), [R.standard_normal((2, 5))]),
    "log_softmax": (lambda x: F.log_softmax(x, axis=0), [R.standard_normal((4, 3))]),
    "bias_add": (lambda x, b: F.bias_add(x, b), [R.standard_normal((2, 3, 2, 2)),
                                                R.standard_normal(3)]),
    "dropout": (lambda x: F.dropout(x, 0.3, True, seed=4), [R.standard_normal((3, 5))]),
    "matmul": (lambda a, b: F.matmul(a, b, trans_b=True), [R.standard_normal((3, 4)),
                                                          R.standard_normal((5, 4))]),
    "linear": (lambda x, w, b: F.linear(x, w, b), [R.standard_normal((3, 4)),
                                                  R.standard_normal((2, 4)), R.standard_normal(2)]),
    "linear-relu": (lambda x, w, b: F.linear(x, w, b, activation="relu"),
                    [R.standard_normal((3, 4)), R.standard_normal((5, 4)),
                     np.full(5, 3.0)]),  # a large bias keeps the outputs away from the kink
    "conv2d": (lambda x, w, b: F.conv2d(x, w, b, stride=1, padding=1),
               [R.standard_normal((2, 2, 5, 4)), R.standard_normal((3, 2, 3, 3)),
                R.standard_normal(3)]),
    "conv2d-groups-stride": (lambda x, w: F.conv2d(x, w, None, stride=2, groups=2),
                             [R.standard_normal((1, 4, 6, 5)), R.standard_normal((2, 2, 2, 2))]),
    "max_pool2d": (lambda x: F.max_pool2d(x, 2), [_distinct((1, 2, 4, 4))]),
    "max_pool2d-indices": (lambda x: F.max_pool2d(x, 3, stride=2, return_indices=True)[0],
                           [_distinct((1, 1, 5, 5))]),
    "avg_pool2d": (lambda x: F.avg_pool2d(x, 2, padding=1), [R.standard_normal((1, 2, 5, 5))]),
    "blur_pool2d": (lambda x: F.blur_pool2d(x), [R.standard_normal((1, 2, 5, 6))]),
    "max_blur_pool2d": (lambda x: F.max_blur_pool2d(x, 2), [_distinct((1, 1, 6, 6))]),
    "batch_norm-train": (lambda x, g, b: F.batch_norm(x, g, b, None, None, True),
                         [R.standard_normal((4, 3, 2, 2)), R.standard_normal(3) + 1.5,
                          R.standard_normal(3)]),
    "batch_norm-eval": (lambda x, g, b: F.batch_norm(x, g, b, np.zeros(3), np.ones(3) * 2,
                                                     False),
                        [R.standard_normal((4, 3)), R.standard_normal(3),
                         R.standard_normal(3)]),
    "softmax_cross_entropy": (lambda x, y: F.softmax_cross_entropy(x, y, label_smoothing=0.1),
                              [R.standard_normal((4, 3)), np.array([0, 2, 1, 2])]),
    "softmax_cross_entropy-none": (lambda x, y: F.softmax_cross_entropy(x, y, "none"),
                                   [R.standard_normal((4, 3)), np.array([0, 2, 1, 2])]),
    "binary_cross_entropy_with_logits": (
        lambda x, t: F.binary_cross_entropy_with_logits(x, t, "sum"),
        [R.standard_normal((3, 2)), R.random((3, 2))], [0]),  # targets: not differentiable
    "mse_loss": (lambda p, t: F.mse_loss(p, t), [R.standard_normal((3, 2)),
                                                R.standard_normal((3, 2))]),
    "local_response_norm": (lambda x: F.local_response_norm(x, 3, alpha=1.0, beta=0.75, k=2.0),
                            [R.standard_normal((2, 5, 2, 2))]),
}


def _op_of(case):
    return case.split("-")[0]


def test_every_differentiable_op_has_a_case():
    present = {name for name in TABLE if callable(getattr(F, name, None))}
    assert present <= {_op_of(c) for c in CASES}, present - {_op_of(c) for c in CASES}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_recorded_gradient_matches_central_differences(case, backend):
    fn, inputs, *wrt = CASES[case]
    # the simulator runs every thread in Python: a sample of elements keeps CI fast
    sample = 12 if backend == "cuda" else None
    with nnkern.device(backend):
        assert gradcheck(fn, inputs, rtol=1e-5, max_elements=sample,
                         wrt=wrt[0] if wrt else None)


def test_arrays_in_arrays_out_and_tensors_in_tensors_out():
    x = np.array([[-1.0, 2.0]])
    assert isinstance(F.relu(x), np.ndarray)
    y = F.relu(nnkern.tensor(x))
    assert isinstance(y, nnkern.Tensor) and not y.requires_grad  # nothing to record
    grads = F.relu_backward(nnkern.tensor(np.ones((1, 2))), nnkern.tensor(x))
    assert isinstance(grads, nnkern.Tensor)


def test_fused_softmax_cross_entropy_scales_its_saved_gradient():
    x = nnkern.tensor(R.standard_normal((3, 4)), requires_grad=True)
    loss = F.softmax_cross_entropy(x, np.array([1, 0, 3]))
    (loss * 3.0).backward()
    expected = 3.0 * F.softmax_cross_entropy_backward(np.array(1.0), x.data, np.array([1, 0, 3]))
    np.testing.assert_allclose(x.grad, expected, rtol=1e-12)


def test_input_grad_false_skips_only_the_input_gradient():
    rng = _rng(5)
    x, w, b = rng.standard_normal((2, 3, 5, 5)), rng.standard_normal((4, 3, 3, 3)), np.ones(4)
    g = rng.standard_normal((2, 4, 5, 5))
    full = F.conv2d_backward(g, x, w, b, padding=1)
    part = F.conv2d_backward(g, x, w, b, padding=1, input_grad=False)
    assert part[0] is None
    np.testing.assert_array_equal(part[1], full[1])
    np.testing.assert_array_equal(part[2], full[2])
    xl, wl, gl = rng.standard_normal((3, 4)), rng.standard_normal((2, 4)), rng.standard_normal((3, 2))
    dx, dw, _ = F.linear_backward(gl, xl, wl, None, input_grad=False)
    assert dx is None
    np.testing.assert_array_equal(dw, F.linear_backward(gl, xl, wl)[1])


def test_the_tape_skips_the_backward_data_pass_of_an_input_that_needs_no_gradient(monkeypatch):
    from nnkern.kernels.conv import reference

    calls = []
    original = reference.conv2d_backward_data
    monkeypatch.setattr(reference, "conv2d_backward_data",
                        lambda *a, **k: calls.append(1) or original(*a, **k))
    rng = _rng(6)
    w = nnkern.tensor(rng.standard_normal((2, 1, 3, 3)), requires_grad=True)
    for x_needs_grad in (False, True):
        x = nnkern.tensor(rng.standard_normal((2, 1, 4, 4)), requires_grad=x_needs_grad)
        F.conv2d(x, w).sum().backward()
        assert len(calls) == int(x_needs_grad)
        assert (x.grad is not None) == x_needs_grad


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("activation", [None, "relu"])
def test_linear_on_tensors_straight_path_against_float64(backend, dtype, activation,
                                                        monkeypatch):
    # a Dense layer's call (three Tensors whose arrays pass F's one-test check) is recorded
    # by LinearRule's straight-line path; its gradients, with and without an input gradient,
    # accumulated over two backward calls, and for an upstream gradient that is not
    # C-contiguous (the generic path), match NumPy in float64
    rule = F.RULES["linear"]
    calls = []
    checked = rule.checked
    monkeypatch.setattr(rule, "checked", lambda *a: calls.append(1) or checked(*a))
    rng = _rng(7)
    x64, w64, b64 = (rng.standard_normal((6, 5)), rng.standard_normal((4, 5)),
                     rng.standard_normal(4))
    g64 = rng.standard_normal((6, 4))
    z = x64 @ w64.T + b64
    mask = z > 0 if activation == "relu" else np.ones_like(z, bool)
    gz = np.where(mask, g64, 0.0)
    expected = {"x": gz @ w64, "w": gz.T @ x64, "b": gz.sum(0),
                "y": np.where(mask, z, 0.0)}
    tol = {"rtol": 1e-4, "atol": 1e-5} if dtype == np.float32 else {"rtol": 1e-10}
    with nnkern.device(backend):
        for x_grad, upstream in ((True, g64), (False, g64), (True, np.asfortranarray(g64))):
            x = nnkern.tensor(x64.astype(dtype), requires_grad=x_grad)
            w = nnkern.tensor(w64.astype(dtype), requires_grad=True)
            b = nnkern.tensor(b64.astype(dtype), requires_grad=True)
            calls.clear()
            for _ in range(2):
                y = F.linear(x, w, b, activation=activation)
                np.testing.assert_allclose(y.numpy(), expected["y"], **tol)
                y.backward(upstream.astype(dtype, order="K"))
            assert len(calls) == (2 if upstream.flags.c_contiguous else 0)
            assert (x.grad is not None) == x_grad
            for name, t in (("x", x), ("w", w), ("b", b)):
                if t.requires_grad:
                    np.testing.assert_allclose(t.grad, 2 * expected[name], **tol,
                                               err_msg=f"{name} {backend} {activation}")


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_softmax_cross_entropy_loss_call_against_float64(backend, reduction):
    # a loss's call (four positional arguments, NumPy labels: the rule's short path) gives
    # the loss and, after backward (twice: it accumulates), d loss / d logits of NumPy's
    # float64 formula with label smoothing
    rng = _rng(8)
    z, labels, eps = rng.standard_normal((5, 4)), np.array([3, 0, 1, 3, 2]), 0.1
    q = np.full((5, 4), eps / 4)
    q[np.arange(5), labels] += 1 - eps
    logp = z - z.max(1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(1, keepdims=True))
    scale = 1 / 5 if reduction == "mean" else 1.0
    with nnkern.device(backend):
        x = nnkern.tensor(z, requires_grad=True)
        for _ in range(2):
            loss = F.softmax_cross_entropy(x, labels, reduction, eps)
            np.testing.assert_allclose(loss.item(), -(q * logp).sum() * scale, rtol=1e-10)
            loss.backward()
    np.testing.assert_allclose(x.grad, 2 * scale * (np.exp(logp) - q), rtol=1e-10, atol=1e-14)
