"""GEMM and the dense layer in NumPy: the oracle the CPU and CUDA kernels are checked against.

Shapes (the names this family uses everywhere):

    op(a) is (M, K), op(b) is (K, N), c is (M, N),  op(x) = x.T when trans_x else x

so ``a`` is stored (M, K) or, transposed, (K, M); ``b`` is stored (K, N) or (N, K).
The dense layer is a GEMM with the weight transposed, w is (OUT, IN):

    y[N, OUT] = x[N, IN] @ w.T + bias          (then relu when asked)

A GEMM does 2*M*N*K floating-point operations; that count turns a time into
GFLOP/s in the benchmarks.
"""

import numpy as np


def gemm(a, b, c, trans_a, trans_b, accumulate):
    """c = op(a) @ op(b), or c += op(a) @ op(b) when ``accumulate``.

    a is (M, K) or (K, M) when trans_a; b is (K, N) or (N, K) when trans_b; c is (M, N).
    """
    A = a.T if trans_a else a  # (M, K)
    B = b.T if trans_b else b  # (K, N)
    if accumulate:
        c += A @ B
    else:
        np.matmul(A, B, out=c)


def linear(x, w, bias, y, relu):
    """y = x @ w.T (+ bias) (then max(y, 0) when ``relu``).

    x is (N, IN), w is (OUT, IN), bias is (OUT,) or None, y is (N, OUT).
    """
    np.matmul(x, w.T, out=y)
    if bias is not None:
        y += bias  # broadcast over the N rows
    if relu:
        np.maximum(y, 0, out=y)


def linear_grad_out(g, y, dy, db, relu):
    """Gradient through the fused epilogue: dy = 0 where y <= 0, else g (or g), db = dy
    summed over rows.

    g, y, dy are (N, OUT), db is (OUT,). ``y`` is the forward output (after relu), so
    ``y <= 0`` is exactly where the relu blocked its input (torch's convention at 0). A
    select, not ``g * (y > 0)``: a NaN in g where y <= 0 gives 0, and a NaN y passes g,
    as torch's relu backward does.
    """
    if relu:
        dy[...] = np.where(y <= 0, 0, g)
    else:
        dy[...] = g
    np.sum(dy, axis=0, out=db)
