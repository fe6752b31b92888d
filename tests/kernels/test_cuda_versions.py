"""Every CUDA kernel version by name, and the code paths the shipped shapes do not reach
under the simulator: other tile instantiations of GEMM v3 and conv v3, split-K, im2col in
chunks, batch norm cut into chunks, the fixed-window pooling kernels, the row splits of
the dense layer's bias gradient, and nnkern's own argument packing.

Each result is checked against the family's NumPy reference (run in float64) on tiny
shapes; the ``gpu``-marked tests at the end run the shuffle versions the simulator lacks
and compare nnkern's argument packing with numba-cuda's launch on a real GPU.
"""

import numpy as np
import pytest
from harness import assert_close, check_op
from numba import cuda

import nnkern
from nnkern._dispatch import kernels

REF = {family: kernels(family, "numpy") for family in ("conv", "gemm", "pool")}


@pytest.fixture(autouse=True)
def _on_cuda():
    with nnkern.device("cuda"):
        yield


# ----------------------------------------------------------------------------
# convolution

# (x shape, w shape, stride, padding, dilation, groups)
CONV = [
    ((2, 4, 5, 6), (6, 2, 3, 3), (1, 1), (1, 1), (1, 1), 2),
    ((3, 3, 6, 5), (4, 3, 2, 3), (2, 1), (0, 1), (1, 2), 1),
]


def _conv_case(case, seed=0):
    x_shape, w_shape, stride, padding, dilation, groups = CONV[case]
    rng = np.random.default_rng(seed)
    N, _, H, W = x_shape
    K, _, R, S = w_shape
    OH = (H + 2 * padding[0] - dilation[0] * (R - 1) - 1) // stride[0] + 1
    OW = (W + 2 * padding[1] - dilation[1] * (S - 1) - 1) // stride[1] + 1
    x, w, b = rng.standard_normal(x_shape), rng.standard_normal(w_shape), rng.standard_normal(K)
    g = rng.standard_normal((N, K, OH, OW))
    geo = (stride, padding, dilation, groups)
    want = _conv_run(REF["conv"], x, w, b, g, geo)
    return x, w, b, g, geo, want


def _conv_run(kern, x, w, b, g, geo, **version):
    y = np.full(g.shape, np.nan)
    dx, dw, db = np.full(x.shape, np.nan), np.full(w.shape, np.nan), np.full(b.shape, np.nan)
    kern.conv2d_forward(x, w, b, y, *geo, "auto", **version)
    kern.conv2d_backward_data(g, w, dx, *geo, "auto", **version)
    kern.conv2d_backward_weights(g, x, dw, db, *geo, "auto", **version)
    return y, dx, dw, db


def _assert_conv(got, want, what):
    for name, a, e in zip(("y", "dx", "dw", "db"), got, want, strict=True):
        assert_close(a, e, np.float64, f"{what} {name}")


@pytest.mark.parametrize("version", ["v1", "v2", "v3"])
@pytest.mark.parametrize("case", range(len(CONV)))
def test_conv_each_version_by_name(case, version):
    from nnkern.kernels.conv import cuda as conv

    x, w, b, g, geo, want = _conv_case(case)
    _assert_conv(_conv_run(conv, x, w, b, g, geo, version=version), want, version)


@pytest.mark.parametrize("splits", [1, 3])
@pytest.mark.parametrize("config", ["4x4", "4x8"])
def test_conv_v3_every_tile_config_and_split_k(config, splits, monkeypatch):
    # The planner picks one config per shape; here each config runs every pass, and
    # backward-weights cuts the pixels into several splits summed by the second launch.
    from nnkern.kernels.conv import cuda as conv

    monkeypatch.setattr(conv, "v3_plan", lambda *a, **k: (config, 0, splits))
    x, w, b, g, geo, want = _conv_case(1, seed=3)
    _assert_conv(_conv_run(conv, x, w, b, g, geo, version="v3"), want, f"{config} x{splits}")


def test_conv_v3_planner_splits_small_grids(monkeypatch):
    # Too few output tiles for the block target: the pixels are cut into splits of at
    # least 8 K-steps each (the forced-split test above runs such a plan).
    from nnkern.kernels.conv import cuda as conv

    monkeypatch.setattr(conv, "MIN_BLOCKS", 64)
    conv.v3_plan.cache_clear()
    try:
        name, blocks, splits = conv.v3_plan(4, 19, 270, 1, split=True)
        BM, BN, BK = conv.SIM_CONFIGS[name][:3]
        tiles = -(-4 // BM) * -(-19 // BN)
        assert splits == min(-(-64 // tiles), 270 // (8 * BK)) > 1
        assert blocks == tiles * splits
        assert conv.v3_plan(4, 19, 270, 1)[2] == 1  # forward/backward-data never split
    finally:
        conv.v3_plan.cache_clear()


@pytest.mark.parametrize("cap", [1, 10**9], ids=["sample_per_chunk", "one_chunk"])
def test_conv_im2col_chunks(cap, monkeypatch):
    # One launch per step per chunk: a chunk of one sample (3 chunks here) or the batch.
    from nnkern.kernels.conv import cuda as conv

    monkeypatch.setattr(conv, "IM2COL_CAP", cap)
    for case in range(len(CONV)):
        x, w, b, g, geo, want = _conv_case(case, seed=5)
        _assert_conv(_conv_run(conv, x, w, b, g, geo, version="v2"), want, f"cap {cap}")


def test_conv_im2col_launches_per_step(monkeypatch):
    # The whole batch in one chunk: im2col, one GEMM per group and one scatter.
    from nnkern.kernels.conv import cuda as conv
    from numba.cuda.simulator.kernel import FakeCUDAKernel

    x, w, b, g, geo, _ = _conv_case(0)  # N = 2, groups = 2
    calls = []
    real = FakeCUDAKernel.__call__

    def counting(self, *args):
        if not self._device:
            calls.append(self.fn.__name__)
        return real(self, *args)

    monkeypatch.setattr(FakeCUDAKernel, "__call__", counting)
    y = np.empty(g.shape)
    conv.conv2d_forward(x, w, b, y, *geo, "im2col")
    assert sorted(calls) == ["gemm_v3", "gemm_v3", "im2col", "scatter_out"]


# ----------------------------------------------------------------------------
# GEMM

TRANSPOSES = [(False, False), (False, True), (True, False), (True, True)]


def _ab(M, N, K, ta, tb, seed=1):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((K, M) if ta else (M, K))
    b = rng.standard_normal((N, K) if tb else (K, N))
    return a, b


@pytest.mark.parametrize("version", ["v1", "v2", "v3"])
def test_gemm_each_version_by_name(version):
    from nnkern.kernels.gemm import cuda as G

    for ta, tb in TRANSPOSES:
        a, b = _ab(9, 7, 5, ta, tb)
        for accumulate in (False, True):
            c0 = np.random.default_rng(2).standard_normal((9, 7))
            want = c0.copy()
            REF["gemm"].gemm(a, b, want, ta, tb, accumulate)
            c = c0.copy()
            G.gemm(a, b, c, ta, tb, accumulate, version=version)
            assert_close(c, want, np.float64, f"{version} {ta} {tb} {accumulate}")


@pytest.mark.parametrize("cfg", [
    {"BM": 4, "BN": 8, "BK": 4, "TM": 2, "TN": 2},
    {"BM": 8, "BN": 4, "BK": 2, "TM": 4, "TN": 1},
], ids=["4x8", "8x4"])
def test_gemm_v3_other_tiles_with_bias_and_relu(cfg):
    from nnkern.kernels.gemm import cuda as G
    from numba import float32

    kernel = cuda.jit(G.gemm_v3_function(float32, **cfg))
    rng = np.random.default_rng(3)
    for ta, tb in TRANSPOSES:
        a, b = _ab(11, 9, 7, ta, tb)
        a, b = a.astype(np.float32), b.astype(np.float32)
        bias = rng.standard_normal(9).astype(np.float32)
        op_a = (a.T if ta else a).astype(np.float64)
        op_b = (b.T if tb else b).astype(np.float64)
        c = np.full((11, 9), np.nan, np.float32)
        G.launch_v3(a, b, c, ta, tb, False, bias, True, kernel=kernel, cfg=cfg)
        assert_close(c, np.maximum(op_a @ op_b + bias, 0), np.float32, f"{cfg} {ta} {tb}")


@pytest.mark.parametrize("relu", [False, True])
def test_linear_grad_out_row_splits(relu):
    # 130 rows: two row splits under the simulator, summed by column_sum in order.
    from nnkern.kernels.gemm import cuda as G

    N, OUT = 130, 5
    assert G.linear_grad_splits(N, OUT) == 2
    rng = np.random.default_rng(4)
    g, y = rng.standard_normal((N, OUT)), rng.standard_normal((N, OUT))
    dy_want, db_want = np.empty((N, OUT)), np.empty(OUT)
    REF["gemm"].linear_grad_out(g, y, dy_want, db_want, relu)
    dy, db = np.full((N, OUT), np.nan), np.full(OUT, np.nan)
    G.linear_grad_out(g, y, dy, db, relu)
    assert_close(dy, dy_want, np.float64, "dy")
    assert_close(db, db_want, np.float64, "db")


# ----------------------------------------------------------------------------
# softmax cross-entropy (v2 and v3 shuffle: GPU tests below)


def test_softmax_ce_v1_by_name():
    from nnkern.kernels.softmax_ce import cuda as ce

    rng = np.random.default_rng(5)
    z, labels = rng.standard_normal((4, 37)) * 3, rng.integers(0, 37, 4)
    g = np.ones(1)
    want_l, want_d = np.empty(4), np.empty((4, 37))
    kernels("softmax_ce", "numpy").softmax_ce_forward_backward(z, labels, g, 0.25, 0.1,
                                                               want_l, want_d)
    losses, dz = np.full(4, np.nan), np.full((4, 37), np.nan)
    ce.softmax_ce_forward_backward(z, labels, g, 0.25, 0.1, losses, dz, version="v1")
    assert_close(losses, want_l, np.float64, "losses")
    assert_close(dz, want_d, np.float64, "dlogits")


# ----------------------------------------------------------------------------
# batch norm cut into chunks


@pytest.mark.parametrize("shape,layout", [((4, 2, 3, 5), "ncl"), ((70, 3), "nc")])
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_chunks(shape, layout, training, monkeypatch):
    from nnkern.kernels.norm import cuda as bn

    monkeypatch.setattr(bn, "MIN_PER_LANE", 1)
    L = int(np.prod(shape[2:])) if len(shape) == 4 else 1
    got_layout, chunks = bn.plan(shape[0], shape[1], L)
    assert (got_layout, chunks > 1) == (layout, True)
    rng = np.random.default_rng(6)
    C = shape[1]
    inputs = [rng.standard_normal(shape) * 2 + 3, rng.uniform(0.5, 1.5, C),
              rng.standard_normal(C), rng.standard_normal(C) * 0.1, rng.uniform(0.5, 2, C)]
    check_op("batch_norm", inputs, "cuda", np.float64, {"training": training})


# ----------------------------------------------------------------------------
# pooling: the fixed-window kernels and the general one, by name


@pytest.mark.parametrize("R,SH,PH", [(2, 2, 0), (3, 2, 1), (3, 1, 1)])
def test_pool_fixed_and_general_windows(R, SH, PH):
    from nnkern.kernels.pool import cuda as pool

    rng = np.random.default_rng(7)
    x = rng.permutation(2 * 3 * 7 * 8).reshape(2, 3, 7, 8).astype(np.float64)
    OH, OW = (7 + 2 * PH - R) // SH + 1, (8 + 2 * PH - R) // SH + 1
    g = rng.standard_normal((2, 3, OH, OW))
    win = (R, R, SH, SH, PH, PH)
    y_ref, i_ref = np.empty((2, 3, OH, OW)), np.empty((2, 3, OH, OW), np.int64)
    REF["pool"].max_pool2d_forward(x, y_ref, i_ref, *win)
    dx_ref = np.empty(x.shape)
    REF["pool"].max_pool2d_backward(g, i_ref, dx_ref, *win)
    a_ref, da_ref = np.empty((2, 3, OH, OW)), np.empty(x.shape)
    REF["pool"].avg_pool2d_forward(x, a_ref, *win, False)
    REF["pool"].avg_pool2d_backward(g, da_ref, *win, False)
    K = pool.kernels(np.float64)
    fwd, bwd = -(-y_ref.size // 64), -(-x.size // 64)  # blocks of 64 threads
    for suffix in ("", f"_{R}x{R}"):
        y, idx = np.full(y_ref.shape, np.nan), np.full(i_ref.shape, -1)
        K["max_forward" + suffix][fwd, 64](x, y, idx, *win)
        assert_close(y, y_ref, np.float64, "max" + suffix)
        np.testing.assert_array_equal(idx, i_ref)
        dx = np.full(x.shape, np.nan)
        K["max_backward" + suffix][bwd, 64](g, i_ref, dx, *win)
        assert_close(dx, dx_ref, np.float64, "max backward" + suffix)
        a, da = np.full(a_ref.shape, np.nan), np.full(x.shape, np.nan)
        K["avg_forward" + suffix][fwd, 64](x, a, *win, False)
        K["avg_backward" + suffix][bwd, 64](g, da, *win, False)
        assert_close(a, a_ref, np.float64, "avg" + suffix)
        assert_close(da, da_ref, np.float64, "avg backward" + suffix)


# ----------------------------------------------------------------------------
# kernels/_cuda.py: compile on first use, nnkern's argument packing


def test_kernel_table_compiles_on_first_use():
    from nnkern.kernels import _cuda

    table = _cuda.KernelTable(lambda T: {"copy": (_copy_kernel, (T[::1], T[::1]))})
    assert table("float32").names() == ["copy"]
    assert table.seconds == {}
    kernel = table("float32")["copy"]
    assert table("float32")["copy"] is kernel
    assert set(table.seconds) == {("float32", "copy")}
    x, y = np.arange(5, dtype=np.float32), np.zeros(5, np.float32)
    _cuda.launch(kernel, 1, 8, x, y)
    np.testing.assert_array_equal(y, x)


def _copy_kernel(x, y):
    i = cuda.grid(1)
    if i < x.shape[0]:
        y[i] = x[i]


class _CupyLike:
    """What the packing reads of a CuPy array."""

    class _Data:
        def __init__(self, ptr):
            self.ptr = ptr

    def __init__(self, shape, dtype, ptr, strides=None):
        self.shape, self.dtype = shape, np.dtype(dtype)
        self.data = self._Data(ptr)
        self.strides = strides or np.empty(shape, dtype).strides


def test_argument_packing_rules():
    # numba-cuda's kernel parameters for a C-contiguous array: meminfo 0, parent 0, size,
    # itemsize, data pointer, shape, strides in bytes; scalars as ctypes; bools as they are.
    import ctypes

    from nnkern.kernels._cuda import _Packed

    packed = _Packed(None, [("array", np.dtype(np.float32), 2), ("scalar", ctypes.c_int64, 0),
                            ("bool", None, 0), ("scalar", ctypes.c_float, 0)])
    a = _CupyLike((3, 4), np.float32, 0x1000)
    out = packed.pack((a, 7, True, 0.5))
    assert out[:9] == [0, 0, 12, 4, 0x1000, 3, 4, 16, 4]
    assert isinstance(out[9], ctypes.c_int64) and out[9].value == 7
    assert out[10] is True
    assert isinstance(out[11], ctypes.c_float) and out[11].value == 0.5
    # anything else goes through numba-cuda's own launch (which converts or refuses it)
    assert packed.pack((_CupyLike((3, 4), np.float64, 0x1000), 7, True, 0.5)) is None
    assert packed.pack((_CupyLike((4,), np.float32, 0x1000), 7, True, 0.5)) is None
    strided = _CupyLike((3, 4), np.float32, 0x1000, strides=(32, 4))
    assert packed.pack((strided, 7, True, 0.5)) is None
    assert packed.pack((np.zeros((3, 4), np.float32), 7, True, 0.5)) is None


# ----------------------------------------------------------------------------
# real GPU only


@pytest.mark.gpu
@pytest.mark.parametrize("version", ["v1", "v2", "v3"])
@pytest.mark.parametrize("C", [10, 1000, 5000])
def test_softmax_ce_versions_gpu(version, C):
    import cupy as cp
    from nnkern.kernels.softmax_ce import cuda as ce

    rng = np.random.default_rng(8)
    N = 257
    z = (rng.standard_normal((N, C)) * 3).astype(np.float32)
    labels = rng.integers(0, C, N)
    g = np.ones(1, np.float32)
    want_l, want_d = np.empty(N), np.empty((N, C))
    kernels("softmax_ce", "numpy").softmax_ce_forward_backward(
        z.astype(np.float64), labels, g.astype(np.float64), 1 / N, 0.1, want_l, want_d)
    losses, dz = cp.full(N, np.nan, cp.float32), cp.full((N, C), np.nan, cp.float32)
    ce.softmax_ce_forward_backward(cp.asarray(z), cp.asarray(labels), cp.asarray(g), 1 / N,
                                   0.1, losses, dz, version=version)
    assert_close(losses, want_l, np.float32, f"{version} losses", rtol=1e-3)
    assert_close(dz, want_d, np.float32, f"{version} dlogits", rtol=1e-3)


@pytest.mark.gpu
def test_packed_launch_matches_numba_launch_gpu():
    import cupy as cp
    from nnkern.kernels import _cuda
    from nnkern.kernels.conv import cuda as conv
    from nnkern.kernels.gemm import cuda as G

    rng = np.random.default_rng(9)
    a, b = (cp.asarray(rng.standard_normal(s).astype(np.float32)) for s in ((300, 200),
                                                                           (200, 100)))
    x = cp.asarray(rng.standard_normal((4, 8, 15, 13)).astype(np.float32))
    w = cp.asarray(rng.standard_normal((16, 8, 3, 3)).astype(np.float32))
    results = {}
    for fast in (False, True):
        _cuda.FAST_LAUNCH = fast
        try:
            c = cp.empty((300, 100), cp.float32)
            G.gemm(a, b, c, False, False, False)
            y = cp.empty((4, 16, 15, 13), cp.float32)
            conv.conv2d_forward(x, w, None, y, (1, 1), (1, 1), (1, 1), 1, "auto")
            results[fast] = (c.get(), y.get())
        finally:
            _cuda.FAST_LAUNCH = True
    for got, want in zip(results[True], results[False], strict=True):
        np.testing.assert_array_equal(got, want)
    used = [_cuda._LAUNCHERS.get(k) for k in (G.kernels(np.float32)["v3"],)]
    assert all(p is not None and p.checked for p in used)
