"""THE op surface of nnkern, imported as ``F``.

Every op validates its inputs (ndim, shapes, dtypes, devices, label ranges,
argument values), allocates its outputs on the current device and calls the
kernel of the current backend. ``<op>_backward(grad_out, *inputs, **kwargs)``
takes the upstream gradient followed by the forward op's own arguments and
returns the gradients of the differentiable inputs, in order.

    >>> import numpy as np, nnkern
    >>> import nnkern.functional as F
    >>> with nnkern.device("numpy"):
    ...     y = F.relu(np.array([-1.0, 2.0]))
    >>> y
    array([0., 2.])

The ops live in one module per kernel family (``nnkern/functional/<family>.py``)
and are all re-exported here.
"""

from ._checks import DeviceMismatchError  # noqa: F401
from .conv import *
from .elementwise import *
from .gemm import *
from .norm import *
from .optim import *
from .pool import *
from .softmax_ce import *
