"""Op surface of the 'norm' kernel family: batch normalisation (validation and dispatch).

    >>> import numpy as np, nnkern
    >>> import nnkern.functional as F
    >>> x = np.arange(12, dtype=np.float32).reshape(4, 3)
    >>> rm, rv = np.zeros(3, np.float32), np.ones(3, np.float32)
    >>> with nnkern.device("numpy"):
    ...     y = F.batch_norm(x, np.ones(3, np.float32), np.zeros(3, np.float32), rm, rv)
    >>> y.shape, rm
    ((4, 3), array([0.45, 0.55, 0.65], dtype=float32))
"""

from ..device import array_module
from ._checks import (
    backend_kernels,
    empty,
    flag,
    float_array,
    real_number,
    same_dtype,
    shape_is,
    writable,
)

__all__ = ["batch_norm", "batch_norm_backward"]


def _check(x, gamma, beta, running_mean, running_var, training, momentum, eps, updates):
    """Validate the batch-norm arguments; return (kernels, x as (N, C, L), the (C,) vectors
    with None replaced, training, momentum, eps). ``updates``: the call writes the running
    statistics when training (the forward; the backward only reads)."""
    float_array(x, "x")
    if x.ndim not in (2, 4):
        raise ValueError(
            f"x must have 2 dimensions (N, C) or 4 dimensions (N, C, H, W), "
            f"got shape {tuple(x.shape)}"
        )
    training = flag(training, "training")
    momentum = real_number(momentum, "momentum", 0, 1)
    eps = real_number(eps, "eps", 0, lo_open=True, expected="be a number > 0")
    N, C = x.shape[0], x.shape[1]
    L = 1 if x.ndim == 2 else x.shape[2] * x.shape[3]
    named = [("gamma", gamma), ("beta", beta),
             ("running_mean", running_mean), ("running_var", running_var)]
    for name, v in named:
        if v is not None:
            float_array(v, name, ndim=1)
            shape_is(v, name, (C,))
            if updates and training and name.startswith("running"):
                writable(v, name, "training updates it in place; eval only reads it")
    same_dtype(("x", x), *named)
    if not training and (running_mean is None or running_var is None):
        raise ValueError(
            "running_mean and running_var must be arrays of shape "
            f"({C},) in eval mode (training=False), got "
            f"{'None' if running_mean is None else 'an array'} and "
            f"{'None' if running_var is None else 'an array'}"
        )
    if training and N * L <= 1:
        raise ValueError(
            "Expected more than 1 value per channel when training, "
            f"got input shape {tuple(x.shape)}"
        )
    K = backend_kernels("norm", ("x", x), *named)
    xp = array_module()
    vectors = [
        xp.ascontiguousarray(v) if v is not None else
        (xp.ones(C, x.dtype) if name in ("gamma", "running_var") else xp.zeros(C, x.dtype))
        for name, v in named
    ]
    x3 = xp.ascontiguousarray(x).reshape(N, C, L)
    return K, x3, vectors, training, momentum, eps


def batch_norm(x, gamma, beta, running_mean, running_var, training=True, momentum=0.1,
               eps=1e-5):
    """Batch normalisation over the channel axis 1 of x (N, C) or (N, C, H, W).

    ``y = gamma * (x - mean) / sqrt(var + eps) + beta`` per channel. In training
    the mean and (biased) variance come from the batch, and ``running_mean`` /
    ``running_var`` are updated IN PLACE with ``momentum`` and the unbiased
    variance (torch.nn.functional.batch_norm semantics); in eval
    (``training=False``) the running statistics are used. ``gamma``/``beta``
    (C,) may be None (scale 1, shift 0); the running statistics may be None in
    training only (then nothing is tracked).
    """
    K, x3, (g_, b_, rm, rv), training, momentum, eps = _check(
        x, gamma, beta, running_mean, running_var, training, momentum, eps, updates=True)
    y = empty(x3.shape, x.dtype)
    K.batch_norm_forward(x3, g_, b_, rm, rv, y, training, momentum, eps)
    for given, used in ((running_mean, rm), (running_var, rv)):
        if given is not None and used is not given:
            given[...] = used  # a non-contiguous running statistic was updated on a copy
    return y.reshape(x.shape)


def batch_norm_backward(grad_out, x, gamma, beta, running_mean, running_var, training=True,
                        momentum=0.1, eps=1e-5):
    """Gradients of :func:`batch_norm`: ``(dx, dgamma, dbeta)`` for upstream ``grad_out``.

    Same arguments as the forward. In training the batch statistics are
    recomputed from x (the running statistics are neither read nor written);
    in eval the running statistics are used. ``dgamma``/``dbeta`` are None when
    ``gamma``/``beta`` are None.
    """
    K, x3, (g_, _, rm, rv), training, _, eps = _check(
        x, gamma, beta, running_mean, running_var, training, momentum, eps, updates=False)
    float_array(grad_out, "grad_out")
    shape_is(grad_out, "grad_out", x.shape)
    same_dtype(("x", x), ("grad_out", grad_out))
    backend_kernels("norm", ("x", x), ("grad_out", grad_out))
    g3 = array_module().ascontiguousarray(grad_out).reshape(x3.shape)
    dx = empty(x3.shape, x.dtype)
    C = x3.shape[1]
    dgamma = empty((C,), x.dtype)
    dbeta = empty((C,), x.dtype)
    K.batch_norm_backward(g3, x3, g_, rm, rv, dx, dgamma, dbeta, training, eps)
    return (dx.reshape(x.shape),
            dgamma if gamma is not None else None,
            dbeta if beta is not None else None)
