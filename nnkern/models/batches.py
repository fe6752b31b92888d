"""Where ``fit`` / ``evaluate`` / ``predict`` take their batches from: arrays, or a
``DataLoader`` (any iterable of ``(x, y)`` batches).

Both sources give, per epoch, host batches ``(xb, yb, size of the global batch)`` already
checked against the model (dtype, per-sample shape, finite values, target format), so the
training loop is the same for both:

    >>> import numpy as np
    >>> from nnkern.data import DataLoader
    >>> loader = DataLoader(np.zeros((10, 4)), np.zeros(10, int), batch_size=4)
    >>> is_batch_iterable(loader), is_batch_iterable(np.zeros((10, 4)))
    (True, False)
"""

import numpy as np

from ..interop import type_name


def is_batch_iterable(x):
    """True for a source of batches (a DataLoader, a generator, a list of ``(x, y)``
    tuples), False for data (an array of any library, or a list of arrays: one per input
    of a model with several)."""
    if x is None or isinstance(x, (np.ndarray, tuple, str, dict)):
        return False
    if hasattr(x, "shape") or hasattr(x, "__dlpack__") or hasattr(x, "__cuda_array_interface__"):
        return False
    if isinstance(x, list):
        return bool(x) and all(isinstance(b, tuple) for b in x)
    return hasattr(x, "__iter__")


class ArrayBatches:
    """Batches of checked arrays for training: the shuffle order of epoch ``e`` is a function
    of ``(seed, e)`` (a resumed run sees the batches of an uninterrupted one); the strategy
    (``nnkern.distributed``) sets the batches per epoch (a last batch too small to split
    joins the one before) and gives each rank its part of every batch.
    ``ArrayBatches.evaluation`` gives plain consecutive batches (of this rank's range)."""

    def __init__(self, x, y, batch_size, strategy, shuffle=False, seed=0):
        self.x, self.y = x, y
        self.n = len(x[0] if isinstance(x, list) else x)
        self.batch_size, self.strategy, self.shuffle, self.seed = (batch_size, strategy,
                                                                   shuffle, seed)
        self.steps = strategy.steps(self.n, batch_size)
        self.part = None  # evaluation: the [first, last) of the samples this rank takes

    @classmethod
    def evaluation(cls, x, y, batch_size, strategy):
        batches = cls(x, y, batch_size, strategy)
        first, last = batches.part = strategy.eval_range(batches.n)
        batches.steps = -(-(last - first) // batch_size)
        return batches

    def epoch(self, epoch):
        """``(xb, yb, size of the global batch)`` for each step of epoch ``epoch``."""
        if self.part is not None:
            first, last = self.part
            for start in range(first, last, self.batch_size):
                part = slice(start, min(start + self.batch_size, last))
                yield _take(self.x, part), _take(self.y, part), part.stop - part.start
            return
        n = self.n
        order = (np.random.default_rng([self.seed, epoch]).permutation(n) if self.shuffle
                 else np.arange(n))
        for idx, n_global in self.strategy.batches(order, self.batch_size, self.steps):
            yield _take(self.x, idx), _take(self.y, idx), n_global


class IterableBatches:
    """The batches of an iterable (a ``DataLoader``, a generator, a list of ``(x, y)``
    tuples), each checked by ``check(xb, yb, step)`` as it comes. One pass per epoch; a
    one-shot iterator (a generator) serves a single epoch."""

    def __init__(self, source, check, epochs=1, what="x"):
        if iter(source) is source and epochs > 1:
            raise ValueError(
                f"{what} is a one-shot iterator ({type_name(source)}), which cannot give "
                f"{epochs} epochs; pass a re-iterable source such as nnkern.data.DataLoader "
                f"or a list of (x, y) batches"
            )
        self.source, self.check, self.what = source, check, what
        self.steps = len(source) if hasattr(source, "__len__") else 0

    def epoch(self, epoch=0):
        count = 0
        for step, batch in enumerate(self.source):
            if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
                got = (f"a {type(batch).__name__} of length {len(batch)}"
                       if isinstance(batch, (tuple, list)) else type_name(batch))
                raise ValueError(f"each batch of {self.what} must be a pair (x, y), got {got} "
                                 f"in batch {step}")
            count += 1
            xb, yb = self.check(batch[0], batch[1], step)
            yield xb, yb, len(xb[0] if isinstance(xb, list) else xb)
        if count == 0:
            raise ValueError(f"{self.what} gave no batches in epoch {epoch + 1}")
        self.steps = count


def _take(data, part):
    """Rows ``part`` (a slice or indices) of an array, or of each array of a list."""
    if isinstance(data, list):
        return [a[part] for a in data]
    return data[part]
