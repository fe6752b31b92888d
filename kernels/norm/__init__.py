"""Kernel family 'norm': batch normalisation, forward and backward.

Every backend module (reference.py, cpu.py, cuda.py) defines the functions in
``KERNELS`` with one signature. x is seen as (N, C, L) with L = H*W (L = 1 for a
2-D input); gamma, beta and the running statistics are (C,) vectors:

    batch_norm_forward(x, gamma, beta, running_mean, running_var, y,
                       training, momentum, eps)
        writes y (N, C, L); in training also updates running_mean/running_var
        in place (momentum, unbiased variance), as torch does.
    batch_norm_backward(g, x, gamma, running_mean, running_var,
                        dx, dgamma, dbeta, training, eps)
        writes dx (N, C, L), dgamma (C,), dbeta (C,); in training it
        recomputes the batch statistics from x and never touches the running
        statistics; in eval it uses them.
"""

KERNELS = ("batch_norm_forward", "batch_norm_backward")
