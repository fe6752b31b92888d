"""Kernel family 'softmax_ce': the losses. KERNELS names the functions every backend module defines.

Shapes: logits (N, C), labels (N,) integer, per-row losses (N,). The elementwise
losses (binary cross-entropy with logits, mean squared error) work on flat
arrays of n elements; the reduction over rows/elements is done by the op
surface. Backward kernels take the upstream gradient ``g`` as a 1-D array of
length N (or n) for ``reduction="none"``, or of length 1 (broadcast) for
"mean"/"sum", and a Python float ``scale`` (1/N for "mean", else 1) that
multiplies it, so no host/device synchronisation is needed to read ``g``.
"""

KERNELS = (
    "softmax_ce_forward",
    "softmax_ce_forward_backward",
    "bce_with_logits_forward",
    "bce_with_logits_backward",
    "mse_forward",
    "mse_backward",
)
