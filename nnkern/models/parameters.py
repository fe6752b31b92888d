"""The trainable parameters of a model: one flat buffer per dtype, the weights as views.

All trainable weights of one dtype live in ONE contiguous buffer (their gradients
in a second one), and each layer's ``Parameter`` has ``data`` and ``grad`` as
reshaped views into them. So an optimizer step is one kernel call per dtype,
zeroing the gradients is one fill, and a data-parallel step is one allreduce per
dtype, whatever the number of layers.
"""

import numpy as np

from ..device import to_device


class Parameters:
    """The flat buffers of a model's trainable weights and gradients.

    Iterating yields the weight arrays in layer order; ``arrays()`` /
    ``grad_arrays()`` give the flat buffers the optimizer updates in one call;
    ``names()`` the ``layer/weight`` names. ``version`` grows at every re-pack, so
    an optimizer knows when its state no longer fits.
    """

    def __init__(self):
        self.version = 0
        self._flat, self._grad_flat, self._entries, self._views = [], [], [], []

    def pack(self, layers, backend):
        """(Re)build the buffers from the current weights of ``layers`` on ``backend``;
        frozen layers keep their own (unpacked) arrays and get no gradient buffer."""
        groups = {}
        for layer in layers:
            if not layer.trainable:
                for p in layer.variables.values():
                    p.data = to_device(p.data, backend).copy()
                    p.grad = None
                continue
            for name, p in layer.variables.items():
                groups.setdefault(np.dtype(p.dtype), []).append((layer, name, p))
        self._flat, self._grad_flat, self._entries = [], [], []
        for gi, (dtype, items) in enumerate(groups.items()):
            total = sum(int(np.prod(p.shape)) for _, _, p in items)
            flat = to_device(np.empty(total, dtype), backend)
            grad_flat = to_device(np.zeros(total, dtype), backend)
            offset = 0
            for layer, name, p in items:
                size = int(np.prod(p.shape))
                self._entries.append((layer, name, p, gi, offset, size, tuple(p.shape)))
                flat[offset:offset + size] = to_device(p.data, backend).reshape(-1)
                offset += size
            self._flat.append(flat)
            self._grad_flat.append(grad_flat)
        self._bind_views()
        self.version += 1

    def _bind_views(self):
        self._views = []
        for _layer, _name, p, gi, offset, size, shape in self._entries:
            p.data = self._flat[gi][offset:offset + size].reshape(shape)
            p.grad = self._grad_flat[gi][offset:offset + size].reshape(shape)
            self._views.append(p.data)

    def bound(self, layers):
        """True when these buffers still back exactly the trainable weights of ``layers``
        (another model that shares a layer may have re-packed it into its own)."""
        expected = [p for layer in layers if layer.trainable for p in layer.variables.values()]
        if len(expected) != len(self._entries):
            return False
        return all(p is entry[2] and p.data is view
                   for p, entry, view in zip(expected, self._entries, self._views))

    def to(self, backend):
        """Move the buffers to ``backend``'s memory, keeping the layout."""
        self._write_pending_zeros()
        self._flat = [to_device(f, backend) for f in self._flat]
        self._grad_flat = [to_device(g, backend) for g in self._grad_flat]
        self._bind_views()

    def arrays(self):
        return self._flat

    def grad_arrays(self):
        """The flat gradient buffers, every gradient marked zero written as zeros first."""
        self._write_pending_zeros()
        return self._grad_flat

    def zero_grad(self):
        """Mark every gradient as zero (``Parameter._defer_zero``): nothing is written until
        a reader or a backward needs it, so a training step's backward writes its gradients
        instead of adding them to a buffer zeroed beforehand."""
        for entry in self._entries:
            entry[2]._defer_zero()

    def _write_pending_zeros(self):
        for entry in self._entries:
            p = entry[2]
            if p._zero_pending:
                p._fresh_grad()[0].fill(0)

    def mark_updated(self):
        """Count an in-place update of every weight (an optimizer step), so a backward
        through a graph recorded before the step is refused instead of being wrong."""
        for entry in self._entries:
            entry[2]._version.count += 1

    def variables(self):
        """The ``Parameter`` Tensors, in order."""
        return [entry[2] for entry in self._entries]

    def __iter__(self):
        return (entry[2].data for entry in self._entries)

    def __len__(self):
        return len(self._entries)

    def names(self):
        """``layer/weight`` names in iteration order."""
        return [f"{layer.name}/{name}" for layer, name, *_ in self._entries]

    def gradients(self):
        return [entry[2].grad for entry in self._entries]
