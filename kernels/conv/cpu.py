"""2-D convolution on the CPU with Numba: direct (register-tiled) and im2col + GEMM.

Shapes: x, dx (N, C, H, W); w, dw (K, Cg, R, S) with Cg = C/G, Kg = K/G for G
groups; y, g (N, K, OH, OW); P = OH*OW output pixels; Q = Cg*R*S is the
reduction length of one output (the rows of the im2col matrix).

Versions (read top to bottom):
    version 1  direct: an implicit GEMM. y[k, p] = sum_q w[k, q] * X[q, p] where X, the
               im2col matrix, is never built: X[q, p] = xpad[crs_off[q] + pix_off[p]],
               two small tables of offsets into one sample's zero-padded input, which
               each task builds in its own buffer (it stays in L2). The work is cut into
               register tiles that keep their accumulators in a stack buffer (LLVM
               promotes it to registers), with weights packed so the channel vector is
               one contiguous load:
               - the 6-pixel tile: TK channels x 6 pixels of the flattened output, any
                 stride; per q step 6 broadcasts, 2 vector loads, 12 FMAs;
               - the row tile (stride 1 along the row, rows of 28+ or 14k pixels): TKR
                 channels x 14 consecutive pixels of one row; the pixels need no offset
                 table, so per q step it is 1 vector load and 14 FMAs whose broadcast
                 operand comes straight from memory (about 1.1x the 6-pixel tile on
                 the issue-3 forward).
               TK, TKR = 32, 16 with AVX-512 (zmm vectors, asked for per function by
               _wide_vectors) and 16, 8 with AVX2. The SLP vectorizer must be on
               (kernels/__init__.py); fastmath 'contract' only (FMA, NaN-safe).
               Backward-data is the same kernel: dx is a stride-1 convolution of the
               gradient (zero-stuffed for stride > 1, padded) with the weights flipped
               and transposed; every dx element is written by one tile, no races.
               (Since version 4 these tiles serve only strides other than (1, 1).)
               Backward-weights is the 6-pixel tile with the roles swapped: TK output
               channels x 6 rows q, reduced over pixels; each thread sums its own slice
               of the batch into its own partial buffer (db too), then one serial pass
               adds the partials (no shared += in prange). It transposes each sample's
               gradient so the channels are contiguous (since version 3 it is used only
               when the output channels fill the vector lanes better than the input
               channels, e.g. a first layer with C = 3).
    version 2  im2col: for each batch of samples and group, copy the receptive fields
               into a column matrix col (Q, nb*P), the nb samples side by side, and
               call the nnkern GEMM (nnkern.kernels.gemm.cpu.gemm) once; the GEMM's
               (Kg, nb*P) result is folded back into y's (N, K, P) order. Backward-data
               multiplies w^T by g unfolded the same way and folds the columns back
               with col2im, written as a gather (one input pixel reads the column
               entries that came from it); backward-weights accumulates g @ col^T over
               the batches. A batch is about COL_ELEMENTS (2M) column entries, and
               col and the GEMM's operand live in the reused workspace
               (kernels/_workspace.py). The first version went sample by sample
               (a GEMM of M=64, N=784, K=288 per sample: mostly packing and parallel
               start-up) and computed each column entry with divisions: issue-3 shape
               fwd+bwd 340 ms; batched and division-free, 160 ms (direct: 47 ms).
    version 3  backward-weights without transposing g: x is copied per sample into a
               zero-padded channels-last buffer (blocks of TK channels), and the tile is
               KW = 8 output channels x TK input channels of one tap (r, s), reduced over
               the output pixels: per pixel 8 gradient values broadcast straight from g
               in its NCHW order, 2 vector loads, 16 FMAs (AVX-512). db is summed from
               the same rows of g. Per-thread partials as in version 1. Any stride,
               dilation, groups. The x copy goes pixel by pixel (contiguous stores; it
               replaces version 1's padding copy). Issue-3 shape: 16.6 vs 21.0 ms
               (1.27x version 1), the g transpose gone.
    version 4  forward and backward-data for stride 1 (backward-data is always a stride-1
               convolution), vectorised over pixels: output pixel (oh, ow) is numbered
               p = oh*Wz + ow on the padded input's grid, so a tap reads PX = 32
               neighbouring pixels as 2 contiguous vector loads, even across row ends
               (the Wz - OW pixels per row that do not exist are computed and dropped).
               Tile KX = 8 output channels x 32 pixels: per q, 8 weight broadcasts, 2
               loads, 16 FMAs, and the results leave as whole vectors into a per-task
               row buffer whose finished rows are copied into y (with the bias) while
               the next tiles compute. Version 1's channel tiles stored their results
               one scalar at a time, transposed (about 20% of their time). Issue-3 shape:
               forward 15.4-16.5 vs 19.5-20.5 ms, backward-data 17-18 vs 21 ms (about
               1.1-1.2x version 1). Tried and dropped: 8 x 48-pixel tiles (too few
               registers), groups of 4 tiles over all channel blocks (x kept in L1,
               weights from L2: slower), a channels-last row buffer for version 1's row
               tile, a 32-channel x 7-pixel row tile, and a first version 3 vectorised
               over pixels (split loads and a partial buffer too big for L2: 1.5x slower).

algo="auto" picks direct for every shape. Measured fwd+bwd, float32, 2 threads (direct
vs im2col): before versions 3 and 4, N=128 C=32 28x28 K=64 3x3 98 vs 228 ms;
64x128x14x14 K=128 3x3 51 vs 134; 5x5 15 vs 88; stride 2 16 vs 50; depthwise 3x3
63 vs 459 (writing the column buffer costs more than the whole direct pass). Pointwise
(1x1, stride 1, no padding: im2col copies nothing) was im2col's until version 4: it won
64x64x14x14 -> 128 channels 30 vs 47 ms then; with version 4, direct vs im2col measured
5.8 vs 10.4 and 9.6 vs 10.0 ms on that shape and 14.0 vs 23.7 ms on 32x128x28x28 -> 64.
Timings on this shared 2-core machine vary by +-30%.
"""

import numba
import numpy as np
from nnkern.kernels._cpu import AVX512, stack_array, wide_vectors
from nnkern.kernels._workspace import workspace
from nnkern.kernels.gemm import cpu as gemm_cpu
from numba import njit, prange

# Register tile: TP pixels (forward) or reduction rows (backward-weights) x TK output
# channels, accumulated in TP*TK/lanes vector registers. With AVX-512 (32 registers)
# TK = 32 is two zmm vectors per pixel (12 accumulators); with AVX2 (16 registers)
# TK = 16 is two ymm vectors (12 accumulators). Either way one q step is TP broadcasts,
# 2 vector loads and 12 FMAs.
TK = 32 if AVX512 else 16
TP = 6
# Row tile (stride-1 rows, whose pixels sit next to each other in the input): TKR output
# channels x RP consecutive pixels of one output row, one vector per pixel (14
# accumulators). The pixel loads need no offset table and fold into the FMAs as
# broadcast operands; measured about 1.1x the 6-pixel tile on the AVX-512 forward.
TKR = 16 if AVX512 else 8
RP = 14
TILE, ROW_TILE = TP * TK, RP * TKR  # accumulators per tile (stack_array sizes)

# 'contract' lets LLVM fuse a*b+c into one FMA; it keeps NaN/inf semantics.
FM = {"contract"}


# ----------------------------------------------------------------------------
# version 1: direct (implicit GEMM), forward and backward-data


@njit(cache=True)
def _stuff(src, n, c0, nc, buf, Hz, Wz, sh, sw, oh0, ow0):
    # buf (nc*Hz*Wz,) flat = channels c0..c0+nc of sample n of src (N, C, A, B) placed at
    # buf[c, a*sh + oh0, b*sw + ow0], zero elsewhere. With stride 1 this is zero padding
    # (oh0, ow0 = top/left padding, negative crops); backward-data also stuffs the stride's
    # holes with zeros.
    A, B = src.shape[2], src.shape[3]
    # Source columns b0..b1 land inside the row: 0 <= b*sw + ow0 < Wz.
    b0 = max(0, (-ow0 + sw - 1) // sw)
    b1 = min(B, (Wz - 1 - ow0) // sw + 1)
    # (Plain loops: a slice assignment per row costs more than the row's copy.)
    for c in range(nc):
        for i in range(Hz):
            row = (c * Hz + i) * Wz
            a = i - oh0
            if a < 0 or a % sh != 0 or a // sh >= A or b1 <= b0:
                for j in range(Wz):
                    buf[row + j] = 0
                continue
            a //= sh
            j0, j1 = b0 * sw + ow0, (b1 - 1) * sw + ow0 + 1
            for j in range(j0):
                buf[row + j] = 0
            for j in range(j1, Wz):
                buf[row + j] = 0
            if sw == 1:
                for j in range(b1 - b0):
                    buf[row + j0 + j] = src[n, c0 + c, a, b0 + j]
            else:
                for j in range(j0, j1):
                    buf[row + j] = 0
                for b in range(b0, b1):
                    buf[row + b * sw + ow0] = src[n, c0 + c, a, b]


@njit(fastmath=FM, cache=True)
def _tile_fwd(xf, wpk, blk, Q, crs_off, o0, o1, o2, o3, o4, o5, yf, ybase, P, nk, npix,
              bias, kbase, has_bias):
    # One TK-channel x 6-pixel tile of y.
    # xf: one sample's padded input, flat; wpk: (blocks, Q, TK) packed weights;
    # crs_off (Q,) uint64; o0..o5: uint64 offsets of the 6 pixels' receptive fields;
    # yf: output, flat; the tile's channel k, pixel p lands at ybase + k*P + p.
    wide_vectors()
    acc = stack_array(yf, TILE)
    for i in range(TP * TK):
        acc[i] = 0
    for q in range(Q):
        c = crs_off[q]
        x0 = xf[c + o0]
        x1 = xf[c + o1]
        x2 = xf[c + o2]
        x3 = xf[c + o3]
        x4 = xf[c + o4]
        x5 = xf[c + o5]
        for k in range(TK):
            wv = wpk[blk, q, k]
            acc[k] += x0 * wv
            acc[TK + k] += x1 * wv
            acc[2 * TK + k] += x2 * wv
            acc[3 * TK + k] += x3 * wv
            acc[4 * TK + k] += x4 * wv
            acc[5 * TK + k] += x5 * wv
    for k in range(nk):
        bk = bias[kbase + k] if has_bias else 0
        for p in range(npix):
            yf[ybase + k * P + p] = acc[p * TK + k] + bk


@njit(fastmath=FM, cache=True)
def _tile_row(xf, wpk, blk, Q, crs_off, o, yf, ybase, P, nk, npix, bias, kbase, has_bias):
    # One TKR-channel x RP-pixel tile of y: RP consecutive pixels of one output row,
    # which read consecutive input elements (stride 1), so pixel i of the tap at crs_off[q]
    # is xf[o + crs_off[q] + i]. Lanes past npix read the row's neighbours (the buffer has
    # RP elements of slack at its end) and are never stored.
    wide_vectors()
    acc = stack_array(yf, ROW_TILE)
    for i in range(RP * TKR):
        acc[i] = 0
    for q in range(Q):
        c = crs_off[q] + o
        x0 = xf[c]
        x1 = xf[c + np.uint64(1)]
        x2 = xf[c + np.uint64(2)]
        x3 = xf[c + np.uint64(3)]
        x4 = xf[c + np.uint64(4)]
        x5 = xf[c + np.uint64(5)]
        x6 = xf[c + np.uint64(6)]
        x7 = xf[c + np.uint64(7)]
        x8 = xf[c + np.uint64(8)]
        x9 = xf[c + np.uint64(9)]
        x10 = xf[c + np.uint64(10)]
        x11 = xf[c + np.uint64(11)]
        x12 = xf[c + np.uint64(12)]
        x13 = xf[c + np.uint64(13)]
        for k in range(TKR):
            wv = wpk[blk, q, k]
            acc[k] += x0 * wv
            acc[1 * TKR + k] += x1 * wv
            acc[2 * TKR + k] += x2 * wv
            acc[3 * TKR + k] += x3 * wv
            acc[4 * TKR + k] += x4 * wv
            acc[5 * TKR + k] += x5 * wv
            acc[6 * TKR + k] += x6 * wv
            acc[7 * TKR + k] += x7 * wv
            acc[8 * TKR + k] += x8 * wv
            acc[9 * TKR + k] += x9 * wv
            acc[10 * TKR + k] += x10 * wv
            acc[11 * TKR + k] += x11 * wv
            acc[12 * TKR + k] += x12 * wv
            acc[13 * TKR + k] += x13 * wv
    for k in range(nk):
        bk = bias[kbase + k] if has_bias else 0
        for p in range(npix):
            yf[ybase + k * P + p] = acc[p * TKR + k] + bk


@njit(parallel=True, fastmath=FM, cache=True)
def conv_direct(src, wpk, bias, has_bias, yf, crs_off, pix_off, tile_p0, tile_np, rows,
                G, Kg, P, Hz, Wz, sh, sw, oh0, ow0, nband):
    # y (N, G*Kg, P) flat = direct convolution of src (N, G*Cin_g, A, B) with packed
    # weights wpk (G*nkb, Cin_g*R*S, TB), TB = TKR for row tiles (rows=True), else TK.
    # Each task takes one sample, one group and one band of pixel tiles; it first builds
    # that sample's padded (stuffed) input (Cin_g, Hz, Wz) in its own buffer, which then
    # stays in L2 for all its tiles. crs_off (Q,) uint64 and pix_off (>= P,) int64 index
    # that buffer; tile t covers pixels tile_p0[t] .. tile_p0[t] + tile_np[t].
    N = src.shape[0]
    Cin_g = src.shape[1] // G
    Q = crs_off.shape[0]
    K = G * Kg
    TB = wpk.shape[2]
    nkb = (Kg + TB - 1) // TB
    ntile = tile_p0.shape[0]
    for task in prange(N * G * nband):
        n, g, band = task // (G * nband), (task // nband) % G, task % nband
        buf = np.empty(Cin_g * Hz * Wz + RP, dtype=src.dtype)
        buf[Cin_g * Hz * Wz:] = 0
        _stuff(src, n, g * Cin_g, Cin_g, buf, Hz, Wz, sh, sw, oh0, ow0)
        for kb in range(nkb):
            k0 = g * Kg + kb * TB
            nk = min(TB, Kg - kb * TB)
            for t in range(band * ntile // nband, (band + 1) * ntile // nband):
                p0 = tile_p0[t]
                if rows:
                    _tile_row(
                        buf, wpk, g * nkb + kb, Q, crs_off, np.uint64(pix_off[p0]),
                        yf, (n * K + k0) * P + p0, P, nk, tile_np[t], bias, k0, has_bias,
                    )
                else:
                    _tile_fwd(
                        buf, wpk, g * nkb + kb, Q, crs_off,
                        np.uint64(pix_off[p0]), np.uint64(pix_off[p0 + 1]),
                        np.uint64(pix_off[p0 + 2]), np.uint64(pix_off[p0 + 3]),
                        np.uint64(pix_off[p0 + 4]), np.uint64(pix_off[p0 + 5]),
                        yf, (n * K + k0) * P + p0, P, nk, tile_np[t], bias, k0, has_bias,
                    )


@njit(cache=True)
def pack_weights(w, wpk, G, transpose):
    # w: (K, Cg, R, S); TB = wpk.shape[2] channels per block.
    # Without transpose: wpk (G*nkb, Cg*R*S, TB),
    #   wpk[g*nkb + kb, (c*R + r)*S + s, j] = w[g*Kg + kb*TB + j, c, r, s]   (0 past Kg).
    # With transpose (backward-data, output channels are the input's): wpk (G*ncb, Kg*R*S, TB),
    #   wpk[g*ncb + cb, (k*R + r)*S + s, j] = w[g*Kg + k, cb*TB + j, R-1-r, S-1-s] (0 past Cg).
    K, Cg, R, S = w.shape
    Kg = K // G
    nblk, TB = wpk.shape[0], wpk.shape[2]
    wpk[:] = 0
    for blk in range(nblk):
        if not transpose:
            nkb = nblk // G
            g, kb = blk // nkb, blk % nkb
            for j in range(min(TB, Kg - kb * TB)):
                k = g * Kg + kb * TB + j
                for c in range(Cg):
                    for r in range(R):
                        for s in range(S):
                            wpk[blk, (c * R + r) * S + s, j] = w[k, c, r, s]
        else:
            ncb = nblk // G
            g, cb = blk // ncb, blk % ncb
            for j in range(min(TB, Cg - cb * TB)):
                c = cb * TB + j
                for k in range(Kg):
                    for r in range(R):
                        for s in range(S):
                            flipped = w[g * Kg + k, c, R - 1 - r, S - 1 - s]
                            wpk[blk, (k * R + r) * S + s, j] = flipped


def _offsets(Cq, R, S, dh, dw, Hz, Wz, OH, OW, sh, sw):
    """crs_off (Cq*R*S,) uint64 and pix_off (ceil(OH*OW/6)*6,) int64 for one sample's padded
    input (Cq, Hz, Wz): X[q, p] = buf[crs_off[q] + pix_off[p]]. pix_off repeats its last
    entry to fill the last tile (those lanes are computed but never stored)."""
    c, r, s = np.meshgrid(np.arange(Cq), np.arange(R), np.arange(S), indexing="ij")
    crs_off = ((c * Hz + r * dh) * Wz + s * dw).reshape(-1).astype(np.uint64)
    oh, ow = np.meshgrid(np.arange(OH), np.arange(OW), indexing="ij")
    pix = (oh * sh * Wz + ow * sw).reshape(-1).astype(np.int64)
    pix_off = np.concatenate([pix, np.full((-pix.size) % TP, pix[-1], np.int64)])
    return crs_off, pix_off


def _padded_size(H, W, ph, pw, OH, OW, R, S, stride, dilation):
    # Rows/cols of padded input the output reads (bottom/right padding as the output needs).
    (sh, sw), (dh, dw) = stride, dilation
    Hp = max(H + ph, (OH - 1) * sh + (R - 1) * dh + 1)
    Wp = max(W + pw, (OW - 1) * sw + (S - 1) * dw + 1)
    return Hp, Wp


def _tiles(OH, OW, rows):
    """First pixel and pixel count of every tile: RP-pixel pieces of each output row for
    row tiles, else TP consecutive pixels of the flattened output."""
    if rows:
        starts = np.arange(0, OW, RP)
        p0 = (np.arange(OH)[:, None] * OW + starts[None, :]).reshape(-1)
        npx = np.tile(np.minimum(RP, OW - starts), OH)
    else:
        p0 = np.arange(0, OH * OW, TP)
        npx = np.minimum(TP, OH * OW - p0)
    return p0.astype(np.int64), npx.astype(np.int64)


def _use_rows(OW, sw):
    # Row tiles need stride 1 along the row, and rows long enough to fill most lanes.
    return sw == 1 and (OW % RP == 0 or OW >= 2 * RP)


# ----------------------------------------------------------------------------
# version 4: direct forward / backward-data for stride 1, vectorised over pixels

# KX output channels x PX pixels of the padded grid per tile: KX*PX/lanes accumulators
# (16 zmm with AVX-512).
KX = 8
PX = 32 if AVX512 else 8
PX_TILE = KX * PX


@njit(fastmath=FM, cache=True)
def _tile_px(xf, wpk, blk, Q, crs_off, p0, yb, yo, Pp):
    # One KX-channel x PX-pixel tile of y on the padded grid: pixel p = oh*Wz + ow of the
    # (Cq, Hz, Wz) buffer xf reads xf[crs_off[q] + p] at tap q (stride 1), so PX
    # neighbouring pixels are one contiguous load per q, across row ends too (the lanes
    # at ow >= OW are computed and dropped). Per q: PX/lanes loads, KX broadcasts of the
    # packed weights wpk[blk, q, :KX], KX*PX/lanes FMAs. Channel i of the tile goes to
    # yb[yo + i*Pp + 0 .. PX] with whole-vector stores.
    wide_vectors()
    acc = stack_array(yb, PX_TILE)
    for i in range(KX * PX):
        acc[i] = 0
    for q in range(Q):
        c = crs_off[q] + p0
        w0 = wpk[blk, q, 0]
        w1 = wpk[blk, q, 1]
        w2 = wpk[blk, q, 2]
        w3 = wpk[blk, q, 3]
        w4 = wpk[blk, q, 4]
        w5 = wpk[blk, q, 5]
        w6 = wpk[blk, q, 6]
        w7 = wpk[blk, q, 7]
        for j in range(PX):
            xv = xf[c + np.uint64(j)]
            acc[j] += w0 * xv
            acc[PX + j] += w1 * xv
            acc[2 * PX + j] += w2 * xv
            acc[3 * PX + j] += w3 * xv
            acc[4 * PX + j] += w4 * xv
            acc[5 * PX + j] += w5 * xv
            acc[6 * PX + j] += w6 * xv
            acc[7 * PX + j] += w7 * xv
    for i in range(KX):
        row = yo + np.uint64(i * Pp)
        for j in range(PX):
            yb[row + np.uint64(j)] = acc[i * PX + j]


@njit(parallel=True, fastmath=FM, cache=True)
def conv_direct_px(src, wpk, bias, yf, crs_off, G, Kg, OH, OW, Hz, Wz, sh, sw, oh0, ow0,
                   nbuf, nband):
    # y (N, G*Kg, OH*OW) flat = stride-1 direct convolution of src (N, G*Cin_g, A, B),
    # placed by _stuff into a (Cin_g, Hz, Wz) buffer of nbuf elements (zero tail), with
    # packed weights wpk (G*nkb, Cin_g*R*S, KX). Each task takes one sample, one group
    # and one band of PX-pixel tiles of the padded grid (Pp = OH*Wz rounded up to PX
    # pixels); a channel block's tiles land in yb (KX, Pp) and its rows are copied to y.
    N = src.shape[0]
    Cin_g = src.shape[1] // G
    Q = crs_off.shape[0]
    K = G * Kg
    P = OH * OW
    nkb = (Kg + KX - 1) // KX
    Pp = (OH * Wz + PX - 1) // PX * PX
    ntile = Pp // PX
    for task in prange(N * G * nband):
        n, g, band = task // (G * nband), (task // nband) % G, task % nband
        buf = np.empty(nbuf, dtype=src.dtype)
        buf[Cin_g * Hz * Wz:] = 0
        _stuff(src, n, g * Cin_g, Cin_g, buf, Hz, Wz, sh, sw, oh0, ow0)
        yb = np.empty(KX * Pp, dtype=yf.dtype)
        t0, t1 = band * ntile // nband, (band + 1) * ntile // nband
        pa, pb = t0 * PX, t1 * PX
        for kb in range(nkb):
            k0 = g * Kg + kb * KX
            oh = pa // Wz  # the next output row to copy to y
            for t in range(t0, t1):
                _tile_px(buf, wpk, g * nkb + kb, Q, crs_off, np.uint64(t * PX), yb,
                         np.uint64(t * PX), Pp)
                # Copy the rows (padded-grid pixels oh*Wz + ow, ow < OW) that are now
                # complete, so the stores to y spread over the compute.
                end = (t + 1) * PX
                while oh < OH and (oh * Wz + OW <= end or t == t1 - 1) and oh * Wz < pb:
                    lo, hi = max(pa, oh * Wz), min(pb, oh * Wz + OW)
                    for k in range(min(KX, Kg - kb * KX)):
                        d = np.uint64((n * K + k0 + k) * P + oh * OW + lo - oh * Wz)
                        e = np.uint64(k * Pp + lo)
                        bk = bias[k0 + k]
                        for p in range(hi - lo):
                            yf[d + np.uint64(p)] = yb[e + np.uint64(p)] + bk
                    oh += 1


def _run_direct(src, w, bias, yf, G, Kout_g, Cq, R, S, dilation, Hz, Wz, OH, OW, stride,
                stuff, transpose):
    """Pack the weights, build the offset tables and launch conv_direct.

    src (N, G*Cq, ., .) becomes, per task, a (Cq, Hz, Wz) buffer by
    _stuff(..., *stuff); the output (N, G*Kout_g, OH, OW) reads it with ``stride``.
    """
    N = src.shape[0]
    if tuple(stride) == (1, 1):
        # version 4
        nb = (Kout_g + KX - 1) // KX
        wpk = np.empty((G * nb, Cq * R * S, KX), dtype=w.dtype)
        pack_weights(w, wpk, G, transpose)
        crs_off, _ = _offsets(Cq, R, S, *dilation, Hz, Wz, 1, 1, 1, 1)
        Pp = -(-OH * Wz // PX) * PX
        nbuf = max(Cq * Hz * Wz, int(crs_off.max()) + Pp)
        ntile = Pp // PX
        nband = max(1, min(ntile, -(-4 * numba.get_num_threads() // (N * G))))
        if bias is None:
            bias = np.zeros(G * Kout_g, dtype=w.dtype)
        conv_direct_px(
            src, wpk, bias, yf, crs_off, G, Kout_g, OH, OW, Hz, Wz, *stuff, nbuf, nband
        )
        return
    rows = _use_rows(OW, stride[1])
    TB = TKR if rows else TK
    nb = (Kout_g + TB - 1) // TB
    wpk = np.empty((G * nb, Cq * R * S, TB), dtype=w.dtype)
    pack_weights(w, wpk, G, transpose)
    crs_off, pix_off = _offsets(Cq, R, S, *dilation, Hz, Wz, OH, OW, *stride)
    tile_p0, tile_np = _tiles(OH, OW, rows)
    nband = max(1, min(tile_p0.size, -(-4 * numba.get_num_threads() // (N * G))))
    has_bias = bias is not None
    conv_direct(
        src, wpk, bias if has_bias else wpk[0, 0], has_bias, yf, crs_off, pix_off,
        tile_p0, tile_np, rows, G, Kout_g, OH * OW, Hz, Wz, *stuff, nband,
    )


def direct_forward(x, w, b, y, stride, padding, dilation, groups):
    """y = conv2d(x, w) + b by the direct kernels (version 4 for stride 1, else version 1)."""
    H, W = x.shape[2], x.shape[3]
    K, Cg, R, S = w.shape
    OH, OW = y.shape[2], y.shape[3]
    Hp, Wp = _padded_size(H, W, padding[0], padding[1], OH, OW, R, S, stride, dilation)
    _run_direct(
        x, w, b, y.reshape(-1), groups, K // groups, Cg, R, S, dilation, Hp, Wp, OH, OW,
        stride, (1, 1, padding[0], padding[1]), False,
    )


def direct_backward_data(g, w, dx, stride, padding, dilation, groups):
    """dx = the gradient of conv2d w.r.t. x, as a stride-1 convolution of the
    zero-stuffed, padded gradient with the flipped, transposed weights (version 4)."""
    H, W = dx.shape[2], dx.shape[3]
    K, Cg, R, S = w.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    # dx[ih] = sum_r' gz[ih + r'*dh] * w[R-1-r'] with gz[oh*sh + (R-1)*dh - ph] = g[oh].
    Hz, Wz = H + (R - 1) * dh, W + (S - 1) * dw
    _run_direct(
        g, w, None, dx.reshape(-1), groups, Cg, K // groups, R, S, dilation, Hz, Wz, H, W,
        (1, 1), (sh, sw, (R - 1) * dh - ph, (S - 1) * dw - pw), True,
    )


# ----------------------------------------------------------------------------
# version 1: direct backward-weights


@njit(fastmath=FM, cache=True)
def _tile_dw(xf, c0, c1, c2, c3, c4, c5, pix_off, P, gt, blk, part, piece, q0):
    # One TK-channel x 6-row tile of dw, reduced over the P pixels of one sample.
    # xf: the sample's padded input, flat; c0..c5: uint64 crs offsets of the 6 rows;
    # gt: (blocks, P, TK) the sample's gradient with TK channels contiguous;
    # part: (pieces, blocks, Qpad, TK) partial sums; this piece owns part[piece].
    wide_vectors()
    acc = stack_array(part, TILE)
    for i in range(TP * TK):
        acc[i] = 0
    for p in range(P):
        o = np.uint64(pix_off[p])
        x0 = xf[o + c0]
        x1 = xf[o + c1]
        x2 = xf[o + c2]
        x3 = xf[o + c3]
        x4 = xf[o + c4]
        x5 = xf[o + c5]
        for k in range(TK):
            gv = gt[blk, p, k]
            acc[k] += x0 * gv
            acc[TK + k] += x1 * gv
            acc[2 * TK + k] += x2 * gv
            acc[3 * TK + k] += x3 * gv
            acc[4 * TK + k] += x4 * gv
            acc[5 * TK + k] += x5 * gv
    for j in range(TP):
        for k in range(TK):
            part[piece, blk, q0 + j, k] += acc[j * TK + k]


@njit(parallel=True, fastmath=FM, cache=True)
def conv_dw_direct(x, g, part, dbpart, crs_off, pix_off, G, Hp, Wp, ph, pw):
    # Partial sums over slices of the batch: part[piece] (G*nkb, Qpad, TK) of dw and
    # dbpart[piece] (K,) float64 of db. x: (N, C, H, W); g: (N, K, P);
    # crs_off (Qpad,) uint64 with Qpad % 6 == 0; pix_off indexes one padded sample.
    N, K, P = g.shape
    Cin_g = x.shape[1] // G
    Kg = K // G
    npiece, nblk = part.shape[0], part.shape[1]
    nkb = nblk // G
    Qt = crs_off.shape[0] // TP
    for piece in prange(npiece):
        part[piece] = 0
        dbpart[piece] = 0
        buf = np.empty(Cin_g * Hp * Wp, dtype=x.dtype)
        gt = np.empty((nblk, P, TK), dtype=g.dtype)
        dbacc = np.empty(TK, dtype=g.dtype)
        for n in range(piece * N // npiece, (piece + 1) * N // npiece):
            # gt[blk, p, j] = g[n, grp*Kg + kb*TK + j, p], 0 past the group's channels,
            # transposed 16 pixels at a time so both sides stay in L1.
            for blk in range(nblk):
                grp, kb = blk // nkb, blk % nkb
                k0, nk = grp * Kg + kb * TK, min(TK, Kg - kb * TK)
                for p0 in range(0, P, 16):
                    npx = min(16, P - p0)
                    for j in range(TK):
                        if j < nk:
                            for i in range(npx):
                                gt[blk, p0 + i, j] = g[n, k0 + j, p0 + i]
                        else:
                            for i in range(npx):
                                gt[blk, p0 + i, j] = 0
                # db: one vector of TK channel sums per sample, added up in float64.
                dbacc[:] = 0
                for p in range(P):
                    for j in range(TK):
                        dbacc[j] += gt[blk, p, j]
                for j in range(nk):
                    dbpart[piece, k0 + j] += dbacc[j]
            for grp in range(G):
                _stuff(x, n, grp * Cin_g, Cin_g, buf, Hp, Wp, 1, 1, ph, pw)
                for blk in range(grp * nkb, (grp + 1) * nkb):
                    for t in range(Qt):
                        q0 = t * TP
                        _tile_dw(
                            buf, crs_off[q0], crs_off[q0 + 1], crs_off[q0 + 2],
                            crs_off[q0 + 3], crs_off[q0 + 4], crs_off[q0 + 5],
                            pix_off, P, gt, blk, part, piece, q0,
                        )


@njit(cache=True)
def reduce_dw(part, dbpart, dw, db, has_bias, G):
    # dw (K, Cg, R, S)[g*Kg + kb*TK + j, q] = sum over pieces of part[:, g*nkb + kb, q, j];
    # db[k] = sum over pieces of dbpart[:, k].
    K = dw.shape[0]
    Q = dw.shape[1] * dw.shape[2] * dw.shape[3]
    Kg = K // G
    nkb = part.shape[1] // G
    dwf = dw.reshape(K, Q)
    for k in range(K):
        grp, kk = k // Kg, k % Kg
        blk, j = grp * nkb + kk // TK, kk % TK
        for q in range(Q):
            acc = part[0, blk, q, j]
            for piece in range(1, part.shape[0]):
                acc += part[piece, blk, q, j]
            dwf[k, q] = acc
        if has_bias:
            acc = dbpart[0, k]
            for piece in range(1, part.shape[0]):
                acc += dbpart[piece, k]
            db[k] = acc


# ----------------------------------------------------------------------------
# version 3: backward-weights from a channels-last copy of x (g read as it is)

# The dw tile of version 3: KW output channels x TK input channels of one tap (r, s),
# KW*TK/lanes accumulators (16 zmm with AVX-512).
KW = 8
DWT_TILE = KW * TK


@njit(fastmath=FM, cache=True)
def _tile_dwt(xt, xb, tap, pix_off, gf, o0, o1, o2, o3, o4, o5, o6, o7, P, part, pb, ps):
    # One KW-channel x TK-channel tile of dw for one tap, reduced over one sample's P
    # output pixels: acc[i, c] = sum_p gf[o_i + p] * xt[xb + (pix_off[p] + tap)*TK + c].
    # xt: the sample's padded input, channels last in blocks of TK (flat); gf: the
    # gradient as it is (flat), o0..o7 the starts of the tile's KW channel rows;
    # part (flat) gets row i of acc added at pb + i*ps.
    wide_vectors()
    acc = stack_array(part, DWT_TILE)
    for i in range(KW * TK):
        acc[i] = 0
    for p in range(P):
        pu = np.uint64(p)
        xo = xb + (pix_off[p] + tap) * np.uint64(TK)
        g0 = gf[o0 + pu]
        g1 = gf[o1 + pu]
        g2 = gf[o2 + pu]
        g3 = gf[o3 + pu]
        g4 = gf[o4 + pu]
        g5 = gf[o5 + pu]
        g6 = gf[o6 + pu]
        g7 = gf[o7 + pu]
        for c in range(TK):
            xv = xt[xo + np.uint64(c)]
            acc[c] += g0 * xv
            acc[TK + c] += g1 * xv
            acc[2 * TK + c] += g2 * xv
            acc[3 * TK + c] += g3 * xv
            acc[4 * TK + c] += g4 * xv
            acc[5 * TK + c] += g5 * xv
            acc[6 * TK + c] += g6 * xv
            acc[7 * TK + c] += g7 * xv
    for i in range(KW):
        row = pb + np.uint64(i) * ps
        for c in range(TK):
            part[row + np.uint64(c)] += acc[i * TK + c]


@njit(fastmath={"reassoc", "contract"}, cache=True)
def _row_sum(gf, src, P):
    # sum of gf[src : src + P] in gf's dtype, vectorised ('reassoc' keeps NaN/inf).
    acc = gf[src] * 0
    for p in range(P):
        acc += gf[src + np.uint64(p)]
    return acc


@njit(parallel=True, fastmath=FM, cache=True)
def conv_dw_cl(x, g, part, dbpart, pix_off, taps, G, Hp, Wp, ph, pw):
    # Partial sums over slices of the batch: part[piece] (G*Kpad, ncb, R*S, TK) of dw and
    # dbpart[piece] (K,) float64 of db. x: (N, C, H, W); g: (N, K, P); pix_off (P,) and
    # taps (R*S,) uint64: output pixel p, tap t reads padded pixel pix_off[p] + taps[t].
    N, K, P = g.shape
    H, W = x.shape[2], x.shape[3]
    Cin_g = x.shape[1] // G
    Kg = K // G
    npiece, Kpad, ncb, RS = part.shape[0], part.shape[1] // G, part.shape[2], part.shape[3]
    gf = g.reshape(N * K * P)
    Cx = x.shape[1]
    xf = x.reshape(N * Cx * H * W)
    for piece in prange(npiece):
        part[piece] = 0
        dbpart[piece] = 0
        partf = part[piece].reshape(G * Kpad * ncb * RS * TK)
        # xt[cb, (ih + ph)*Wp + iw + pw, j] = x[n, grp*Cin_g + cb*TK + j, ih, iw]; the
        # padding and the channels past Cin_g stay zero.
        xt = np.zeros(ncb * Hp * Wp * TK, dtype=x.dtype)
        for n in range(piece * N // npiece, (piece + 1) * N // npiece):
            for grp in range(G):
                # Pixel by pixel, so the stores are contiguous (the TK loads of a pixel
                # hit the same lines as the previous pixel's).
                for cb in range(ncb):
                    nc = min(TK, Cin_g - cb * TK)
                    for ih in range(H):
                        for iw in range(W):
                            d = np.uint64(((cb * Hp + ih + ph) * Wp + pw + iw) * TK)
                            c0 = grp * Cin_g + cb * TK
                            src = np.uint64(((n * Cx + c0) * H + ih) * W + iw)
                            for j in range(nc):
                                xt[d + np.uint64(j)] = xf[src + np.uint64(j * H * W)]
                for k in range(Kg):
                    src = np.uint64((n * K + grp * Kg + k) * P)
                    dbpart[piece, grp * Kg + k] += _row_sum(gf, src, P)
                for kt in range(Kpad // KW):
                    k0 = kt * KW
                    last = min(KW, Kg - k0) - 1
                    o = np.uint64((n * K + grp * Kg + k0) * P)
                    # Rows past the group's channels repeat its last one (never reduced).
                    o1 = o + np.uint64(min(1, last) * P)
                    o2 = o + np.uint64(min(2, last) * P)
                    o3 = o + np.uint64(min(3, last) * P)
                    o4 = o + np.uint64(min(4, last) * P)
                    o5 = o + np.uint64(min(5, last) * P)
                    o6 = o + np.uint64(min(6, last) * P)
                    o7 = o + np.uint64(min(7, last) * P)
                    for cb in range(ncb):
                        for t in range(RS):
                            _tile_dwt(
                                xt, np.uint64(cb * Hp * Wp * TK), taps[t], pix_off, gf,
                                o, o1, o2, o3, o4, o5, o6, o7, P, partf,
                                np.uint64((((grp * Kpad + k0) * ncb + cb) * RS + t) * TK),
                                np.uint64(ncb * RS * TK),
                            )


@njit(cache=True)
def reduce_dw_cl(part, dbpart, dw, db, has_bias, G):
    # dw (K, Cg, R, S)[g*Kg + k, c, r, s] = sum over pieces of
    # part[:, g*Kpad + k, c // TK, r*S + s, c % TK]; db[k] = sum over pieces of dbpart[:, k].
    K, Cg, R, S = dw.shape
    Kg = K // G
    Kpad = part.shape[1] // G
    for k in range(K):
        row = (k // Kg) * Kpad + k % Kg
        for c in range(Cg):
            for r in range(R):
                for s in range(S):
                    acc = part[0, row, c // TK, r * S + s, c % TK]
                    for piece in range(1, part.shape[0]):
                        acc += part[piece, row, c // TK, r * S + s, c % TK]
                    dw[k, c, r, s] = acc
        if has_bias:
            acc = dbpart[0, k]
            for piece in range(1, part.shape[0]):
                acc += dbpart[piece, k]
            db[k] = acc


def cl_backward_weights(g, x, dw, db, stride, padding, dilation, groups):
    """dw (and db) from a channels-last padded copy of x with g read in place (version 3):
    per-thread partial buffers over slices of the batch, added up at the end."""
    N, H, W = x.shape[0], x.shape[2], x.shape[3]
    K, Cg, R, S = dw.shape
    OH, OW = g.shape[2], g.shape[3]
    (sh, sw), (dh, dwl) = stride, dilation
    G, Kg = groups, K // groups
    Hp, Wp = _padded_size(H, W, padding[0], padding[1], OH, OW, R, S, stride, dilation)
    oh, ow = np.meshgrid(np.arange(OH), np.arange(OW), indexing="ij")
    pix_off = (oh * sh * Wp + ow * sw).reshape(-1).astype(np.uint64)
    r, s = np.meshgrid(np.arange(R), np.arange(S), indexing="ij")
    taps = (r * dh * Wp + s * dwl).reshape(-1).astype(np.uint64)
    Kpad = -(-Kg // KW) * KW
    ncb = -(-Cg // TK)
    npiece = min(N, numba.get_num_threads())
    part = np.empty((npiece, G * Kpad, ncb, R * S, TK), dtype=dw.dtype)
    dbpart = np.empty((npiece, K), dtype=np.float64)
    conv_dw_cl(x, g.reshape(N, K, OH * OW), part, dbpart, pix_off, taps, G, Hp, Wp, *padding)
    has_bias = db is not None
    reduce_dw_cl(part, dbpart, dw, db if has_bias else np.empty(1, dw.dtype), has_bias, G)


def _lane_use(n):
    # The fraction of TK vector lanes that n channels fill, in blocks of TK.
    return n / (-(-n // TK) * TK)


def direct_backward_weights(g, x, dw, db, stride, padding, dilation, groups):
    """dw (and db) = the gradients of conv2d w.r.t. w (and b), with per-thread partial
    buffers over slices of the batch, added up at the end. Version 3 (vectors over input
    channels, no transpose of g) unless its lanes are emptier than version 1's (vectors
    over output channels), e.g. a first layer with 3 input channels."""
    K, Cg = dw.shape[0], dw.shape[1]
    if _lane_use(Cg) >= _lane_use(K // groups):
        cl_backward_weights(g, x, dw, db, stride, padding, dilation, groups)
    else:
        tile_backward_weights(g, x, dw, db, stride, padding, dilation, groups)


def tile_backward_weights(g, x, dw, db, stride, padding, dilation, groups):
    """dw (and db) with the 6-row tile over TK output channels (version 1); g is
    transposed per sample so the output channels are contiguous."""
    N, H, W = x.shape[0], x.shape[2], x.shape[3]
    K, Cg, R, S = dw.shape
    OH, OW = g.shape[2], g.shape[3]
    G, Kg = groups, K // groups
    Hp, Wp = _padded_size(H, W, padding[0], padding[1], OH, OW, R, S, stride, dilation)
    crs_off, pix_off = _offsets(Cg, R, S, dilation[0], dilation[1], Hp, Wp, OH, OW, *stride)
    Q = crs_off.size
    crs_off = np.concatenate([crs_off, np.full((-Q) % TP, crs_off[-1], np.uint64)])
    nkb = (Kg + TK - 1) // TK
    npiece = min(N, numba.get_num_threads())
    part = np.empty((npiece, G * nkb, crs_off.size, TK), dtype=dw.dtype)
    dbpart = np.empty((npiece, K), dtype=np.float64)
    conv_dw_direct(
        x, g.reshape(N, K, OH * OW), part, dbpart, crs_off, pix_off, G, Hp, Wp, *padding
    )
    has_bias = db is not None
    reduce_dw(part, dbpart, dw, db if has_bias else np.empty(1, dw.dtype), has_bias, G)


# ----------------------------------------------------------------------------
# version 2: im2col / col2im + the nnkern GEMM


@njit(parallel=True, cache=True)
def im2col(x, n0, c0, col, R, S, sh, sw, ph, pw, dh, dw, OH, OW):
    # col (Cg*R*S, nb*P) for the nb samples n0..n0+nb-1 side by side:
    # col[(c*R + r)*S + s, j*P + oh*OW + ow] = x[n0 + j, c0 + c, ih, iw], 0 outside,
    # with ih = oh*sh - ph + r*dh, iw = ow*sw - pw + s*dw. One (row, sample) piece per
    # iteration, written row of output pixels by row (no division per element).
    H, W = x.shape[2], x.shape[3]
    Q = col.shape[0]
    P = OH * OW
    nb = col.shape[1] // P
    for t in prange(Q * nb):
        q, j = t // nb, t % nb
        c, r, s = q // (R * S), (q // S) % R, q % S
        base = j * P
        for oh in range(OH):
            ih = oh * sh - ph + r * dh
            o = base + oh * OW
            if ih < 0 or ih >= H:
                for ow in range(OW):
                    col[q, o + ow] = 0
                continue
            for ow in range(OW):
                iw = ow * sw - pw + s * dw
                col[q, o + ow] = x[n0 + j, c0 + c, ih, iw] if 0 <= iw < W else 0


@njit(parallel=True, cache=True)
def col2im(col, dx, n0, c0, Cg, R, S, sh, sw, ph, pw, dh, dw, OH, OW):
    # dx[n0 + j, c0 + c, ih, iw] = sum of the col entries copied from that pixel (col as
    # im2col writes it, nb samples side by side): a gather, one input row per
    # iteration, over the taps (r, s) whose output pixel is whole.
    H, W = dx.shape[2], dx.shape[3]
    P = OH * OW
    nb = col.shape[1] // P
    for t in prange(nb * Cg * H):
        j, ci = t // (Cg * H), t % (Cg * H)
        c, ih = ci // H, ci % H
        base = j * P
        for iw in range(W):
            acc = 0.0
            for r in range(R):
                a = ih + ph - r * dh
                oh = a // sh
                if a < 0 or a % sh != 0 or oh >= OH:
                    continue
                for s in range(S):
                    b = iw + pw - s * dw
                    ow = b // sw
                    if b < 0 or b % sw != 0 or ow >= OW:
                        continue
                    acc += col[(c * R + r) * S + s, base + oh * OW + ow]
            dx[n0 + j, c0 + c, ih, iw] = acc


@njit(parallel=True, cache=True)
def swap_leading_axes(src, dst):
    # dst (B, A, P) = src (A, B, P) with the first two axes swapped, one row of P per
    # iteration. It moves a batch's channels between y's or g's (nb, Kg, P) order and
    # the GEMM's (Kg, nb*P) operand, seen as (Kg, nb, P). src is only read.
    A, B, P = src.shape
    for t in prange(A * B):
        a, b = t // B, t % B
        for p in range(P):
            dst[b, a, p] = src[a, b, p]


@njit(parallel=True, cache=True)
def add_bias(y, b):
    # y (N, K, P) += b (K,)
    N, K, P = y.shape
    for nk in prange(N * K):
        n, k = nk // K, nk % K
        for p in range(P):
            y[n, k, p] += b[k]


@njit(parallel=True, fastmath={"reassoc", "contract"}, cache=True)
def bias_grad(g, db):
    # db[k] = sum over n, p of g (N, K, P), one output channel per iteration.
    # Each (n, k) row is summed in g's dtype (vectorised: 'reassoc' keeps NaN/inf), the
    # row sums in float64.
    N, K, P = g.shape
    for k in prange(K):
        acc = 0.0
        for n in range(N):
            row = g[n, k, 0] * 0
            for p in range(P):
                row += g[n, k, p]
            acc += row
        db[k] = acc


COL_ELEMENTS = 1 << 21  # samples per im2col batch: col (Q, nb*P) of about 2M elements


def _batches(N, Q, P, Kg):
    # (first sample, sample count) of the batches of one im2col pass: the column
    # matrix (Q, nb*P) and the GEMM's other operand (Kg, nb*P) stay near COL_ELEMENTS
    nb = max(1, min(N, COL_ELEMENTS // max(1, max(Q, Kg) * P)))
    return [(n0, min(nb, N - n0)) for n0 in range(0, N, nb)]


def im2col_forward(x, w, b, y, stride, padding, dilation, groups):
    """y = conv2d(x, w) + b: per batch of samples and group, col = im2col(x), w @ col (version 2)."""
    N = x.shape[0]
    K, Cg, R, S = w.shape
    OH, OW = y.shape[2], y.shape[3]
    G, Kg, Q, P = groups, K // groups, Cg * R * S, OH * OW
    w2 = w.reshape(G, Kg, Q)
    y3 = y.reshape(N, K, P)
    batches = _batches(N, Q, P, Kg)
    for n0, m in batches:
        col = workspace("conv.col", (Q, m * P), x.dtype)
        out = workspace("conv.gemm_out", (Kg, m * P), x.dtype)
        for g in range(G):
            im2col(x, n0, g * Cg, col, R, S, *stride, *padding, *dilation, OH, OW)
            gemm_cpu.gemm(w2[g], col, out, False, False, False)
            swap_leading_axes(out.reshape(Kg, m, P), y3[n0 : n0 + m, g * Kg : (g + 1) * Kg])
    if b is not None:
        add_bias(y3, b)


def im2col_backward_data(g, w, dx, stride, padding, dilation, groups):
    """dx: per batch of samples and group, dcol = w^T @ g, then col2im (a gather) (version 2)."""
    N = dx.shape[0]
    K, Cg, R, S = w.shape
    OH, OW = g.shape[2], g.shape[3]
    G, Kg, Q, P = groups, K // groups, Cg * R * S, OH * OW
    w2 = w.reshape(G, Kg, Q)
    g3 = g.reshape(N, K, P)
    batches = _batches(N, Q, P, Kg)
    for n0, m in batches:
        dcol = workspace("conv.col", (Q, m * P), dx.dtype)
        gk = workspace("conv.gemm_out", (Kg, m * P), dx.dtype)
        for grp in range(G):
            swap_leading_axes(g3[n0 : n0 + m, grp * Kg : (grp + 1) * Kg], gk.reshape(Kg, m, P))
            gemm_cpu.gemm(w2[grp], gk, dcol, True, False, False)
            col2im(dcol, dx, n0, grp * Cg, Cg, R, S, *stride, *padding, *dilation, OH, OW)


def im2col_backward_weights(g, x, dw, stride, padding, dilation, groups):
    """dw[g] = sum over batches of g[batch, g] @ im2col(x[batch])^T, accumulated by the GEMM."""
    N = x.shape[0]
    K, Cg, R, S = dw.shape
    OH, OW = g.shape[2], g.shape[3]
    G, Kg, Q, P = groups, K // groups, Cg * R * S, OH * OW
    dw2 = dw.reshape(G, Kg, Q)
    g3 = g.reshape(N, K, P)
    batches = _batches(N, Q, P, Kg)
    for n0, m in batches:
        col = workspace("conv.col", (Q, m * P), x.dtype)
        gk = workspace("conv.gemm_out", (Kg, m * P), x.dtype)
        for grp in range(G):
            im2col(x, n0, grp * Cg, col, R, S, *stride, *padding, *dilation, OH, OW)
            swap_leading_axes(g3[n0 : n0 + m, grp * Kg : (grp + 1) * Kg], gk.reshape(Kg, m, P))
            gemm_cpu.gemm(gk, col, dw2[grp], False, True, n0 > 0)


# ----------------------------------------------------------------------------
# the KERNELS entry points


def choose_algo(algo):
    """The algorithm "auto" stands for: direct, measured faster than im2col on every shape
    tried, pointwise ones included since version 4 (see the header)."""
    if algo != "auto":
        return algo
    return "direct"


def conv2d_forward(x, w, b, y, stride, padding, dilation, groups, algo):
    """y (N, K, OH, OW) = conv2d(x (N, C, H, W), w (K, Cg, R, S)) + b (K,) or no bias."""
    if choose_algo(algo) == "im2col":
        im2col_forward(x, w, b, y, stride, padding, dilation, groups)
    else:
        direct_forward(x, w, b, y, stride, padding, dilation, groups)


def conv2d_backward_data(g, w, dx, stride, padding, dilation, groups, algo):
    """dx (N, C, H, W) = gradient of sum(conv2d(x, w) * g) w.r.t. x, g (N, K, OH, OW)."""
    if choose_algo(algo) == "im2col":
        im2col_backward_data(g, w, dx, stride, padding, dilation, groups)
    else:
        direct_backward_data(g, w, dx, stride, padding, dilation, groups)


def conv2d_backward_weights(g, x, dw, db, stride, padding, dilation, groups, algo):
    """dw (K, Cg, R, S) and db (K,) or None: gradients of sum((conv2d(x, w) + b) * g)."""
    if choose_algo(algo) == "im2col":
        im2col_backward_weights(g, x, dw, stride, padding, dilation, groups)
        if db is not None:
            N, K = g.shape[0], g.shape[1]
            bias_grad(g.reshape(N, K, -1), db)
    else:
        direct_backward_weights(g, x, dw, db, stride, padding, dilation, groups)
