"""Local response normalisation (family 'lrn') on every backend against the NumPy reference;
the reference against a plain loop and a closed form; gradient checks; PyTorch; inputs with
NaN, inf and a large dynamic range (the kernels keep running sums); the layer; errors."""

import numpy as np
import pytest
from harness import BACKENDS, DTYPES, assert_close, check_gradients, check_op
from hypothesis import given, settings
from hypothesis import strategies as st

import nnkern
import nnkern.functional as F
from nnkern import layers
from nnkern._dispatch import kernels
from nnkern.device import to_device, to_numpy

# (shape, size): odd sizes, even sizes (an asymmetric window), size 1, a window wider than
# the channels, one channel, batch 1, a 3-D and a 5-D input, and L = 667 > cpu.TILE
# (two tiles). CUDA runs under the simulator: tiny shapes.
CASES = {
    "host": [((2, 7, 5, 3), 5), ((1, 1, 4, 4), 3), ((3, 10, 1, 1), 4), ((2, 6, 3, 5), 1),
             ((2, 4, 3, 3), 9), ((2, 5, 7), 2), ((1, 3, 2, 3, 2), 3), ((2, 16, 23, 29), 5)],
    "cuda": [((2, 7, 3, 2), 5), ((1, 3, 5), 4), ((1, 2, 2, 2), 6)],
}
# alpha large enough that the window matters; one beta per power path of the kernels
# (0.75, 0.5 and 1 by square roots, the rest by pow) and PyTorch's defaults
PARAMS = [
    {"alpha": 1e-4, "beta": 0.75, "k": 1.0},
    {"alpha": 0.5, "beta": 0.75, "k": 2.0},
    {"alpha": 1.5, "beta": 0.5, "k": 1.0},
    {"alpha": 1.0, "beta": 1.0, "k": 0.5},
    {"alpha": 2.0, "beta": 0.6, "k": 1.5},
]


def _x(shape, seed=1, scale=2.0):
    # seed 1: not the harness's grad_out seed (0), so grad_out is not a multiple of x
    return np.random.default_rng(seed).standard_normal(shape) * scale


def _cases():
    for backend in BACKENDS:
        place = "cuda" if backend == "cuda" else "host"
        for i, (shape, size) in enumerate(CASES[place]):
            for j, params in enumerate(PARAMS):
                for dtype in DTYPES:
                    # the simulator runs the same Python for both dtypes and every beta:
                    # float64 and the pow path on one shape each
                    if backend == "cuda" and (dtype == np.float64 or j == 4) and i:
                        continue
                    yield backend, shape, size, params, dtype


@pytest.mark.parametrize("backend,shape,size,params,dtype", list(_cases()))
def test_lrn_matches_reference(backend, shape, size, params, dtype):
    check_op("local_response_norm", [_x(shape)], backend, dtype, {"size": size, **params})


@pytest.fixture
def small_tiles(monkeypatch):
    """Cut the cpu kernels' tiles to 3 positions, so small shapes run many tiles with a
    shorter last one."""
    import nnkern.kernels.lrn.cpu as K

    monkeypatch.setattr(K, "TILE", 3)


@pytest.mark.parametrize("shape,size", [((2, 7, 5, 3), 5), ((3, 4, 2, 2), 2), ((1, 9, 7), 4)])
def test_cpu_tiles_match_reference(small_tiles, shape, size):
    for dtype in DTYPES:
        check_op("local_response_norm", [_x(shape)], "cpu", dtype,
                 {"size": size, **PARAMS[1]})


def _loop_lrn(x, size, alpha, beta, k):
    # the definition, one output at a time (independent of the vectorised reference)
    N, C = x.shape[:2]
    y = np.empty_like(x)
    for n in range(N):
        for c in range(C):
            lo, hi = max(0, c - size // 2), min(C - 1, c + (size - 1) // 2)
            s = sum(x[n, j] ** 2 for j in range(lo, hi + 1))
            y[n, c] = x[n, c] / (k + alpha / size * s) ** beta
    return y


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 12])
def test_reference_matches_plain_loop(size):
    x = _x((2, 9, 3, 2))
    for params in PARAMS:
        assert_close(F.local_response_norm(x, size, **params), _loop_lrn(x, size, **params),
                     np.float64, f"size {size}, {params}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_closed_form_on_ones(backend):
    # all ones: channel c divides by (k + alpha/size * (channels of its window inside
    # 0..C-1))^beta; C = 4, size = 3 covers 2, 3, 3, 2 channels
    x = np.ones((1, 4, 2, 2))
    with nnkern.device(backend):
        y = to_numpy(F.local_response_norm(to_device(x, backend), 3, alpha=3.0, beta=1.0,
                                           k=1.0))
    expected = np.array([1 / 3, 1 / 4, 1 / 4, 1 / 3])[None, :, None, None] * x
    assert_close(y, expected, np.float64, "ones")


@pytest.mark.parametrize("size", [1, 2, 5])
@pytest.mark.parametrize("params", PARAMS[1:], ids=lambda p: f"beta{p['beta']}")
def test_lrn_gradients(size, params):
    check_gradients("local_response_norm", [_x((2, 6, 2, 3), scale=1.0)],
                    {"size": size, **params})


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("size,params", [(5, PARAMS[1]), (4, PARAMS[4]), (3, PARAMS[0])])
def test_matches_torch(backend, size, params):
    torch = pytest.importorskip("torch")
    shape = (2, 5, 3, 2) if backend == "cuda" else (3, 11, 4, 5)
    x = _x(shape, seed=3)
    g = np.random.default_rng(4).standard_normal(shape)
    with nnkern.device(backend):
        y = F.local_response_norm(to_device(x, backend), size, **params)
        dx = F.local_response_norm_backward(to_device(g, backend), to_device(x, backend), size,
                                            **params)
    xt = torch.tensor(x, requires_grad=True)
    yt = torch.nn.functional.local_response_norm(xt, size, **params)
    yt.backward(torch.tensor(g))
    assert_close(y, yt.detach().numpy(), np.float64, "y")
    assert_close(dx, xt.grad.numpy(), np.float64, "dx")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_large_dynamic_range(backend, dtype):
    # One channel 1000x the others: its square leaves the running window sum a million
    # times larger than the sums after it. With a small k those small sums set d, so a
    # float32 running sum would lose about 6% of them (float32's 6e-8 times 1e6).
    x = _x((2, 12, 3, 2) if backend == "cuda" else (3, 12, 5, 7))
    x[:, 3] *= 1000.0
    check_op("local_response_norm", [x], backend, dtype,
             {"size": 3, "alpha": 1.0, "beta": 0.75, "k": 1e-2})


def _assert_same_non_finite(actual, expected, what):
    actual = to_numpy(actual)
    for test in (np.isnan, np.isposinf, np.isneginf):
        np.testing.assert_array_equal(test(actual), test(expected), err_msg=f"{what}: {test}")
    finite = np.isfinite(expected)
    assert_close(np.where(finite, actual, 0.0), np.where(finite, expected, 0.0), np.float64,
                 what)


# the simulator computes with NumPy scalars, which warn on NaN and inf
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("size", [3, 4])
@pytest.mark.parametrize("backend", BACKENDS)
def test_non_finite_inputs_spoil_only_their_windows(backend, size):
    # A NaN or inf that enters a running sum would stay in it after leaving the window
    # (inf - inf is NaN); the kernels must recompute those sums, as the reference does.
    x = _x((2, 10, 2, 1))
    x[0, 2, 1, 0] = np.nan
    x[1, 6, 0, 0] = np.inf
    x[1, 1, 1, 0] = -np.inf
    g = np.random.default_rng(5).standard_normal(x.shape)
    kwargs = {"size": size, **PARAMS[1]}
    with nnkern.device("numpy"):
        y_ref = F.local_response_norm(x, **kwargs)
        dx_ref = F.local_response_norm_backward(g, x, **kwargs)
    with nnkern.device(backend):
        y = F.local_response_norm(to_device(x, backend), **kwargs)
        dx = F.local_response_norm_backward(to_device(g, backend), to_device(x, backend),
                                            **kwargs)
    _assert_same_non_finite(y, y_ref, "y")
    _assert_same_non_finite(dx, dx_ref, "dx")
    # the property itself: channels far from every bad input stay finite
    assert np.isfinite(y_ref[0, 6:]).all() and np.isfinite(dx_ref[0, 7:]).all()
    assert not np.isfinite(y_ref[0, 2]).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_kernels_write_every_element(backend):
    # outputs filled with NaN first: a skipped element (a tile edge, the last channels)
    # would stay NaN
    x = _x((3, 6, 5), seed=7)
    g = _x((3, 6, 5), seed=8)
    K = kernels("lrn", backend)
    with nnkern.device(backend):
        xd, gd = to_device(x, backend), to_device(g, backend)
        y = to_device(np.full(x.shape, np.nan), backend)
        dx = to_device(np.full(x.shape, np.nan), backend)
        K.lrn_forward(xd, y, 4, 1.0, 0.75, 2.0)
        K.lrn_backward(gd, xd, dx, 4, 1.0, 0.75, 2.0)
    assert np.isfinite(to_numpy(y)).all() and np.isfinite(to_numpy(dx)).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_inputs(backend):
    for shape in [(0, 4, 3, 3), (2, 4, 0, 3), (2, 0, 3, 3)]:
        with nnkern.device(backend):
            x = to_device(np.ones(shape), backend)
            y = F.local_response_norm(x, 3)
            dx = F.local_response_norm_backward(x, x, 3)
        assert y.shape == dx.shape == shape


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 3), c=st.integers(1, 12), l=st.integers(1, 40), size=st.integers(1, 14),
       params=st.sampled_from(PARAMS), dtype=st.sampled_from(DTYPES))
def test_cpu_hypothesis(n, c, l, size, params, dtype):
    check_op("local_response_norm", [_x((n, c, l))], "cpu", dtype, {"size": size, **params})


def test_errors():
    x = _x((2, 3, 4, 4))
    with pytest.raises(ValueError, match=r"3 or more dimensions \(N, C, \.\.\.\).*got shape \(2, 3\)"):
        F.local_response_norm(x[:, :, 0, 0], 3)
    with pytest.raises(ValueError, match=r"size must lie in \[1, 2147483647\], got 0"):
        F.local_response_norm(x, 0)
    with pytest.raises(TypeError, match=r"size must be an int, got 2.5"):
        F.local_response_norm(x, 2.5)
    with pytest.raises(ValueError, match=r"alpha must be a number in \[0, inf\), got nan"):
        F.local_response_norm(x, 3, alpha=float("nan"))
    with pytest.raises(ValueError, match=r"beta must be a number in \[0, inf\), got -0.5"):
        F.local_response_norm(x, 3, beta=-0.5)
    with pytest.raises(TypeError, match=r"beta must be a real number, got 'a'"):
        F.local_response_norm(x, 3, beta="a")
    with pytest.raises(TypeError, match=r"k must be a real number, got True"):
        F.local_response_norm(x, 3, k=True)
    with pytest.raises(TypeError, match=r"x must be float32 or float64, got dtype int64"):
        F.local_response_norm(x.astype(np.int64), 3)
    with pytest.raises(ValueError, match=r"grad_out must have shape \(2, 3, 4, 4\), got \(2, 3\)"):
        F.local_response_norm_backward(x[:, :, 0, 0], x, 3)
    with pytest.raises(TypeError, match=r"grad_out has dtype float32 but x has float64"):
        F.local_response_norm_backward(x.astype(np.float32), x, 3)


# --- the layer ---------------------------------------------------------------------------


def test_layer_matches_functional_and_has_no_weights():
    x = _x((4, 6, 5, 5))
    g = _x((4, 6, 5, 5), seed=2)
    layer = layers.LocalResponseNorm(5, alpha=0.5, beta=0.75, k=2.0)
    assert_close(layer(x), F.local_response_norm(x, 5, 0.5, 0.75, 2.0), np.float64, "layer y")
    xt = nnkern.tensor(x, requires_grad=True)
    layer(xt, training=True).backward(g)      # recorded on the tape: the op's backward
    assert_close(xt.grad, F.local_response_norm_backward(g, x, 5, 0.5, 0.75, 2.0),
                 np.float64, "layer dx")
    assert layer.count_params() == (0, 0)


def test_autograd_gradcheck():
    from nnkern.testing import gradcheck

    assert gradcheck(lambda x: (F.local_response_norm(x, 3, 1.0, 0.75, 2.0) * x).sum(),
                     [_x((2, 5, 2, 2))])


def test_layer_in_a_model_trains_and_round_trips(tmp_path):
    model = nnkern.Sequential([
        layers.Input((3, 6, 6)),
        layers.Conv2D(8, 3, padding="same", activation="relu"),
        layers.LocalResponseNorm(3, alpha=1.0, beta=0.75, k=2.0),
        layers.Flatten(),
        layers.Dense(2),
    ], seed=0)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    x = _x((16, 3, 6, 6)).astype(np.float32)
    y = (x[:, 0].mean(axis=(1, 2)) > 0).astype(np.int64)
    model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    path = tmp_path / "m.npz"
    model.save(path)
    loaded = nnkern.models.load_model(path)
    lrn = next(layer for layer in loaded.layers if isinstance(layer, layers.LocalResponseNorm))
    assert (lrn.size, lrn.alpha, lrn.beta, lrn.k) == (3, 1.0, 0.75, 2.0)
    np.testing.assert_allclose(loaded.predict(x), model.predict(x), rtol=1e-6, atol=1e-6)


def test_layer_errors():
    with pytest.raises(ValueError, match=r"size must lie in \[1, 2147483647\], got 0"):
        layers.LocalResponseNorm(0)
    with pytest.raises(ValueError, match=r"expects a per-sample shape \(channels, \.\.\.\)"):
        nnkern.Sequential([layers.Input((16,)), layers.LocalResponseNorm(3)])


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,size", [((128, 96, 27, 27), 5), ((3, 7, 5, 9), 4)])
def test_lrn_cuda_real_shapes(shape, size, dtype):
    check_op("local_response_norm", [_x(shape)], "cuda", dtype, {"size": size, **PARAMS[1]})
