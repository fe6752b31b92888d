"""Data sets and input pipelines: the bundled digits, MNIST files, toy sets.

Everything here is plain NumPy on the host; ``model.fit`` moves batches to
the device. Images are NCHW (``(N, C, H, W)``), float32 in [0, 1]; labels
are int64 class indices.

    >>> from nnkern import data
    >>> x, y = data.load_digits()
    >>> x.shape, x.dtype, y[:5]
    ((1797, 1, 8, 8), dtype('float32'), array([0, 1, 2, 3, 4]))
    >>> x_train, x_test, y_train, y_test = data.train_test_split(x, y, 0.2, seed=0)
    >>> x_train.shape, x_test.shape
    ((1438, 1, 8, 8), (359, 1, 8, 8))

What is here:

- ``load_digits``: 1,797 8x8 handwritten digits (UCI, CC BY 4.0), shipped
  compressed inside the package (``nnkern/_data``, with its attribution).
- ``load_idx`` / ``save_idx`` / ``load_mnist``: the IDX format of MNIST and
  Fashion-MNIST, for files a user already has (gzip or not).
- ``make_xor``, ``make_circle``, ``make_spiral``: small synthetic problems.
- ``train_test_split``, ``DataLoader`` (shuffling mini-batches),
  ``Normalizer`` (per-channel mean/std fitted on the training set),
  ``random_crop``, ``random_shift``, ``random_flip``, ``shift``,
  ``Augment`` (seeded augmentation for a ``DataLoader``), ``one_hot``.

Randomness: every function that draws takes ``seed``, an int, ``None`` or a
``numpy.random.Generator``; the same int gives the same result.
"""

import gzip
import math
import os
from pathlib import Path

import numpy as np

__all__ = [
    "Augment", "DataLoader", "Normalizer", "load_digits", "load_idx", "load_mnist",
    "make_circle", "make_spiral", "make_xor", "one_hot", "random_crop", "random_flip",
    "random_shift", "save_idx", "shift", "train_test_split",
]

_DATA_DIR = Path(__file__).resolve().parent / "_data"


def _rng(seed):
    """A Generator from an int, None or a Generator (passed through)."""
    return np.random.default_rng(seed)


# ---------------------------------------------------------------- bundled digits

_digits_cache = None


def load_digits():
    """Load the bundled 8x8 handwritten digits.

    Returns ``(x, y)``: ``x`` float32 ``(1797, 1, 8, 8)`` (NCHW, one channel)
    with the pixels' 0..16 counts divided by 16 so they lie in [0, 1]; ``y``
    int64 ``(1797,)`` with the classes 0..9 (about 180 of each).

    The images are the test part of the UCI "Optical Recognition of
    Handwritten Digits" set (E. Alpaydin, C. Kaynak, 1998; CC BY 4.0); see
    ``nnkern/_data/ATTRIBUTION.txt``. Each call returns fresh arrays.

        >>> x, y = load_digits()
        >>> float(x.min()), float(x.max()), int(y.max())
        (0.0, 1.0, 9)
    """
    global _digits_cache
    if _digits_cache is None:
        path = _DATA_DIR / "digits.csv.gz"
        if not path.exists():
            raise FileNotFoundError(
                f"the bundled digits file is missing: {path}; reinstall nnkern "
                "(pip install -e .) so the package data is present"
            )
        rows = np.loadtxt(path, delimiter=",", dtype=np.int64)
        if rows.shape != (1797, 65):
            raise ValueError(f"{path} should hold 1797 rows of 65 integers, got {rows.shape}")
        _digits_cache = rows
    rows = _digits_cache
    x = (rows[:, :64].astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)
    y = rows[:, 64].copy()
    return x, y


def train_test_split(x, y, test_fraction=0.2, seed=0, stratify=True):
    """Split ``(x, y)`` into ``(x_train, x_test, y_train, y_test)``.

    ``round(len(x) * test_fraction)`` samples go to the test part. With
    ``stratify`` (the default, needs integer class labels) each class is
    split in that proportion (up to rounding), so both parts keep the
    class balance; otherwise the samples are shuffled and cut. Inside each
    part the samples are shuffled. ``seed`` fixes the split.

        >>> x = np.arange(20.0).reshape(10, 2); y = np.array([0, 1] * 5)
        >>> xtr, xte, ytr, yte = train_test_split(x, y, 0.2, seed=1)
        >>> xtr.shape, sorted(yte.tolist())
        ((8, 2), [0, 1])
    """
    x = np.asarray(x)
    y = np.asarray(y)
    if len(x) != len(y):
        raise ValueError(f"x and y must have the same length, got {len(x)} and {len(y)}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    n = len(x)
    if n < 2:
        raise ValueError(f"need at least 2 samples to split, got {n}")
    rng = _rng(seed)
    if stratify:
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
            raise ValueError(
                f"stratify=True needs 1-D integer class labels, got dtype {y.dtype} shape "
                f"{y.shape}; pass stratify=False"
            )
        classes, counts = np.unique(y, return_counts=True)
        # Per-class quotas: floors, then the leftover test slots to the
        # classes with the largest remainders, so the total is exact.
        share = counts * test_fraction
        quota = np.floor(share).astype(np.int64)
        leftover = round(n * test_fraction) - int(quota.sum())
        quota[np.argsort(-(share - quota), kind="stable")[:leftover]] += 1
        test_parts, train_parts = [], []
        for cls, k in zip(classes, quota):
            idx = rng.permutation(np.flatnonzero(y == cls))
            test_parts.append(idx[:k])
            train_parts.append(idx[k:])
        test_idx = np.concatenate(test_parts)
        train_idx = np.concatenate(train_parts)
    else:
        perm = rng.permutation(n)
        k = round(n * test_fraction)
        test_idx, train_idx = perm[:k], perm[k:]
    if len(test_idx) == 0 or len(train_idx) == 0:
        raise ValueError(
            f"test_fraction={test_fraction} of {n} samples leaves one side empty "
            f"({len(train_idx)} train, {len(test_idx)} test)"
        )
    train_idx = rng.permutation(train_idx)
    test_idx = rng.permutation(test_idx)
    return x[train_idx], x[test_idx], y[train_idx], y[test_idx]


# ---------------------------------------------------------------- IDX (MNIST) files

# IDX header: two zero bytes, a type code, the number of dimensions, then one
# big-endian uint32 per dimension; the data follow, big-endian, row-major.
_IDX_TYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_IDX_CODES = {dt.newbyteorder("=") if dt.itemsize > 1 else dt: code
              for code, dt in _IDX_TYPES.items()}


def _read_bytes(path):
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":  # gzip magic, whatever the file is called
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise ValueError(f"{path}: corrupt gzip data ({exc})") from None
    return raw


def load_idx(path):
    """Read one IDX file (the MNIST format), gzip-compressed or not.

    Returns a NumPy array of the file's dtype (uint8 for MNIST) and shape,
    in native byte order. The header is checked: magic bytes, type code,
    dimension count and that the data length matches the dimensions; each
    error names the file and what was expected.

        >>> import tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "a.idx")
        >>> save_idx(p, np.arange(6, dtype=np.uint8).reshape(2, 3))
        >>> load_idx(p)
        array([[0, 1, 2],
               [3, 4, 5]], dtype=uint8)
    """
    path = os.fspath(path)
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise ValueError(f"{path}: not an IDX file (only {len(raw)} bytes, a header has 4+)")
    if raw[0] != 0 or raw[1] != 0:
        raise ValueError(
            f"{path}: not an IDX file: the magic number must start with two zero bytes, "
            f"got {raw[:4].hex()}"
        )
    code, ndim = raw[2], raw[3]
    if code not in _IDX_TYPES:
        known = ", ".join(f"0x{c:02X} ({dt.name})" for c, dt in _IDX_TYPES.items())
        raise ValueError(f"{path}: unknown IDX type code 0x{code:02X}; expected one of {known}")
    if ndim == 0:
        raise ValueError(f"{path}: IDX header says 0 dimensions; expected at least 1")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(
            f"{path}: truncated header: {ndim} dimensions need {header} bytes, file has {len(raw)}"
        )
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_TYPES[code]
    # Python ints: a header may claim up to (2^32 - 1)^255 items, which int64 would wrap
    # (even onto the real file length, letting a wrong shape through to reshape)
    expected = math.prod(shape) * dtype.itemsize
    got = len(raw) - header
    if got != expected:
        raise ValueError(
            f"{path}: data length does not match the header: shape {shape} of {dtype.name} "
            f"needs {expected} bytes, file has {got}"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="))


def save_idx(path, array):
    """Write ``array`` as an IDX file (gzip-compressed when ``path`` ends in .gz).

    Supported dtypes: uint8, int8, int16, int32, float32, float64.
    """
    array = np.asarray(array)
    dtype = array.dtype.newbyteorder("=") if array.dtype.itemsize > 1 else array.dtype
    if dtype not in _IDX_CODES:
        raise ValueError(
            f"IDX has no type code for dtype {array.dtype}; use uint8, int8, int16, int32, "
            "float32 or float64"
        )
    if array.ndim == 0 or array.ndim > 255:
        raise ValueError(f"IDX needs 1 to 255 dimensions, got {array.ndim}")
    code = _IDX_CODES[dtype]
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    body = np.ascontiguousarray(array, dtype=_IDX_TYPES[code]).tobytes()
    path = os.fspath(path)
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(header + body)


_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _find_idx(folder, stem):
    # The usual spellings: train-images-idx3-ubyte[.gz] and train-images.idx3-ubyte[.gz].
    dotted = stem.replace("-idx", ".idx")
    for name in (stem, stem + ".gz", dotted, dotted + ".gz"):
        if (folder / name).exists():
            return folder / name
    raise FileNotFoundError(
        f"{folder}: no {stem}[.gz] (nor {dotted}[.gz]); expected the four MNIST IDX files "
        "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
        "t10k-labels-idx1-ubyte (gzip or not)"
    )


def load_mnist(folder):
    """Load MNIST-format IDX files from ``folder`` (MNIST, Fashion-MNIST, ...).

    Returns ``(x_train, y_train), (x_test, y_test)`` like Keras'
    ``mnist.load_data()``, but as NCHW float32 images in [0, 1]
    (``(N, 1, 28, 28)`` for MNIST) and int64 labels. The files are not
    downloaded: give the folder holding them.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"MNIST folder {folder} does not exist or is not a folder")
    parts = []
    for split, (img_stem, lbl_stem) in _MNIST_FILES.items():
        img_path, lbl_path = _find_idx(folder, img_stem), _find_idx(folder, lbl_stem)
        images, labels = load_idx(img_path), load_idx(lbl_path)
        if images.ndim != 3 or images.dtype != np.uint8:
            raise ValueError(
                f"{img_path}: expected uint8 images of shape (N, H, W), got {images.dtype} "
                f"{images.shape}"
            )
        if labels.ndim != 1:
            raise ValueError(f"{lbl_path}: expected labels of shape (N,), got {labels.shape}")
        if len(images) != len(labels):
            raise ValueError(
                f"{split} split: {img_path.name} has {len(images)} images but "
                f"{lbl_path.name} has {len(labels)} labels"
            )
        x = (images.astype(np.float32) / 255.0)[:, None, :, :]
        parts.append((x, labels.astype(np.int64)))
    return parts[0], parts[1]


# ---------------------------------------------------------------- synthetic sets

def make_xor(n=200, noise=0.1, seed=0):
    """The XOR problem: inputs near the corners of the unit square.

    Returns ``x`` float32 ``(n, 2)`` and ``y`` int64 ``(n,)`` with
    ``y = round(x0) XOR round(x1)``. Sample ``i`` sits at corner ``i % 4`` of
    (0,0), (0,1), (1,0), (1,1), plus Gaussian noise of std ``noise``, so
    ``make_xor(4, noise=0)`` is the truth table. No line separates the
    classes; one hidden layer does.

        >>> x, y = make_xor(4, noise=0.0)
        >>> x.tolist(), y.tolist()
        ([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]], [0, 1, 1, 0])
    """
    corners = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float64)
    idx = np.arange(n) % 4
    x = corners[idx] + noise * _rng(seed).standard_normal((n, 2))
    y = np.array([0, 1, 1, 0], dtype=np.int64)[idx]
    return x.astype(np.float32), y


def make_circle(n=500, radius=1.0, extent=1.5, margin=0.0, seed=0):
    """Points in a square, labelled 1 inside the circle of ``radius`` and 0 outside.

    ``x`` float32 ``(n, 2)`` uniform in ``[-extent, extent]^2``; ``y`` int64.
    ``margin`` > 0 drops points closer than that to the circle (redrawing
    until ``n`` remain) so a perfect classifier exists. A line cannot do it
    (logistic regression stays near the majority rate); the squared features
    ``x0^2, x1^2`` make it linear, and a small MLP learns it.

        >>> x, y = make_circle(1000, seed=0)
        >>> round(float(y.mean()), 1)    # pi / 9 = 0.35 of the square is inside
        0.3
    """
    if radius <= 0 or extent <= 0 or margin < 0:
        raise ValueError(
            f"need radius > 0, extent > 0, margin >= 0; got {radius}, {extent}, {margin}"
        )
    rng = _rng(seed)
    kept, total = [], 0
    while total < n:
        pts = rng.uniform(-extent, extent, size=(2 * n + 16, 2))
        r = np.sqrt((pts**2).sum(axis=1))
        pts = pts[np.abs(r - radius) >= margin]
        kept.append(pts)
        total += len(pts)
    x = np.concatenate(kept)[:n]
    y = ((x**2).sum(axis=1) < radius**2).astype(np.int64)
    return x.astype(np.float32), y


def make_spiral(n_per_class=100, classes=3, noise=0.2, seed=0):
    """Interleaved spiral arms, one per class, in the plane.

    Arm ``k`` runs from the origin (radius 0) to radius 1 while its angle
    goes from ``4k`` to ``4(k+1)`` radians, plus Gaussian angle noise of std
    ``noise``. Returns ``x`` float32 ``(n_per_class * classes, 2)`` and ``y``
    int64, in class order (shuffle before mini-batching).

        >>> x, y = make_spiral(50, 3)
        >>> x.shape, np.bincount(y).tolist()
        ((150, 2), [50, 50, 50])
    """
    rng = _rng(seed)
    xs, ys = [], []
    for k in range(classes):
        r = np.linspace(0.0, 1.0, n_per_class)
        t = np.linspace(4.0 * k, 4.0 * (k + 1), n_per_class) + noise * rng.standard_normal(
            n_per_class
        )
        xs.append(np.stack([r * np.sin(t), r * np.cos(t)], axis=1))
        ys.append(np.full(n_per_class, k, dtype=np.int64))
    return np.concatenate(xs).astype(np.float32), np.concatenate(ys)


# ---------------------------------------------------------------- mini-batches

class DataLoader:
    """Mini-batches of ``(x, y)`` (or of ``x`` alone), reshuffled every epoch.

    Iterating gives ``(xb, yb)`` pairs (``xb`` alone when ``y`` is None);
    each new iteration is one epoch with a fresh permutation drawn from one
    generator seeded at construction, so a given seed always gives the same
    sequence of epochs. ``transform`` (e.g. an ``Augment``) is applied to
    each ``xb``. ``len(loader)`` is the number of batches per epoch.

        >>> x = np.arange(10.0)[:, None]; y = np.arange(10)
        >>> loader = DataLoader(x, y, batch_size=4, seed=0)
        >>> len(loader), [len(yb) for _, yb in loader]
        (3, [4, 4, 2])
        >>> sorted(np.concatenate([yb for _, yb in loader]).tolist()) == list(range(10))
        True
    """

    def __init__(self, x, y=None, batch_size=32, shuffle=True, seed=0, drop_last=False,
                 transform=None):
        x = x if hasattr(x, "shape") else np.asarray(x)
        y = y if y is None or hasattr(y, "shape") else np.asarray(y)
        if y is not None and len(x) != len(y):
            raise ValueError(f"x and y must have the same length, got {len(x)} and {len(y)}")
        if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.x, self.y = x, y
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.transform = transform
        self._rng = _rng(seed)

    def __len__(self):
        n = len(self.x)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        n = len(self.x)
        order = self._rng.permutation(n) if self.shuffle else np.arange(n)
        for b in range(len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            xb = self.x[idx]
            if self.transform is not None:
                xb = self.transform(xb)
            yield xb if self.y is None else (xb, self.y[idx])


def one_hot(y, num_classes=None, dtype=np.float32):
    """Class indices ``(N,)`` -> one-hot rows ``(N, num_classes)``.

        >>> one_hot(np.array([0, 2]), 3)
        array([[1., 0., 0.],
               [0., 0., 1.]], dtype=float32)
    """
    y = np.asarray(y)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels must be a 1-D integer array, got {y.dtype} {y.shape}")
    if num_classes is None:
        num_classes = int(y.max()) + 1 if len(y) else 0
    if len(y) and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(
            f"labels must lie in [0, {num_classes}), got min {y.min()} max {y.max()}"
        )
    out = np.zeros((len(y), num_classes), dtype=dtype)
    out[np.arange(len(y)), y] = 1
    return out


# ---------------------------------------------------------------- normalisation

class Normalizer:
    """Standardise features: subtract the mean, divide by the std, per channel.

    ``fit`` on the training set only, then ``transform`` train and test
    alike (statistics from test data would leak into training). The
    channel axis is 1: for images ``(N, C, H, W)`` the statistics are over
    ``N, H, W`` for each ``C``; for a table ``(N, F)`` over ``N`` for each
    feature. A constant channel gets std 1 (it only shifts).

        >>> x_train = np.array([[0.0, 10.0], [2.0, 30.0]])
        >>> norm = Normalizer().fit(x_train)
        >>> norm.mean, norm.std
        (array([ 1., 20.]), array([ 1., 10.]))
        >>> norm.transform(np.array([[1.0, 40.0]]))
        array([[0., 2.]])
    """

    def __init__(self, eps=1e-7):
        self.eps = eps
        self.mean = None
        self.std = None

    def _shape(self, x):
        # Statistics broadcast over every axis but the channel axis 1.
        return (1, -1) + (1,) * (x.ndim - 2)

    def fit(self, x):
        """Compute the per-channel mean and std of ``x``; returns self."""
        x = np.asarray(x)
        if x.ndim < 2:
            raise ValueError(f"x must be (N, C, ...) with channels on axis 1, got shape {x.shape}")
        axes = (0,) + tuple(range(2, x.ndim))
        self.mean = x.mean(axis=axes, dtype=np.float64)
        std = x.std(axis=axes, dtype=np.float64)
        self.std = np.where(std < self.eps, 1.0, std)
        return self

    def transform(self, x):
        """``(x - mean) / std`` per channel, in ``x``'s float dtype."""
        if self.mean is None:
            raise RuntimeError("Normalizer.transform before fit: call fit(x_train) first")
        x = np.asarray(x)
        if x.ndim < 2 or x.shape[1] != len(self.mean):
            raise ValueError(
                f"x must have {len(self.mean)} channels on axis 1 (fitted), got shape {x.shape}"
            )
        dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float32
        shape = self._shape(x)
        return ((x - self.mean.reshape(shape)) / self.std.reshape(shape)).astype(dtype)

    def fit_transform(self, x):
        """``fit(x)`` then ``transform(x)``."""
        return self.fit(x).transform(x)

    def inverse_transform(self, x):
        """Undo ``transform``: ``x * std + mean``."""
        if self.mean is None:
            raise RuntimeError("Normalizer.inverse_transform before fit")
        x = np.asarray(x)
        shape = self._shape(x)
        return (x * self.std.reshape(shape) + self.mean.reshape(shape)).astype(x.dtype)


# ---------------------------------------------------------------- augmentation

def _check_images(x):
    x = np.asarray(x)
    if x.ndim != 4:
        raise ValueError(
            f"images must be NCHW (N, C, H, W), got shape {x.shape}; a channels-last batch "
            "(N, H, W, C) converts with x.transpose(0, 3, 1, 2)"
        )
    return x


def _gather_windows(padded, oy, ox, h, w):
    # padded (N, C, HP, WP); window n starts at (oy[n], ox[n]) and is (h, w).
    N, C = padded.shape[:2]
    rows = oy[:, None] + np.arange(h)          # (N, h)
    cols = ox[:, None] + np.arange(w)          # (N, w)
    n = np.arange(N)[:, None, None, None]
    c = np.arange(C)[None, :, None, None]
    return padded[n, c, rows[:, None, :, None], cols[:, None, None, :]]


def random_crop(x, size, padding=0, seed=None, fill=0.0):
    """Crop a random ``size`` window from each image, after zero-padding.

    ``x`` is ``(N, C, H, W)``; ``size`` an int or ``(h, w)``; ``padding``
    pixels of ``fill`` are added on every side first, so ``size == (H, W)``
    with ``padding=p`` is a random shift of up to ``p`` pixels (the CIFAR
    recipe). Each image gets its own offset. Returns ``(N, C, h, w)``.
    """
    x = _check_images(x)
    h, w = (size, size) if np.isscalar(size) else tuple(size)
    N, _, H, W = x.shape
    HP, WP = H + 2 * padding, W + 2 * padding
    if not (0 < h <= HP and 0 < w <= WP):
        raise ValueError(f"crop size {(h, w)} must fit the padded image {(HP, WP)}")
    padded = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)),
                    constant_values=fill)
    rng = _rng(seed)
    oy = rng.integers(0, HP - h + 1, size=N)
    ox = rng.integers(0, WP - w + 1, size=N)
    return _gather_windows(padded, oy, ox, h, w)


def random_shift(x, max_shift=1, seed=None, fill=0.0):
    """Shift each image by a random whole number of pixels in ``[-max_shift, max_shift]``.

    Same size out as in; uncovered pixels get ``fill``. Equivalent to
    ``random_crop(x, (H, W), padding=max_shift)``.
    """
    x = _check_images(x)
    return random_crop(x, x.shape[2:], padding=max_shift, seed=seed, fill=fill)


def shift(x, dy, dx, fill=0.0):
    """Shift all images by ``dy`` rows down and ``dx`` columns right (not circular).

        >>> shift(np.arange(4.0).reshape(1, 1, 2, 2), 0, 1)[0, 0]
        array([[0., 0.],
               [0., 2.]])
    """
    x = _check_images(x)
    H, W = x.shape[2:]
    if abs(dy) >= H or abs(dx) >= W:
        raise ValueError(f"shift ({dy}, {dx}) must be smaller than the image {(H, W)}")
    out = np.full_like(x, fill)
    out[:, :, max(dy, 0):H + min(dy, 0), max(dx, 0):W + min(dx, 0)] = \
        x[:, :, max(-dy, 0):H + min(-dy, 0), max(-dx, 0):W + min(-dx, 0)]
    return out


def random_flip(x, p=0.5, seed=None):
    """Flip each image left-right (along W) with probability ``p``.

    Right for natural images; wrong for digits and text, whose mirror
    image is another symbol or none.
    """
    x = _check_images(x)
    flip = _rng(seed).random(len(x)) < p
    out = x.copy()
    out[flip] = x[flip, :, :, ::-1]
    return out


class Augment:
    """Seeded augmentation of a batch of images, for ``DataLoader(transform=...)``.

    ``shift`` = the largest random shift in pixels (0: none); ``flip`` =
    probability of a left-right flip (0: none). One generator, seeded once,
    feeds every call, so a training run is reproducible.

        >>> aug = Augment(shift=1, seed=0)
        >>> aug(np.ones((2, 1, 8, 8), np.float32)).shape
        (2, 1, 8, 8)
    """

    def __init__(self, shift=1, flip=0.0, seed=0):
        if shift < 0 or not 0.0 <= flip <= 1.0:
            raise ValueError(f"need shift >= 0 and 0 <= flip <= 1, got {shift}, {flip}")
        self.shift = int(shift)
        self.flip = float(flip)
        self._rng = _rng(seed)

    def __call__(self, x):
        if self.shift:
            x = random_shift(x, self.shift, seed=self._rng)
        if self.flip:
            x = random_flip(x, self.flip, seed=self._rng)
        return x
