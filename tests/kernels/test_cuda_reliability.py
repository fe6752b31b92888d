"""Issue 12's NaN and inf rules on the CUDA backend (under the simulator in CI).

PyTorch's semantics, with expected values worked out here by hand or by PyTorch itself
(an independent oracle), never by the code under test:

* softmax-CE: a logit masked with -inf is simply absent from the softmax; its gradient is 0;
  float32 logits of +-3e38 give finite results;
* dropout multiplies by its 0/1 mask, so a dropped NaN stays NaN (forward and backward);
* relu backward selects on the input: ``0 if x <= 0 else g`` (x = NaN passes g, NaN in g
  where x <= 0 becomes 0); the fused linear + relu backward selects on the saved output;
* blur and max-blur backward send a NaN of grad_out to exactly the inputs a nonzero tap
  connects it to.
"""

import math

import numpy as np
import pytest
from harness import DTYPES, assert_close

import nnkern
import nnkern.functional as F

BACKEND = "cuda"


def _on(fn, *arrays, **kwargs):
    with nnkern.device(BACKEND):
        args = (nnkern.to_device(a) if isinstance(a, np.ndarray) else a for a in arrays)
        out = fn(*args, **kwargs)
        if isinstance(out, tuple):
            return tuple(None if o is None else nnkern.to_numpy(o) for o in out)
        return nnkern.to_numpy(out)


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_ce_masked_logit(dtype):
    logits = np.array([[0.0, -np.inf, 1.0, 2.0]], dtype)
    labels = np.array([0])
    s = 1 + math.e + math.e**2  # the -inf class contributes exp(-inf) = 0
    want_loss = math.log(s)  # 2.4076
    assert abs(want_loss - 2.4076) < 1e-4
    loss = _on(F.softmax_cross_entropy, logits, labels)
    assert_close(loss, np.float64(want_loss), dtype, "loss")
    g = np.ones((), dtype)
    dlogits = _on(F.softmax_cross_entropy_backward, g, logits, labels)
    want = np.array([[1 / s - 1, 0.0, math.e / s, math.e**2 / s]])
    assert dlogits[0, 1] == 0.0  # exactly: the masked class gets no gradient
    assert_close(dlogits, want, dtype, "dlogits")
    loss, grad = _on(F.softmax_cross_entropy_with_grad, logits, labels)
    assert_close(loss, np.float64(want_loss), dtype, "fused loss")
    assert_close(grad, want, dtype, "fused dlogits")


def test_softmax_ce_float32_extremes():
    # +-3e38: z = x - max overflows to -inf in float32 for the small logit, exp(-inf) = 0
    logits = np.array([[3e38, -3e38, 0.0], [-3e38, 0.0, 3e38]], np.float32)
    labels = np.array([0, 2])
    loss = _on(F.softmax_cross_entropy, logits, labels, reduction="none")
    np.testing.assert_array_equal(loss, [0.0, 0.0])
    loss, grad = _on(F.softmax_cross_entropy_with_grad, logits, labels, reduction="sum")
    assert loss == 0.0
    np.testing.assert_array_equal(grad, np.zeros((2, 3)))


def test_softmax_ce_masked_logit_with_smoothing_stays_defined_elsewhere():
    # with smoothing the -inf class does enter sum(z) (PyTorch gives inf there too), but
    # a row without masked logits next to it is unaffected
    logits = np.array([[0.0, 1.0, 2.0, 3.0]], np.float32)
    loss = _on(F.softmax_cross_entropy, logits, np.array([1]), label_smoothing=0.2)
    z = logits[0].astype(np.float64) - 3.0
    log_s = math.log(np.exp(z).sum())
    want = log_s - 0.8 * z[1] - 0.2 / 4 * z.sum()
    assert_close(loss, np.float64(want), np.float32, "smoothed loss")


@pytest.mark.parametrize("dtype", DTYPES)
def test_dropout_keeps_nan(dtype):
    x = np.full(64, np.nan, dtype)
    y = _on(F.dropout, x, 0.5, seed=1)
    assert np.isnan(y).all()
    dx = _on(F.dropout_backward, x, np.ones(64, dtype), 0.5, seed=1)
    assert np.isnan(dx).all()
    # finite inputs: dropped elements are exactly 0, kept ones x / (1 - p), both present
    ones = np.ones(64, dtype)
    y = _on(F.dropout, ones, 0.5, seed=1)
    assert set(np.unique(y)) == {0.0, 2.0}


@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_backward_selects_on_x(dtype):
    x = np.array([np.nan, -1.0, 0.0, 2.0, np.nan], dtype)
    g = np.array([1.5, np.nan, np.nan, 3.0, np.nan], dtype)
    dx = _on(F.relu_backward, g, x)
    np.testing.assert_array_equal(dx, np.array([1.5, 0.0, 0.0, 3.0, np.nan], dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_relu_backward_selects_on_saved_output(dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4)).astype(dtype)
    w = rng.standard_normal((2, 4)).astype(dtype)
    b = rng.standard_normal(2).astype(dtype)
    out = np.array([[np.nan, -1.0], [0.5, 0.0], [2.0, -3.0]], dtype)  # saved relu output
    g = np.array([[1.0, np.nan], [2.0, np.nan], [-1.0, 4.0]], dtype)
    # PyTorch's rule on the saved output: 0 where out <= 0, else g (out = NaN passes g)
    dy = np.array([[1.0, 0.0], [2.0, 0.0], [-1.0, 0.0]])
    dx, dw, db = _on(F.linear_backward, g, x, w, b, activation="relu", out=out)
    assert_close(dx, dy @ w.astype(np.float64), dtype, "dx")
    assert_close(dw, dy.T @ x.astype(np.float64), dtype, "dw")
    assert_close(db, dy.sum(0), dtype, "db")


def _torch_blur_grads(x, g, filt_size, stride, max_kernel=None):
    """dx of (max_pool2d at stride 1, then) the reflect-padded binomial blur, by autograd."""
    torch = pytest.importorskip("torch")  # the independent oracle for the NaN pattern
    C = x.shape[1]
    taps = np.array([math.comb(filt_size - 1, i) for i in range(filt_size)], np.float64)
    filt = np.outer(taps, taps) / taps.sum() ** 2
    tx = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    m = tx if max_kernel is None else torch.nn.functional.max_pool2d(tx, max_kernel, 1)
    p0, p1 = (filt_size - 1) // 2, filt_size // 2
    padded = torch.nn.functional.pad(m, (p0, p1, p0, p1), mode="reflect")
    w = torch.tensor(np.broadcast_to(filt, (C, 1, filt_size, filt_size)).copy())
    y = torch.nn.functional.conv2d(padded, w, stride=stride, groups=C)
    y.backward(torch.tensor(g, dtype=torch.float64))
    return tx.grad.numpy()


@pytest.mark.parametrize("filt_size", [2, 3, 4])
def test_blur_backward_nan_reaches_connected_inputs_only(filt_size):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 2, 7, 6))
    y = _on(F.blur_pool2d, x.astype(np.float32), filt_size=filt_size, stride=2)
    g = rng.standard_normal(y.shape)
    g[0, 0, 1, 1] = np.nan
    g[0, 1, -1, 0] = np.nan
    want = _torch_blur_grads(x, g, filt_size, 2)
    dx = _on(F.blur_pool2d_backward, g.astype(np.float32), x.astype(np.float32),
             filt_size=filt_size, stride=2)
    np.testing.assert_array_equal(np.isnan(dx), np.isnan(want))
    ok = ~np.isnan(want)
    assert_close(dx[ok], want[ok], np.float32, "finite dx")


@pytest.mark.parametrize("filt_size", [2, 3])
def test_max_blur_backward_nan_reaches_connected_inputs_only(filt_size):
    rng = np.random.default_rng(2)
    x = rng.permutation(2 * 8 * 7).reshape(1, 2, 8, 7) / 10.0  # distinct: no max ties
    y = _on(F.max_blur_pool2d, x.astype(np.float32), kernel_size=2, filt_size=filt_size,
            stride=2)
    g = rng.standard_normal(y.shape)
    g[0, 0, 0, 2] = np.nan
    g[0, 1, 2, 1] = np.nan
    want = _torch_blur_grads(x, g, filt_size, 2, max_kernel=2)
    dx = _on(F.max_blur_pool2d_backward, g.astype(np.float32), x.astype(np.float32),
             kernel_size=2, filt_size=filt_size, stride=2)
    np.testing.assert_array_equal(np.isnan(dx), np.isnan(want))
    ok = ~np.isnan(want)
    assert_close(dx[ok], want[ok], np.float32, "finite dx")
