"""Kernel family 'lrn': local response normalisation across channels, forward and backward.

Every backend module (reference.py, cpu.py, cuda.py) defines the functions in
``KERNELS`` with one signature. x is seen as (N, C, L): N samples, C channels,
L positions per channel (H*W for images; the channel axis is the one that is
normalised). The window of channel c is the ``size`` channels
``c - size // 2 .. c + (size - 1) // 2``, zero outside 0..C-1 (PyTorch's
``local_response_norm``):

    lrn_forward(x, y, size, alpha, beta, k)
        writes y (N, C, L) = x / (k + alpha / size * sum of x^2 over the window)^beta
    lrn_backward(g, x, dx, size, alpha, beta, k)
        writes dx (N, C, L), the gradient of sum(g * y) with respect to x,
        recomputing the window sums from x

size is an int >= 1; alpha, beta, k are Python floats.
"""

KERNELS = ("lrn_forward", "lrn_backward")
