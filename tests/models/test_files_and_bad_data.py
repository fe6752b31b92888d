"""Model files and training data that are wrong in ways a user meets: a clear error that
names the file or the argument, and no file left behind (issue 12, items 5, 6, 10, 11)."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import nnkern
from nnkern import layers
from nnkern.models import saving


def _model():
    model = nnkern.Sequential([layers.Input((3,)), layers.Dense(2)], seed=1)
    model.compile("sgd", "sparse_categorical_crossentropy")
    return model


def test_fit_and_evaluate_refuse_zero_samples():
    model = _model()
    empty_x, empty_y = np.zeros((0, 3), np.float32), np.zeros(0, np.int64)
    with pytest.raises(ValueError, match="at least one sample"):
        model.fit(empty_x, empty_y, verbose=0)
    with pytest.raises(ValueError, match="at least one sample"):
        model.evaluate(empty_x, empty_y)


def test_validation_data_errors_name_x_val_and_y_val():
    model = _model()
    x, y = np.ones((6, 3), np.float32), np.zeros(6, np.int64)
    with pytest.raises(ValueError, match="x_val and y_val have different lengths"):
        model.fit(x, y, validation_data=(x, y[:3]), verbose=0)


def _rewrite(path, arrays, meta):
    np.savez(path, __meta__=np.array(json.dumps(meta)), **arrays)


def test_load_refuses_complex_or_non_float_weights(tmp_path):
    model = _model()
    path = tmp_path / "m.npz"
    model.save(path)
    arrays, meta = saving.read_file(path)
    key = next(k for k in arrays if k.startswith("params/"))
    for bad in (arrays[key].astype(np.complex64) + 1j, arrays[key].astype(np.int32)):
        _rewrite(path, {**arrays, key: bad}, meta)
        with pytest.raises(ValueError, match=f"{path}.*real floats"):
            nnkern.models.load_model(path)


def test_load_of_a_truncated_file_or_an_npy_names_the_file(tmp_path):
    model = _model()
    path = tmp_path / "m.npz"
    model.save(path)
    data = path.read_bytes()
    cut = tmp_path / "cut.npz"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=f"{cut} is not an nnkern model file.*cut short"):
        nnkern.models.load_model(cut)
    single = tmp_path / "a.npy"
    np.save(single, np.ones(3))
    with pytest.raises(ValueError, match=f"{single} holds a single NumPy array"):
        nnkern.models.load_model(single)
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip at all")
    with pytest.raises(ValueError, match=str(junk)):
        nnkern.models.load_model(junk)


_KILLED_SAVE = textwrap.dedent("""
    import os, sys, numpy as np
    import nnkern
    from nnkern import layers
    model = nnkern.Sequential([layers.Input((64,)), layers.Dense(256)])
    real = np.savez
    def slow(f, **arrays):
        f.write(b"partial")
        f.flush()
        print("writing", flush=True)
        os.kill(os.getpid(), 9)   # killed in the middle of the write
    np.savez = slow
    model.save(sys.argv[1])
""")


def test_a_killed_save_leaves_a_temporary_that_the_next_save_removes(tmp_path):
    path = tmp_path / "m.npz"
    proc = subprocess.run([sys.executable, "-c", _KILLED_SAVE, str(path)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    left = [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]
    assert len(left) == 1 and not path.exists()
    _model().save(path)
    assert sorted(os.listdir(tmp_path)) == ["m.npz"]
