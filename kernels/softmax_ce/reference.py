"""Losses, NumPy reference: the oracle for the cpu and cuda backends.

softmax cross-entropy (torch.nn.functional.cross_entropy with integer targets)
    logits x (N, C), labels y (N,), smoothing eps.
    Target distribution q_i = (1 - eps) * onehot(y_i) + eps / C.
    loss_i = -sum_j q_ij * log softmax(x_i)_j
           = lse_i - (1 - eps) * x_iy - (eps / C) * sum_j x_ij,
    lse_i = m_i + log sum_j exp(x_ij - m_i),   m_i = max_j x_ij   (stable for |x| ~ 1e4)
    dloss_i / dx_ij = p_ij - q_ij,   p_i = softmax(x_i).
binary cross-entropy with logits (stable form)
    loss = max(x, 0) - x * t + log(1 + exp(-|x|)),   dloss/dx = sigmoid(x) - t.
mean squared error
    loss = (x - t)^2,   dloss/dx = 2 (x - t).

Every kernel writes into the outputs it is given. Backward kernels multiply by
``scale * g`` where ``g`` has one entry per row/element, or a single entry that
is broadcast (see the family's ``__init__``).
"""

import numpy as np


def _shifted_logits(logits):
    # logits (N, C) -> z = x - max(x) (N, C), log-sum-exp of z (N,). A z that overflows to
    # -inf (float32 logits of -3e38 against +3e38) has exp(z) = 0, the right answer.
    with np.errstate(over="ignore"):
        z = logits - logits.max(axis=1, keepdims=True)
    log_sum = np.log(np.exp(z).sum(axis=1))
    return z, log_sum


def _row_losses(z, log_sum, labels, label_smoothing):
    # loss_i = log_sum_i - (1 - eps) * z_iy - (eps / C) * sum_j z_ij (the max cancels)
    N, C = z.shape
    z_label = z[np.arange(N), labels]
    loss = log_sum - (1.0 - label_smoothing) * z_label
    if label_smoothing:
        loss = loss - (label_smoothing / C) * z.sum(axis=1)
    return loss


def softmax_ce_forward(logits, labels, losses, label_smoothing):
    """Per-row softmax cross-entropy: logits (N, C), labels (N,) -> losses (N,)."""
    z, log_sum = _shifted_logits(logits)
    losses[...] = _row_losses(z, log_sum, labels, label_smoothing)


def softmax_ce_forward_backward(logits, labels, g, scale, label_smoothing, losses, dlogits):
    """Fused forward and backward: losses (N,) as in the forward, and
    dlogits (N, C) = scale * g_i * (softmax(logits_i) - q_i), g (N,) or (1,)."""
    _N, C = logits.shape
    z, log_sum = _shifted_logits(logits)
    losses[...] = _row_losses(z, log_sum, labels, label_smoothing)
    p = np.exp(z - log_sum[:, None])                     # (N, C) softmax
    q_off = label_smoothing / C                          # target off and on the label
    q_on = 1.0 - label_smoothing + q_off
    is_label = np.arange(C)[None, :] == labels[:, None]  # (N, C) one-hot mask
    q = np.where(is_label, logits.dtype.type(q_on), logits.dtype.type(q_off))
    dlogits[...] = (scale * g.reshape(-1, 1)) * (p - q)


def bce_with_logits_forward(x, t, losses):
    """Element-wise max(x, 0) - x t + log1p(exp(-|x|)); x, t, losses flat (n,)."""
    losses[...] = np.maximum(x, 0) - x * t + np.log1p(np.exp(-np.abs(x)))


def bce_with_logits_backward(g, scale, x, t, dx):
    """dx (n,) = scale * g * (sigmoid(x) - t), g (n,) or (1,)."""
    e = np.exp(-np.abs(x))
    sig = np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
    dx[...] = (scale * g) * (sig - t)


def mse_forward(x, t, losses):
    """Element-wise (x - t)^2; x, t, losses flat (n,)."""
    d = x - t
    losses[...] = d * d


def mse_backward(g, scale, x, t, dx):
    """dx (n,) = scale * g * 2 (x - t), g (n,) or (1,)."""
    dx[...] = (2.0 * scale * g) * (x - t)
