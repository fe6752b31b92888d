"""Optimizer updates in numba.cuda over flat 1-D buffers (CuPy arrays on a GPU, NumPy
under the simulator).

See reference.py for the maths (torch.optim.SGD / Adam semantics).

Versions
    kernel 1 (this file): one launch per flat buffer, a grid-stride loop with
        one element per thread per iteration (coalesced, each element read and
        written once: memory-bound). Scalars are cast to the buffers' dtype before
        the launch, so float32 buffers are updated in float32 arithmetic; the bias
        corrections are computed once on the host in float64.
"""

import math

from numba import cuda

from nnkern.device import cuda_simulated

# Threads per block; the simulator runs one Python thread per GPU thread.
TPB = 32 if cuda_simulated() else 256
MAX_BLOCKS = 4096
"""Grid cap: beyond it each thread loops (grid-stride)."""


def _blocks(n):
    return max(1, min(MAX_BLOCKS, (n + TPB - 1) // TPB))


@cuda.jit
def _sgd_kernel(p, g, buf, lr, momentum, weight_decay, nesterov):
    # p, g, buf (P,); scalars of p's dtype
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    for i in range(start, p.shape[0], stride):
        d = g[i] + weight_decay * p[i]
        if momentum != 0:
            b = momentum * buf[i] + d
            buf[i] = b
            d = d + momentum * b if nesterov else b
        p[i] -= lr * d


@cuda.jit
def _adam_kernel(p, g, m, v, beta1, one_minus_beta1, beta2, one_minus_beta2, step_size,
                 inv_bc2_sqrt, eps, weight_decay):
    # p, g, m, v (P,); scalars of p's dtype
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    for i in range(start, p.shape[0], stride):
        d = g[i] + weight_decay * p[i]
        mi = beta1 * m[i] + one_minus_beta1 * d
        vi = beta2 * v[i] + one_minus_beta2 * d * d
        m[i] = mi
        v[i] = vi
        p[i] -= step_size * mi / (math.sqrt(vi) * inv_bc2_sqrt + eps)


def sgd_step(p, g, buf, lr, momentum, weight_decay, nesterov):
    """One SGD(-momentum) step in place on flat buffers p, g, buf (P,); buf unused when
    momentum == 0. One launch."""
    t = p.dtype.type
    _sgd_kernel[_blocks(p.shape[0]), TPB](p, g, buf, t(lr), t(momentum), t(weight_decay),
                                          bool(nesterov))


def adam_step(p, g, m, v, step, lr, beta1, beta2, eps, weight_decay):
    """One Adam step in place on flat buffers p, m, v (P,); g read only; step >= 1.
    One launch."""
    t = p.dtype.type
    step_size = lr / (1.0 - beta1 ** step)
    inv_bc2_sqrt = 1.0 / math.sqrt(1.0 - beta2 ** step)
    _adam_kernel[_blocks(p.shape[0]), TPB](
        p, g, m, v, t(beta1), t(1.0 - beta1), t(beta2), t(1.0 - beta2), t(step_size),
        t(inv_bc2_sqrt), t(eps), t(weight_decay))
