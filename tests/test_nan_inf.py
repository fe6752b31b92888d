"""NaN and inf follow PyTorch on every backend (issue 12, items 2-4).

Each case states the answer by hand where it is short, then ``check_nonfinite``
(tests/harness.py, the one place of the rule) holds the reference to PyTorch's
answer and every backend to the reference, NaN for NaN and inf for inf.
"""

import numpy as np
import pytest
from harness import BACKENDS, DTYPES, assert_nonfinite_rule, check_nonfinite

import nnkern
import nnkern.functional as F

nan, inf = np.nan, np.inf


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_relu(backend, dtype):
    x = np.array([-inf, -1.0, -0.0, 0.0, 2.0, inf, nan, nan, -1.0, 3.0])
    g = np.array([1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 5.0, nan, nan, -inf])
    (y,), (dx,) = check_nonfinite("relu", [x], backend, dtype, grad_out=g)
    # torch's threshold_backward: 0 where x <= 0, else g (a NaN x passes g)
    np.testing.assert_array_equal(nnkern.to_numpy(y), [0, 0, 0, 0, 2, inf, nan, nan, 0, 3])
    np.testing.assert_array_equal(nnkern.to_numpy(dx), [0, 0, 0, 0, 1, 1, 5, nan, 0, -inf])


@pytest.mark.parametrize("op", ["sigmoid", "tanh"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_smooth_activations(backend, op):
    x = np.array([-inf, -3.0, 0.5, 3.0, inf, nan])
    g = np.array([1.0, nan, inf, 1.0, 1.0, 1.0])
    check_nonfinite(op, [x], backend, np.float32, grad_out=g)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_dropout_keeps_nan_and_inf(backend, dtype):
    n = 64
    x = np.where(np.arange(n) % 3 == 0, nan, np.where(np.arange(n) % 3 == 1, inf, 1.5))
    g = np.where(np.arange(n) % 4 == 0, nan, -2.0)
    kwargs = {"p": 0.5, "training": True, "seed": 1}
    (y,), (dx,) = check_nonfinite("dropout", [x], backend, dtype, kwargs, grad_out=g)
    y, dx = nnkern.to_numpy(y), nnkern.to_numpy(dx)
    # the case: every NaN stays NaN, kept or dropped; a dropped inf is NaN (inf * 0)
    assert np.isnan(y[::3]).all() and np.isnan(dx[::4]).all()
    kept = y[2::3] != 0
    assert 0 < kept.sum() < kept.size              # both branches of the mask are tested
    with nnkern.device(backend):
        all_nan = nnkern.to_numpy(F.dropout(nnkern.to_device(np.full(8, nan, dtype)), 0.5,
                                            seed=1))
    assert np.isnan(all_nan).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_dropout_drops_inf_to_nan(backend):
    # where the mask drops an element, x * 0 * scale: inf gives NaN, a finite x gives 0
    x = np.full(32, inf)
    with nnkern.device(backend):
        y = nnkern.to_numpy(F.dropout(nnkern.to_device(x), 0.5, seed=3))
        ones = nnkern.to_numpy(F.dropout(nnkern.to_device(np.ones(32)), 0.5, seed=3))
    dropped = ones == 0
    assert dropped.any() and (~dropped).any()
    assert np.isnan(y[dropped]).all() and np.isposinf(y[~dropped]).all()


def _blur_input(shape, seed=0):
    return np.random.default_rng(seed).uniform(0.5, 1.5, shape)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_blur_pool2d_backward_nan_reaches_only_its_taps(backend, dtype):
    x = _blur_input((1, 2, 7, 8))
    kwargs = {"filt_size": 3, "stride": 2}
    g = np.ones((1, 2, 4, 4))
    g[0, 0, 1, 2] = nan
    g[0, 1, 3, 0] = -inf
    _, (dx,) = check_nonfinite("blur_pool2d", [x], backend, dtype, kwargs, grad_out=g)
    # by hand: output (1, 2) reads the padded rows 2..4 and columns 4..6, i.e. input rows
    # 1..3 and columns 3..5 (no reflection there); nothing else may turn NaN
    expected = np.zeros(x.shape, bool)
    expected[0, 0, 1:4, 3:6] = True
    np.testing.assert_array_equal(np.isnan(nnkern.to_numpy(dx)[:, :1]), expected[:, :1])
    assert np.isneginf(nnkern.to_numpy(dx)[0, 1]).sum() >= 4


@pytest.mark.parametrize("backend", BACKENDS)
def test_max_blur_pool2d_backward_nan_reaches_only_its_taps(backend):
    x = _blur_input((1, 1, 8, 9), seed=1)
    kwargs = {"kernel_size": 2, "filt_size": 3, "stride": 2}
    g = np.ones((1, 1, 4, 4))
    g[0, 0, 2, 1] = nan
    _, (dx,) = check_nonfinite("max_blur_pool2d", [x], backend, np.float64, kwargs,
                               grad_out=g)
    dx = nnkern.to_numpy(dx)
    assert 0 < np.isnan(dx).sum() <= 9            # at most one winner per blurred tap
    assert np.isfinite(dx[0, 0, :2]).all()        # rows far from the NaN stay numbers


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_linear_relu_backward_selects_on_the_output(backend, dtype):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 3))
    x[3, 1] = nan                                  # row 3 of y is NaN: relu passes g
    w = rng.standard_normal((5, 3))
    b = np.array([-100.0, 100.0, -100.0, 100.0, 0.5])   # columns 0, 2 blocked, 1, 3 open
    g = np.ones((4, 5))
    g[0, 0] = nan                                  # where y <= 0: the gradient is 0
    g[1, 1] = nan                                  # where y > 0: the gradient is NaN
    kwargs = {"activation": "relu"}
    _, (_, _, db) = check_nonfinite("linear", [x, w, b], backend, dtype, kwargs, grad_out=g)
    db = nnkern.to_numpy(db)
    assert np.isfinite(db[0]) and np.isnan(db[1])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_softmax_ce_masked_logit(backend, dtype):
    # the case: a -inf logit is a masked class (probability 0, gradient 0)
    logits = np.array([[0.0, -inf, 1.0, 2.0], [-inf, 0.5, -inf, 0.0]])
    labels = np.array([0, 3])
    (loss,), (dlogits,) = check_nonfinite("softmax_cross_entropy", [logits, labels], backend,
                                          dtype, {"reduction": "none"}, grad_out=np.ones(2))
    lse0 = np.log(1 + np.e + np.e ** 2)
    lse1 = np.log(np.exp(0.5) + 1)
    np.testing.assert_allclose(nnkern.to_numpy(loss), [lse0, lse1], rtol=1e-6)
    np.testing.assert_allclose(nnkern.to_numpy(loss)[0], 2.4076, atol=1e-4)
    d = nnkern.to_numpy(dlogits)
    assert d[0, 1] == 0 and d[1, 0] == 0 and d[1, 2] == 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_softmax_ce_masked_logit_with_smoothing(backend):
    # smoothing puts eps / C of the target on the masked class: the loss is inf (torch)
    logits = np.array([[0.0, -inf, 1.0, 2.0]])
    check_nonfinite("softmax_cross_entropy", [logits, np.array([2])], backend, np.float64,
                    {"label_smoothing": 0.1}, grad_out=np.array(1.0))


@pytest.mark.parametrize("backend", BACKENDS)
def test_softmax_ce_extreme_float32_logits(backend):
    # +-3e38: x - max overflows float32 to -inf, which must still give exp 0, not NaN
    logits = np.array([[3e38, -3e38, 0.0], [-3e38, 3e38, 1.0]])
    labels = np.array([0, 2])
    (loss,), (d,) = check_nonfinite("softmax_cross_entropy", [logits, labels], backend,
                                    np.float32, {"reduction": "none"}, grad_out=np.ones(2))
    np.testing.assert_allclose(nnkern.to_numpy(loss), [0.0, 3e38], rtol=1e-6)
    np.testing.assert_array_equal(nnkern.to_numpy(d), [[0, 0, 0], [0, 1, -1]])


def test_the_rule_catches_a_nan_in_the_wrong_place():
    # the helper must be able to fail: a NaN where the reference has a number
    with pytest.raises(AssertionError, match="differ in being NaN"):
        assert_nonfinite_rule(np.array([1.0, nan]), np.array([nan, 1.0]), np.float64)
    with pytest.raises(AssertionError, match=r"differ in being \+inf"):
        assert_nonfinite_rule(np.array([inf, 1.0]), np.array([-inf, 1.0]), np.float64)
    with pytest.raises(AssertionError, match="elements off"):
        assert_nonfinite_rule(np.array([nan, 1.0]), np.array([nan, 1.1]), np.float64)
