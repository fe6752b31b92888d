"""Correctness of the gemm family (matmul, linear) on every backend against the reference."""

import nnkern.kernels.gemm.cpu as GEMM_CPU
import numpy as np
import pytest
from harness import BACKENDS, DTYPES, assert_close, check_gradients, check_op

import nnkern
import nnkern.functional as F

TRANSPOSES = [(False, False), (False, True), (True, False), (True, True)]

# (M, N, K): ragged sizes around the CPU micro-tile (6 x 16) and the CUDA tiles
SHAPES = {
    "numpy": [(9, 7, 5), (1, 1, 1), (37, 70, 45), (1, 33, 17)],
    "cpu": [(9, 7, 5), (1, 1, 1), (37, 70, 45), (1, 33, 17), (130, 97, 300)],
    "cuda": [(9, 7, 5), (5, 17, 3)],  # the simulator runs a Python thread per CUDA thread
}


def _ab(M, N, K, trans_a, trans_b, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((K, M) if trans_a else (M, K))
    b = rng.standard_normal((N, K) if trans_b else (K, N))
    return a, b


def _cases(shapes_of):
    return [(backend, shape) for backend in BACKENDS for shape in shapes_of[backend]]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("trans", TRANSPOSES, ids=lambda t: f"t{int(t[0])}{int(t[1])}")
@pytest.mark.parametrize("backend,shape", _cases(SHAPES))
def test_matmul(backend, shape, trans, dtype):
    a, b = _ab(*shape, *trans)
    check_op("matmul", [a, b], backend, dtype, {"trans_a": trans[0], "trans_b": trans[1]})


LINEAR_SHAPES = {  # (N, IN, OUT)
    "numpy": [(4, 5, 3), (1, 1, 1)],
    "cpu": [(4, 5, 3), (1, 1, 1), (33, 70, 19)],
    "cuda": [(4, 5, 3)],
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("activation", [None, "relu"])
@pytest.mark.parametrize("backend,shape", _cases(LINEAR_SHAPES))
def test_linear(backend, shape, activation, bias, dtype):
    N, IN, OUT = shape
    rng = np.random.default_rng(1)
    x = rng.standard_normal((N, IN))
    w = rng.standard_normal((OUT, IN))
    b = rng.standard_normal(OUT) if bias else None
    check_op("linear", [x, w, b], backend, dtype, {"activation": activation})


@pytest.mark.parametrize("backend", BACKENDS)
def test_linear_backward_saved_out(backend):
    rng = np.random.default_rng(2)
    x, w, b = rng.standard_normal((5, 4)), rng.standard_normal((3, 4)), rng.standard_normal(3)
    g = rng.standard_normal((5, 3))
    with nnkern.device(backend):
        y = F.linear(x, w, b, activation="relu")
        with_out = F.linear_backward(g, x, w, b, activation="relu", out=y)
        without = F.linear_backward(g, x, w, b, activation="relu")
    for got, ref in zip(with_out, without):
        assert_close(got, nnkern.to_numpy(ref), np.float64)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", [(0, 3, 4), (3, 0, 4), (3, 4, 0)], ids=str)
def test_matmul_empty(backend, shape):
    M, N, K = shape
    a, b = np.ones((M, K)), np.ones((K, N))
    with nnkern.device(backend):
        c = F.matmul(a, b)
        da, db = F.matmul_backward(np.ones((M, N)), a, b)
    assert_close(c, np.zeros((M, N)), np.float64)
    assert_close(da, np.full((M, K), float(N)), np.float64)
    assert_close(db, np.full((K, N), float(M)), np.float64)


def test_matmul_non_contiguous():
    rng = np.random.default_rng(3)
    a = rng.standard_normal((12, 10))[::2, 1::2]  # (6, 5), strided view
    b = rng.standard_normal((5, 7))
    with nnkern.device("cpu"):
        c = F.matmul(a, b)
    assert_close(c, a @ b, np.float64)


@pytest.mark.parametrize("trans", TRANSPOSES, ids=lambda t: f"t{int(t[0])}{int(t[1])}")
def test_matmul_gradients(trans):
    a, b = _ab(4, 3, 5, *trans)
    check_gradients("matmul", [a, b], {"trans_a": trans[0], "trans_b": trans[1]})


@pytest.mark.parametrize("activation", [None, "relu"])
def test_linear_gradients(activation):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((4, 3))
    w = rng.standard_normal((5, 3))
    b = rng.standard_normal(5)
    y = x @ w.T + b
    b += np.where(np.abs(y) < 0.1, 0.3, 0.0).max(axis=0)  # keep pre-activations off the kink
    check_gradients("linear", [x, w, b], {"activation": activation})


def test_gemm_kernel_accumulate():
    """The raw kernels (what the conv im2col path calls) accumulate when asked."""
    from nnkern._dispatch import kernels

    rng = np.random.default_rng(5)
    for backend in BACKENDS:
        for trans_a, trans_b in TRANSPOSES:
            a, b = _ab(7, 18, 5, trans_a, trans_b)
            c0 = rng.standard_normal((7, 18))
            expect = c0 + (a.T if trans_a else a) @ (b.T if trans_b else b)
            for dtype in DTYPES:
                c = c0.astype(dtype)
                kernels("gemm", backend).gemm(
                    a.astype(dtype), b.astype(dtype), c, trans_a, trans_b, True
                )
                assert_close(c, expect, dtype, f"gemm accumulate [{backend},{trans_a},{trans_b}]")


# (M, N, K) per CPU version: ragged edges in both directions, more than one step of
# K (KC = 256) for small and packed, few rows (packed splits the columns), work on
# one thread and on all threads (packed); on two threads the last two run packed by
# columns (each column block packs its own B strips), with ragged strips; N = 300 is a
# last B packing group of one whole strip and the ragged one (BG = 8 strips a group)
VERSION_SHAPES = [(5, 7, 3), (1, 33, 17), (9, 70, 40), (37, 70, 300), (64, 64, 64),
                  (257, 131, 260), (7, 1100, 1100), (50, 300, 600)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("trans", TRANSPOSES, ids=lambda t: f"t{int(t[0])}{int(t[1])}")
@pytest.mark.parametrize("version", list(GEMM_CPU.VERSIONS))
def test_cpu_versions(version, trans, dtype):
    """Every CPU version with accumulate, bias and relu, against float64 NumPy."""
    rng = np.random.default_rng(8)
    shapes = VERSION_SHAPES[:4] if version == "naive" else VERSION_SHAPES
    for M, N, K in shapes:
        a, b = _ab(M, N, K, *trans)
        c0 = rng.standard_normal((M, N))
        bias = rng.standard_normal(N)
        product = (a.T if trans[0] else a) @ (b.T if trans[1] else b)
        a, b = a.astype(dtype), b.astype(dtype)
        with GEMM_CPU.forced_version(version):
            c = c0.astype(dtype)
            GEMM_CPU.gemm(a, b, c, *trans, True)
            assert_close(c, c0 + product, dtype, f"{version} gemm accumulate {(M, N, K)}")
            c = np.full((M, N), np.nan, dtype)  # every element must be written
            GEMM_CPU.gemm_bias_relu(a, b, c, *trans, False, bias.astype(dtype), True)
            assert_close(c, np.maximum(product + bias, 0), dtype,
                         f"{version} gemm+bias+relu {(M, N, K)}")


def test_cpu_version_choice():
    """choose() names a version and says why; forced_version checks its argument."""
    assert GEMM_CPU.choose(4, 4, 4, False)[0] == "naive"
    assert GEMM_CPU.choose(64, 64, 64, True)[0] == "small"
    version, why = GEMM_CPU.choose(1024, 1024, 1024, False)
    assert version == "packed" and "M*N*K" in why
    # small_t: M whole strips of NR rows (the vector width's: 32 float32 and 16 float64 rows
    # with AVX-512, half that with AVX2) with a long K and b.T, or a ragged N of few strips
    # (test_cpu_versions checks what it computes)
    nr32, nr64 = GEMM_CPU.NR32, GEMM_CPU.NR64
    assert GEMM_CPU.choose(nr32, 128, 784, True)[0] == "small_t"
    assert GEMM_CPU.choose(nr32, 128, 784, True, dtype=np.float64)[0] == "small"
    assert GEMM_CPU.choose(nr64, 128, 784, True, dtype=np.float64)[0] == "small_t"
    assert GEMM_CPU.choose(nr32, 128, 784, True, trans_a=True)[0] == "small"
    version, why = GEMM_CPU.choose(64, 10, 84, False)
    assert version == "small_t" and "ragged" in why
    with pytest.raises(ValueError, match=r"version must be one of \('naive', 'small', "
                                         r"'small_t', 'packed'\), got 'fast'"):
        GEMM_CPU.forced_version("fast")


def test_cpu_small_t_empty_inner_dimension():
    """small_t with K = 0 stores the epilogue alone (its scratch product is zero, not
    whatever the scratch held)."""
    bias = np.arange(-3.0, 7.0)
    with GEMM_CPU.forced_version("small_t"):
        c = np.full((32, 10), np.nan)
        GEMM_CPU.gemm_bias_relu(np.ones((32, 0)), np.ones((10, 0)), c, False, True, False,
                                bias, True)
    assert_close(c, np.tile(np.maximum(bias, 0), (32, 1)), np.float64, "small_t K = 0")


def test_cpu_strided_output():
    """An output that is a column block of a larger array, or has a column stride,
    gets the product and nothing around it changes."""
    import nnkern.kernels.gemm.cpu as G

    a, b = _ab(40, 50, 30, False, False)
    big = np.zeros((3, 40, 100))
    G.gemm(a, b, big[1, :, :50], False, False, False)
    G.gemm(a, b, big[2, :, ::2], False, False, False)
    assert_close(big[1, :, :50], a @ b, np.float64)
    assert_close(big[2, :, ::2], a @ b, np.float64)
    assert not big[0].any() and not big[1, :, 50:].any() and not big[2, :, 1::2].any()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("version,shape", [("small", (64, 64, 64)), ("naive", (12, 10, 20)),
                                           ("small_t", (64, 10, 84))])
def test_cpu_repeated_shape(version, shape, dtype):
    """A shape seen before takes gemm_bias_relu's cached one-thread path: the same product,
    and for operands that are not C-contiguous (views of wider arrays), bias, relu and
    accumulate, the same results as the first call (NumPy in float64)."""
    M, N, K = shape
    rng = np.random.default_rng(3)
    for trans in TRANSPOSES:
        assert GEMM_CPU.choose(M, N, K, trans[1], False, trans[0], dtype)[0] == version
        a, b = _ab(M, N, K, *trans, seed=4)
        product = (a.T if trans[0] else a) @ (b.T if trans[1] else b)
        a, b = a.astype(dtype), b.astype(dtype)
        bias = rng.standard_normal(N)
        for _ in range(2):  # the first call chooses and keeps the version
            c = np.full((M, N), np.nan, dtype)
            GEMM_CPU.gemm(a, b, c, *trans, False)
            assert_close(c, product, dtype, f"repeated {shape} {trans}")
        wide_a = np.zeros((a.shape[0], 2 * a.shape[1]), dtype)
        wide_a[:, ::2] = a
        wide_b = np.zeros((b.shape[0], b.shape[1] + 3), dtype)
        wide_b[:, :-3] = b
        c0 = rng.standard_normal((M, N))
        for name, a_in, b_in in (("a", wide_a[:, ::2], b), ("b", a, wide_b[:, :-3])):
            c = c0.astype(dtype)
            GEMM_CPU.gemm_bias_relu(a_in, b_in, c, *trans, True, bias.astype(dtype), True)
            assert_close(c, np.maximum(c0 + product + bias, 0), dtype,
                         f"repeated {shape} {trans}, strided {name}, bias, relu, accumulate")


def _offsets(n, kind, rng):
    # int64 offset tables of length n: "runs" (consecutive in runs of 37, so a strip of
    # the packed version, MR or NR offsets, is sometimes one vector copy and sometimes
    # not), "blocks" (runs of 13: MR-step blocks whose offsets run, and blocks cut by a
    # jump) or "scattered" (none run)
    i = np.arange(n)
    if kind == "runs":
        return (i + (i // 37) * 7).astype(np.int64)
    if kind == "blocks":
        return (i + (i // 13) * 3).astype(np.int64)
    return rng.permutation(n * 3)[:n].astype(np.int64)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("side", ["a", "b", "both"])
@pytest.mark.parametrize("kinds", [("runs", "scattered"), ("scattered", "blocks"),
                                   ("scattered", "scattered")], ids=lambda k: "-".join(k))
def test_cpu_gathered_operands(kinds, side, dtype):
    """gemm_operands with Gathered operands, X[i, j] = src[rows[i] + cols[j]], against the
    same matrices built by NumPy indexing and multiplied in float64: every packing path
    (vector copies of consecutive offsets, register transposes of gathered rows, element
    by element) for op(b), op(a) read in place by tile_gathered (a ragged last strip
    reading its first row again), ragged sizes, accumulate and bias."""
    G = GEMM_CPU
    rng = np.random.default_rng(3)
    for M, N, K in [(37, 70, 45), (130, 97, 300), (8, 32, 16), (300, 64, 600)]:
        def gathered(rows_n, cols_n, kinds):
            rows = _offsets(rows_n, kinds[0], rng)
            cols = _offsets(cols_n, kinds[1], rng) * (1 if kinds[0] == "scattered" else 3)
            src = rng.standard_normal(int(rows.max() + cols.max()) + 1)
            return src, rows, cols, src[rows[:, None] + cols[None, :]]

        a_src, a_rows, a_cols, a = gathered(M, K, kinds)
        # b's roles swapped: its columns are the ones that run (b's strips go along them)
        b_src, b_cols, b_rows, bt = gathered(N, K, kinds)
        b = bt.T
        op_a = G.Gathered(a_src.astype(dtype), a_rows, a_cols) if side != "b" else a.astype(dtype)
        op_b = G.Gathered(b_src.astype(dtype), b_rows, b_cols) if side != "a" else b.astype(dtype)
        c0 = rng.standard_normal((M, N))
        bias = rng.standard_normal(N)
        c = c0.astype(dtype)
        G.gemm_operands(op_a, op_b, c, False, False, True)
        assert_close(c, c0 + a @ b, dtype, f"gathered {side} accumulate {(M, N, K)}")
        c = np.full((M, N), np.nan, dtype)  # every element must be written
        G.gemm_operands(op_a, op_b, c, False, False, False, bias.astype(dtype))
        assert_close(c, a @ b + bias, dtype, f"gathered {side} + bias {(M, N, K)}")


def test_cuda_small_tile_instantiations():
    """Both CUDA versions built with other tile sizes still agree with the reference."""
    import nnkern.kernels.gemm.cuda as G
    from numba import float32, float64

    configs = [
        {"BM": 8, "BN": 4, "BK": 4, "TM": 2, "TN": 1},
        {"BM": 4, "BN": 8, "BK": 4, "TM": 1, "TN": 2},
    ]
    for nt, dtype, transposes in ((float32, np.float32, TRANSPOSES),
                                  (float64, np.float64, TRANSPOSES[::3])):
        v1 = G.make_gemm_tiled(nt, 4)
        v2s = [G.make_gemm_regtile(nt, **cfg) for cfg in configs]
        for trans_a, trans_b in transposes:
            a, b = _ab(9, 7, 5, trans_a, trans_b)
            a, b = a.astype(dtype), b.astype(dtype)
            expect = (a.T if trans_a else a).astype(np.float64) @ (b.T if trans_b else b)
            c = np.zeros((9, 7), dtype)
            v1[(2, 3), (4, 4)](a, b, c, 9, 7, 5, trans_a, trans_b, False)
            assert_close(c, expect, dtype, f"v1 tile 4 {trans_a} {trans_b}")
            c = np.zeros((9, 7), dtype)
            G.launch_regtile(v2s[trans_b], a, b, c, trans_a, trans_b, False, None, False)
            assert_close(c, expect, dtype, f"v2 {configs[trans_b]} {trans_a} {trans_b}")


@pytest.mark.parametrize("trans", [(False, True), (True, False)], ids=["t01", "t10"])
def test_cuda_shipped_tiles(trans):
    """The tile sizes a GPU runs (version 1: 16x16, version 2: 64x64 per block), once each."""
    import nnkern.kernels.gemm.cuda as G
    from numba import float32

    a, b = _ab(9, 7, 5, *trans)
    a, b = a.astype(np.float32), b.astype(np.float32)
    expect = (a.T if trans[0] else a).astype(np.float64) @ (b.T if trans[1] else b)
    c = np.zeros((9, 7), np.float32)
    G.gemm_v1(a, b, c, *trans, False)
    assert_close(c, expect, np.float32, "gemm_v1")
    c = np.zeros((9, 7), np.float32)
    G.launch_regtile(
        G.make_gemm_regtile(float32, **G.V2_GPU_CONFIG), a, b, c, *trans, False, None, False
    )
    assert_close(c, expect, np.float32, "gemm_regtile 64x64")


# ----------------------------------------------------------------------------
# errors


def test_matmul_errors():
    a = np.ones((3, 4), np.float32)
    with pytest.raises(ValueError, match=r"inner dimensions must be equal, got 4 and 5"):
        F.matmul(a, np.ones((5, 2), np.float32))
    with pytest.raises(ValueError, match=r"a must have 2 dimensions, got shape \(3,\)"):
        F.matmul(np.ones(3, np.float32), a)
    with pytest.raises(TypeError, match=r"must be float32 or float64, got dtype int64"):
        F.matmul(np.ones((3, 4), np.int64), a.T)
    with pytest.raises(TypeError, match=r"b has dtype float64 but a has float32"):
        F.matmul(a, np.ones((4, 2)))
    with pytest.raises(TypeError, match=r"trans_a must be a bool, got 'yes'"):
        F.matmul(a, a, trans_a="yes")
    with pytest.raises(
        ValueError,
        match=r"g \(the gradient of matmul's output\) must have "
        r"shape \(3, 2\), got \(2, 3\)",
    ):
        F.matmul_backward(np.ones((2, 3), np.float32), a, np.ones((4, 2), np.float32))


def test_linear_errors():
    x = np.ones((2, 3), np.float32)
    w = np.ones((4, 3), np.float32)
    with pytest.raises(ValueError, match=r"in_features must match, got 5 and 3"):
        F.linear(np.ones((2, 5), np.float32), w)
    with pytest.raises(ValueError, match=r"b must have shape \(4,\), got \(3,\)"):
        F.linear(x, w, np.ones(3, np.float32))
    with pytest.raises(
        ValueError,
        match=r"activation must be one of \(None, 'relu'\), "
        r"got 'tanh'",
    ):
        F.linear(x, w, activation="tanh")
    with pytest.raises(
        ValueError,
        match=r"w must have 2 dimensions laid out as "
        r"\(out_features, in_features\), got shape \(3,\)",
    ):
        F.linear(x, np.ones(3, np.float32))
    with pytest.raises(
        ValueError,
        match=r"out \(the forward output of linear\) must have "
        r"shape \(2, 4\)",
    ):
        F.linear_backward(
            np.ones((2, 4), np.float32), x, w, activation="relu", out=np.ones((4, 2), np.float32)
        )


def test_device_mismatch():
    cp = pytest.importorskip("cupy")
    from nnkern.device import cuda_simulated

    if cuda_simulated():
        pytest.skip("under the simulator the cuda backend holds numpy arrays")
    with nnkern.device("cpu"), pytest.raises(F.DeviceMismatchError, match="current device"):
        F.matmul(cp.ones((2, 2), cp.float32), np.ones((2, 2), np.float32))


# ----------------------------------------------------------------------------
# real sizes on a real GPU (NNKERN_TEST_GPU=1)


@pytest.mark.gpu
@pytest.mark.parametrize("trans", TRANSPOSES, ids=lambda t: f"t{int(t[0])}{int(t[1])}")
@pytest.mark.parametrize("shape", [(1024, 1024, 1024), (1000, 999, 1001)], ids=str)
def test_matmul_gpu(shape, trans):
    a, b = _ab(*shape, *trans)
    check_op(
        "matmul", [a, b], "cuda", np.float32, {"trans_a": trans[0], "trans_b": trans[1]}, rtol=1e-3
    )  # sums of ~1000 float32 products


@pytest.mark.gpu
@pytest.mark.parametrize("activation", [None, "relu"])
def test_linear_gpu(activation):
    rng = np.random.default_rng(7)
    x, w, b = (
        rng.standard_normal((513, 300)),
        rng.standard_normal((257, 300)),
        rng.standard_normal(257),
    )
    check_op("linear", [x, w, b], "cuda", np.float32, {"activation": activation}, rtol=1e-3)


@pytest.mark.gpu
def test_gemm_v1_gpu():
    import cupy as cp
    import nnkern.kernels.gemm.cuda as G

    a, b = _ab(1000, 999, 1001, False, True)
    c = cp.empty((1000, 999), cp.float32)
    G.gemm_v1(cp.asarray(a, cp.float32), cp.asarray(b, cp.float32), c, False, True, False)
    assert_close(c, a @ b.T, np.float32, "gemm_v1", rtol=1e-3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_linear_relu_keeps_nan(backend):
    # relu(NaN) is NaN on every backend (as torch's), also when fused into the GEMM
    x = np.ones((3, 4), np.float32)
    x[1, 2] = np.nan
    w = np.ones((5, 4), np.float32)
    with nnkern.device(backend):
        y = nnkern.to_numpy(F.linear(nnkern.to_device(x), nnkern.to_device(w), None,
                                     activation="relu"))
    assert np.isnan(y[1]).all() and np.isfinite(y[[0, 2]]).all()


# ----------------------------------------------------------------------------
# living beside NumPy's OpenBLAS (nnkern/_blas.py)


def _in_child(code, **env):
    # the last line a fresh interpreter prints for `code` (nnkern's import must be its own)
    import os
    import subprocess
    import sys

    environ = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    environ.update(env)
    out = subprocess.run([sys.executable, "-c", code], env=environ, capture_output=True,
                         text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


def test_openblas_timeout_set_before_numpy():
    code = ("import nnkern, os; from nnkern import _blas; "
            "print(os.environ['OPENBLAS_THREAD_TIMEOUT'], _blas.probe() < _blas.SPINNING)")
    assert _in_child(code) == "16 True"


def test_openblas_spinning_detected_and_cut_after_numpy():
    # numpy first: OpenBLAS's idle threads spin (0.1 s after each call) until nnkern's
    # import restarts its pool with the short spin
    code = ("import importlib.util, numpy\n"
            "spec = importlib.util.spec_from_file_location('b', "
            "__import__('os').path.join('nnkern', '_blas.py'))\n"
            "b = importlib.util.module_from_spec(spec); spec.loader.exec_module(b)\n"
            "before = max(b.probe(0.02) for _ in range(3))\n"
            "import nnkern\nfrom nnkern import _blas\n"
            "after = max(_blas.probe(0.02) for _ in range(3))\n"
            "print(before > _blas.SPINNING, after < _blas.SPINNING, 'restarted' in "
            "_blas.status()['action'])")
    import os

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    code = f"import os; os.chdir({root!r})\n" + code
    assert _in_child(code) == "True True True"


def test_openblas_user_setting_wins():
    code = "import numpy, nnkern; from nnkern import _blas; print(_blas.status()['action'])"
    assert _in_child(code, OPENBLAS_THREAD_TIMEOUT="28").startswith("left alone")


@pytest.mark.parametrize("activation", [None, "relu"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_linear_backward_adds_into_grad_buffers(backend, activation):
    # the tape passes a model's gradient buffers: dw and db are ADDED into them in place
    rng = np.random.default_rng(11)
    x, w, b, g = (rng.standard_normal(s) for s in ((5, 7), (3, 7), (3,), (5, 3)))
    y = x @ w.T + b
    dy = g * (y > 0) if activation == "relu" else g
    gw0, gb0 = rng.standard_normal((3, 7)), rng.standard_normal(3)
    with nnkern.device(backend):
        gw, gb = nnkern.to_device(gw0.copy(), backend), nnkern.to_device(gb0.copy(), backend)
        args = [nnkern.to_device(a, backend) for a in (g, x, w, b)]
        dx, dw, db = F.linear_backward(*args, activation, grad_w=gw, grad_b=gb)
        assert dw is None and db is None
        for got, want, what in ((dx, dy @ w, "dx"), (gw, gw0 + dy.T @ x, "grad_w"),
                                (gb, gb0 + dy.sum(0), "grad_b")):
            assert_close(nnkern.to_numpy(got), want, np.float64, f"linear_backward {what}")
        with pytest.raises(ValueError, match="grad_b"):
            F.linear_backward(args[0], args[1], args[2], None, grad_b=gb)
        # add_w / add_b False: written, whatever the buffers held (NaN here)
        gw[...], gb[...] = np.nan, np.nan
        F.linear_backward(*args, activation, grad_w=gw, grad_b=gb, add_w=False, add_b=False)
        assert_close(nnkern.to_numpy(gw), dy.T @ x, np.float64, "linear_backward written dw")
        assert_close(nnkern.to_numpy(gb), dy.sum(0), np.float64, "linear_backward written db")
