"""Kernel family 'gemm': general matrix multiply and the dense (linear) layer.

Every backend module (reference.py, cpu.py, cuda.py) defines the names in
``KERNELS`` with the same signatures:

    gemm(a, b, c, trans_a, trans_b, accumulate)
        c[M, N] = op(a) @ op(b)  (or += when accumulate), op(x) = x.T when trans_x
    linear(x, w, bias, y, relu)
        y[N, OUT] = x[N, IN] @ w[OUT, IN].T (+ bias[OUT]) (then max(., 0) when relu);
        bias may be None
    linear_grad_out(g, y, dy, db, relu)
        dy = g * (y > 0) when relu else g;  db[OUT] = sum over rows of dy

All arrays are 2-D (bias/db 1-D), C-contiguous, of one float dtype.
"""

KERNELS = ("gemm", "linear", "linear_grad_out")
