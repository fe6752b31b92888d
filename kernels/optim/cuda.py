"""Optimizer updates in numba.cuda over flat 1-D buffers (CuPy arrays on a GPU, NumPy
under the simulator).

See reference.py for the maths (torch.optim.SGD / Adam semantics).

Versions (one table, ``VERSIONS``)
    v1  one launch per flat buffer, a grid-stride loop with one element per thread
        per iteration (coalesced, each element read and written once: memory-bound).
        Scalars are cast to the buffers' dtype before the launch, so float32 buffers
        are updated in float32 arithmetic; the bias corrections are computed once on
        the host in float64. Second version of the file (issue 14): explicit
        signatures per dtype (compiled once, on first use; the launch types no
        scalar), blocks and simulator switch from ``kernels/_cuda.py``.
"""

import math

from numba import boolean, cuda

from .._cuda import ELEMENT_THREADS, MAX_BLOCKS, KernelTable, blocks, launch

TPB = ELEMENT_THREADS
VERSIONS = {"v1": "grid-stride, one element per thread per step"}


def choose():
    """The one version (kept for the common table/switch shape)."""
    return "v1", "one version"


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


def build(T):
    """{name: (python function, signature)} for the Numba float type T."""
    A1 = T[::1]
    return {
        "sgd": (_sgd_kernel, (A1, A1, A1, T, T, T, boolean)),
        "adam": (_adam_kernel, (A1, A1, A1, A1) + (T,) * 8),
    }


kernels = KernelTable(build)
"""``kernels(dtype)[name]``: compiled on first use."""


def sgd_step(p, g, buf, lr, momentum, weight_decay, nesterov):
    """One SGD(-momentum) step in place on flat buffers p, g, buf (P,); buf unused when
    momentum == 0. One launch."""
    t = p.dtype.type
    launch(kernels(p.dtype)["sgd"], blocks(p.shape[0], TPB, MAX_BLOCKS), TPB,
           p, g, buf, t(lr), t(momentum), t(weight_decay), bool(nesterov))


def adam_step(p, g, m, v, step, lr, beta1, beta2, eps, weight_decay):
    """One Adam step in place on flat buffers p, m, v (P,); g read only; step >= 1.
    One launch."""
    t = p.dtype.type
    step_size = lr / (1.0 - beta1 ** step)
    inv_bc2_sqrt = 1.0 / math.sqrt(1.0 - beta2 ** step)
    launch(kernels(p.dtype)["adam"], blocks(p.shape[0], TPB, MAX_BLOCKS), TPB,
           p, g, m, v, t(beta1), t(1.0 - beta1), t(beta2), t(1.0 - beta2), t(step_size),
           t(inv_bc2_sqrt), t(eps), t(weight_decay))
