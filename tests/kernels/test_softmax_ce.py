"""Losses (softmax cross-entropy, BCE with logits, MSE) on every backend vs the reference."""

import numpy as np
import pytest
from harness import BACKENDS, DTYPES, assert_close, check_gradients, check_op

import nnkern
import nnkern.functional as F

# numpy/cpu run small-but-real shapes; the CUDA simulator runs one Python thread per
# GPU thread, so it gets tiny ones.
CE_SHAPES = {
    "numpy": [(1, 1), (1, 5), (7, 13), (64, 100)],
    "cpu": [(1, 1), (1, 5), (7, 13), (64, 100), (33, 1000), (64, 1000)],  # 64000: prange
    "cuda": [(1, 1), (3, 40)],
}
FLAT_SHAPES = {
    "numpy": [(1,), (7, 13), (2, 3, 5, 5)],
    "cpu": [(1,), (7, 13), (2, 3, 5, 5), (300, 257)],
    "cuda": [(1,), (3, 7)],
}


def _ce_inputs(shape, seed=0, scale=3.0):
    rng = np.random.default_rng(seed)
    N, C = shape
    return rng.standard_normal(shape) * scale, rng.integers(0, C, size=N)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction,smoothing", [("mean", 0.0), ("sum", 0.1), ("none", 0.25)])
def test_softmax_cross_entropy(backend, dtype, reduction, smoothing):
    for shape in CE_SHAPES[backend]:
        logits, labels = _ce_inputs(shape)
        check_op("softmax_cross_entropy", [logits, labels], backend, dtype,
                 {"reduction": reduction, "label_smoothing": smoothing})


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_cross_entropy_with_grad_matches_separate_ops(backend, dtype):
    logits, labels = _ce_inputs(CE_SHAPES[backend][-1], seed=1)
    logits = logits.astype(dtype)
    with nnkern.device(backend):
        x, y = nnkern.to_device(logits), nnkern.to_device(labels)
        loss, grad = F.softmax_cross_entropy_with_grad(x, y, label_smoothing=0.1)
        one = nnkern.to_device(np.ones((), dtype))
        expected_loss = F.softmax_cross_entropy(x, y, label_smoothing=0.1)
        expected_grad = F.softmax_cross_entropy_backward(one, x, y, label_smoothing=0.1)
    assert loss.shape == () and loss.dtype == dtype
    assert_close(loss, nnkern.to_numpy(expected_loss).astype(np.float64), dtype)
    assert_close(grad, nnkern.to_numpy(expected_grad).astype(np.float64), dtype)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_cross_entropy_stable_for_huge_logits(backend, dtype):
    # Logits of +-1e4: exp overflows unless the max is subtracted. Independent float64
    # oracle: log-sum-exp through Python's math on each row.
    import math
    rng = np.random.default_rng(3)
    N, C = (4, 9) if backend == "cuda" else (16, 50)
    logits = rng.choice([-1e4, 1e4], size=(N, C)) + rng.standard_normal((N, C))
    labels = rng.integers(0, C, size=N)
    eps = 0.1
    expected = []
    for row, y in zip(logits, labels):
        m = max(row)
        lse = m + math.log(math.fsum(math.exp(v - m) for v in row))
        expected.append(lse - (1 - eps) * row[y] - eps / C * math.fsum(row))
    expected = np.array(expected)
    p = np.exp(logits - (expected + (1 - eps) * logits[np.arange(N), labels]
                         + eps / C * logits.sum(1))[:, None])
    q = np.full((N, C), eps / C)
    q[np.arange(N), labels] += 1 - eps
    with nnkern.device(backend):
        x = nnkern.to_device(logits.astype(dtype))
        y = nnkern.to_device(labels)
        g = nnkern.to_device(np.ones(N, dtype))
        loss = F.softmax_cross_entropy(x, y, reduction="none", label_smoothing=eps)
        grad = F.softmax_cross_entropy_backward(g, x, y, reduction="none", label_smoothing=eps)
    # float32 holds 1e4 to about 1e-3, so compare against the float64 oracle with that slack
    assert_close(loss, expected, dtype, "loss", rtol=1e-6 if dtype == np.float64 else 1e-4)
    assert np.isfinite(nnkern.to_numpy(grad)).all()
    assert_close(grad, p - q, dtype, "grad", rtol=1e-6 if dtype == np.float64 else 1e-3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_softmax_cross_entropy_propagates_nan(backend):
    logits = np.zeros((2, 20), np.float32)
    logits[1, 17] = np.nan
    with nnkern.device(backend):
        loss = F.softmax_cross_entropy(nnkern.to_device(logits), nnkern.to_device(np.array([0, 1])),
                                       reduction="none")
    loss = nnkern.to_numpy(loss)
    assert loss[0] == pytest.approx(np.log(20)) and np.isnan(loss[1])


@pytest.mark.parametrize("reduction,smoothing", [("mean", 0.0), ("sum", 0.2), ("none", 0.3)])
def test_softmax_cross_entropy_gradients(reduction, smoothing):
    logits, labels = _ce_inputs((5, 7))
    check_gradients("softmax_cross_entropy", [logits, labels],
                    {"reduction": reduction, "label_smoothing": smoothing}, wrt=[0])


def test_softmax_cross_entropy_matches_torch_semantics():
    # Known values: uniform logits give log(C); smoothing 1 gives the mean of -log p.
    logits = np.zeros((2, 4))
    labels = np.array([1, 3])
    assert float(F.softmax_cross_entropy(logits, labels)) == pytest.approx(np.log(4))
    x = np.array([[2.0, 0.0, -1.0]])
    logp = x - np.log(np.exp(x).sum())
    loss = F.softmax_cross_entropy(x, np.array([0]), label_smoothing=1.0)
    assert float(loss) == pytest.approx(-logp.mean())
    assert F.softmax_cross_entropy(x, np.array([0]), reduction="none").shape == (1,)


def test_losses_match_torch_when_installed():
    torch = pytest.importorskip("torch")
    tF = torch.nn.functional
    logits, labels = _ce_inputs((6, 5), seed=7)
    t = np.random.default_rng(8).uniform(0, 1, logits.shape)
    for reduction in ("mean", "sum", "none"):
        for eps in (0.0, 0.3):
            x = torch.tensor(logits, requires_grad=True)
            ref = tF.cross_entropy(x, torch.tensor(labels), reduction=reduction,
                                   label_smoothing=eps)
            g = np.random.default_rng(9).standard_normal(ref.shape)
            ref.backward(torch.tensor(g))
            kwargs = {"reduction": reduction, "label_smoothing": eps}
            assert_close(F.softmax_cross_entropy(logits, labels, **kwargs), ref.detach().numpy(),
                         np.float64, "cross_entropy")
            assert_close(F.softmax_cross_entropy_backward(g, logits, labels, **kwargs),
                         x.grad.numpy(), np.float64, "cross_entropy grad")
        for ours, theirs in ((F.binary_cross_entropy_with_logits, tF.binary_cross_entropy_with_logits),
                             (F.mse_loss, tF.mse_loss)):
            assert_close(ours(logits, t, reduction),
                         theirs(torch.tensor(logits), torch.tensor(t), reduction=reduction).numpy(),
                         np.float64, ours.__name__)


@pytest.mark.parametrize("op", ["binary_cross_entropy_with_logits", "mse_loss"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_elementwise_losses(op, backend, dtype, reduction):
    rng = np.random.default_rng(2)
    for shape in FLAT_SHAPES[backend]:
        x = rng.standard_normal(shape) * 4
        t = rng.uniform(0, 1, shape)
        check_op(op, [x, t], backend, dtype, {"reduction": reduction})


@pytest.mark.parametrize("op", ["binary_cross_entropy_with_logits", "mse_loss"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_elementwise_loss_gradients(op, reduction):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 4)) * 3
    t = rng.uniform(0, 1, (3, 4))
    check_gradients(op, [x, t], {"reduction": reduction}, wrt=[0])


def test_bce_with_logits_is_stable():
    x = np.array([-1e4, -50.0, 0.0, 50.0, 1e4], np.float32)
    t = np.array([0.0, 1.0, 0.5, 0.0, 1.0], np.float32)
    loss = F.binary_cross_entropy_with_logits(x, t, reduction="none")
    assert np.allclose(loss, [0.0, 50.0, np.log(2), 50.0, 0.0])


# --- validation ------------------------------------------------------------------------------


def test_softmax_ce_errors():
    x = np.zeros((3, 4), np.float32)
    y = np.array([0, 1, 2])
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\).*got values in \[-1, 2\]"):
        F.softmax_cross_entropy(x, np.array([0, -1, 2]))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\).*got values in \[0, 4\]"):
        F.softmax_cross_entropy(x, np.array([0, 4, 2]))
    with pytest.raises(TypeError, match="labels must be an integer array.*float"):
        F.softmax_cross_entropy(x, np.array([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match=r"labels must have shape \(3,\), got \(3, 1\)"):
        F.softmax_cross_entropy(x, y.reshape(3, 1))
    with pytest.raises(ValueError, match=r"logits must have 2 dimensions.*\(N, C\).*got shape"):
        F.softmax_cross_entropy(np.zeros(4, np.float32), y)
    with pytest.raises(TypeError, match="logits must be float32 or float64, got dtype int64"):
        F.softmax_cross_entropy(np.zeros((3, 4), np.int64), y)
    with pytest.raises(ValueError, match="reduction must be one of.*got 'avg'"):
        F.softmax_cross_entropy(x, y, reduction="avg")
    with pytest.raises(ValueError, match=r"label_smoothing must lie in \[0, 1\], got 1.5"):
        F.softmax_cross_entropy(x, y, label_smoothing=1.5)
    with pytest.raises(ValueError, match="must hold one value.*got shape"):
        F.softmax_cross_entropy_backward(np.ones(3, np.float32), x, y)
    with pytest.raises(ValueError, match=r"grad_out must have shape \(3,\), got \(4,\)"):
        F.softmax_cross_entropy_backward(np.ones(4, np.float32), x, y, reduction="none")
    with pytest.raises(TypeError, match="grad_out has dtype float64 but the input has float32"):
        F.softmax_cross_entropy_backward(np.ones((), np.float64), x, y)


def test_elementwise_loss_errors():
    x = np.zeros((3, 4), np.float32)
    with pytest.raises(ValueError, match=r"targets must have shape \(3, 4\), got \(4, 3\)"):
        F.binary_cross_entropy_with_logits(x, np.zeros((4, 3), np.float32))
    with pytest.raises(TypeError, match="target has dtype float64 but pred has float32"):
        F.mse_loss(x, np.zeros((3, 4)))
    with pytest.raises(ValueError, match="reduction must be one of"):
        F.mse_loss(x, x, reduction="max")


# --- real GPU, real shapes ----------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1024, 1000), (4097, 10), (3, 50000)])
def test_softmax_cross_entropy_gpu(dtype, shape):
    logits, labels = _ce_inputs(shape)
    check_op("softmax_cross_entropy", [logits, labels], "cuda", dtype,
             {"reduction": "mean", "label_smoothing": 0.1})
    check_op("softmax_cross_entropy", [logits, labels], "cuda", dtype, {"reduction": "none"})


@pytest.mark.gpu
@pytest.mark.parametrize("op", ["binary_cross_entropy_with_logits", "mse_loss"])
def test_elementwise_losses_gpu(op):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((512, 1000))
    t = rng.uniform(0, 1, x.shape)
    for reduction in ("mean", "none"):
        check_op(op, [x, t], "cuda", np.float32, {"reduction": reduction})


@pytest.mark.gpu
def test_host_array_on_gpu_device_is_an_error():
    from nnkern.functional import DeviceMismatchError
    with nnkern.device("cuda"), pytest.raises(DeviceMismatchError, match="logits is a numpy"):
        F.softmax_cross_entropy(np.zeros((2, 3), np.float32), np.array([0, 1]))
