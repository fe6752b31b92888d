"""nnkern: a deep-learning engine whose hot loops are hand-written Numba kernels.

    >>> import nnkern
    >>> import nnkern.functional as F
    >>> nnkern.set_device("numpy")
    'numpy'
"""

__version__ = "0.1.0"

from . import _blas

_blas.at_import()  # before NumPy loads when it can: OpenBLAS's idle threads spin less

from . import functional  # noqa: F401
from .autograd import (  # noqa: F401
    Parameter,
    Tensor,
    concatenate,
    enable_grad,
    is_grad_enabled,
    no_grad,
    stack,
    tensor,
)
from .device import (  # noqa: F401
    device,
    get_device,
    set_device,
    to_device,
    to_numpy,
)
from .interop import from_dlpack  # noqa: F401

_LAZY = {"Sequential": "models", "Model": "models"}
_SUBMODULES = ("layers", "losses", "optimizers", "metrics", "callbacks", "models", "data",
               "testing")


def __getattr__(name):
    """Import the model API on first use, so ``import nnkern`` stays light."""
    import importlib

    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'nnkern' has no attribute {name!r}")
