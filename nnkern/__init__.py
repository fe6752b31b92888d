"""nnkern: a deep-learning engine whose hot loops are hand-written Numba kernels.

    >>> import nnkern
    >>> import nnkern.functional as F
    >>> nnkern.set_device("numpy")
    'numpy'
"""

__version__ = "0.1.0"

from .device import (  # noqa: F401
    device,
    get_device,
    set_device,
    to_device,
    to_numpy,
)
from . import functional  # noqa: F401
