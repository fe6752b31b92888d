"""Optimizer updates in NumPy: the oracle and the text to read first.

All arrays are 1-D views of flat buffers of one dtype; every update is in place.

SGD with momentum (torch.optim.SGD, dampening 0):

    d   = g + weight_decay * p
    buf = momentum * buf + d            (only when momentum > 0)
    d   = d + momentum * buf  if nesterov else  buf
    p   = p - lr * d

torch sets buf = d on the first step; a zero-initialised buf gives exactly
that (momentum * 0 + d == d), so callers start from zeros and no flag is needed.

Adam (torch.optim.Adam, amsgrad off, L2 weight decay), step t = 1, 2, ...:

    d = g + weight_decay * p
    m = beta1 * m + (1 - beta1) * d
    v = beta2 * v + (1 - beta2) * d * d
    p = p - (lr / (1 - beta1^t)) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
"""

import math

import numpy as np


def sgd_step(p, g, buf, lr, momentum, weight_decay, nesterov):
    """One SGD(-momentum) step: p (and buf when momentum > 0) updated in place.

    p, g, buf (P,). buf is neither read nor written when momentum == 0.
    """
    d = g + weight_decay * p if weight_decay != 0 else g.copy()
    if momentum != 0:
        buf *= momentum
        buf += d
        if nesterov:
            d += momentum * buf
        else:
            d = buf
    p -= lr * d


def adam_step(p, g, m, v, step, lr, beta1, beta2, eps, weight_decay):
    """One Adam step: p, m, v (P,) updated in place; g (P,) read only; step >= 1."""
    d = g + weight_decay * p if weight_decay != 0 else g
    m *= beta1
    m += (1 - beta1) * d
    v *= beta2
    v += (1 - beta2) * d * d
    step_size = lr / (1 - beta1 ** step)
    bias_correction2_sqrt = math.sqrt(1 - beta2 ** step)
    p -= step_size * m / (np.sqrt(v) / bias_correction2_sqrt + eps)
