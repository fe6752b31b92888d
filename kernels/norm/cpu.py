"""Batch normalisation on the CPU with Numba.

x is (N, C, L), L = H*W (1 for a dense layer's (N, C) input); gamma, beta and
the running statistics are (C,). See reference.py for the maths.

Versions
    kernel 1 (this file): ``prange`` over channels, so every reduction is private
        to one thread (no shared ``+=``, no partial buffers). A channel is N
        strided runs of L contiguous values; one channel of (128, 64, 28, 28)
        float32 is 400 KB, so its second pass reads from L2, not DRAM.
        - Statistics in ONE pass: sums of d = x - x[0, c, 0] and d*d in float64.
          The shift (one sample of the channel) keeps ``E[d^2] - E[d]^2`` from
          cancelling when the mean is large against the spread.
        - The backward gathers sum(g) and sum(g*d) in that same pass, then writes
          dx = k*g + q*(x - mean) + r in a second one.
        - fastmath is limited to {reassoc, contract}: it lets LLVM vectorise the
          float64 reductions (measured 65 -> 11 us per 100k values) and keeps
          NaN/inf propagation, which need nnan/ninf to be dropped.
        - The per-channel coefficients are stored in a small scratch array of
          x's dtype, so the element loops run in that dtype (float32: 8 lanes). The
          mean is rounded to that dtype there; the float64 difference (mean - m) is
          folded into the shift (y = (x - m) a + beta - (mean - m) a), else a mean
          300x the spread gave float32 errors of 6e-4 (issue 12 item 14). x - m is
          exact when x is near m, so the only rounding left is that of the product.
        Measured on (128, 64, 28, 28) float32, 2 threads, torch 2.13 CPU (NCHW) in
        the same process (6 runs): forward 2.2-3.2x faster than torch,
        forward+backward 1.5-1.8x (about 3 ms + 5 ms on a quiet machine: close to
        the DRAM traffic of reading x (and g) once and writing y (dx) once).
        Walking the second pass backwards (to meet the newest cached rows first)
        was measured 10% slower: the prefetchers favour forward streams.
    kernel 2 (this file, L = 1: a dense layer's (N, C)): kernel 1 walks a channel as N
        runs of L values, C*L apart; with L = 1 every read is a cache miss (measured
        0.01-0.1x torch on (4096, 256)). Kernel 2 walks x in memory order instead: ``prange``
        over chunks of samples, each thread summing into its own row of a (T, k, C)
        float64 scratch (still no shared ``+=``), the inner loop over channels
        (contiguous, vectorised); the T rows are added on the host and turned into
        per-channel coefficients; a second ``prange`` over samples writes y (dx). Same
        shifted one-pass statistics as kernel 1. Measured float32, 2 threads, torch in
        the same process (40 interleaved runs, busy machine): forward+backward 1.05-1.4x
        faster than torch on (256, 512), (1024, 128), (4096, 256), and 2.3x (small) to
        29x (4096, 256) faster than kernel 1; the forward alone is 0.6-0.7x torch (the
        host-side glue costs tens of us). From L = 4 on, kernel 1 is 1.7-4x faster.
"""

import numba
import numpy as np
from numba import njit, prange

# Reassociation and FMA contraction only: enough to vectorise the reductions,
# without the no-NaN/no-inf assumptions of fastmath=True.
_FASTMATH = {"reassoc", "contract"}

ROW_MIN_L = 2
"""Inputs with fewer positions per channel (L = H*W) than this take kernel 2: only the
(N, C) input of a dense layer (L = 1). From L = 4 on, kernel 1 was measured faster."""


@njit(parallel=True, cache=True, fastmath=_FASTMATH)
def _forward(x, gamma, beta, running_mean, running_var, y, training, momentum, eps, coef):
    # x, y (N, C, L); gamma, beta, running_mean, running_var (C,); coef (C, 3) scratch
    N, C, L = x.shape
    M = N * L
    for c in prange(C):
        if training:
            shift = np.float64(x[0, c, 0])
            s1 = 0.0
            s2 = 0.0
            for n in range(N):
                for i in range(L):
                    d = np.float64(x[n, c, i]) - shift
                    s1 += d
                    s2 += d * d
            mean_d = s1 / M
            var = max(s2 / M - mean_d * mean_d, 0.0)
            mean = shift + mean_d
            running_mean[c] = (1.0 - momentum) * running_mean[c] + momentum * mean
            running_var[c] = (1.0 - momentum) * running_var[c] + momentum * var * M / (M - 1)
        else:
            mean = np.float64(running_mean[c])
            var = np.float64(running_var[c])
        coef[c, 0] = mean
        coef[c, 1] = gamma[c] / np.sqrt(var + eps)
        m = coef[c, 0]
        a = coef[c, 1]
        # y = (x - m) a + beta - (mean - m) a: m is the batch mean rounded to x's dtype,
        # and the float64 correction for that rounding rides in the shift (a running
        # mean is already in x's dtype: nothing to correct, and inf - inf would be NaN)
        rounding = mean - np.float64(m) if training else 0.0
        coef[c, 2] = beta[c] - rounding * np.float64(a)
        b = coef[c, 2]
        for n in range(N):
            for i in range(L):
                y[n, c, i] = (x[n, c, i] - m) * a + b


@njit(parallel=True, cache=True, fastmath=_FASTMATH)
def _backward(g, x, gamma, running_mean, running_var, dx, dgamma, dbeta, training, eps, coef):
    # g, x, dx (N, C, L); gamma, running_mean, running_var, dgamma, dbeta (C,); coef (C, 4)
    N, C, L = x.shape
    M = N * L
    for c in prange(C):
        # one pass: batch statistics (training) and the sums of g and g*(x - shift)
        shift = np.float64(x[0, c, 0]) if training else np.float64(running_mean[c])
        s1 = 0.0
        s2 = 0.0
        sg = 0.0
        sgd = 0.0
        for n in range(N):
            for i in range(L):
                d = np.float64(x[n, c, i]) - shift
                gv = np.float64(g[n, c, i])
                s1 += d
                s2 += d * d
                sg += gv
                sgd += gv * d
        if training:
            mean_d = s1 / M
            var = max(s2 / M - mean_d * mean_d, 0.0)
        else:
            mean_d = 0.0
            var = np.float64(running_var[c])
        invstd = 1.0 / np.sqrt(var + eps)
        sum_gxhat = invstd * (sgd - mean_d * sg)       # sum(g * xhat)
        dgamma[c] = sum_gxhat
        dbeta[c] = sg
        k = gamma[c] * invstd
        # dx = k * (g - sum(g)/M - xhat * sum(g*xhat)/M) = k*g + q*(x - mean) + r
        coef[c, 0] = shift + mean_d
        coef[c, 1] = k
        m = coef[c, 0]
        if training:
            # q (x - m) with m the batch mean rounded to x's dtype: r takes q (m - mean) back
            q64 = -k * invstd * sum_gxhat / M
            coef[c, 2] = q64
            coef[c, 3] = -k * sg / M - q64 * (shift + mean_d - np.float64(m))
        else:
            coef[c, 2] = 0.0
            coef[c, 3] = 0.0
        kk = coef[c, 1]
        q = coef[c, 2]
        r = coef[c, 3]
        if training:
            for n in range(N):
                for i in range(L):
                    dx[n, c, i] = kk * g[n, c, i] + q * (x[n, c, i] - m) + r
        else:   # dx = k g: x is not read (an inf running mean must not give 0 * inf)
            for n in range(N):
                for i in range(L):
                    dx[n, c, i] = kk * g[n, c, i]


# --- kernel 2: rows in memory order, per-thread partial sums -------------------------------


@njit(parallel=True, cache=True, fastmath=_FASTMATH)
def _row_stats(x, shift, part):
    # x (N, C, L); shift (C,) float64; part (T, 2, C) float64: per chunk of samples, the
    # sums of d = x - shift and d*d. The inner loop runs over channels, contiguous when
    # L = 1, so it vectorises.
    N, C, L = x.shape
    T = part.shape[0]
    for t in prange(T):
        s1 = part[t, 0]
        s2 = part[t, 1]
        s1[:] = 0.0
        s2[:] = 0.0
        for n in range(t * N // T, (t + 1) * N // T):
            for i in range(L):
                for c in range(C):
                    d = np.float64(x[n, c, i]) - shift[c]
                    s1[c] += d
                    s2[c] += d * d


@njit(parallel=True, cache=True, fastmath=_FASTMATH)
def _row_grad_stats(g, x, shift, part):
    # g, x (N, C, L); shift (C,) float64; part (T, 4, C) float64: per chunk of samples, the
    # sums of d = x - shift, d*d, g and g*d
    N, C, L = x.shape
    T = part.shape[0]
    for t in prange(T):
        s1 = part[t, 0]
        s2 = part[t, 1]
        sg = part[t, 2]
        sgd = part[t, 3]
        part[t] = 0.0
        for n in range(t * N // T, (t + 1) * N // T):
            for i in range(L):
                for c in range(C):
                    d = np.float64(x[n, c, i]) - shift[c]
                    gv = np.float64(g[n, c, i])
                    s1[c] += d
                    s2[c] += d * d
                    sg[c] += gv
                    sgd[c] += gv * d


@njit(parallel=True, cache=True, fastmath=_FASTMATH)
def _row_scale(x, y, coef):
    # x, y (N, C, L); coef (3, C) of y's dtype: y = (x - m) * a + b with (m, a, b) = coef
    N, C, L = x.shape
    m = coef[0]
    a = coef[1]
    b = coef[2]
    for n in prange(N):
        for i in range(L):
            for c in range(C):
                y[n, c, i] = (x[n, c, i] - m[c]) * a[c] + b[c]


@njit(parallel=True, cache=True, fastmath=_FASTMATH)
def _row_grad(g, x, dx, coef):
    # g, x, dx (N, C, L); coef (4, C) of dx's dtype: dx = k*g + q*(x - m) + r with
    # (m, k, q, r) = coef
    N, C, L = x.shape
    m = coef[0]
    k = coef[1]
    q = coef[2]
    r = coef[3]
    for n in prange(N):
        for i in range(L):
            for c in range(C):
                dx[n, c, i] = k[c] * g[n, c, i] + q[c] * (x[n, c, i] - m[c]) + r[c]


def _partials(x, g, shift):
    """Sums over all samples (kernel 2's two-level reduction), (2, C) float64 for the
    statistics of x, (4, C) with those of g too when g is given."""
    T = max(1, min(x.shape[0], numba.get_num_threads()))
    part = np.empty((T, 2 if g is None else 4, x.shape[1]), dtype=np.float64)
    if g is None:
        _row_stats(x, shift, part)
    else:
        _row_grad_stats(g, x, shift, part)
    return part.sum(axis=0)


def _rows_forward(x, gamma, beta, running_mean, running_var, y, training, momentum, eps):
    # x, y (N, C, L) with L < ROW_MIN_L
    N, C, L = x.shape
    if training:
        M = N * L
        shift = x[0, :, 0].astype(np.float64)
        s1, s2 = _partials(x, None, shift)
        mean_d = s1 / M
        var = np.maximum(s2 / M - mean_d * mean_d, 0.0)
        mean = shift + mean_d
        running_mean[:] = (1.0 - momentum) * running_mean + momentum * mean
        running_var[:] = (1.0 - momentum) * running_var + momentum * var * (M / (M - 1))
    else:
        mean = running_mean.astype(np.float64)
        var = running_var.astype(np.float64)
    coef = np.empty((3, C), dtype=x.dtype)
    coef[0] = mean
    a = gamma / np.sqrt(var + eps)
    coef[1] = a
    # the rounding of the batch mean in coef[0], undone (a running mean has none)
    coef[2] = beta - (mean - coef[0]) * a if training else beta
    _row_scale(x, y, coef)


def _rows_backward(g, x, gamma, running_mean, running_var, dx, dgamma, dbeta, training, eps):
    # g, x, dx (N, C, L) with L < ROW_MIN_L
    N, C, L = x.shape
    M = N * L
    # training implies N >= 1 (the op surface refuses fewer than 2 values per channel)
    shift = x[0, :, 0].astype(np.float64) if training else running_mean.astype(np.float64)
    s1, s2, sg, sgd = _partials(x, g, shift)
    if training:
        mean_d = s1 / M
        var = np.maximum(s2 / M - mean_d * mean_d, 0.0)
    else:
        mean_d = np.zeros(C)
        var = running_var.astype(np.float64)
    invstd = 1.0 / np.sqrt(var + eps)
    sum_gxhat = invstd * (sgd - mean_d * sg)
    dgamma[:] = sum_gxhat
    dbeta[:] = sg
    k = gamma * invstd
    coef = np.empty((4, C), dtype=x.dtype)
    coef[0] = shift + mean_d
    coef[1] = k
    if training:   # r takes back q times the rounding of the mean in coef[0]
        q = -k * invstd * sum_gxhat / M
        coef[2] = q
        coef[3] = -k * sg / M - q * (shift + mean_d - coef[0])
    else:
        coef[2] = 0.0
        coef[3] = 0.0
    _row_grad(g, x, dx, coef)


# --- the KERNELS entry points ------------------------------------------------------------


def _writable(v):
    # Numba types a kernel's every branch: kernel 1 writes the running statistics in its
    # training branch, so a read-only array (valid when they are only read: eval, and
    # every backward) would not compile. A (C,) copy is the stand-in.
    return v if v.flags.writeable else v.copy()


def batch_norm_forward(x, gamma, beta, running_mean, running_var, y, training, momentum, eps):
    """y = gamma * (x - mean) / sqrt(var + eps) + beta per channel; updates the running
    statistics in place when training. x, y (N, C, L); the others (C,)."""
    if not training:
        running_mean, running_var = _writable(running_mean), _writable(running_var)
    if x.shape[2] < ROW_MIN_L:
        _rows_forward(x, gamma, beta, running_mean, running_var, y, bool(training),
                      float(momentum), float(eps))
        return
    coef = np.empty((x.shape[1], 3), dtype=x.dtype)
    _forward(x, gamma, beta, running_mean, running_var, y, bool(training), float(momentum),
             float(eps), coef)


def batch_norm_backward(g, x, gamma, running_mean, running_var, dx, dgamma, dbeta, training,
                        eps):
    """dx (N, C, L), dgamma, dbeta (C,) of batch_norm_forward; running statistics are read in
    eval and never written."""
    running_mean, running_var = _writable(running_mean), _writable(running_var)
    if x.shape[2] < ROW_MIN_L:
        _rows_backward(g, x, gamma, running_mean, running_var, dx, dgamma, dbeta,
                       bool(training), float(eps))
        return
    coef = np.empty((x.shape[1], 4), dtype=x.dtype)
    _backward(g, x, gamma, running_mean, running_var, dx, dgamma, dbeta, bool(training),
              float(eps), coef)
