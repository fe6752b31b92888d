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

Every op also accepts ``nnkern.Tensor`` inputs and then returns Tensors,
recording itself for ``backward()`` when an input requires grad (see
``nnkern.autograd``).

The ops live in one module per kernel family (``nnkern/functional/<family>.py``)
and are all re-exported here.
"""

from . import conv, elementwise, gemm, lrn, norm, optim, pool, softmax_ce
from ._checks import DeviceMismatchError  # noqa: F401
from .conv import *
from .elementwise import *
from .gemm import *
from .lrn import *
from .norm import *
from .optim import *
from .pool import *
from .softmax_ce import *

# Every op also takes nnkern.Tensors: with a Tensor input it returns a Tensor and, when
# an input requires grad, records itself on the tape with its <op>_backward as the
# gradient (one table: nnkern/autograd/rules.py). Plain arrays pay one type check.
_FAMILY_MODULES = (conv, elementwise, gemm, lrn, norm, optim, pool, softmax_ce)
__all__ = sorted({name for module in _FAMILY_MODULES for name in module.__all__})  # noqa: PLE0605


def _install_tensor_rules():
    from ..autograd.rules import wrap

    return wrap(globals(), __all__)


RULES = _install_tensor_rules()
