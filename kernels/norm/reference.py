"""Batch normalisation in NumPy: the oracle and the text to read first.

x is (N, C, L): N samples, C channels, L = H*W positions per channel (L = 1
for the (N, C) input of a dense layer). Each channel c is normalised over its
M = N*L values:

    training:  mean_c = mean(x[:, c, :]),  var_c = mean((x[:, c, :] - mean_c)^2)  (biased)
    eval:      mean_c = running_mean[c],   var_c = running_var[c]
    xhat = (x - mean_c) / sqrt(var_c + eps)
    y    = gamma_c * xhat + beta_c

In training the running statistics move towards the batch statistics, with
the UNBIASED variance (torch semantics):

    running_mean = (1 - momentum) * running_mean + momentum * mean
    running_var  = (1 - momentum) * running_var  + momentum * var * M / (M - 1)

Backward, with g = dL/dy (training: mean and var depend on x):

    dbeta_c  = sum(g)
    dgamma_c = sum(g * xhat)
    dx = gamma_c * invstd_c * (g - dbeta_c / M - xhat * dgamma_c / M)      (training)
    dx = gamma_c * invstd_c * g                                             (eval)

Statistics are computed in float64 whatever the input dtype; outputs are
written in the dtype of the given output arrays.
"""

import numpy as np


def _stats(x, running_mean, running_var, training, eps):
    """Per-channel (mean, invstd) as (1, C, 1) float64 arrays, and the biased variance."""
    # x is (N, C, L)
    if training:
        x64 = x.astype(np.float64)
        mean = x64.mean(axis=(0, 2))                             # (C,)
        var = ((x64 - mean[None, :, None]) ** 2).mean(axis=(0, 2))  # (C,) biased
    else:
        mean = running_mean.astype(np.float64)
        var = running_var.astype(np.float64)
    invstd = 1.0 / np.sqrt(var + eps)
    return mean[None, :, None], invstd[None, :, None], var


def batch_norm_forward(x, gamma, beta, running_mean, running_var, y, training, momentum, eps):
    """y = gamma * (x - mean) / sqrt(var + eps) + beta per channel; updates running stats
    in place when training.

    x, y (N, C, L); gamma, beta, running_mean, running_var (C,).
    """
    mean, invstd, var = _stats(x, running_mean, running_var, training, eps)
    xhat = (x - mean) * invstd                                   # (N, C, L) float64
    y[...] = gamma[None, :, None] * xhat + beta[None, :, None]
    if training:
        M = x.shape[0] * x.shape[2]
        unbiased = var * (M / (M - 1))
        running_mean[...] = (1 - momentum) * running_mean + momentum * mean[0, :, 0]
        running_var[...] = (1 - momentum) * running_var + momentum * unbiased


def batch_norm_backward(g, x, gamma, running_mean, running_var, dx, dgamma, dbeta, training,
                        eps):
    """Gradients of batch_norm_forward: dx (N, C, L), dgamma (C,), dbeta (C,).

    g, x (N, C, L); gamma, running_mean, running_var (C,). Running stats are read
    (eval) but never written.
    """
    mean, invstd, _ = _stats(x, running_mean, running_var, training, eps)
    g64 = g.astype(np.float64)
    xhat = (x - mean) * invstd                                   # (N, C, L)
    sum_g = g64.sum(axis=(0, 2))                                 # (C,)
    sum_gx = (g64 * xhat).sum(axis=(0, 2))                       # (C,)
    scale = gamma[None, :, None] * invstd                        # (1, C, 1)
    if training:
        M = x.shape[0] * x.shape[2]
        dx[...] = scale * (g64 - sum_g[None, :, None] / M - xhat * sum_gx[None, :, None] / M)
    else:
        dx[...] = scale * g64
    dgamma[...] = sum_gx
    dbeta[...] = sum_g
