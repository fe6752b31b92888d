"""Batch norm (family 'norm') on every backend against the NumPy reference, gradient
checks, running statistics (against torch when it imports) and validation errors."""

import numpy as np
import pytest
from harness import BACKENDS, DTYPES, assert_close, check_gradients, check_op

import nnkern
import nnkern.functional as F
from nnkern.device import to_device, to_numpy

# numpy/cpu run small-but-real shapes; cuda runs under the simulator (one Python
# thread per GPU thread), so its shapes stay tiny.
SHAPES = {
    "host": [(5, 3), (64, 10), (2, 3, 5, 7), (1, 1, 3, 4), (7, 4, 1, 1), (16, 8, 12, 12)],
    "cuda": [(5, 3), (1, 2, 5, 7), (70, 2)],  # N*L of 35 and 70 > TPB = 16: threads loop
}


def _inputs(shape, seed=10):
    """x with a channel offset (so centring matters), gamma, beta, running mean and var.

    The default seed differs from the harness's grad_out seed (0): the same normals in x and
    grad_out would make grad_out linear in x and dx vanish.
    """
    rng = np.random.default_rng(seed)
    C = shape[1]
    x = rng.standard_normal(shape) * 2.0 + 3.0
    gamma = rng.uniform(0.5, 1.5, C)
    beta = rng.standard_normal(C)
    running_mean = rng.standard_normal(C) * 0.1
    running_var = rng.uniform(0.5, 2.0, C)
    return [x, gamma, beta, running_mean, running_var]


def _shapes(backend):
    return SHAPES["cuda" if backend == "cuda" else "host"]


def _cases():
    for backend in BACKENDS:
        for k, shape in enumerate(_shapes(backend)):
            for dtype in DTYPES:
                # the simulator runs the same Python for both dtypes: float64 on one shape
                if backend != "cuda" or dtype == np.float32 or k == 0:
                    yield backend, shape, dtype


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("backend,shape,dtype", list(_cases()))
def test_batch_norm_matches_reference(backend, shape, dtype, training):
    kwargs = {"training": training, "momentum": 0.1, "eps": 1e-5}
    check_op("batch_norm", _inputs(shape), backend, dtype, kwargs)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_running_stats_match_reference(backend, dtype):
    shape = (3, 2, 2, 3) if backend == "cuda" else (6, 5, 4, 3)
    x, gamma, beta, rm, rv = _inputs(shape, seed=1)
    with nnkern.device("numpy"):
        rm_ref, rv_ref = rm.copy(), rv.copy()
        F.batch_norm(x, gamma, beta, rm_ref, rv_ref, training=True, momentum=0.3)
    with nnkern.device(backend):
        args = [to_device(a.astype(dtype), backend) for a in (x, gamma, beta, rm, rv)]
        F.batch_norm(*args, training=True, momentum=0.3)
        rm_dev, rv_dev = args[3], args[4]
    assert_close(rm_dev, rm_ref, dtype, "running_mean")
    assert_close(rv_dev, rv_ref, dtype, "running_var")
    # eval mode and the backward never touch the running statistics
    with nnkern.device(backend):
        before = to_numpy(rm_dev).copy(), to_numpy(rv_dev).copy()
        F.batch_norm(*args, training=False)
        F.batch_norm_backward(args[0], *args, training=True)
    np.testing.assert_array_equal(to_numpy(rm_dev), before[0])
    np.testing.assert_array_equal(to_numpy(rv_dev), before[1])


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape", [(5, 3), (3, 2, 2, 3)])
def test_batch_norm_gradients(shape, training):
    check_gradients("batch_norm", _inputs(shape, seed=2), {"training": training, "eps": 1e-3})


@pytest.mark.parametrize("backend", BACKENDS)
def test_affine_and_running_stats_optional(backend):
    x = _inputs((4, 3, 2, 2))[0]
    with nnkern.device(backend):
        xd = to_device(x, backend)
        y = to_numpy(F.batch_norm(xd, None, None, None, None, training=True))
        dx, dgamma, dbeta = F.batch_norm_backward(xd, xd, None, None, None, None)
    assert dgamma is None and dbeta is None
    mean = x.mean(axis=(0, 2, 3), keepdims=True)
    var = x.var(axis=(0, 2, 3), keepdims=True)
    assert_close(y, (x - mean) / np.sqrt(var + 1e-5), np.float64, "unit affine")
    assert dx.shape == x.shape


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_large_mean_small_spread(backend, dtype):
    # a mean 1000x the spread: naive sum(x^2)/M - mean^2 loses every digit in float32
    x, gamma, beta, rm, rv = _inputs((2, 3, 3, 5) if backend == "cuda" else (8, 3, 9, 7))
    x = 1000.0 + 0.5 * (x - 3.0)
    check_op("batch_norm", [x, gamma, beta, rm, rv], backend, dtype, {"training": True},
             rtol=1e-3 if dtype == np.float32 else None)  # x itself rounds at 6e-5 in float32


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape", [(2, 1), (64, 3), (4, 3, 5, 5)])   # both CPU kernels
@pytest.mark.parametrize("backend", BACKENDS)
def test_float32_mean_far_from_zero(backend, shape, training):
    # issue 12 item 14: a mean 1e4 x the spread. The float32 mean is off by half an ulp of
    # 100 (3.8e-6), 4e-4 of the spread: y must still meet the float32 tolerance against the
    # float64 reference of the SAME float32 inputs (the case is shape (2, 1)).
    rng = np.random.default_rng(7)
    x = (100.0 + 0.01 * rng.standard_normal(shape)).astype(np.float32)
    if shape == (2, 1):
        x = np.float32([[100], [100.01]])
    C = shape[1]
    rm, rv = x.mean(axis=tuple(i for i in range(x.ndim) if i != 1)), np.full(C, 1e-4)
    g = rng.standard_normal(shape)
    args = [x.astype(np.float64), None, None, rm.astype(np.float64), rv]
    kwargs = {"training": training}
    with nnkern.device("numpy"):
        y_ref = F.batch_norm(*[a if a is None else a.copy() for a in args], **kwargs)
        dx_ref = F.batch_norm_backward(g, *args, **kwargs)[0]
    with nnkern.device(backend):
        dev = [None if a is None else to_device(a.astype(np.float32), backend) for a in args]
        y = F.batch_norm(*dev, **kwargs)
        dx = F.batch_norm_backward(to_device(g.astype(np.float32), backend), *dev, **kwargs)[0]
    assert_close(y, y_ref, np.float32, "y")
    assert_close(dx, dx_ref, np.float32, "dx")


@pytest.mark.parametrize("backend", BACKENDS)
def test_eval_with_infinite_running_mean(backend):
    # torch: y = (x - inf) * a + b = -inf, and dx = gamma * invstd * g, finite
    x, gamma, beta, rm, rv = _inputs((3, 2, 2, 2))
    rm[0] = np.inf
    g = np.ones(x.shape)
    with nnkern.device(backend):
        args = [to_device(a, backend) for a in (x, gamma, beta, rm, rv)]
        y = to_numpy(F.batch_norm(*args, training=False))
        dx = to_numpy(F.batch_norm_backward(to_device(g, backend), *args, training=False)[0])
    assert np.isneginf(y[:, 0]).all() and np.isfinite(y[:, 1]).all()
    assert np.isfinite(dx).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_propagates_within_its_channel(backend):
    x, gamma, beta, rm, rv = _inputs((2, 3, 2, 2))
    x[1, 1, 0, 1] = np.nan
    with nnkern.device(backend):
        args = [to_device(a, backend) for a in (x, gamma, beta, rm, rv)]
        y = to_numpy(F.batch_norm(*args, training=True))
        dx = to_numpy(F.batch_norm_backward(args[0] * 0 + 1, *args)[0])
    for out in (y, dx):
        assert np.isnan(out[:, 1]).all()
        assert np.isfinite(out[:, [0, 2]]).all()
    assert np.isnan(to_numpy(args[3])[1]) and np.isfinite(to_numpy(args[3])[[0, 2]]).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_eval_batch(backend):
    x, gamma, beta, rm, rv = _inputs((2, 3, 2, 2))
    with nnkern.device(backend):
        args = [to_device(a, backend) for a in (x[:0], gamma, beta, rm, rv)]
        y = F.batch_norm(*args, training=False)
        dx, dgamma, dbeta = F.batch_norm_backward(args[0], *args, training=False)
    assert y.shape == dx.shape == (0, 3, 2, 2)
    np.testing.assert_array_equal(to_numpy(dgamma), 0.0)
    np.testing.assert_array_equal(to_numpy(dbeta), 0.0)


@pytest.fixture(params=["kernel 1", "kernel 2"])
def cpu_kernel(request, monkeypatch):
    """Send every shape through one of the cpu module's two kernels (kernel 2 normally
    takes only L = 1, kernel 1 the rest)."""
    import nnkern.kernels.norm.cpu as K

    monkeypatch.setattr(K, "ROW_MIN_L", 1 if request.param == "kernel 1" else 10**9)
    return request.param


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape", [(5, 3), (64, 10), (2, 3, 5, 7), (7, 4, 1, 1), (3, 5, 9, 9)])
def test_both_cpu_kernels_match_reference(cpu_kernel, shape, training):
    for dtype in DTYPES:
        check_op("batch_norm", _inputs(shape), "cpu", dtype, {"training": training})
    x, gamma, beta, rm, rv = _inputs(shape, seed=1)
    rm_ref, rv_ref = rm.copy(), rv.copy()
    F.batch_norm(x, gamma, beta, rm_ref, rv_ref, training=training, momentum=0.3)
    with nnkern.device("cpu"):
        F.batch_norm(x, gamma, beta, rm, rv, training=training, momentum=0.3)
    assert_close(rm, rm_ref, np.float64, "running_mean")
    assert_close(rv, rv_ref, np.float64, "running_var")


def test_both_cpu_kernels_propagate_nan_and_take_empty_batches(cpu_kernel):
    test_nan_propagates_within_its_channel("cpu")
    test_empty_eval_batch("cpu")
    x, gamma, beta, rm, rv = _inputs((6, 3))
    x[2, 1] = np.nan
    with nnkern.device("cpu"):
        y = F.batch_norm(x, gamma, beta, rm, rv, training=True)
    assert np.isnan(y[:, 1]).all() and np.isfinite(y[:, [0, 2]]).all()


def test_strided_running_stats_are_updated():
    x, gamma, beta = _inputs((4, 3, 2, 2))[:3]
    buffer = np.zeros(6)
    buffer[1::2] = 1.0
    expected_mean, expected_var = buffer[0::2].copy(), buffer[1::2].copy()
    F.batch_norm(x, gamma, beta, expected_mean, expected_var)
    F.batch_norm(x, gamma, beta, buffer[0::2], buffer[1::2])
    np.testing.assert_array_equal(buffer[0::2], expected_mean)
    np.testing.assert_array_equal(buffer[1::2], expected_var)


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "cuda"])
@pytest.mark.parametrize("training", [True, False])
def test_matches_torch(backend, training):
    torch = pytest.importorskip("torch")
    x, gamma, beta, rm, rv = _inputs((6, 4, 3, 5), seed=3)
    g = np.random.default_rng(4).standard_normal(x.shape)
    with nnkern.device(backend):
        rm_n, rv_n = rm.copy(), rv.copy()
        y = F.batch_norm(x, gamma, beta, rm_n, rv_n, training, 0.2, 1e-4)
        dx, dgamma, dbeta = F.batch_norm_backward(g, x, gamma, beta, rm, rv, training, 0.2, 1e-4)
    xt, gt, bt = (torch.tensor(a, requires_grad=True) for a in (x, gamma, beta))
    rm_t, rv_t = torch.tensor(rm), torch.tensor(rv)
    yt = torch.nn.functional.batch_norm(xt, rm_t, rv_t, gt, bt, training, 0.2, 1e-4)
    yt.backward(torch.tensor(g))
    for name, ours, theirs in [
        ("y", y, yt), ("running_mean", rm_n, rm_t), ("running_var", rv_n, rv_t),
        ("dx", dx, xt.grad), ("dgamma", dgamma, gt.grad), ("dbeta", dbeta, bt.grad),
    ]:
        assert_close(ours, theirs.detach().numpy(), np.float64, name)


def test_errors():
    x, gamma, beta, rm, rv = _inputs((4, 3, 2, 2))
    with pytest.raises(ValueError, match=r"2 dimensions \(N, C\) or 4 .* got shape \(4, 3, 2\)"):
        F.batch_norm(x[..., 0], gamma, beta, rm, rv)
    with pytest.raises(ValueError, match=r"gamma must have shape \(3,\), got \(4,\)"):
        F.batch_norm(x, np.ones(4), beta, rm, rv)
    with pytest.raises(ValueError, match=r"running_var must have shape \(3,\), got \(2,\)"):
        F.batch_norm(x, gamma, beta, rm, rv[:2])
    with pytest.raises(ValueError, match=r"momentum must be a number in \[0, 1\], got 1.5"):
        F.batch_norm(x, gamma, beta, rm, rv, momentum=1.5)
    with pytest.raises(ValueError, match=r"eps must be a number > 0, got 0"):
        F.batch_norm(x, gamma, beta, rm, rv, eps=0)
    with pytest.raises(ValueError, match=r"more than 1 value per channel .* \(1, 3\)"):
        F.batch_norm(np.ones((1, 3)), gamma, beta, rm, rv)
    with pytest.raises(ValueError, match=r"in eval mode .* got None and an array"):
        F.batch_norm(x, gamma, beta, None, rv, training=False)
    with pytest.raises(TypeError, match=r"gamma has dtype float32 but x has float64"):
        F.batch_norm(x, gamma.astype(np.float32), beta, rm, rv)
    with pytest.raises(TypeError, match=r"x must be float32 or float64, got dtype int64"):
        F.batch_norm(x.astype(np.int64), gamma, beta, rm, rv)
    with pytest.raises(ValueError, match=r"grad_out must have shape \(4, 3, 2, 2\), got \(4, 3\)"):
        F.batch_norm_backward(x[:, :, 0, 0], x, gamma, beta, rm, rv)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape", [(128, 64, 28, 28), (256, 512), (3, 7, 5, 9)])
def test_batch_norm_cuda_real_shapes(shape, training, dtype):
    check_op("batch_norm", _inputs(shape), "cuda", dtype, {"training": training})
