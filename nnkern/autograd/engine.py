"""The tape: nodes that remember how an output was made, and the backward pass over them.

Every differentiable operation on Tensors calls ``record``. It returns the
output Tensor with a ``Node`` attached: the input Tensors, a function from the
output gradient to the input gradients, and the version of every saved Tensor
at the time of the forward pass. Nothing is recorded when grad mode is off
(``no_grad``) or when no input requires a gradient, so plain inference pays
for the wrapping only.

``backward`` walks the graph in reverse topological order, computed with an
explicit stack (no recursion limit for chains of 10,000 ops), sums the
gradients of a Tensor used several times, accumulates into ``.grad`` of the
leaves, and frees the graph unless ``retain_graph=True``.
"""

import contextlib
import threading

_state = threading.local()


def is_grad_enabled():
    """True unless inside ``no_grad()`` (per thread, like PyTorch's grad mode)."""
    return getattr(_state, "enabled", True)


def set_grad_enabled(mode):
    """Turn recording on or off for this thread; returns the previous mode."""
    previous = is_grad_enabled()
    _state.enabled = bool(mode)
    return previous


@contextlib.contextmanager
def no_grad():
    """Run a block without recording: results do not require grad, nothing is saved.

    >>> import nnkern
    >>> w = nnkern.tensor([2.0], requires_grad=True)
    >>> with nnkern.no_grad():
    ...     y = w * 3
    >>> y.requires_grad
    False
    """
    previous = set_grad_enabled(False)
    try:
        yield
    finally:
        set_grad_enabled(previous)


@contextlib.contextmanager
def enable_grad():
    """Record again inside a ``no_grad`` block."""
    previous = set_grad_enabled(True)
    try:
        yield
    finally:
        set_grad_enabled(previous)


class Version:
    """An in-place modification counter, shared by a Tensor and its views."""

    __slots__ = ("count",)

    def __init__(self):
        self.count = 0


class Node:
    """How one Tensor was computed: ``backward(g)`` returns one gradient (or None) per input.

    ``saved`` holds, for each Tensor whose value the backward needs, its version
    counter, the count when the forward ran and its shape, so an in-place change in
    between is caught.
    """

    __slots__ = ("backward", "inputs", "name", "saved")

    def __init__(self, name, inputs, backward, saved):
        self.name = name
        self.inputs = inputs
        self.backward = backward
        self.saved = saved

    def __repr__(self):
        return f"<Node {self.name}>"


def needs_grad(tensors):
    """True when grad mode is on and one of ``tensors`` requires a gradient."""
    if not is_grad_enabled():
        return False
    for t in tensors:
        if t.requires_grad:
            return True
    return False


def record(out, name, inputs, backward, saved=()):
    """Attach a Node to the fresh Tensor ``out`` made by op ``name`` from ``inputs``.

    ``backward(g)`` returns a sequence aligned with ``inputs``; ``saved`` lists the
    input Tensors whose values the backward reads (their versions are checked).
    Returns ``out``.
    """
    out.requires_grad = True
    # the counters, not the Tensors: saving the output itself would make a reference cycle
    out._node = Node(name, inputs, backward,
                     [(t._version, t._version.count, t.data.shape) for t in saved])
    return out


def _topological(root):
    """Nodes reachable from ``root``'s node, each after every node that consumes it."""
    order, visited = [], set()
    stack = [(root._node, False)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
            continue
        if id(node) in visited:
            continue
        visited.add(id(node))
        stack.append((node, True))
        for t in node.inputs:
            child = t._node
            if child is not None and id(child) not in visited:
                stack.append((child, False))
    order.reverse()  # post-order reversed: every node before the nodes it was made from
    return order


def _check_saved(node):
    for counter, version, shape in node.saved:
        if counter.count != version:
            raise RuntimeError(
                f"a tensor of shape {shape} needed to compute the gradient of {node.name} was "
                f"modified in place after {node.name} used it (its version is now "
                f"{counter.count}, {node.name} saved version {version}); run the backward pass "
                f"before changing it, or change a copy (detach() shares memory)"
            )


def _accumulate_leaf(tensor, g):
    if tuple(g.shape) != tuple(tensor.shape):
        raise RuntimeError(
            f"internal error: gradient of shape {tuple(g.shape)} for a leaf of shape "
            f"{tuple(tensor.shape)}"
        )
    if tensor.grad is None:
        tensor.grad = g.astype(tensor.dtype, copy=True)
    else:
        tensor.grad += g


def run_backward(root, grad, retain_graph=False):
    """Back-propagate ``grad`` (d something / d root) through the graph that made ``root``."""
    if root._node is None:
        if root.requires_grad:  # a leaf: its gradient is the seed itself
            _accumulate_leaf(root, grad)
        return
    if root._node.backward is None:
        raise RuntimeError(
            "backward through a graph that was already freed: the first backward() freed it; "
            "pass retain_graph=True to the first call to go through it twice"
        )
    order = _topological(root)
    pending = {id(root._node): grad}
    for node in order:
        g = pending.pop(id(node), None)
        if g is None:
            continue
        if node.backward is None:
            raise RuntimeError(
                f"backward through {node.name}, part of a graph that an earlier backward() "
                f"freed; pass retain_graph=True to the earlier call"
            )
        _check_saved(node)
        grads = node.backward(g)
        for t, gi in zip(node.inputs, grads):
            if gi is None or not t.requires_grad:
                continue
            child = t._node
            if child is None:
                _accumulate_leaf(t, gi)
            else:
                key = id(child)
                previous = pending.get(key)
                # out of place: a backward may hand the same array to several inputs
                pending[key] = gi if previous is None else previous + gi
    if not retain_graph:
        for node in order:  # drop the saved arrays and the links that keep them alive
            node.backward = None
            node.saved = ()
            node.inputs = ()
