"""Pooling: max, average, blur and max-blur, every backend against the NumPy reference.

numpy/cpu run small-but-real shapes; cuda runs under the simulator on tiny
shapes only (each simulated thread is a Python thread). Max pooling inputs
are built without ties (a scaled permutation) wherever a gradient or an
argmax of a non-numpy backend is compared, except in the tie-rule tests,
which pin ties down on purpose.
"""

import nnkern.kernels.pool.cpu as POOL_CPU
import numpy as np
import pytest
from harness import BACKENDS, DTYPES, check_gradients, check_op, run_op
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nnkern
import nnkern.functional as F
from nnkern.device import to_numpy


def distinct(shape, seed=0):
    """Values without ties (a scaled random permutation): no kinks for the max."""
    rng = np.random.default_rng(seed)
    return (rng.permutation(int(np.prod(shape))).reshape(shape) - 7.5) * 0.25


def shape_for(backend, small, tiny):
    return tiny if backend == "cuda" else small


# (op, kwargs, small shape, tiny shape for the simulator)
CASES = [
    ("max_pool2d", {"kernel_size": 2}, (2, 3, 12, 10), (2, 2, 5, 6)),
    ("max_pool2d", {"kernel_size": 3, "stride": 2, "padding": 1}, (2, 3, 9, 11), (1, 3, 7, 6)),
    ("max_pool2d", {"kernel_size": (2, 3), "stride": (1, 2), "padding": (1, 0)}, (1, 2, 7, 8),
     (2, 1, 5, 7)),
    ("max_pool2d", {"kernel_size": 2, "return_indices": True}, (2, 2, 9, 7), (1, 2, 5, 6)),
    ("avg_pool2d", {"kernel_size": 2}, (2, 3, 12, 10), (2, 2, 5, 6)),
    ("avg_pool2d", {"kernel_size": 3, "stride": 2, "padding": 1}, (2, 3, 9, 11), (1, 3, 7, 6)),
    ("avg_pool2d", {"kernel_size": 3, "stride": 2, "padding": 1, "count_include_pad": False},
     (1, 2, 10, 7), (2, 1, 6, 7)),
    ("avg_pool2d", {"kernel_size": (3, 2), "stride": (2, 1), "padding": (1, 1)}, (1, 1, 8, 9),
     (1, 2, 7, 5)),
    ("blur_pool2d", {}, (2, 3, 12, 10), (2, 2, 5, 6)),
    ("blur_pool2d", {"filt_size": 1, "stride": 2}, (1, 2, 7, 9), (1, 2, 5, 7)),
    ("blur_pool2d", {"filt_size": 4, "stride": 3}, (2, 2, 11, 8), (1, 2, 6, 7)),
    ("blur_pool2d", {"filt_size": 7, "stride": 1}, (1, 2, 9, 8), (1, 1, 5, 6)),
    ("blur_pool2d", {"filt_size": 5, "stride": (2, 1)}, (1, 2, 7, 10), (1, 2, 5, 6)),
    ("max_blur_pool2d", {}, (2, 3, 12, 10), (2, 2, 6, 7)),
    ("max_blur_pool2d", {"kernel_size": 3, "filt_size": 5, "stride": 2}, (1, 2, 13, 11),
     (1, 2, 7, 8)),
    ("max_blur_pool2d", {"kernel_size": (2, 1), "filt_size": 2, "stride": 1}, (2, 1, 6, 7),
     (1, 2, 5, 6)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op,kwargs,small,tiny", CASES)
def test_op_matches_reference(op, kwargs, small, tiny, backend, dtype):
    x = distinct(shape_for(backend, small, tiny))
    check_op(op, [x], backend, dtype, kwargs)


@pytest.mark.parametrize(
    "op,kwargs,shape",
    [
        ("max_pool2d", {"kernel_size": 3, "stride": 2, "padding": 1}, (1, 2, 6, 5)),
        ("max_pool2d", {"kernel_size": (2, 3), "stride": (1, 2)}, (2, 1, 5, 7)),
        ("avg_pool2d", {"kernel_size": 3, "stride": 2, "padding": 1}, (1, 2, 6, 5)),
        ("avg_pool2d", {"kernel_size": 3, "stride": 1, "padding": 1, "count_include_pad": False},
         (1, 1, 5, 4)),
        ("blur_pool2d", {"filt_size": 3, "stride": 2}, (1, 2, 6, 5)),
        ("blur_pool2d", {"filt_size": 6, "stride": 2}, (1, 1, 7, 8)),
        ("max_blur_pool2d", {"kernel_size": 2, "filt_size": 3, "stride": 2}, (1, 2, 7, 6)),
    ],
)
def test_gradients(op, kwargs, shape):
    check_gradients(op, [distinct(shape, seed=1)], kwargs)


def _window_of(op, kwargs):
    # (R, S, SH, SW, PH, PW) of a max/avg case, as the kernels receive it
    def pair(v):
        return v if isinstance(v, tuple) else (v, v)

    R, S = pair(kwargs.get("kernel_size", 1))
    SH, SW = pair(kwargs.get("stride") or (R, S))
    return (R, S, SH, SW, *pair(kwargs.get("padding", 0)))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("version", list(POOL_CPU.VERSIONS))
def test_cpu_versions(version, dtype):
    """Every CPU version on every case it can run (forced), forward and backward."""
    ran = 0
    for op, kwargs, small, _ in CASES:
        window = _window_of(op, kwargs)
        if (POOL_CPU.applies(version, f"{op}_forward", window)
                and POOL_CPU.applies(version, f"{op}_backward", window)):
            continue
        with POOL_CPU.forced_version(version):
            check_op(op, [distinct(small)], "cpu", dtype, kwargs)
        ran += 1
    assert ran, f"no case runs version {version}"


def test_cpu_version_choice():
    assert POOL_CPU.choose("max_pool2d_forward", (2, 2, 2, 2, 0, 0))[0] == "2x2"
    assert POOL_CPU.choose("max_pool2d_forward", (3, 3, 2, 2, 1, 1))[0] == "general"
    assert POOL_CPU.choose("max_pool2d_backward", (3, 3, 3, 3, 0, 0))[0] == "disjoint"
    assert POOL_CPU.choose("max_pool2d_backward", (3, 3, 2, 2, 1, 1))[0] == "general"
    assert POOL_CPU.choose("blur_pool2d_backward")[0] == "separable"
    with POOL_CPU.forced_version("general"):  # forced where it applies, the rule elsewhere
        assert POOL_CPU.choose("max_pool2d_backward", (2, 2, 2, 2, 0, 0))[0] == "general"
        assert POOL_CPU.choose("avg_pool2d_forward", (2, 2, 2, 2, 0, 0))[0] == "separable"
    with pytest.raises(ValueError, match=r"version must be one of .*got 'fast'"), \
            POOL_CPU.forced_version("fast"):
        pass


def test_rules_against_brute_force():
    """The index rules (rules.py) against counting and against numpy's own padding."""
    import math

    from nnkern.kernels.pool import rules

    for H in range(1, 12):
        for R in range(1, 5):
            for SH in range(1, 4):
                for PH in range(R // 2 + 1):
                    if R > H + 2 * PH:
                        continue
                    starts = range(-PH, H + PH - R + 1, SH)  # every window that fits
                    OH = len(starts)
                    assert rules.pool_out(H, R, SH, PH) == OH
                    for h in range(H):
                        holding = [o for o, s in enumerate(starts) if s <= h < s + R]
                        first, last = rules.first_window(h, R, SH, PH), rules.last_window(
                            h, OH, SH, PH)
                        assert list(range(first, last + 1)) == holding, (H, R, SH, PH, h)
        for SH in range(1, 4):
            assert rules.blur_out(H, SH) == len(range(0, H, SH))
            assert rules.max_blur_out(H + 2, 3, SH) == len(range(0, H, SH))
        for K in range(1, 8):
            p0, p1 = rules.pad_before(K), rules.pad_after(K)
            assert (p0 + p1, p0 - p1) in ((K - 1, 0), (K - 1, -1))
            if p1 < H:  # numpy's reflect padding of the indices themselves
                padded = np.pad(np.arange(H), (p0, p1), mode="reflect")
                assert [rules.reflect(i, H) for i in range(-p0, H + p1)] == padded.tolist()
    for K in range(1, 8):
        taps = [rules.binomial_tap(K, r) for r in range(K)]
        assert taps == [math.comb(K - 1, r) / 2 ** (K - 1) for r in range(K)]


# ----------------------------------------------------------------------------
# hypothesis: odd sizes, batch 1, channel 1, non-square, overlapping windows, padding


@st.composite
def max_avg_case(draw):
    R, S = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    SH, SW = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    PH, PW = draw(st.integers(0, R // 2)), draw(st.integers(0, S // 2))
    H = draw(st.integers(max(1, R - 2 * PH), 11))
    W = draw(st.integers(max(1, S - 2 * PW), 11))
    N, C = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    return (N, C, H, W), {"kernel_size": (R, S), "stride": (SH, SW), "padding": (PH, PW)}


@st.composite
def blur_case(draw):
    K = draw(st.integers(1, 7))
    H, W = draw(st.integers(K // 2 + 1, 11)), draw(st.integers(K // 2 + 1, 11))
    stride = draw(st.one_of(st.integers(1, 3), st.tuples(st.integers(1, 3), st.integers(1, 3))))
    N, C = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    return (N, C, H, W), {"filt_size": K, "stride": stride}


@st.composite
def max_blur_case(draw):
    (N, C, Hm, Wm), blur = draw(blur_case())
    R, S = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    return (N, C, Hm + R - 1, Wm + S - 1), dict(kernel_size=(R, S), **blur)


HYPO = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@HYPO
@given(case=max_avg_case(), cip=st.booleans(), seed=st.integers(0, 99))
def test_hypothesis_max_avg_cpu(case, cip, seed):
    shape, kw = case
    x = distinct(shape, seed)
    check_op("max_pool2d", [x], "cpu", np.float64, dict(kw, return_indices=True))
    check_op("avg_pool2d", [x], "cpu", np.float32, dict(kw, count_include_pad=cip))


@HYPO
@given(case=blur_case(), seed=st.integers(0, 99))
def test_hypothesis_blur_cpu(case, seed):
    shape, kw = case
    check_op("blur_pool2d", [distinct(shape, seed)], "cpu", np.float32, kw)


@HYPO
@given(case=max_blur_case(), seed=st.integers(0, 99))
def test_hypothesis_max_blur_cpu(case, seed):
    shape, kw = case
    check_op("max_blur_pool2d", [distinct(shape, seed)], "cpu", np.float32, kw)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=st.one_of(max_avg_case(), blur_case(), max_blur_case()), seed=st.integers(0, 99))
def test_hypothesis_cuda_sim(case, seed):
    shape, kw = case
    shape = (1, 1) + shape[2:]  # the simulator is slow: one plane
    if "filt_size" in kw:
        op = "max_blur_pool2d" if "kernel_size" in kw else "blur_pool2d"
    else:
        op = "max_pool2d"
    check_op(op, [distinct(shape, seed)], "cuda", np.float32, kw)


# ----------------------------------------------------------------------------
# semantics: ties, NaN, indices, padding, torch cross-check


@pytest.mark.parametrize("backend", BACKENDS)
def test_ties_go_to_first_max_in_scan_order(backend):
    # every window of a constant image ties: the winner is its first valid cell
    x = np.ones((1, 1, 5, 6))
    x[0, 0, 2, 3] = 2.0
    x[0, 0, 3, 2] = 2.0
    kw = {"kernel_size": 3, "stride": 2, "padding": 1, "return_indices": True}
    (y, idx), _, _ = run_op("max_pool2d", [x], backend, np.float64, kw)
    (ry, ridx), _, _ = run_op("max_pool2d", [x], "numpy", np.float64, kw)
    np.testing.assert_array_equal(to_numpy(idx), ridx)
    np.testing.assert_array_equal(to_numpy(y), ry)
    # window (0, 0) covers rows/cols -1..1: first valid cell is (0, 0)
    assert ridx[0, 0, 0, 0] == 0
    # window (1, 1) covers rows 1..3, cols 1..3: the 2.0 at (2, 3) comes before (3, 2)
    assert ridx[0, 0, 1, 1] == 2 * 6 + 3
    g = np.arange(1.0, 1.0 + y.size).reshape(y.shape)
    with nnkern.device(backend):
        dx = F.max_pool2d_backward(nnkern.to_device(g), nnkern.to_device(x), 3, 2, 1)
    with nnkern.device("numpy"):
        rdx = F.max_pool2d_backward(g, x, 3, 2, 1)
    np.testing.assert_array_equal(to_numpy(dx), rdx)


@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_propagates_through_max(backend):
    x = distinct((1, 1, 4, 6))
    x[0, 0, 1, 3] = np.nan
    (y, idx), _, _ = run_op("max_pool2d", [x], backend, np.float32, {"kernel_size": 2,
                                                                        "return_indices": True})
    y, idx = to_numpy(y), to_numpy(idx)
    assert np.isnan(y[0, 0, 0, 1]) and idx[0, 0, 0, 1] == 1 * 6 + 3
    assert np.isfinite(np.delete(y.ravel(), 1)).all()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "op,kwargs",
    [
        ("max_pool2d", {"kernel_size": 3, "stride": 2, "padding": 1, "return_indices": True}),
        ("max_pool2d", {"kernel_size": 2, "return_indices": True}),
        ("max_blur_pool2d", {"kernel_size": 2, "filt_size": 3, "stride": 2}),
    ],
)
def test_nan_paths_match_reference(backend, op, kwargs):
    # the fast CPU scans detect a NaN and redo the row/plane exactly: check both agree
    x = distinct((1, 2, 6, 7))
    x[0, 0, 2, 3] = x[0, 0, 3, 3] = x[0, 1, 5, 6] = np.nan
    got, _, _ = run_op(op, [x], backend, np.float64, kwargs)
    ref, _, _ = run_op(op, [x], "numpy", np.float64, kwargs)
    for a, b in zip(got, ref):
        np.testing.assert_allclose(to_numpy(a), b, rtol=1e-12, equal_nan=True)
    g = np.ones(np.shape(ref[0]))
    _, dx, _ = run_op(op, [x], backend, np.float64, kwargs, g)
    _, rdx, _ = run_op(op, [x], "numpy", np.float64, kwargs, g)
    np.testing.assert_allclose(to_numpy(dx[0]), rdx[0], rtol=1e-12, equal_nan=True)


@pytest.mark.parametrize("backend", BACKENDS)
def test_padding_never_wins(backend):
    x = -1.0 - distinct((1, 2, 5, 5)) ** 2  # all negative: a zero pad would win
    (y, idx), _, _ = run_op("max_pool2d", [x], backend, np.float32,
                            {"kernel_size": 3, "stride": 2, "padding": 1, "return_indices": True})
    assert (to_numpy(y) < 0).all()
    assert (to_numpy(idx) >= 0).all() and (to_numpy(idx) < 25).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_backward_with_saved_indices(backend):
    x = distinct((1, 2, 7, 6))
    g = np.random.default_rng(3).standard_normal((1, 2, 4, 3))
    with nnkern.device(backend):
        xd, gd = nnkern.to_device(x), nnkern.to_device(g)
        _, idx = F.max_pool2d(xd, 3, 2, 1, return_indices=True)
        dx1 = F.max_pool2d_backward(gd, xd, 3, 2, 1, indices=idx)
        dx2 = F.max_pool2d_backward(gd, xd, 3, 2, 1)
    np.testing.assert_array_equal(to_numpy(dx1), to_numpy(dx2))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "op,kwargs",
    [("max_pool2d", {"kernel_size": 2}), ("avg_pool2d", {"kernel_size": 3, "padding": 1}),
     ("blur_pool2d", {}), ("max_blur_pool2d", {})],
)
def test_empty_batch(backend, op, kwargs):
    x = np.zeros((0, 2, 6, 6))
    (y,), _, _ = run_op(op, [x], "numpy", np.float32, kwargs)
    (y,), (dx,), _ = run_op(op, [x], backend, np.float32, kwargs, np.zeros(y.shape))
    assert y.shape[:2] == (0, 2) and dx.shape == x.shape


def test_blur_filter_and_constant_image():
    from nnkern.kernels.pool.reference import binomial_filter
    np.testing.assert_allclose(binomial_filter(3), [0.25, 0.5, 0.25])
    np.testing.assert_allclose(binomial_filter(5), np.array([1, 4, 6, 4, 1]) / 16)
    for k in range(1, 8):
        y = F.blur_pool2d(np.full((1, 1, 9, 8), 3.0), k, 2)
        np.testing.assert_allclose(y, 3.0)
    x = distinct((1, 2, 7, 9))
    np.testing.assert_array_equal(F.blur_pool2d(x, 1, 2), x[:, :, ::2, ::2])


def test_cross_check_torch():
    torch = pytest.importorskip("torch")
    tf = torch.nn.functional
    rng = np.random.default_rng(5)
    x = rng.integers(0, 4, (2, 3, 9, 8)).astype(np.float64)  # many ties
    g = rng.standard_normal((2, 3, 5, 4))
    for backend in ("numpy", "cpu"):
        with nnkern.device(backend):
            y, idx = F.max_pool2d(x, 3, 2, 1, return_indices=True)
            dx = F.max_pool2d_backward(g, x, 3, 2, 1)
            ya = F.avg_pool2d(x, 3, 2, 1, count_include_pad=False)
            dxa = F.avg_pool2d_backward(g, x, 3, 2, 1, count_include_pad=False)
        tx = torch.tensor(x, requires_grad=True)
        ty, tidx = tf.max_pool2d(tx, 3, 2, 1, return_indices=True)
        ty.backward(torch.tensor(g))
        np.testing.assert_array_equal(y, ty.detach().numpy())
        np.testing.assert_array_equal(idx, tidx.numpy())
        np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-12)
        tx = torch.tensor(x, requires_grad=True)
        ty = tf.avg_pool2d(tx, 3, 2, 1, count_include_pad=False)
        ty.backward(torch.tensor(g))
        np.testing.assert_allclose(ya, ty.detach().numpy(), rtol=1e-12)
        np.testing.assert_allclose(dxa, tx.grad.numpy(), rtol=1e-12)


# ----------------------------------------------------------------------------
# validation errors


X = np.zeros((1, 2, 6, 6), np.float32)


@pytest.mark.parametrize(
    "call,exc,match",
    [
        (lambda: F.max_pool2d(np.zeros((2, 6, 6), np.float32), 2), ValueError, "NCHW"),
        (lambda: F.max_pool2d(X.astype(np.int32), 2), TypeError, "float32 or float64"),
        (lambda: F.max_pool2d(X, 7), ValueError, "does not fit"),
        (lambda: F.max_pool2d(X, 2, stride=0), ValueError, "stride must be >= 1"),
        (lambda: F.max_pool2d(X, 2, padding=-1), ValueError, "padding must be >= 0"),
        (lambda: F.max_pool2d(X, 3, padding=2), ValueError, "at most half the kernel"),
        (lambda: F.max_pool2d(X, 2.5), TypeError, "kernel_size must be an int"),
        (lambda: F.avg_pool2d(X, (2, 3), padding=(1, 2)), ValueError, "at most half"),
        (lambda: F.avg_pool2d_backward(np.zeros((1, 2, 2, 2), np.float32), X, 2), ValueError,
         r"grad_out.*must have shape \(1, 2, 3, 3\)"),
        (lambda: F.avg_pool2d_backward(np.zeros((1, 2, 3, 3)), X, 2), TypeError,
         "grad_out has dtype float64 but x has float32"),
        (lambda: F.blur_pool2d(X, filt_size=8), ValueError, "filt_size must be in 1..7"),
        (lambda: F.blur_pool2d(X, filt_size=3.0), TypeError, "filt_size must be an int"),
        (lambda: F.blur_pool2d(X, stride=0), ValueError, "stride must be >= 1"),
        (lambda: F.blur_pool2d(np.zeros((1, 1, 3, 9)), filt_size=7), ValueError,
         r"reflect padding 3 .* smaller than the input size, got \(3, 9\)"),
        (lambda: F.max_blur_pool2d(X, kernel_size=7), ValueError, "does not fit"),
        (lambda: F.max_blur_pool2d(X, kernel_size=5, filt_size=5), ValueError,
         "reflect padding 2 .* smaller than the max-pooled map"),
        (lambda: F.max_pool2d_backward(np.zeros((1, 2, 3, 3), np.float32), X, 2,
                                       indices=np.zeros((1, 2, 3, 3))), TypeError,
         "indices must be an integer array"),
    ],
)
def test_validation_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_device_mismatch():
    class FakeGpuArray:
        dtype = np.dtype(np.float32)
        shape = (1, 1, 4, 4)
        ndim = 4

        def __init__(self):
            self.__cuda_array_interface__ = {}

    with pytest.raises(F.DeviceMismatchError, match="current device is 'numpy'"):
        F.max_pool2d(FakeGpuArray(), 2)


# ----------------------------------------------------------------------------
# real GPU, real shapes


@pytest.mark.gpu
@pytest.mark.parametrize("op,kwargs", [(c[0], c[1]) for c in CASES])
def test_gpu_real_shapes(op, kwargs):
    x = distinct((8, 16, 28, 30))
    check_op(op, [x], "cuda", np.float32, kwargs)
