"""nnkern.data: the bundled digits, IDX files, toy sets, batches, normalisation, augmentation."""

import gzip
import struct

import numpy as np
import pytest

from nnkern import data

# ---------------------------------------------------------------- digits

def test_load_digits_shape_dtype_range():
    x, y = data.load_digits()
    assert x.shape == (1797, 1, 8, 8) and x.dtype == np.float32
    assert y.shape == (1797,) and y.dtype == np.int64
    assert x.min() == 0.0 and x.max() == 1.0
    # the pixels are counts 0..16 divided by 16
    np.testing.assert_array_equal(x * 16, np.round(x * 16))
    counts = np.bincount(y)
    assert len(counts) == 10 and counts.min() >= 170 and counts.sum() == 1797


def test_load_digits_first_image_and_fresh_copies():
    x, y = data.load_digits()
    assert y[:10].tolist() == list(range(10))
    assert (x[0, 0, 0] * 16).tolist() == [0, 0, 5, 13, 9, 1, 0, 0]
    x[0] = 5.0
    x2, _ = data.load_digits()
    assert x2[0].max() <= 1.0


def test_attribution_ships_with_the_data():
    text = (data._DATA_DIR / "ATTRIBUTION.txt").read_text()
    assert "CC BY 4.0" in text and "Alpaydin" in text


# ---------------------------------------------------------------- split

def test_train_test_split_sizes_disjoint_and_stratified():
    x, y = data.load_digits()
    xtr, xte, ytr, yte = data.train_test_split(x, y, 0.2, seed=0)
    assert len(xtr) + len(xte) == 1797 and len(xte) == round(1797 * 0.2)
    # every sample lands on exactly one side: split the sample indices the same way
    tags = np.arange(1797)
    ttr, tte, _, _ = data.train_test_split(tags, y, 0.2, seed=0)
    assert set(ttr.tolist()).isdisjoint(tte.tolist())
    assert sorted(ttr.tolist() + tte.tolist()) == list(range(1797))
    np.testing.assert_array_equal(ytr, y[ttr])
    np.testing.assert_array_equal(yte, y[tte])
    # each class keeps its share within one sample
    share = np.bincount(yte, minlength=10) / np.bincount(y, minlength=10)
    assert np.all(np.abs(share - 0.2) < 1.0 / np.bincount(y).min() + 1e-9)


def test_train_test_split_seeded_and_unstratified():
    x = np.arange(100.0)[:, None]
    y = np.arange(100) % 3
    a = data.train_test_split(x, y, 0.25, seed=3)
    b = data.train_test_split(x, y, 0.25, seed=3)
    c = data.train_test_split(x, y, 0.25, seed=4)
    for p, q in zip(a, b):
        np.testing.assert_array_equal(p, q)
    assert not np.array_equal(a[1], c[1])
    xtr, xte, _ytr, _yte = data.train_test_split(x, y.astype(float), 0.25, stratify=False)
    assert len(xte) == 25 and len(xtr) == 75


@pytest.mark.parametrize("kwargs, match", [
    ({"test_fraction": 0.0}, "test_fraction must be in"),
    ({"test_fraction": 1.0}, "test_fraction must be in"),
    ({"test_fraction": 0.01}, "leaves one side empty"),
])
def test_train_test_split_errors(kwargs, match):
    x, y = np.zeros((10, 2)), np.arange(10) % 2
    with pytest.raises(ValueError, match=match):
        data.train_test_split(x, y, **kwargs)


def test_train_test_split_length_and_label_errors():
    with pytest.raises(ValueError, match="same length, got 3 and 2"):
        data.train_test_split(np.zeros((3, 1)), np.zeros(2, np.int64))
    with pytest.raises(ValueError, match="stratify=True needs 1-D integer"):
        data.train_test_split(np.zeros((4, 1)), np.zeros(4))


# ---------------------------------------------------------------- IDX files

def _idx_bytes(code, shape, payload):
    return bytes([0, 0, code, len(shape)]) + struct.pack(">" + "I" * len(shape), *shape) + payload


def test_load_idx_reads_hand_written_files(tmp_path):
    img = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "u8.idx").write_bytes(_idx_bytes(0x08, img.shape, img.tobytes()))
    np.testing.assert_array_equal(data.load_idx(tmp_path / "u8.idx"), img)
    # multi-byte types are big-endian in the file and native after loading
    vals = np.array([[1.5, -2.0, 3.25]], dtype=">f4")
    (tmp_path / "f4.idx").write_bytes(_idx_bytes(0x0D, vals.shape, vals.tobytes()))
    got = data.load_idx(tmp_path / "f4.idx")
    assert got.dtype == np.float32 and got.dtype.isnative
    np.testing.assert_array_equal(got, [[1.5, -2.0, 3.25]])
    ints = np.array([-7, 70000], dtype=">i4")
    with gzip.open(tmp_path / "i4.idx.gz", "wb") as f:
        f.write(_idx_bytes(0x0C, ints.shape, ints.tobytes()))
    np.testing.assert_array_equal(data.load_idx(tmp_path / "i4.idx.gz"), [-7, 70000])


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32,
                                   np.float64])
@pytest.mark.parametrize("name", ["a.idx", "a.idx.gz"])
def test_save_idx_load_idx_round_trip(tmp_path, dtype, name):
    a = (np.arange(30) - 10).reshape(2, 3, 5).astype(dtype)
    data.save_idx(tmp_path / name, a)
    b = data.load_idx(tmp_path / name)
    assert b.dtype == a.dtype and b.shape == a.shape
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("raw, match", [
    (b"\x00\x00", "only 2 bytes"),
    (b"\x01\x00\x08\x01\x00\x00\x00\x01\x05", "two zero bytes"),
    (b"\x00\x00\x07\x01\x00\x00\x00\x01\x05", "unknown IDX type code 0x07"),
    (b"\x00\x00\x08\x00", "0 dimensions"),
    (b"\x00\x00\x08\x03\x00\x00\x00\x01", "truncated header"),
    (b"\x00\x00\x08\x01\x00\x00\x00\x03\x05\x06", "needs 3 bytes, file has 2"),
    (b"\x00\x00\x0c\x01\x00\x00\x00\x01\x05\x06\x07\x08\x09", "needs 4 bytes, file has 5"),
    # issue 12 item 10: (2^32 - 1)^3 items overflowed the int64 size check
    (b"\x00\x00\x08\x03" + b"\xff" * 12 + b"\x01",
     f"needs {(2**32 - 1) ** 3} bytes, file has 1"),
    # and a size that wraps to the file length (2^64 = 0 bytes) got through to reshape
    (b"\x00\x00\x08\x04" + b"\x00\x01\x00\x00" * 4, f"needs {2**64} bytes, file has 0"),
])
def test_load_idx_errors(tmp_path, raw, match):
    p = tmp_path / "bad.idx"
    p.write_bytes(raw)
    with pytest.raises(ValueError, match=match):
        data.load_idx(p)


def test_load_idx_corrupt_gzip_and_unsupported_dtype(tmp_path):
    p = tmp_path / "bad.gz"
    p.write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(ValueError, match="corrupt gzip"):
        data.load_idx(p)
    with pytest.raises(ValueError, match="no type code for dtype int64"):
        data.save_idx(tmp_path / "x.idx", np.zeros(3, np.int64))


def _write_mnist(folder, n_train=5, n_test=3, gz=True, dotted=False):
    rng = np.random.default_rng(0)
    sets = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        sep = "." if dotted else "-"
        suffix = ".gz" if gz else ""
        data.save_idx(folder / f"{split}-images{sep}idx3-ubyte{suffix}", images)
        data.save_idx(folder / f"{split}-labels{sep}idx1-ubyte{suffix}", labels)
        sets[split] = (images, labels)
    return sets


@pytest.mark.parametrize("gz, dotted", [(True, False), (False, False), (False, True)])
def test_load_mnist(tmp_path, gz, dotted):
    sets = _write_mnist(tmp_path, gz=gz, dotted=dotted)
    (xtr, _ytr), (xte, yte) = data.load_mnist(tmp_path)
    assert xtr.shape == (5, 1, 28, 28) and xtr.dtype == np.float32
    assert xte.shape == (3, 1, 28, 28) and yte.dtype == np.int64
    np.testing.assert_allclose(xtr[:, 0] * 255, sets["train"][0])
    np.testing.assert_array_equal(yte, sets["t10k"][1])
    assert 0.0 <= xtr.min() and xtr.max() <= 1.0


def test_load_mnist_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        data.load_mnist(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="no train-images-idx3-ubyte"):
        data.load_mnist(tmp_path)
    _write_mnist(tmp_path, gz=False)
    data.save_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(4, np.uint8))
    with pytest.raises(ValueError, match="has 5 images but train-labels-idx1-ubyte has 4"):
        data.load_mnist(tmp_path)
    data.save_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((4, 28), np.uint8))
    with pytest.raises(ValueError, match=r"expected uint8 images of shape \(N, H, W\)"):
        data.load_mnist(tmp_path)


# ---------------------------------------------------------------- synthetic sets

def test_make_xor():
    x, y = data.make_xor(4, noise=0.0)
    assert x.tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]] and y.tolist() == [0, 1, 1, 0]
    x, y = data.make_xor(400, noise=0.1, seed=1)
    assert x.shape == (400, 2) and x.dtype == np.float32 and y.dtype == np.int64
    np.testing.assert_array_equal(y, np.round(x[:, 0]).astype(int) ^ np.round(x[:, 1]).astype(int))
    np.testing.assert_array_equal(x, data.make_xor(400, noise=0.1, seed=1)[0])


def test_make_circle():
    x, y = data.make_circle(2000, seed=0)
    assert x.shape == (2000, 2) and x.dtype == np.float32 and y.dtype == np.int64
    assert np.abs(x).max() <= 1.5
    np.testing.assert_array_equal(y, (x**2).sum(1) < 1.0)
    assert abs(y.mean() - np.pi / 9) < 0.03
    x, y = data.make_circle(500, margin=0.1, seed=2)
    r = np.sqrt((x.astype(np.float64) ** 2).sum(1))
    assert len(x) == 500 and np.abs(r - 1.0).min() >= 0.1 - 1e-6
    with pytest.raises(ValueError, match="radius > 0"):
        data.make_circle(10, radius=0.0)


def test_make_spiral():
    x, y = data.make_spiral(60, classes=4, noise=0.1, seed=0)
    assert x.shape == (240, 2) and x.dtype == np.float32
    assert np.bincount(y).tolist() == [60] * 4
    r = np.sqrt((x**2).sum(1))
    assert r.max() <= 1.0 + 1e-6
    # without noise each arm's points sit on its own angle range
    x0, _ = data.make_spiral(10, classes=2, noise=0.0)
    np.testing.assert_allclose(x0[9], [np.sin(4.0), np.cos(4.0)], rtol=1e-6)


# ---------------------------------------------------------------- batches

def test_dataloader_covers_every_sample_and_reshuffles():
    x = np.arange(23.0)[:, None]
    y = np.arange(23)
    loader = data.DataLoader(x, y, batch_size=5, seed=0)
    assert len(loader) == 5
    epochs = []
    for _ in range(2):
        batches = list(loader)
        assert [len(b[1]) for b in batches] == [5, 5, 5, 5, 3]
        ys = np.concatenate([yb for _, yb in batches])
        xs = np.concatenate([xb for xb, _ in batches])
        np.testing.assert_array_equal(xs[:, 0], ys)
        assert sorted(ys.tolist()) == list(range(23))
        epochs.append(ys)
    assert not np.array_equal(epochs[0], epochs[1])
    again = data.DataLoader(x, y, batch_size=5, seed=0)
    np.testing.assert_array_equal(np.concatenate([b for _, b in again]), epochs[0])


def test_dataloader_options():
    x = np.arange(10.0)[:, None]
    loader = data.DataLoader(x, batch_size=4, shuffle=False, drop_last=True,
                             transform=lambda b: b * 2)
    batches = list(loader)
    assert len(loader) == 2 and len(batches) == 2
    np.testing.assert_array_equal(batches[0][:, 0], [0, 2, 4, 6])
    with pytest.raises(ValueError, match="same length, got 10 and 3"):
        data.DataLoader(x, np.zeros(3))
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        data.DataLoader(x, batch_size=0)


def test_one_hot():
    np.testing.assert_array_equal(data.one_hot(np.array([2, 0]), 4),
                                  [[0, 0, 1, 0], [1, 0, 0, 0]])
    assert data.one_hot(np.array([1, 3])).shape == (2, 4)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        data.one_hot(np.array([3]), 3)


# ---------------------------------------------------------------- normalisation

def test_normalizer_per_channel_images():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 3, 4, 5)).astype(np.float32)
    x = x * np.array([1.0, 2.0, 0.5], np.float32)[None, :, None, None] + \
        np.array([0.0, 5.0, -1.0], np.float32)[None, :, None, None]
    norm = data.Normalizer().fit(x)
    z = norm.transform(x)
    assert z.dtype == np.float32 and norm.mean.shape == (3,)
    np.testing.assert_allclose(z.mean(axis=(0, 2, 3)), 0.0, atol=1e-5)
    np.testing.assert_allclose(z.std(axis=(0, 2, 3)), 1.0, atol=1e-5)
    np.testing.assert_allclose(norm.inverse_transform(z), x, atol=1e-5)
    # the test set uses the training statistics
    z_test = norm.transform(x[:5] + 1.0)
    np.testing.assert_allclose(z_test, (x[:5] + 1.0 - norm.mean[None, :, None, None])
                               / norm.std[None, :, None, None], rtol=1e-5)


def test_normalizer_tables_constant_feature_and_errors():
    x = np.array([[1.0, 3.0], [3.0, 3.0]])
    z = data.Normalizer().fit_transform(x)
    np.testing.assert_allclose(z, [[-1.0, 0.0], [1.0, 0.0]])
    with pytest.raises(RuntimeError, match="before fit"):
        data.Normalizer().transform(x)
    with pytest.raises(ValueError, match="must have 2 channels on axis 1"):
        data.Normalizer().fit(x).transform(np.zeros((2, 3)))


# ---------------------------------------------------------------- augmentation

def test_shift_moves_pixels_with_zero_fill():
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    s = data.shift(x, 1, -1)[0, 0]
    np.testing.assert_array_equal(s[0], 0.0)
    np.testing.assert_array_equal(s[1:, :3], x[0, 0, :3, 1:])
    np.testing.assert_array_equal(s[:, 3], 0.0)
    np.testing.assert_array_equal(data.shift(x, 0, 0), x)
    with pytest.raises(ValueError, match="smaller than the image"):
        data.shift(x, 4, 0)


def test_random_shift_is_a_shift_per_image_and_seeded():
    rng = np.random.default_rng(0)
    x = rng.random((40, 2, 6, 7)).astype(np.float32)
    out = data.random_shift(x, 2, seed=5)
    assert out.shape == x.shape and out.dtype == x.dtype
    np.testing.assert_array_equal(out, data.random_shift(x, 2, seed=5))
    seen = set()
    for n in range(len(x)):
        matches = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                   if np.array_equal(out[n:n + 1], data.shift(x[n:n + 1], dy, dx))]
        assert len(matches) == 1
        seen.add(matches[0])
    assert len(seen) > 5   # offsets differ between images


def test_random_crop_windows_of_padded_image():
    x = np.arange(2 * 1 * 5 * 5, dtype=np.float32).reshape(2, 1, 5, 5)
    out = data.random_crop(x, 3, seed=0)
    assert out.shape == (2, 1, 3, 3)
    for n in range(2):
        found = any(np.array_equal(out[n, 0], x[n, 0, i:i + 3, j:j + 3])
                    for i in range(3) for j in range(3))
        assert found
    assert data.random_crop(x, (5, 4), padding=1, seed=0).shape == (2, 1, 5, 4)
    with pytest.raises(ValueError, match="must fit the padded image"):
        data.random_crop(x, 8, padding=1)
    with pytest.raises(ValueError, match=r"NCHW.*transpose\(0, 3, 1, 2\)"):
        data.random_crop(x[0], 3)


def test_random_flip_and_augment():
    rng = np.random.default_rng(1)
    x = rng.random((64, 1, 3, 4)).astype(np.float32)
    out = data.random_flip(x, 0.5, seed=2)
    flipped = np.array([np.array_equal(o, xi[:, :, ::-1]) for o, xi in zip(out, x)])
    kept = np.array([np.array_equal(o, xi) for o, xi in zip(out, x)])
    assert np.all(flipped | kept) and 10 < flipped.sum() < 54
    np.testing.assert_array_equal(data.random_flip(x, 0.0), x)
    aug = data.Augment(shift=1, flip=0.5, seed=0)
    a1, a2 = aug(x), aug(x)
    assert a1.shape == x.shape and not np.array_equal(a1, a2)
    np.testing.assert_array_equal(a1, data.Augment(shift=1, flip=0.5, seed=0)(x))
    loader = data.DataLoader(x, np.zeros(64, np.int64), batch_size=16,
                             transform=data.Augment(seed=0))
    assert next(iter(loader))[0].shape == (16, 1, 3, 4)
    with pytest.raises(ValueError, match="shift >= 0"):
        data.Augment(shift=-1)


def test_docstring_examples():
    import doctest

    result = doctest.testmod(data, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 10 and result.failed == 0
