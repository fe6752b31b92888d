"""Losses on the CPU with Numba: softmax cross-entropy fused forward+backward, BCE, MSE.

Shapes: logits (N, C), labels (N,) int64, losses (N,), dlogits (N, C); the
element-wise losses work on flat (n,) arrays. See reference.py for the maths.

Versions (read top to bottom):
    version 1  _softmax_ce_rows: ONE pass per row (_softmax_ce_row), rows in prange
               (a serial kernel below SERIAL_BELOW logits, chosen in Python so that
               small batches never compile the parallel one). The row's max
               (row_max, 16 lanes so that it vectorises), then exp(x - max) written
               once into the gradient row (the softmax numerator) and summed, then
               the row scaled in place into g * scale * (p - q) while it sits in L1.
               The logits are read twice, the gradient written once. The forward-only
               call runs the same loop without the stores.
    exp        float32 rows use fast_exp (elementwise/cpu.py): a branch-free exp
               (Cody-Waite range reduction, degree-6 polynomial, 2^k built from its
               bits) that LLVM vectorises, where libm's expf is a call per element.
               Relative error <= 2.3e-7 (measured over 1e6 points). float64 keeps
               math.exp.
    fastmath   {"reassoc", "contract"} only: sums may vectorise (reassociate) and
               use FMA, but NaN and inf are still honoured (no "nnan"/"ninf"), so a
               NaN logit still gives a NaN loss.

Speed, N=1024 C=1000 float32 forward+backward, 2 threads, torch CPU in the same
process (F.cross_entropy + autograd backward), medians of 7, a shared and loaded
2-core machine (/tmp/sce/bench_ce.py, six runs): the fused call
(F.softmax_cross_entropy_with_grad) 1.7-4.4x faster than torch (2.8x in the
quietest run: 0.51 ms vs 1.40 ms); loss and backward as two calls (the backward
recomputes the forward) 0.96-2.0x.
Float32 row sums are carried in float32 (eight vector lanes); float64 in float64.
"""

import math

import numpy as np

# fast_exp (vectorisable float32 exp) and row_max (vectorised max) are shared with the
# softmax of the elementwise family. Numba's on-disk cache tracks only a kernel's own
# file: after editing them there, clear kernels/softmax_ce/__pycache__ too.
from nnkern.kernels.elementwise.cpu import FASTMATH, SERIAL_BELOW, fast_exp, row_max
from numba import njit, prange

# ----------------------------------------------------------------------------
# version 1: softmax cross-entropy, one fused pass per row


@njit(cache=True, fastmath=FASTMATH)
def _softmax_ce_row(x, label, gi, label_smoothing, d, want_grad):
    # x (C,) logits, d (C,) gradient row (written when want_grad); returns the row's loss
    C = x.shape[0]
    real = x.dtype.type
    m = row_max(x)
    s = real(0)
    if want_grad:
        for j in range(C):
            e = fast_exp(x[j] - m)
            d[j] = e                                # the softmax numerator, scaled below
            s += e
    else:
        for j in range(C):
            s += fast_exp(x[j] - m)
    # loss = log s - (1 - eps) z_label - (eps / C) sum_j z_j,  z = x - max
    spread = real(label_smoothing / C)              # q off the label: the uniform part
    loss = math.log(s) - real(1.0 - label_smoothing) * (x[label] - m)
    if label_smoothing != 0.0:
        z_sum = real(0)
        for j in range(C):
            z_sum += x[j] - m
        loss -= spread * z_sum
    if want_grad:
        # d = g (p - q): q = spread off the label, 1 - eps + spread on it
        a = gi / s
        b = gi * spread
        e_label = d[label]
        for j in range(C):
            d[j] = a * d[j] - b
        d[label] = a * e_label - gi * real(1.0 - label_smoothing + label_smoothing / C)
    return loss


@njit(cache=True)
def _softmax_ce_rows_serial(logits, labels, g, scale, label_smoothing, losses, dlogits,
                            want_grad):
    # logits (N, C), labels (N,), g (N,) or (1,), losses (N,), dlogits (N, C) or (N, 0)
    N = logits.shape[0]
    real = logits.dtype.type
    step = 1 if g.shape[0] == N else 0              # g broadcast when it holds one value
    for i in range(N):
        losses[i] = _softmax_ce_row(logits[i], labels[i], real(scale) * g[i * step],
                                    label_smoothing, dlogits[i], want_grad)


@njit(parallel=True, cache=True)
def _softmax_ce_rows_parallel(logits, labels, g, scale, label_smoothing, losses, dlogits,
                              want_grad):
    # the same rows in prange
    N = logits.shape[0]
    real = logits.dtype.type
    step = 1 if g.shape[0] == N else 0
    for i in prange(N):
        losses[i] = _softmax_ce_row(logits[i], labels[i], real(scale) * g[i * step],
                                    label_smoothing, dlogits[i], want_grad)


def _softmax_ce_rows(logits, labels, g, scale, label_smoothing, losses, dlogits, want_grad):
    # The serial/parallel choice is made here, not inside one parallel kernel, so a run
    # that only meets small batches (the main job's) never compiles the parallel
    # kernel: 1.3 s of its cold compile (bench/compile_time.py --main-job).
    rows = (_softmax_ce_rows_serial if logits.size < SERIAL_BELOW
            else _softmax_ce_rows_parallel)
    rows(logits, labels, g, scale, label_smoothing, losses, dlogits, want_grad)


def softmax_ce_forward(logits, labels, losses, label_smoothing):
    """Per-row loss: logits (N, C), labels (N,) -> losses (N,)."""
    no_grad = np.empty((logits.shape[0], 0), logits.dtype)   # empty rows, never written
    _softmax_ce_rows(logits, labels, losses[:1], 1.0, label_smoothing, losses, no_grad, False)


def softmax_ce_forward_backward(logits, labels, g, scale, label_smoothing, losses, dlogits):
    """Losses (N,) and dlogits (N, C) = scale * g_i * (softmax - q) in one pass per row."""
    _softmax_ce_rows(logits, labels, g, scale, label_smoothing, losses, dlogits, True)


# ----------------------------------------------------------------------------
# element-wise losses on flat arrays: serial below SERIAL_BELOW elements, prange above.
# One kernel per direction for both losses (a loop-invariant op code), which halves the
# number of kernels compiled cold.

BCE, MSE = 0, 1


@njit(cache=True)
def _pointwise_loss(v, t, op):
    if op == BCE:
        # max(x, 0) - x t + log1p(exp(-|x|)): no overflow for either sign
        return max(v, 0) - v * t + math.log1p(math.exp(-abs(v)))
    return (v - t) * (v - t)


@njit(cache=True, error_model="numpy")      # no zero-divisor branch: the loop vectorises
def _pointwise_loss_grad(v, t, op, one):
    # one: 1 in x's dtype (an integer literal would turn float32 math into float64)
    if op == BCE:
        e = fast_exp(-abs(v))
        return (one / (one + e) if v >= 0 else e / (one + e)) - t      # sigmoid(x) - t
    return (one + one) * (v - t)


@njit(parallel=True, cache=True)
def _pointwise_forward(x, t, losses, op):
    # x, t, losses (n,)
    n = x.shape[0]
    if n < SERIAL_BELOW:
        for i in range(n):
            losses[i] = _pointwise_loss(x[i], t[i], op)
    else:
        for i in prange(n):
            losses[i] = _pointwise_loss(x[i], t[i], op)


@njit(parallel=True, cache=True)
def _pointwise_backward(g, scale, x, t, dx, op):
    # dx (n,) = scale * g * dloss/dx; g (n,) or (1,)
    n = x.shape[0]
    real = x.dtype.type
    one = real(1)
    step = 1 if g.shape[0] == n else 0       # g broadcast when it holds one value
    if n < SERIAL_BELOW:
        for i in range(n):
            dx[i] = real(scale) * g[i * step] * _pointwise_loss_grad(x[i], t[i], op, one)
    else:
        for i in prange(n):
            dx[i] = real(scale) * g[i * step] * _pointwise_loss_grad(x[i], t[i], op, one)


def bce_with_logits_forward(x, t, losses):
    """Element-wise BCE with logits: x, t, losses (n,)."""
    _pointwise_forward(x, t, losses, BCE)


def bce_with_logits_backward(g, scale, x, t, dx):
    """dx (n,) = scale * g * (sigmoid(x) - t)."""
    _pointwise_backward(g, scale, x, t, dx, BCE)


def mse_forward(x, t, losses):
    """Element-wise (x - t)^2: x, t, losses (n,)."""
    _pointwise_forward(x, t, losses, MSE)


def mse_backward(g, scale, x, t, dx):
    """dx (n,) = 2 scale g (x - t)."""
    _pointwise_backward(g, scale, x, t, dx, MSE)
