"""Autograd: ``Tensor``, the tape that records ops on Tensors, and the backward pass.

    >>> import nnkern
    >>> import nnkern.functional as F
    >>> x = nnkern.tensor([[-1.0, 2.0]], requires_grad=True)
    >>> F.relu(x).sum().backward()
    >>> x.grad
    array([[0., 1.]], dtype=float32)

* ``tensor.py``: the Tensor (a NumPy/CuPy array with ``requires_grad``, ``grad``,
  a version counter for in-place changes) and ``nnkern.tensor``;
* ``ops.py``: the glue arithmetic with its gradients (``+ - * / @ **``, ``exp``,
  ``log``, ``sum``, ``mean``, indexing, ``concatenate``, ``stack``, ...);
* ``rules.py``: one table from each ``nnkern.functional`` op to its
  ``<op>_backward``, and the wrapper that records F ops called on Tensors;
* ``engine.py``: the tape (nodes), ``no_grad``, and the iterative backward pass.
"""

from . import ops  # noqa: F401  (installs the Tensor operators)
from .engine import enable_grad, is_grad_enabled, no_grad, set_grad_enabled
from .ops import concatenate, stack
from .tensor import Parameter, Tensor, tensor

__all__ = ["Parameter", "Tensor", "concatenate", "enable_grad", "is_grad_enabled", "no_grad",
           "set_grad_enabled", "stack", "tensor"]
