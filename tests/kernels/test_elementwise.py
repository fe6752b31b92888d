"""Activations, softmaxes, bias add and dropout on every backend vs the reference."""

import numpy as np
import pytest
from harness import BACKENDS, DTYPES, assert_close, check_gradients, check_op, run_op

import nnkern
import nnkern.functional as F

# numpy/cpu: small-but-real shapes, plus one above the CPU's serial/parallel switch
# (about 50k elements); the CUDA simulator: tiny shapes.
SHAPES = {
    "numpy": [(1,), (7, 13), (2, 3, 5, 5)],
    "cpu": [(1,), (7, 13), (2, 3, 5, 5), (64, 1001)],
    "cuda": [(1,), (3, 7), (1, 2, 3, 5)],
}


def _away_from_zero(shape, seed=0):
    # values in +-[0.1, 3): no relu kink within a finite-difference step
    rng = np.random.default_rng(seed)
    return rng.uniform(0.1, 3.0, shape) * rng.choice([-1.0, 1.0], shape)


@pytest.mark.parametrize("op", ["relu", "sigmoid", "tanh"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_activation(op, backend, dtype):
    for shape in SHAPES[backend]:
        check_op(op, [_away_from_zero(shape)], backend, dtype)


@pytest.mark.parametrize("backend", BACKENDS)
def test_activations_at_infinities_and_nan(backend):
    x = np.array([-np.inf, -1e4, -0.0, 0.0, 1e4, np.inf, np.nan], np.float32)
    g = np.array([np.inf, 1, 1, 1, 1, 1, 1], np.float32)
    with nnkern.device(backend):
        xd, gd = nnkern.to_device(x), nnkern.to_device(g)
        got = {op: nnkern.to_numpy(getattr(F, op)(xd)) for op in ("relu", "sigmoid", "tanh")}
        drelu = nnkern.to_numpy(F.relu_backward(gd, xd))
    np.testing.assert_array_equal(got["relu"], [0, 0, 0, 0, 1e4, np.inf, np.nan])
    np.testing.assert_array_equal(got["sigmoid"], [0, 0, 0.5, 0.5, 1, 1, np.nan])
    np.testing.assert_array_equal(got["tanh"], [-1, -1, 0, 0, 1, 1, np.nan])
    # torch's relu backward selects on x: 0 where x <= 0, g elsewhere, so x = NaN passes g
    np.testing.assert_array_equal(drelu, [0, 0, 0, 0, 1, 1, 1])


@pytest.mark.parametrize("backend", BACKENDS)
def test_non_contiguous_inputs(backend):
    x = _away_from_zero((5, 3)).T                      # (3, 5), Fortran-ordered
    b = np.arange(5.0)
    expected = {"tanh": np.tanh(x), "softmax": np.exp(x) / np.exp(x).sum(0),
                "bias_add": x + b}
    with nnkern.device(backend):
        xd = nnkern.to_device(x)
        got = {"tanh": F.tanh(xd), "softmax": F.softmax(xd, axis=0),
               "bias_add": F.bias_add(xd, nnkern.to_device(b))}
    for op, value in got.items():
        assert_close(value, expected[op], np.float64, op)


@pytest.mark.parametrize("op", ["sigmoid", "tanh", "softmax", "log_softmax"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_backward_with_saved_output_is_the_same(op, backend):
    x = _away_from_zero((3, 7)).astype(np.float32)
    with nnkern.device(backend):
        xd = nnkern.to_device(x)
        g = nnkern.to_device(np.linspace(-1, 1, x.size, dtype=np.float32).reshape(x.shape))
        y = getattr(F, op)(xd)
        with_out = getattr(F, op + "_backward")(g, xd, out=y)
        without = getattr(F, op + "_backward")(g, xd)
    np.testing.assert_array_equal(nnkern.to_numpy(with_out), nnkern.to_numpy(without))


SOFTMAX_CASES = {
    "numpy": [((7, 13), -1), ((2, 3, 5, 5), 1), ((4, 6), 0), ((1, 1), -1)],
    "cpu": [((7, 13), -1), ((2, 3, 5, 5), 1), ((4, 6), 0), ((1, 1), -1), ((300, 1000), -1),
            ((8, 100, 90), 1)],
    "cuda": [((3, 7), -1), ((2, 3, 2, 2), 1), ((4, 3), 0)],
}


@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax(op, backend, dtype):
    for shape, axis in SOFTMAX_CASES[backend]:
        x = np.random.default_rng(1).standard_normal(shape) * 3
        check_op(op, [x], backend, dtype, {"axis": axis})


@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_softmax_stable_for_huge_inputs(op, backend):
    x = np.array([[1e4, -1e4, 1e4 - 1.0], [-1e4, -1e4 + 2.0, -1e4]])
    # independent float64 oracle: shift by the row max by hand
    shifted = x - x.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    expected = np.exp(log_p) if op == "softmax" else log_p
    for dtype in DTYPES:
        outs, _, _ = run_op(op, [x], backend, dtype)
        assert_close(outs[0], expected, dtype, f"{op} {np.dtype(dtype)}")


BIAS_SHAPES = {
    "numpy": [(1, 1), (5, 7), (2, 3, 4, 5), (1, 1, 3, 3)],
    "cpu": [(1, 1), (5, 7), (2, 3, 4, 5), (1, 1, 3, 3), (32, 64, 28, 28), (1000, 300)],
    "cuda": [(1, 1), (3, 5), (2, 3, 2, 3)],
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_bias_add(backend, dtype):
    rng = np.random.default_rng(2)
    for shape in BIAS_SHAPES[backend]:
        x = rng.standard_normal(shape)
        b = rng.standard_normal(shape[1])
        # db sums N*H*W terms: rounding grows with the count
        rtol = 1e-3 if (dtype == np.float32 and x.size > 10000) else None
        check_op("bias_add", [x, b], backend, dtype, rtol=rtol)


@pytest.mark.parametrize("shape", [(2, 0, 3, 3), (0, 3, 2, 2), (2, 3, 0, 4), (3, 0), (0, 4)])
@pytest.mark.parametrize("backend", BACKENDS)
def test_bias_add_empty(backend, shape):
    # issue 12 item 7: no channels (C = 0) raised ZeroDivisionError on cpu
    x = np.ones(shape, np.float32)
    b = np.arange(shape[1], dtype=np.float32)
    with nnkern.device(backend):
        y = F.bias_add(nnkern.to_device(x), nnkern.to_device(b))
        dx, db = F.bias_add_backward(nnkern.to_device(x), nnkern.to_device(x),
                                     nnkern.to_device(b))
    assert y.shape == dx.shape == shape and db.shape == (shape[1],)
    np.testing.assert_array_equal(nnkern.to_numpy(db), x.sum(axis=tuple(
        i for i in range(x.ndim) if i != 1)))


@pytest.mark.parametrize(
    "op,kwargs",
    [("relu", {}), ("sigmoid", {}), ("tanh", {}), ("softmax", {"axis": 1}),
     ("log_softmax", {"axis": 0}), ("log_softmax", {"axis": -1})],
)
def test_gradients(op, kwargs):
    check_gradients(op, [_away_from_zero((3, 4, 2))], kwargs)


def test_bias_add_gradients():
    rng = np.random.default_rng(3)
    check_gradients("bias_add", [rng.standard_normal((2, 3, 2, 2)), rng.standard_normal(3)])
    check_gradients("bias_add", [rng.standard_normal((4, 5)), rng.standard_normal(5)])


# --- dropout ----------------------------------------------------------------------------------


DROPOUT_SHAPES = {"numpy": [(1,), (7, 13), (64, 1001)], "cpu": [(1,), (7, 13), (64, 1001)],
                  "cuda": [(1,), (5, 41)]}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p,seed", [(0.5, 0), (0.1, 12345), (0.9, 2**64 - 1)])
def test_dropout_mask_identical_on_every_backend(backend, dtype, p, seed):
    rng = np.random.default_rng(4)
    for shape in DROPOUT_SHAPES[backend]:
        x = rng.standard_normal(shape).astype(dtype)
        g = rng.standard_normal(shape).astype(dtype)
        kwargs = {"p": p, "training": True, "seed": seed}
        with nnkern.device("numpy"):
            y_ref = F.dropout(x, **kwargs)
            dx_ref = F.dropout_backward(g, x, **kwargs)
        with nnkern.device(backend):
            y = F.dropout(nnkern.to_device(x), **kwargs)
            dx = F.dropout_backward(nnkern.to_device(g), nnkern.to_device(x), **kwargs)
        assert y.dtype == dtype
        # the same mask and the same float multiply: exactly equal
        np.testing.assert_array_equal(nnkern.to_numpy(y), y_ref)
        np.testing.assert_array_equal(nnkern.to_numpy(dx), dx_ref)
        np.testing.assert_array_equal(y_ref == 0, dx_ref == 0)


def test_dropout_hash_known_values():
    # splitmix64 reference outputs for seed 0 (state advanced by gamma before mixing)
    from nnkern.kernels.elementwise.reference import dropout_hash
    expected64 = [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F]
    np.testing.assert_array_equal(dropout_hash(0, 3), [v >> 32 for v in expected64])


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_dropout_keep_fraction_and_scale(p):
    n = 200_000
    x = np.ones(n, np.float32)
    y = F.dropout(x, p, seed=7)
    kept = y != 0
    # binomial: the keep fraction is within 5 standard deviations of 1 - p
    sd = np.sqrt(p * (1 - p) / n)
    assert abs(kept.mean() - (1 - p)) < 5 * sd
    np.testing.assert_allclose(y[kept], np.float32(1 / (1 - p)))
    # the mean is preserved in expectation (inverted dropout)
    assert abs(y.mean() - 1.0) < 5 * sd / (1 - p)
    # different seeds give different masks
    assert (F.dropout(x, p, seed=8) != y).any()


def test_dropout_identity_when_off():
    x = np.arange(6, dtype=np.float32)
    assert F.dropout(x, 0.5, training=False) is x
    assert F.dropout(x, 0.0, training=True) is x
    g = np.ones(6, np.float32)
    assert F.dropout_backward(g, x, 0.5, training=False) is g


def test_dropout_gradients():
    x = _away_from_zero((4, 5))
    check_gradients("dropout", [x], {"p": 0.3, "training": True, "seed": 9})


# --- validation -------------------------------------------------------------------------------


def test_errors():
    x = np.zeros((2, 3), np.float32)
    with pytest.raises(TypeError, match="x must be float32 or float64, got dtype int32"):
        F.relu(np.zeros(3, np.int32))
    with pytest.raises(TypeError, match="x must be an array, got list"):
        F.sigmoid([1.0, 2.0])
    with pytest.raises(ValueError, match=r"grad_out must have shape \(2, 3\), got \(3, 2\)"):
        F.tanh_backward(np.zeros((3, 2), np.float32), x)
    with pytest.raises(TypeError, match="grad_out has dtype float64 but x has float32"):
        F.relu_backward(np.zeros((2, 3)), x)
    with pytest.raises(ValueError, match=r"out must have shape \(2, 3\), got \(2,\)"):
        F.sigmoid_backward(x, x, out=np.zeros(2, np.float32))
    with pytest.raises(ValueError, match=r"axis must lie in \[-2, 2\) for a 2-D x, got 2"):
        F.softmax(x, axis=2)
    with pytest.raises(TypeError, match="axis must be an int, got 1.0"):
        F.log_softmax(x, axis=1.0)
    with pytest.raises(ValueError, match="bias_add.*got shape \\(2, 3, 4\\)"):
        F.bias_add(np.zeros((2, 3, 4), np.float32), np.zeros(3, np.float32))
    with pytest.raises(ValueError, match=r"b must have shape \(3,\) to match axis 1.*got \(4,\)"):
        F.bias_add(x, np.zeros(4, np.float32))
    with pytest.raises(TypeError, match="b has dtype float64 but x has float32"):
        F.bias_add(x, np.zeros(3))
    with pytest.raises(ValueError, match=r"p must lie in \[0, 1\), got 1.0"):
        F.dropout(x, 1.0)
    with pytest.raises(ValueError, match=r"p must lie in \[0, 1\), got -0.1"):
        F.dropout(x, -0.1)
    with pytest.raises(TypeError, match="seed must be an int, got 1.5"):
        F.dropout(x, 0.5, seed=1.5)
    with pytest.raises(TypeError, match="training must be a bool, got 'yes'"):
        F.dropout(x, 0.5, training="yes")


# --- real GPU, real shapes ------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_elementwise_gpu(dtype):
    x = _away_from_zero((256, 1000))
    for op in ("relu", "sigmoid", "tanh"):
        check_op(op, [x], "cuda", dtype)
    for shape, axis in [((512, 1000), -1), ((32, 64, 14, 14), 1), ((3, 100000), -1)]:
        xs = np.random.default_rng(5).standard_normal(shape)
        check_op("softmax", [xs], "cuda", dtype, {"axis": axis})
        check_op("log_softmax", [xs], "cuda", dtype, {"axis": axis})
    rng = np.random.default_rng(6)
    xb = rng.standard_normal((64, 128, 28, 28))
    check_op("bias_add", [xb, rng.standard_normal(128)], "cuda", dtype,
             rtol=1e-3 if dtype == np.float32 else None)


@pytest.mark.gpu
def test_dropout_gpu_bit_identical():
    x = np.random.default_rng(7).standard_normal((1000, 1000)).astype(np.float32)
    y_ref = F.dropout(x, 0.3, seed=11)
    with nnkern.device("cuda"):
        y = F.dropout(nnkern.to_device(x), 0.3, seed=11)
    np.testing.assert_array_equal(nnkern.to_numpy(y), y_ref)
