"""Classification metrics on the host: accuracy, precision, recall, TPR/FPR, confusion matrix.

The functions take true labels and either predicted labels or the model's
scores: (N, C) scores are reduced by argmax; (N,) or (N, 1) scores of a binary
model are thresholded (0 for logits, the default, or 0.5 for probabilities).

    >>> import numpy as np
    >>> from nnkern import metrics
    >>> metrics.accuracy([0, 1, 1], np.array([[2.0, 1.0], [0.0, 3.0], [4.0, 0.0]]))
    0.6666666666666666
    >>> metrics.confusion_matrix([0, 1, 1], [0, 1, 0])
    array([[1, 0],
           [1, 1]])

The metric objects (``Accuracy``, ``Precision``, ``Recall``) accumulate over
batches for ``Model.compile(metrics=[...])``.
"""

import numpy as np

from nnkern.device import to_numpy


def predicted_labels(y_pred, threshold=0.0):
    """Class indices from scores: argmax over axis 1 for (N, C>1), ``> threshold`` for
    (N,) / (N, 1) float scores; integer input is returned as labels."""
    y_pred = to_numpy(y_pred)
    if y_pred.dtype.kind in "iub":
        return y_pred.reshape(len(y_pred), -1)[:, 0] if y_pred.ndim > 1 else y_pred
    if y_pred.ndim == 2 and y_pred.shape[1] > 1:
        return y_pred.argmax(axis=1)
    return (y_pred.reshape(len(y_pred)) > threshold).astype(np.int64)


def _true_labels(y_true):
    y_true = to_numpy(y_true)
    if y_true.ndim == 2 and y_true.shape[1] > 1:
        return y_true.argmax(axis=1)
    return np.rint(y_true.reshape(len(y_true))).astype(np.int64)


def _pair(y_true, y_pred, threshold):
    t, p = _true_labels(y_true), predicted_labels(y_pred, threshold)
    if len(t) != len(p):
        raise ValueError(f"y_true has {len(t)} samples but y_pred has {len(p)}")
    return t, p


def accuracy(y_true, y_pred, threshold=0.0):
    """Fraction of samples whose predicted class equals the true class."""
    t, p = _pair(y_true, y_pred, threshold)
    return float(np.mean(t == p)) if len(t) else 0.0


def confusion_matrix(y_true, y_pred, num_classes=None, threshold=0.0):
    """(C, C) int64 counts: row = true class, column = predicted class."""
    t, p = _pair(y_true, y_pred, threshold)
    seen = int(max(t.max(initial=-1), p.max(initial=-1))) + 1
    lowest = int(min(t.min(initial=0), p.min(initial=0)))
    if lowest < 0:
        raise ValueError(f"class labels must be >= 0, got a label {lowest}")
    if num_classes is None:
        num_classes = seen
    elif seen > num_classes:
        raise ValueError(f"labels go up to {seen - 1} but num_classes is {num_classes}")
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (t, p), 1)
    return cm


def _per_class(y_true, y_pred, num_classes, positive, threshold):
    """The confusion matrix behind precision/recall/FPR (at least classes 0..positive)."""
    t, p = _pair(y_true, y_pred, threshold)
    if num_classes is None:
        num_classes = max(2, positive + 1, int(max(t.max(initial=-1), p.max(initial=-1))) + 1)
    return confusion_matrix(t, p, num_classes)


def _ratio(num, den):
    """num / den per class, 0 where den == 0 (no sample to judge: as sklearn's default)."""
    return np.divide(num, den, out=np.zeros_like(num, dtype=np.float64), where=den > 0)


def _reduce(values, average, positive):
    if average == "binary":
        if not 0 <= positive < len(values):
            raise ValueError(f"positive must be a class in [0, {len(values)}), got {positive}")
        return float(values[positive])
    if average == "macro":
        return float(values.mean())
    if average is None:
        return values
    raise ValueError(f"average must be 'binary', 'macro' or None, got {average!r}")


def precision(y_true, y_pred, average="binary", positive=1, num_classes=None, threshold=0.0):
    """TP / (TP + FP): of the samples predicted as a class, the fraction that are it
    (0 when none is predicted as it). ``average``: "binary" (class ``positive``), "macro"
    (mean over classes) or None (per class).

    >>> precision([1, 0, 1, 1], [1, 1, 0, 1])
    0.6666666666666666
    """
    cm = _per_class(y_true, y_pred, num_classes, positive, threshold)
    return _reduce(_ratio(np.diag(cm), cm.sum(axis=0)), average, positive)


def recall(y_true, y_pred, average="binary", positive=1, num_classes=None, threshold=0.0):
    """TP / (TP + FN): of the samples of a class, the fraction found, i.e. the true positive
    rate (0 when the class has no sample).

    >>> recall([1, 0, 1, 1], [1, 1, 0, 1])
    0.6666666666666666
    """
    cm = _per_class(y_true, y_pred, num_classes, positive, threshold)
    return _reduce(_ratio(np.diag(cm), cm.sum(axis=1)), average, positive)


true_positive_rate = recall


def false_positive_rate(y_true, y_pred, average="binary", positive=1, num_classes=None,
                        threshold=0.0):
    """FP / (FP + TN): of the samples NOT of a class, the fraction predicted as it (0 when
    every sample is of the class).

    >>> false_positive_rate([1, 0, 0, 0], [1, 1, 0, 0])
    0.3333333333333333
    """
    cm = _per_class(y_true, y_pred, num_classes, positive, threshold)
    fp = cm.sum(axis=0) - np.diag(cm)
    negatives = cm.sum() - cm.sum(axis=1)
    return _reduce(_ratio(fp, negatives), average, positive)


class Metric:
    """Accumulates a metric over batches: ``update(y_true, y_pred)``, ``result()``,
    ``reset()``. ``threshold`` is set by ``compile`` (0 for logits). ``counts``: the names
    of the attributes that add up over batches (data-parallel fit sums them over ranks)."""

    name = None
    counts = ()

    def __init__(self, threshold=0.0):
        self.threshold = threshold
        self.reset()

    def reset(self):
        raise NotImplementedError

    def update(self, y_true, y_pred):
        raise NotImplementedError


class Accuracy(Metric):
    """Fraction of correct predictions."""

    name = "accuracy"
    counts = ("_correct", "_count")

    def reset(self):
        self._correct, self._count = 0, 0

    def update(self, y_true, y_pred):
        t, p = _pair(y_true, y_pred, self.threshold)
        self._correct += int(np.sum(t == p))
        self._count += len(t)

    def result(self):
        return self._correct / self._count if self._count else 0.0


class _ClassOneCounts(Metric):
    # running counts for class 1, so a result after every batch costs O(1), not a
    # confusion matrix over all the labels seen so far
    counts = ("_hits", "_predicted", "_actual")

    def reset(self):
        self._hits, self._predicted, self._actual = 0, 0, 0

    def update(self, y_true, y_pred):
        t, p = _pair(y_true, y_pred, self.threshold)
        self._hits += int(np.sum((t == 1) & (p == 1)))
        self._predicted += int(np.sum(p == 1))
        self._actual += int(np.sum(t == 1))


class Precision(_ClassOneCounts):
    """Binary precision of class 1 (0 before any predicted positive)."""

    name = "precision"

    def result(self):
        return self._hits / self._predicted if self._predicted else 0.0


class Recall(_ClassOneCounts):
    """Binary recall (true positive rate) of class 1 (0 before any actual positive)."""

    name = "recall"

    def result(self):
        return self._hits / self._actual if self._actual else 0.0


_ALIASES = {"accuracy": Accuracy, "acc": Accuracy, "precision": Precision, "recall": Recall}


def get(identifier):
    """A Metric from ``"accuracy"`` (or ``"acc"``), ``"precision"``, ``"recall"``, or an
    instance."""
    if isinstance(identifier, Metric):
        return identifier
    if isinstance(identifier, str) and identifier.lower() in _ALIASES:
        return _ALIASES[identifier.lower()]()
    raise ValueError(f"metric must be one of {sorted(_ALIASES)} or a Metric, got {identifier!r}")
