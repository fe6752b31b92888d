"""conv2d and conv2d_backward on every backend against the NumPy reference.

numpy/cpu run small-but-real shapes; the CUDA backend runs under the
simulator (one Python thread per CUDA thread) on tiny shapes only, and on
real shapes with the ``gpu`` marker.
"""

from typing import ClassVar

import numpy as np
import pytest
from harness import BACKENDS, DTYPES, assert_close, check_gradients, check_op, versions
from hypothesis import given, settings
from hypothesis import strategies as st

import nnkern
import nnkern.functional as F

ALGOS = ["direct", "im2col"]

# (x shape, w shape, kwargs): odd sizes, batch 1, channel 1, non-square,
# stride/padding/dilation/groups, "same" with an odd total padding.
CASES = [
    ((2, 3, 9, 11), (5, 3, 3, 3), {"padding": 1}),
    ((1, 1, 7, 5), (1, 1, 3, 2), {}),
    ((2, 4, 10, 9), (6, 2, 3, 3), {"stride": 2, "padding": (1, 2), "groups": 2}),
    ((1, 3, 8, 7), (4, 3, 3, 3), {"dilation": (2, 1), "padding": "same"}),
    ((2, 2, 6, 7), (3, 2, 2, 4), {"padding": "same"}),
    ((3, 6, 9, 9), (6, 1, 3, 3), {"stride": (2, 3), "padding": 1, "groups": 6}),
    ((2, 5, 6, 6), (7, 5, 1, 1), {}),
    ((1, 2, 5, 6), (20, 2, 5, 3), {"padding": (2, 0), "stride": (1, 2)}),
    ((2, 3, 4, 4), (2, 3, 1, 1), {"padding": 2, "stride": 3}),
    # Wide rows (stride 1 too: the CPU's pixel-vectorised tiles, rows of 32 pixels).
    ((2, 3, 5, 30), (4, 3, 3, 3), {"padding": 1}),
    ((2, 4, 3, 28), (34, 2, 3, 3), {"padding": (0, 1), "groups": 2}),
    ((1, 2, 4, 29), (3, 2, 2, 3), {"stride": (1, 2), "dilation": (2, 1)}),
    # Rows of >= 28 pixels with a vertical stride take the CPU's row tiles (ragged last
    # piece here: 30 = 14+14+2).
    ((2, 3, 9, 30), (4, 3, 3, 3), {"padding": 1, "stride": (2, 1)}),
    ((2, 4, 7, 28), (34, 2, 3, 3), {"padding": (0, 1), "groups": 2, "stride": (3, 1)}),
    ((1, 2, 3, 32), (3, 2, 2, 3), {"dilation": (1, 2), "padding": (1, 2)}),
    # Depthwise at stride 1 and a LeNet-like first layer with a batch of one (the CPU's
    # one-channel pixel tiles, and backward-weights split over pixel bands).
    ((2, 6, 9, 9), (6, 1, 3, 3), {"padding": 1, "groups": 6}),
    ((1, 1, 12, 11), (6, 1, 5, 5), {"padding": 2}),
    # Batches over one block of vector lanes (the CPU's "sv": samples as the lanes), a
    # whole block and a partial one; depthwise too.
    ((19, 3, 7, 6), (5, 3, 3, 3), {"padding": 1}),
    ((18, 4, 6, 7), (4, 1, 3, 3), {"padding": (1, 0), "groups": 4}),
    # A whole lane block with rows narrower than every sv tile piece (3 pixels: not sv)
    # and exactly as wide as the narrowest (4)
    ((16, 2, 5, 3), (4, 2, 1, 1), {}),
    ((16, 2, 5, 4), (4, 2, 1, 1), {}),
    # 3x3 stride 1 with 16+ channels (the CPU's Winograd "wg", chosen from 32): odd output
    # sizes (a last tile half outside), output channels not a multiple of its 8-channel
    # blocks, rows of tiles over more than one 32-tile block; padding beyond the kernel's
    # reach (backward-data's grid then starts inside the gradient).
    ((2, 32, 9, 11), (34, 32, 3, 3), {"padding": 1}),
    ((1, 17, 7, 37), (16, 17, 3, 3), {"padding": (3, 0)}),
    # wg4 (F(4x4, 3x3)) asked for, its last tiles 3 rows and 1 column outside the image;
    # and an image whose 4x4 tiles fill its blocks' lanes (8 tile rows of 7 + 1: two
    # 32-tile blocks), where the rule takes wg4 (the cases above take wg); its outputs are
    # too big for sv at either vector width (with AVX2, 16x28 would be sv's).
    ((2, 33, 7, 12), (32, 33, 3, 3), {"padding": 1}),
    ((16, 32, 32, 28), (34, 32, 3, 3), {"padding": 1}),
]
IDS = [f"case{i}" for i in range(len(CASES))]

# The simulator runs every CUDA thread as a Python thread: a few hundred outputs at most.
TINY = [
    ((1, 2, 5, 6), (3, 2, 3, 3), {"padding": 1}),
    ((2, 3, 5, 6), (4, 3, 2, 3), {"stride": 2, "padding": (1, 0), "dilation": (1, 2)}),
    ((1, 4, 5, 5), (4, 2, 3, 3), {"padding": "same", "groups": 2}),
]


def _inputs(x_shape, w_shape, bias=True, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape)
    w = rng.standard_normal(w_shape)
    b = rng.standard_normal(w_shape[0]) if bias else None
    return x, w, b


def _run_case(backend, dtype, x_shape, w_shape, kwargs, algo, bias=True, version=None):
    x, w, b = _inputs(x_shape, w_shape, bias)
    inputs = [x, w] + ([b] if bias else [])
    check_op("conv2d", inputs, backend, dtype, dict(kwargs, algo=algo), version=version)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("x_shape,w_shape,kwargs", CASES, ids=IDS)
@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "cuda"])
def test_conv2d_host(backend, x_shape, w_shape, kwargs, algo, dtype):
    _run_case(backend, dtype, x_shape, w_shape, kwargs, algo)


CPU_VERSIONS = versions("conv", "cpu")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("version", CPU_VERSIONS)
@pytest.mark.parametrize("x_shape,w_shape,kwargs", CASES, ids=IDS)
def test_conv2d_cpu_every_version(version, x_shape, w_shape, kwargs, dtype):
    # A version that cannot run a case's op (px at stride 2, pxw for forward) gives way
    # to the rule; test_every_cpu_version_is_reached checks that each one runs somewhere.
    _run_case("cpu", dtype, x_shape, w_shape, kwargs, "auto", version=version)


def _geometry(x_shape, w_shape, kwargs):
    from nnkern.kernels.conv import cpu

    out = F.conv2d_output_shape(x_shape, w_shape, kwargs.get("stride", 1),
                                kwargs.get("padding", 0), kwargs.get("dilation", 1))
    pairs = {}
    for name in ("stride", "dilation"):
        v = kwargs.get(name, 1)
        pairs[name] = (v, v) if isinstance(v, int) else tuple(v)
    pad = kwargs.get("padding", 0)
    if pad == "same":
        R, S = w_shape[2], w_shape[3]
        pad = (pairs["dilation"][0] * (R - 1) // 2, pairs["dilation"][1] * (S - 1) // 2)
    pad = (pad, pad) if isinstance(pad, int) else tuple(pad)
    return cpu.geometry(x_shape, w_shape, out, pairs["stride"], pad, pairs["dilation"],
                        kwargs.get("groups", 1))


def test_every_cpu_version_is_reached():
    # Each version, asked for by name, runs every op it serves on some test case, so the
    # version tests above exercise it; "auto" picks each direct version somewhere too.
    from nnkern.kernels.conv import cpu

    shapes = CASES + [(c[0], c[1], {"stride": c[2], "padding": c[3], "dilation": c[4],
                                    "groups": c[5]}) for c in BW_CASES]
    geos = [_geometry(*c) for c in shapes]
    for version, ops in cpu.VERSIONS.items():
        for op in ops:
            assert any(cpu.choose(op, geo, version)[0] == version for geo in geos), (
                f"no test case runs {version} for {op}")
    # and the bench's two 3x3 layers (geometry only: too big to run here), where the rule
    # takes Winograd (the test cases are small: im2col's, by the rule)
    geos += [_geometry((128, 32, 28, 28), (64, 32, 3, 3), {"padding": 1}),
             _geometry((32, 64, 56, 56), (64, 64, 3, 3), {"padding": 1})]
    picked = {cpu.choose(op, geo)[0] for geo in geos for op in cpu.OPS}
    assert picked == set(cpu.VERSIONS), picked


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("nr,c0,nc", [(None, 0, None), (3, 0, None), (1, 5, 3), (None, 2, 1)])
def test_transpose_block_against_numpy(dtype, nr, c0, nc):
    # The register transpose the CPU's "sv" version moves samples into vector lanes with:
    # dst[d + (j - c0)*dld + i] = src[s + i*sld + j], rows i >= nr read as zeros, only the
    # nc columns from c0 written; everything else in dst stays as it was.
    from nnkern.kernels._cpu import VECTOR_LANES as L
    from nnkern.kernels._cpu import transpose_block
    from numba import njit

    nr = L if nr is None else nr
    nc = L - c0 if nc is None else nc

    @njit
    def run(dst, d, dld, src, s, sld, nr, c0, nc):
        transpose_block(dst, d, dld, src, s, sld, nr, c0, nc)

    rng = np.random.default_rng(3)
    s, sld, d, dld = 7, L + 5, 3, L + 2
    src = rng.standard_normal(s + L * sld + L).astype(dtype)
    dst = rng.standard_normal(d + L * dld + L).astype(dtype)
    want = dst.copy()
    block = src[s : s + L * sld].reshape(L, sld)[:, :L].copy()  # block[i, j] = src[s + i*sld + j]
    block[nr:] = 0
    for j in range(c0, c0 + nc):
        want[d + (j - c0) * dld : d + (j - c0) * dld + L] = block[:, j]
    run(dst, d, dld, src, s, sld, nr, c0, nc)
    np.testing.assert_array_equal(dst, want)


def _scaled_piece():
    # a piece for run_pieces: rows i = piece, piece + npiece, ... of out get x[i]*scale + piece
    from numba import njit

    @njit
    def piece(p, npiece, args):
        out, x, scale = args
        for i in range(p, x.shape[0], npiece):
            out[i] = x[i] * scale + p
        if scale < 0:
            raise ValueError("negative scale")

    return piece


@pytest.mark.parametrize("dtype", DTYPES)
def test_run_pieces_calls_every_piece_by_address(dtype):
    # The parallel runner the sv version and the GEMM use to compile a prange body once:
    # every piece runs once with its index, for each dtype and array layout (each its own
    # compiled address), and an exception inside a piece becomes a RuntimeError that
    # leaves the process sound (compiling and running again afterwards).
    from nnkern.kernels._cpu import native_address, run_pieces

    piece = _scaled_piece()
    x = np.arange(21, dtype=dtype)
    for _ in range(2):
        for xs, npiece, scale in ((x, 3, 2), (x[::2], 4, 3), (x[:7], 1, 5)):
            out = np.full(xs.shape[0], np.nan, dtype)
            run_pieces(piece, npiece, (out, xs, scale))
            np.testing.assert_array_equal(out, xs * scale + np.arange(xs.shape[0]) % npiece)
        with pytest.raises(RuntimeError, match="piece raised inside run_pieces"):
            run_pieces(piece, 2, (out, xs, -1))
    assert native_address(piece, (out, x, 1)) != native_address(piece, (out, x[::2], 1))


def test_cpu_choose_says_why():
    from nnkern.kernels.conv import cpu

    lanes = cpu.LANES  # 16 with AVX-512, 8 with AVX2: sv needs a block of that many samples
    lenet1 = _geometry((lanes // 2, 1, 28, 28), (6, 1, 5, 5), {"padding": 2})
    assert cpu.choose("backward_weights", lenet1) == (
        "pxw", "1 input channels per group fill few channel lanes")
    lenet1 = _geometry((128, 1, 28, 28), (6, 1, 5, 5), {"padding": 2})
    assert cpu.choose("backward_weights", lenet1) == (
        "sv", f"stride 1, small layer: {lanes} samples as the vector lanes")
    big = _geometry((128, 32, 28, 28), (64, 32, 3, 3), {"padding": 1})
    assert cpu.choose("forward", big, "sv") == ("sv", "asked for sv")
    assert cpu.choose("forward", big) == ("wg4", (
        "3x3 stride 1, 32 -> 64 channels, 28x28 outputs (77% of F(4x4)'s lanes, whole "
        "samples): Winograd F(4x4, 3x3)"))
    assert cpu.choose("backward_data", big)[0] == "wg4"
    # 14x14: 4 tile rows of 4 + 1 fill 20 of a block's 32 lanes, 16 of them outputs (128
    # channels: too big a layer for sv at either vector width)
    small = _geometry((128, 128, 14, 14), (128, 128, 3, 3), {"padding": 1})
    assert cpu.choose("forward", small) == ("wg", (
        "3x3 stride 1, 128 -> 128 channels, 14x14 outputs (50% of F(4x4)'s lanes, 1 bands "
        "per sample): Winograd F(2x2, 3x3)"))
    assert cpu.choose("backward_data", small)[0] == "wg"
    one = _geometry((1, 64, 56, 56), (64, 64, 3, 3), {"padding": 1})
    assert cpu.choose("forward", one)[0] == "wg" and "88% of F(4x4)'s lanes" in (
        cpu.choose("forward", one)[1])
    dilated = _geometry((128, 32, 28, 28), (64, 32, 3, 3), {"padding": 2, "dilation": 2})
    assert cpu.choose("forward", dilated)[0] == "px"
    version, why = cpu.choose("backward_data", dilated, "wg")
    assert version == "px" and why.startswith("wg needs a 3x3 kernel, stride 1, dilation 1")
    version, why = cpu.choose("forward", dilated, "wg4")
    assert version == "px" and why.startswith("wg4 needs a 3x3 kernel, stride 1, dilation 1")
    few = _geometry((128, 16, 28, 28), (64, 16, 3, 3), {"padding": 1})
    assert cpu.choose("forward", few)[0] == "px"
    # few output pixels: im2col where the rule took Winograd (N*OH*OW <= 400, C*K <= 128^2),
    # and for backward-weights (N*OH*OW <= 3136, at least 288 taps, one group)
    tiny = _geometry((1, 64, 14, 14), (64, 64, 3, 3), {"padding": 1})
    assert cpu.choose("forward", tiny) == ("im2col", (
        "1 x 14x14 output pixels, 64 -> 64 channels: too few pixels for Winograd to repay "
        "its transforms; one GEMM"))
    assert cpu.choose("backward_data", tiny)[0] == "im2col"
    assert cpu.choose("backward_weights", tiny) == ("im2col", (
        "1 x 14x14 output pixels to reduce over, 576 taps: one GEMM splits the taps among "
        "the threads"))
    # algo "direct": the rule among the direct versions
    direct = [cpu.choose(op, tiny, "direct")[0] for op in cpu.OPS]
    assert direct[0] in ("wg", "wg4") and direct[1] in ("wg", "wg4") and direct[2] == "cl"
    two, three = (_geometry((n, 64, 14, 14), (64, 64, 3, 3), {"padding": 1}) for n in (2, 3))
    assert cpu.choose("forward", two)[0] == "im2col"  # 392 pixels
    assert cpu.choose("forward", three)[0] in ("wg", "wg4")  # 588
    deep = _geometry((1, 256, 7, 7), (256, 256, 3, 3), {"padding": 1})
    assert cpu.choose("forward", deep)[0] in ("wg", "wg4")  # 256 x 256 channels
    assert cpu.choose("backward_data", _geometry((1, 128, 7, 7), (128, 128, 3, 3),
                                                 {"padding": 1}))[0] == "im2col"  # 128 x 128
    assert cpu.choose("backward_weights", _geometry((4, 64, 28, 28), (64, 64, 3, 3), {}))[0] == (
        "im2col")  # 4 x 26x26 = 2704 pixels
    assert cpu.choose("backward_weights", _geometry((5, 64, 28, 28), (64, 64, 3, 3), {}))[0] == (
        "cl")  # 3380
    assert cpu.choose("backward_weights", _geometry((1, 16, 14, 14), (16, 16, 3, 3), {}))[0] == (
        "cl")  # 144 taps
    assert cpu.choose("backward_weights", _geometry((1, 64, 14, 14), (64, 32, 3, 3),
                                                    {"groups": 2}))[0] != "im2col"
    strided = _geometry((2, 8, 9, 9), (4, 8, 3, 3), {"stride": 2})
    version, why = cpu.choose("forward", strided, "px")
    assert version == "tile" and why.startswith("px needs stride 1, got (2, 2)")
    assert cpu.choose("forward", strided, "im2col") == ("im2col", "asked for im2col")
    with pytest.raises(ValueError, match="algo must be one of .* or a version of this backend"):
        F.conv2d(np.zeros((1, 1, 4, 4)), np.zeros((1, 1, 3, 3)), algo="pxx")


@pytest.mark.parametrize("version", ["wg4", "wg", "px"])
@pytest.mark.parametrize("x_shape,w_shape", [((2, 32, 28, 28), (64, 32, 3, 3)),
                                             ((1, 64, 56, 56), (64, 64, 3, 3))],
                         ids=["c32", "c64"])
def test_cpu_winograd_on_the_bench_layers(x_shape, w_shape, version):
    # The bench's two 3x3 layers (fewer samples) with realistic data: normal x and g,
    # He-scaled w. Winograd's transforms grow the float32 error (F(4x4, 3x3) about 8x the
    # direct sum's worst, scripts in conv5's note); it must stay within the float32 rule.
    from nnkern.kernels.conv import cpu, reference

    rng = np.random.default_rng(3)
    x = rng.standard_normal(x_shape)
    w = rng.standard_normal(w_shape) * np.sqrt(2 / (w_shape[1] * 9))
    b = rng.standard_normal(w_shape[0])
    g = rng.standard_normal((x_shape[0], w_shape[0], x_shape[2], x_shape[3]))
    args = ((1, 1), (1, 1), (1, 1), 1)
    want_y, want_dx = np.empty(g.shape), np.empty(x.shape)
    reference.conv2d_forward(x, w, b, want_y, *args, "direct")
    reference.conv2d_backward_data(g, w, want_dx, *args, "direct")
    f32 = [a.astype(np.float32) for a in (x, w, b, g)]
    y, dx = np.full(g.shape, np.nan, np.float32), np.full(x.shape, np.nan, np.float32)
    cpu.conv2d_forward(f32[0], f32[1], f32[2], y, *args, version)
    cpu.conv2d_backward_data(f32[3], f32[1], dx, *args, version)
    assert_close(y, want_y, np.float32, f"{version} y")
    assert_close(dx, want_dx, np.float32, f"{version} dx")


@pytest.mark.parametrize("version", CPU_VERSIONS)
def test_cpu_versions_keep_nan_and_inf_where_the_reference_does(version):
    # NaN and inf in x and g reach exactly the outputs the reference (PyTorch's rule) gives
    # them, on every version: lanes past a row's end must not spread them.
    from nnkern._dispatch import kernels

    x, w, b = _inputs((2, 1, 8, 9), (3, 1, 3, 3))
    x[0, 0, 3, 8], x[1, 0, 2, 0], x[1, 0, 7, 5] = np.nan, np.inf, -np.inf
    g = np.random.default_rng(1).standard_normal((2, 3, 6, 7))
    g[0, 1, 2, 6] = np.nan
    args = ((1, 1), (0, 0), (1, 1), 1)
    outs = {}
    for name, algo in (("numpy", "direct"), ("cpu", version)):
        kern = kernels("conv", name)
        y, dx, dw, db = (np.empty(s) for s in (g.shape, x.shape, w.shape, b.shape))
        kern.conv2d_forward(x, w, b, y, *args, algo)
        kern.conv2d_backward_data(g, w, dx, *args, algo)
        kern.conv2d_backward_weights(g, x, dw, db, *args, algo)
        outs[name] = (y, dx, dw, db)
    for what, got, want in zip(("y", "dx", "dw", "db"), outs["cpu"], outs["numpy"]):
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=what)
        finite = np.isfinite(want)
        np.testing.assert_array_equal(got[~finite], want[~finite], err_msg=what)
        assert_close(got[finite], want[finite], np.float64, f"{version} {what}")


@pytest.mark.parametrize("version", CPU_VERSIONS)
def test_cpu_backward_weights_keeps_inf_times_padding(version):
    # An inf in g at a border pixel meets the zero padding in the taps that reach outside
    # x: 0 * inf is NaN in the direct sum, so those taps' dw is NaN (cl skips the padding
    # rows only where g is finite). 20 channels, rows of 17 pixels.
    from nnkern._dispatch import kernels

    x, w, b = _inputs((2, 20, 5, 17), (3, 20, 3, 3))
    g = np.random.default_rng(3).standard_normal((2, 3, 5, 17))
    g[1, 2, 0, 4], g[0, 1, 4, 16] = np.inf, -np.inf
    args = ((1, 1), (1, 1), (1, 1), 1)
    outs = {}
    for name, algo in (("numpy", "direct"), ("cpu", version)):
        dw, db = np.empty(w.shape), np.empty(b.shape)
        kernels("conv", name).conv2d_backward_weights(g, x, dw, db, *args, algo)
        outs[name] = dw, db
    assert np.isnan(outs["numpy"][0][2, :, 0, :]).all()  # the reference's rule, as said
    for what, got, want in zip(("dw", "db"), outs["cpu"], outs["numpy"]):
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=what)
        finite = np.isfinite(want)
        np.testing.assert_array_equal(got[~finite], want[~finite], err_msg=what)
        assert_close(got[finite], want[finite], np.float64, f"{version} {what}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("x_shape,w_shape,kwargs", TINY, ids=["tiny0", "tiny1", "tiny2"])
def test_conv2d_cuda_tiny(x_shape, w_shape, kwargs, algo, dtype):
    _run_case("cuda", dtype, x_shape, w_shape, kwargs, algo)


@pytest.mark.parametrize("backend", BACKENDS)
def test_conv2d_no_bias_auto(backend):
    x_shape, w_shape, kwargs = TINY[0]
    _run_case(backend, np.float32, x_shape, w_shape, kwargs, "auto", bias=False)


@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_kernels_write_every_output_element(backend, algo):
    # The op surface hands kernels uninitialised outputs; NaN-filled ones must come back
    # fully written (and equal to the reference).
    from nnkern._dispatch import kernels

    x, w, b = _inputs((1, 2, 5, 6), (4, 2, 2, 3))
    g = np.random.default_rng(1).standard_normal((1, 4, 6, 3))  # conv2d output shape
    args = ((1, 2), (1, 1), (1, 1), 1, algo)  # stride, (top, left) padding, dilation, groups
    outs = {}
    for name in ("numpy", backend):
        kern = kernels("conv", name)
        y, dx, dw, db = (np.full(s, np.nan) for s in (g.shape, x.shape, w.shape, b.shape))
        kern.conv2d_forward(x, w, b, y, *args)
        kern.conv2d_backward_data(g, w, dx, *args)
        kern.conv2d_backward_weights(g, x, dw, db, *args)
        outs[name] = (y, dx, dw, db)
    for got, want in zip(outs[backend], outs["numpy"]):
        assert_close(got, want, np.float64, f"{backend} {algo}")


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
def test_conv2d_larger_channels(backend):
    # Several 16-channel register tiles, ragged pixel tiles, and enough work
    # for the parallel CPU paths.
    _run_case(backend, np.float32, (3, 20, 13, 11), (37, 20, 3, 3), {"padding": 1}, "auto")


@pytest.mark.gpu
@pytest.mark.parametrize("algo", ["auto", "direct", "im2col"])
@pytest.mark.parametrize(
    "x_shape,w_shape,kwargs",
    [
        ((8, 64, 28, 28), (64, 64, 3, 3), {"padding": 1}),
        ((8, 64, 28, 28), (128, 32, 3, 3), {"stride": 2, "padding": 1, "groups": 2}),
        ((8, 64, 28, 28), (64, 64, 1, 1), {}),
        ((8, 64, 28, 28), (64, 64, 5, 5), {"padding": "same", "dilation": 2}),
    ],
)
def test_conv2d_gpu_real_shapes(x_shape, w_shape, kwargs, algo):
    # float32 sums of 576-1600 products: 1e-4 relative to the tensor's scale holds.
    _run_case("cuda", np.float32, x_shape, w_shape, kwargs, algo)


@st.composite
def conv_problem(draw, max_hw=9, max_c=4, max_n=3):
    groups = draw(st.integers(1, 3))
    cg = draw(st.integers(1, max_c))
    kg = draw(st.integers(1, max_c))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    # The dilated kernel never exceeds max_hw, so an image size always exists.
    R = draw(st.integers(1, min(4, (max_hw - 1) // dilation[0] + 1)))
    S = draw(st.integers(1, min(4, (max_hw - 1) // dilation[1] + 1)))
    if stride == (1, 1) and draw(st.booleans()):
        padding = "same"
        pad_total = (dilation[0] * (R - 1), dilation[1] * (S - 1))
    else:
        padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
        pad_total = (2 * padding[0], 2 * padding[1])
    H = draw(st.integers(max(1, dilation[0] * (R - 1) + 1 - pad_total[0]), max_hw))
    W = draw(st.integers(max(1, dilation[1] * (S - 1) + 1 - pad_total[1]), max_hw))
    N = draw(st.integers(1, max_n))
    kwargs = {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups}
    return (N, cg * groups, H, W), (kg * groups, cg, R, S), kwargs


@settings(max_examples=25, deadline=None)
@given(problem=conv_problem(), algo=st.sampled_from(ALGOS), bias=st.booleans())
def test_conv2d_cpu_hypothesis(problem, algo, bias):
    x_shape, w_shape, kwargs = problem
    _run_case("cpu", np.float32, x_shape, w_shape, kwargs, algo, bias)


@settings(max_examples=4, deadline=None)
@given(problem=conv_problem(max_hw=5, max_c=2, max_n=1), algo=st.sampled_from(ALGOS))
def test_conv2d_cuda_hypothesis(problem, algo):
    x_shape, w_shape, kwargs = problem
    _run_case("cuda", np.float32, x_shape, w_shape, kwargs, algo)


@settings(max_examples=25, deadline=None)
@given(problem=conv_problem(), bias=st.booleans())
def test_reference_algos_agree_with_torch(problem, bias):
    """Independent oracle: the reference (both algorithms) against PyTorch."""
    torch = pytest.importorskip("torch")
    x_shape, w_shape, kwargs = problem
    x, w, b = _inputs(x_shape, w_shape, bias)
    tx = torch.tensor(x, requires_grad=True)
    tw = torch.tensor(w, requires_grad=True)
    tb = torch.tensor(b, requires_grad=True) if bias else None
    ty = torch.nn.functional.conv2d(tx, tw, tb, **kwargs)
    g = np.random.default_rng(1).standard_normal(tuple(ty.shape))
    ty.backward(torch.tensor(g))
    expected = [ty.detach().numpy(), tx.grad.numpy(), tw.grad.numpy()]
    expected.append(tb.grad.numpy() if bias else None)
    for algo in ALGOS:
        with nnkern.device("numpy"):
            y = F.conv2d(x, w, b, algo=algo, **kwargs)
            grads = F.conv2d_backward(g, x, w, b, algo=algo, **kwargs)
        for name, got, want in zip(("y", "dx", "dw", "db"), (y, *grads), expected):
            assert_close(got, want, np.float64, f"{algo} {name}")


@pytest.mark.parametrize(
    "x_shape,w_shape,kwargs",
    [
        ((2, 2, 5, 4), (3, 2, 3, 2), {"padding": 1}),
        (
            (1, 4, 6, 5),
            (4, 2, 2, 3),
            {"stride": 2, "dilation": (1, 2), "padding": (1, 2), "groups": 2},
        ),
        ((1, 2, 5, 5), (2, 2, 2, 2), {"padding": "same", "dilation": 2}),
    ],
)
@pytest.mark.parametrize("algo", ALGOS)
def test_conv2d_gradients(x_shape, w_shape, kwargs, algo):
    x, w, b = _inputs(x_shape, w_shape)
    check_gradients("conv2d", [x, w, b], dict(kwargs, algo=algo))


def test_same_padding_puts_extra_bottom_right():
    # A 2x2 kernel of ones with "same": output (i, j) sums x[i:i+2, j:j+2], zero past the end.
    x = np.arange(12, dtype=np.float64).reshape(1, 1, 3, 4)
    w = np.ones((1, 1, 2, 2))
    y = F.conv2d(x, w, padding="same")
    xp = np.pad(x[0, 0], ((0, 1), (0, 1)))
    expected = xp[:-1, :-1] + xp[1:, :-1] + xp[:-1, 1:] + xp[1:, 1:]
    np.testing.assert_allclose(y[0, 0], expected)


def test_output_shape_helper():
    assert F.conv2d_output_shape((8, 3, 32, 32), (16, 3, 5, 5), 2, 2) == (8, 16, 16, 16)
    assert F.conv2d_output_shape((1, 1, 5, 6), (1, 1, 2, 3), padding="same") == (1, 1, 5, 6)


# --- validation ------------------------------------------------------------------------------

X = np.zeros((2, 4, 6, 6), np.float32)
Wt = np.zeros((6, 4, 3, 3), np.float32)


@pytest.mark.parametrize(
    "args,kwargs,exc,match",
    [
        ((X[0], Wt), {}, ValueError, "4 dimensions laid out as NCHW"),
        ((X, Wt[0]), {}, ValueError, "w must have 4 dimensions"),
        ((np.zeros((2, 6, 6, 4), np.float32), Wt), {}, ValueError, "channels-last"),
        ((X, np.zeros((6, 3, 3, 3), np.float32)), {}, ValueError, "C=4 channels"),
        ((X, Wt), {"groups": 3}, ValueError, "groups=3 must divide"),
        ((X, Wt), {"groups": 0}, ValueError, "groups must be an int >= 1"),
        ((X, Wt), {"stride": 0}, ValueError, "stride must be >= 1"),
        ((X, Wt), {"dilation": (1, 0)}, ValueError, "dilation must be >= 1"),
        ((X, Wt), {"padding": -1}, ValueError, "padding must be >= 0"),
        ((X, Wt), {"padding": "full"}, ValueError, "'valid' or 'same'"),
        ((X, Wt), {"padding": "same", "stride": 2}, ValueError, "needs stride 1"),
        ((X, Wt), {"dilation": 3}, ValueError, r"dilated kernel \(7, 7\) is larger"),
        ((X, Wt.astype(np.float64)), {}, TypeError, "w has dtype float64 but x has float32"),
        ((X.astype(np.int32), Wt), {}, TypeError, "float32 or float64"),
        ((X, Wt, np.zeros(5, np.float32)), {}, ValueError, r"b must have shape \(6,\)"),
        ((X, Wt), {"algo": "winograd"}, ValueError, "algo must be one of"),
    ],
)
def test_conv2d_errors(args, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        F.conv2d(*args, **kwargs)


def test_conv2d_backward_errors():
    g = np.zeros((2, 6, 4, 4), np.float32)
    with pytest.raises(ValueError, match=r"must have shape \(2, 6, 6, 6\), got \(2, 6, 4, 4\)"):
        F.conv2d_backward(g, X, Wt, None, padding=1)
    with pytest.raises(TypeError, match="g has dtype float64"):
        F.conv2d_backward(g.astype(np.float64), X, Wt)


class _FakeGpuArray:
    """Looks like a CuPy array to the device checks (no GPU needed)."""

    __cuda_array_interface__: ClassVar[dict] = {}

    def __init__(self, like):
        self.shape, self.ndim, self.dtype = like.shape, like.ndim, like.dtype


def test_conv2d_device_mismatch():
    with pytest.raises(F.DeviceMismatchError, match="current device is 'numpy'"):
        F.conv2d(X, _FakeGpuArray(Wt))


# --- CPU versions, each asked for by name ----------------------------------------------------

# (x shape, w shape, stride, (top, left) padding, dilation, groups). More than 32 input
# channels per group (two channel blocks), output channels not a multiple of the tiles,
# groups, strides and dilations, a batch of one (pixel bands). Rows of 16+ pixels (cl
# places x by transposed 16 x 16 blocks, the last one shifted back inside the row) with
# a whole 32-channel block and a partial one, and a whole block per group; a 3-wide
# kernel with a column stride and dilation (cl's three-tap tile: taps dilation apart).
BW_CASES = [
    ((2, 40, 6, 7), (9, 40, 3, 3), (1, 1), (1, 1), (1, 1), 1),
    ((3, 6, 9, 8), (10, 3, 3, 2), (2, 1), (1, 0), (1, 2), 2),
    ((1, 4, 11, 10), (13, 4, 2, 3), (1, 3), (0, 2), (2, 1), 1),
    ((2, 34, 5, 31), (6, 17, 3, 3), (1, 1), (1, 1), (1, 1), 2),
    ((1, 3, 9, 13), (5, 3, 3, 2), (1, 1), (1, 0), (1, 2), 1),
    ((1, 40, 5, 19), (9, 40, 3, 3), (1, 1), (1, 1), (1, 1), 1),
    ((2, 64, 4, 17), (8, 32, 3, 3), (1, 1), (0, 1), (1, 1), 2),
    ((2, 5, 9, 12), (7, 5, 3, 3), (1, 2), (1, 1), (1, 2), 1),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("version", [v for v in CPU_VERSIONS if v != "im2col"])
@pytest.mark.parametrize("case", BW_CASES, ids=[f"bw{i}" for i in range(len(BW_CASES))])
def test_cpu_backward_weights_every_version(case, version, dtype):
    # Each direct version's backward-weights (or the rule's, where it has none) agrees with
    # the reference on every shape, with NaN-filled outputs.
    from nnkern.kernels.conv import cpu, reference

    x_shape, w_shape, stride, padding, dilation, groups = case
    x, w, b = (a.astype(dtype) for a in _inputs(x_shape, w_shape))
    OH = (x_shape[2] + 2 * padding[0] - dilation[0] * (w_shape[2] - 1) - 1) // stride[0] + 1
    OW = (x_shape[3] + 2 * padding[1] - dilation[1] * (w_shape[3] - 1) - 1) // stride[1] + 1
    g = np.random.default_rng(2).standard_normal((x_shape[0], w_shape[0], OH, OW)).astype(dtype)
    args = (stride, padding, dilation, groups)
    want_dw, want_db = np.empty(w.shape), np.empty(b.shape)
    reference.conv2d_backward_weights(
        g.astype(np.float64), x.astype(np.float64), want_dw, want_db, *args, "direct"
    )
    dw, db = np.full(w.shape, np.nan, dtype), np.full(b.shape, np.nan, dtype)
    cpu.conv2d_backward_weights(g, x, dw, db, *args, version)
    assert_close(dw, want_dw, dtype, version)
    assert_close(db, want_db, dtype, version)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("version", [v for v in CPU_VERSIONS if v != "im2col"])
@pytest.mark.parametrize("case", BW_CASES, ids=[f"fw{i}" for i in range(len(BW_CASES))])
def test_cpu_direct_forward_and_data(case, version, dtype):
    # Forward and backward-data of each direct version (or the rule's, where it has none)
    # against the reference, with and without bias, with NaN-filled outputs.
    from nnkern.kernels.conv import cpu, reference

    x_shape, w_shape, stride, padding, dilation, groups = case
    x, w, b = (a.astype(dtype) for a in _inputs(x_shape, w_shape))
    OH = (x_shape[2] + 2 * padding[0] - dilation[0] * (w_shape[2] - 1) - 1) // stride[0] + 1
    OW = (x_shape[3] + 2 * padding[1] - dilation[1] * (w_shape[3] - 1) - 1) // stride[1] + 1
    g = np.random.default_rng(2).standard_normal((x_shape[0], w_shape[0], OH, OW)).astype(dtype)
    args = (stride, padding, dilation, groups, version)
    for bias in (b, None):
        want = np.empty(g.shape)
        reference.conv2d_forward(
            x.astype(np.float64), w.astype(np.float64),
            None if bias is None else bias.astype(np.float64), want, *args[:-1], "direct",
        )
        y = np.full(g.shape, np.nan, dtype)
        cpu.conv2d_forward(x, w, bias, y, *args)
        assert_close(y, want, dtype, "y")
    want = np.empty(x.shape)
    reference.conv2d_backward_data(
        g.astype(np.float64), w.astype(np.float64), want, *args[:-1], "direct")
    dx = np.full(x.shape, np.nan, dtype)
    cpu.conv2d_backward_data(g, w, dx, *args)
    assert_close(dx, want, dtype, "dx")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("per_batch", [1, 2])
@pytest.mark.parametrize("case", BW_CASES[:3], ids=[f"ic{i}" for i in range(3)])
def test_cpu_im2col_in_several_batches(case, per_batch, dtype, monkeypatch):
    # The CPU im2col path copies a batch of samples per GEMM (about COL_ELEMENTS
    # elements); the test shapes fit in one batch, so shrink it: one sample per batch,
    # or two with a shorter last batch (N = 3), which also makes backward-weights
    # accumulate over batches.
    from nnkern.kernels.conv import cpu, reference

    x_shape, w_shape, stride, padding, dilation, groups = case
    x_shape = (3,) + x_shape[1:]
    Q = w_shape[1] * w_shape[2] * w_shape[3]
    OH = (x_shape[2] + 2 * padding[0] - dilation[0] * (w_shape[2] - 1) - 1) // stride[0] + 1
    OW = (x_shape[3] + 2 * padding[1] - dilation[1] * (w_shape[3] - 1) - 1) // stride[1] + 1
    monkeypatch.setattr(cpu, "COL_ELEMENTS", per_batch * max(Q, w_shape[0] // groups) * OH * OW)
    assert len(cpu.im2col_batches(x_shape[0], Q, OH * OW, w_shape[0] // groups)) == (
        3 if per_batch == 1 else 2)
    x, w, b = (a.astype(dtype) for a in _inputs(x_shape, w_shape))
    g = np.random.default_rng(3).standard_normal((x_shape[0], w_shape[0], OH, OW)).astype(dtype)
    args = (stride, padding, dilation, groups, "im2col")
    x64, w64, b64, g64 = (a.astype(np.float64) for a in (x, w, b, g))
    want_y, want_dx = np.empty(g.shape), np.empty(x.shape)
    want_dw, want_db = np.empty(w.shape), np.empty(b.shape)
    reference.conv2d_forward(x64, w64, b64, want_y, *args)
    reference.conv2d_backward_data(g64, w64, want_dx, *args)
    reference.conv2d_backward_weights(g64, x64, want_dw, want_db, *args)
    y, dx = np.full(g.shape, np.nan, dtype), np.full(x.shape, np.nan, dtype)
    dw, db = np.full(w.shape, np.nan, dtype), np.full(b.shape, np.nan, dtype)
    cpu.conv2d_forward(x, w, b, y, *args)
    cpu.conv2d_backward_data(g, w, dx, *args)
    cpu.conv2d_backward_weights(g, x, dw, db, *args)
    for name, got, want in (("y", y, want_y), ("dx", dx, want_dx), ("dw", dw, want_dw),
                            ("db", db, want_db)):
        assert_close(got, want, dtype, name)
