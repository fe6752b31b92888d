"""The index rules of 2-D convolution, written once in plain Python.

``nnkern.functional`` (output sizes), the NumPy reference and the CPU backend's
Python side (padded extents) call them as they are, so every backend computes
sizes by the same lines. Integers only, no NumPy, no keyword arguments, so that
a kernel could compile them with ``numba.njit`` or ``numba.cuda.jit(device=True)``.

Along one axis (rows: H, R, OH; columns: W, S, OW), with stride ``st``, top
(left) padding ``pad``, dilation ``dil``:

    >>> output_size(28, 5, 1, 2, 2, 1)       # LeNet conv1: 28 + 2 + 2 - 4
    28
    >>> padded_extent(28, 2, 28, 5, 1, 1)    # rows of padded input the output reads
    32
"""


def output_size(H, R, st, pad, pad_end, dil):
    """Output length for input length H, kernel length R, padding ``pad`` before and
    ``pad_end`` after (PyTorch's rule: the last window must fit)."""
    return (H + pad + pad_end - dil * (R - 1) - 1) // st + 1


def padded_extent(H, pad, OH, R, st, dil):
    """Length of the zero-padded input an output of length OH reads: the image after
    ``pad`` zeros, extended by as many zeros after it as the last window needs (never
    cut short of the image)."""
    return max(H + pad, (OH - 1) * st + (R - 1) * dil + 1)

