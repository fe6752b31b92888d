"""Op surface of the 'lrn' kernel family: local response normalisation across channels.

PyTorch's ``torch.nn.functional.local_response_norm``, with its argument names:

    >>> import numpy as np, nnkern
    >>> import nnkern.functional as F
    >>> x = np.ones((1, 3, 1, 1))
    >>> with nnkern.device("numpy"):
    ...     y = F.local_response_norm(x, size=3, alpha=3.0, beta=1.0, k=1.0)
    >>> y[0, :, 0, 0]                  # 1 / (1 + 3/3 * number of ones in the window)
    array([0.33333333, 0.25      , 0.33333333])
"""

import math

from ._checks import (
    backend_kernels,
    contiguous,
    empty,
    float_array,
    int_value,
    real_number,
    same_dtype,
    shape_is,
)

__all__ = ["local_response_norm", "local_response_norm_backward"]


def lrn_params(size, alpha, beta, k):
    """Check the window size and the three coefficients; return them as (int, float, float,
    float). The ``LocalResponseNorm`` layer checks its arguments with it too.

    alpha, beta and k must be >= 0: PyTorch takes any number, but a negative one turns the
    inhibition into amplification or makes the denominator negative (NaN for a
    fractional beta)."""
    return (int_value(size, "size", 1),
            real_number(alpha, "alpha", 0), real_number(beta, "beta", 0),
            real_number(k, "k", 0))


def _check(x, size, alpha, beta, k):
    """Validate the arguments; return (kernels, x as a contiguous (N, C, L) array, size and
    the three floats)."""
    float_array(x, "x")
    if x.ndim < 3:
        raise ValueError(
            f"x must have 3 or more dimensions (N, C, ...), the channels on axis 1, "
            f"got shape {tuple(x.shape)}"
        )
    params = lrn_params(size, alpha, beta, k)
    K = backend_kernels("lrn", ("x", x))
    N, C = x.shape[0], x.shape[1]
    L = math.prod(x.shape[2:])
    return K, contiguous(x).reshape(N, C, L), *params


def local_response_norm(x, size, alpha=1e-4, beta=0.75, k=1.0):
    """Local response normalisation across the channels (axis 1) of x (N, C, ...).

    ``y_c = x_c / (k + alpha / size * sum of x_j^2)^beta``, the sum over the ``size``
    channels ``c - size // 2 .. c + (size - 1) // 2`` (zeros beyond the ends), as
    ``torch.nn.functional.local_response_norm``; ``alpha``, ``beta``, ``k`` >= 0 (see
    ``lrn_params``). AlexNet used ``size=5, alpha=5e-4``
    in this convention (its paper's alpha 1e-4 is per channel, not divided by size),
    ``beta=0.75, k=2``.

        >>> import numpy as np, nnkern.functional as F
        >>> F.local_response_norm(np.ones((2, 8, 4, 4), np.float32), 5).shape
        (2, 8, 4, 4)
    """
    K, x3, size, alpha, beta, k = _check(x, size, alpha, beta, k)
    y = empty(x3.shape, x.dtype)
    if x3.size:
        K.lrn_forward(x3, y, size, alpha, beta, k)
    return y.reshape(x.shape)


def local_response_norm_backward(grad_out, x, size, alpha=1e-4, beta=0.75, k=1.0):
    """Gradient of :func:`local_response_norm` with respect to x, for upstream ``grad_out``.

    Same arguments as the forward; the window sums are recomputed from x.

        >>> import numpy as np, nnkern.functional as F
        >>> x = np.ones((1, 4, 2, 2))
        >>> F.local_response_norm_backward(np.ones_like(x), x, 3).shape
        (1, 4, 2, 2)
    """
    K, x3, size, alpha, beta, k = _check(x, size, alpha, beta, k)
    float_array(grad_out, "grad_out")
    shape_is(grad_out, "grad_out", x.shape)
    same_dtype(("x", x), ("grad_out", grad_out))
    backend_kernels("lrn", ("x", x), ("grad_out", grad_out))
    g3 = contiguous(grad_out).reshape(x3.shape)
    dx = empty(x3.shape, x.dtype)
    if x3.size:
        K.lrn_backward(g3, x3, dx, size, alpha, beta, k)
    return dx.reshape(x.shape)
