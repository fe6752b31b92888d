"""Optimizer updates on the CPU with Numba, over flat 1-D buffers.

See reference.py for the maths (torch.optim.SGD / Adam semantics).

Versions
    kernel 1 (this file): one pass over the buffer, each element read and written
        once (Adam: 4 reads + 3 writes, memory-bound). ``prange`` splits the
        buffer between threads above PARALLEL_MIN elements; below that a serial
        copy of the same loop runs, because a parallel region costs more than
        the work (PERF.md). The element update is one inlined function shared
        by both loops. The scalars are cast to the buffers' dtype before the
        call, so float32 buffers are updated in float32 (8 AVX2 lanes), as
        torch does; the bias corrections are computed once, in float64.
        Measured over 1M float32 parameters, 2 threads, torch 2.13 CPU in the same
        process (6 runs): Adam 3.4-8.7x faster than torch.optim.Adam's default (on
        CPU tensors it runs the per-tensor loop of separate ops) and 1.1-1.3x
        faster than Adam(fused=True); SGD with momentum and weight decay 2.8-7x
        faster than torch.optim.SGD.
    error_model="numpy" (2026-12-07): with Numba's default ("python") error model
        every division carries a zero-division branch, and the loop stayed scalar:
        Adam over 109,386 float32 parameters (the MLP 784-128-64-10) took 194 us on
        one thread, 39 us vectorised (5x; 1Mi on 2 threads unchanged, memory-bound).
        A zero denominator now gives inf/NaN as in NumPy and PyTorch instead of an
        exception (eps = 0 with v = 0).
    PARALLEL_MIN 2^15 -> 2^17: inside a training step the workers are asleep by the
        time the optimizer runs (Python gaps outlast their short spin), so a parallel
        region pays a wake-up: the MLP's 109k-parameter Adam took 90 us parallel
        inside the step against 39 us serial (step 0.56 -> 0.45 ms, prof_step).
    subnormal moments stored as 0 (2026-12-07): a weight whose gradient stays 0 (a dead
        relu unit) has m *= beta1 at every step, subnormal after about 800 steps, and
        each subnormal operand or result costs a microcode assist. Training the bench's
        MLP on one batch, 21k of its 109k moments went subnormal by step 1000: Adam
        40 -> 267 us, the whole step 0.46 -> 0.70 ms (the last samples of the bench row
        grew the same way, nnkern's and torch[fused]'s alike). The kernel now stores a
        moment below the dtype's smallest normal number as 0 (NaN kept) and divides
        m by the denominator before scaling by the step size (step_size * m was
        subnormal for small normal m). 109k parameters, 80 % of them with m decaying
        through 1e-33..0 over 300 steps: 894-2752 -> 44-62 us per step
        (/work/scratch/mlpstep/adam_subnormal.py; the subnormal case of
        tests/kernels/test_optim.py checks the values). Unlike torch's default (no
        flushing), such a moment reads 0 in the optimizer's state; the parameters
        match the float64 reference. Cost on normal data (one thread, best of 7
        alternating, /work/scratch/mlpstep/adam_variants.py): 109k 39.9 -> 42.3 us
        (the two selects 1.2 us, dividing first 1.2 us), 1Mi 587 -> 593 us
        (memory-bound).
    tried and dropped (2026-12-07): the divide, and the square root, by the AVX-512
        14-bit estimates and one Newton step (rcp14, rsqrt14; special lanes selected so
        0, inf and NaN give the exact results), 16 lanes per step as LLVM vector code:
        m and v bit-identical, p within 2 (divide) / 16 (both) ulp of this kernel, but
        109k float32 on one thread 43-45 -> 47 us (divide) and 62-65 us (both), best of
        3 x 300 turns (/work/scratch/mlp3/adam16.py): the loop is bound by its seven
        streams through L2, not by the divider. fastmath=True (vrcpps for the divide)
        ran 39 us and took about 9 us off the MLP step's opt.step, but it drops the
        NaN/inf guarantees (nnan, ninf); with arcp, afn, contract, reassoc and nsz but
        not those, LLVM keeps vdivps (43-44 us).
    fixed scalars cast once (2026-12-07): beta1, 1 - beta1, beta2, 1 - beta2, eps,
        weight_decay and the flush threshold are cast to the dtype once per setting
        (_ADAM_SCALARS), not at every step: nine NumPy scalar casts cost 1.3 us, the
        two left (step size, bias correction) 0.3 us.
    tried and dropped (2026-12-07): software prefetch D elements ahead of the four
        streams (llvm.prefetch per cache line at the head of each block of BLK elements,
        the block's loop left vectorisable; bit-identical results), because inside the
        MLP step Adam takes about 80 us against 43-45 us alone (m and v come from L3):
        D = 1024, BLK = 256: alone 45.2 -> 47.2 us, in the step opt.step 84.8 -> 88.2 us
        (medians of 9 alternating blocks of 200 steps); D = 4096, BLK = 512: 47.1 -> 56.5
        and 76.2 -> 92.7 us (/work/scratch/mlp4/adam_pf.py D BLK). The hardware streamers
        already keep up; what costs is the bytes from L3.
"""

import math

import numpy as np
from numba import njit, prange

PARALLEL_MIN = 1 << 17
"""Buffers shorter than this are updated by the serial loop (see the header)."""

TINY = {np.dtype(t): np.finfo(t).tiny for t in (np.float32, np.float64)}
"""The smallest normal number of each dtype: Adam stores smaller moments as 0."""


@njit(inline="always")
def _sgd_element(p, g, buf, i, lr, momentum, weight_decay, nesterov):
    d = g[i] + weight_decay * p[i]
    if momentum != 0:
        b = momentum * buf[i] + d
        buf[i] = b
        d = d + momentum * b if nesterov else b
    p[i] -= lr * d


@njit(parallel=True, cache=True, error_model="numpy")
def _sgd_parallel(p, g, buf, lr, momentum, weight_decay, nesterov):
    # p, g, buf (P,); scalars of p's dtype
    for i in prange(p.shape[0]):
        _sgd_element(p, g, buf, i, lr, momentum, weight_decay, nesterov)


@njit(cache=True, error_model="numpy")
def _sgd_serial(p, g, buf, lr, momentum, weight_decay, nesterov):
    for i in range(p.shape[0]):
        _sgd_element(p, g, buf, i, lr, momentum, weight_decay, nesterov)


@njit(inline="always")
def _adam_element(p, g, m, v, i, beta1, one_minus_beta1, beta2, one_minus_beta2, step_size,
                  inv_bc2_sqrt, eps, weight_decay, tiny):
    d = g[i] + weight_decay * p[i]
    mi = beta1 * m[i] + one_minus_beta1 * d
    vi = beta2 * v[i] + one_minus_beta2 * d * d
    # a moment that decays below the smallest normal number is stored as 0 (NaN kept):
    # a weight whose gradient stays 0 has m *= beta1 each step, subnormal after ~800
    # steps, and every subnormal operand costs a microcode assist (see the header)
    if abs(mi) < tiny:
        mi -= mi  # +0 in the buffers' dtype (a literal 0 would promote to float64)
    if abs(vi) < tiny:
        vi -= vi
    m[i] = mi
    v[i] = vi
    # divide before scaling: step_size * mi would be subnormal for small normal mi
    p[i] -= step_size * (mi / (np.sqrt(vi) * inv_bc2_sqrt + eps))


@njit(parallel=True, cache=True, error_model="numpy")
def _adam_parallel(p, g, m, v, beta1, one_minus_beta1, beta2, one_minus_beta2, step_size,
                   inv_bc2_sqrt, eps, weight_decay, tiny):
    # p, g, m, v (P,); scalars of p's dtype
    for i in prange(p.shape[0]):
        _adam_element(p, g, m, v, i, beta1, one_minus_beta1, beta2, one_minus_beta2, step_size,
                      inv_bc2_sqrt, eps, weight_decay, tiny)


@njit(cache=True, error_model="numpy")
def _adam_serial(p, g, m, v, beta1, one_minus_beta1, beta2, one_minus_beta2, step_size,
                 inv_bc2_sqrt, eps, weight_decay, tiny):
    for i in range(p.shape[0]):
        _adam_element(p, g, m, v, i, beta1, one_minus_beta1, beta2, one_minus_beta2, step_size,
                      inv_bc2_sqrt, eps, weight_decay, tiny)


def sgd_step(p, g, buf, lr, momentum, weight_decay, nesterov):
    """One SGD(-momentum) step in place on flat buffers p, g, buf (P,); buf unused when
    momentum == 0."""
    t = p.dtype.type
    kernel = _sgd_parallel if p.shape[0] >= PARALLEL_MIN else _sgd_serial
    kernel(p, g, buf, t(lr), t(momentum), t(weight_decay), bool(nesterov))


_ADAM_SCALARS = {}
"""(dtype, beta1, beta2, eps, weight_decay) -> those of Adam's scalars that do not change
from step to step, cast to the dtype once (nine casts cost 1.3 us of a training step)."""


def adam_step(p, g, m, v, step, lr, beta1, beta2, eps, weight_decay):
    """One Adam step in place on flat buffers p, m, v (P,); g read only; step >= 1."""
    t = p.dtype.type
    step_size = lr / (1.0 - beta1 ** step)
    inv_bc2_sqrt = 1.0 / math.sqrt(1.0 - beta2 ** step)
    key = (t, beta1, beta2, eps, weight_decay)
    fixed = _ADAM_SCALARS.get(key)
    if fixed is None:
        if len(_ADAM_SCALARS) > 64:  # a sweep over many settings: keep the table small
            _ADAM_SCALARS.clear()
        fixed = _ADAM_SCALARS[key] = (t(beta1), t(1.0 - beta1), t(beta2), t(1.0 - beta2),
                                      t(eps), t(weight_decay), t(TINY[p.dtype]))
    b1, omb1, b2, omb2, eps_t, wd, tiny = fixed
    kernel = _adam_parallel if p.shape[0] >= PARALLEL_MIN else _adam_serial
    kernel(p, g, m, v, b1, omb1, b2, omb2, t(step_size), t(inv_bc2_sqrt), eps_t, wd, tiny)
