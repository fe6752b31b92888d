"""Arrays in and out of nnkern: DLPack round trips with shared memory, foreign arrays at the
boundary of F ops and layers, to_numpy/to_device for every array kind, and the messages for
what is not an array."""

import importlib
import sys

import numpy as np
import pytest

import nnkern
import nnkern.functional as F
from nnkern import layers

device_mod = importlib.import_module("nnkern.device")  # nnkern.device is the context manager

torch = pytest.importorskip("torch")  # the torch cases need torch; CI installs it (.ci/run)


# --- DLPack round trips: a write on one side is seen on the other ------------------------------


def test_from_dlpack_of_numpy_shares_memory_both_ways():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    t = nnkern.from_dlpack(a)
    assert isinstance(t, nnkern.Tensor) and t.shape == (2, 3) and t.dtype == np.float32
    t.data[1, 2] = -5.0
    assert a[1, 2] == -5.0
    a[0, 0] = 9.0
    assert t.data[0, 0] == 9.0


def test_from_dlpack_of_torch_shares_memory_both_ways():
    src = torch.arange(12, dtype=torch.float64).reshape(3, 4)[:, 1:]  # a strided view
    t = nnkern.from_dlpack(src)
    assert t.shape == (3, 3) and t.dtype == np.float64
    np.testing.assert_array_equal(t.numpy(), src.numpy())
    src[2, 2] = 100.0
    assert t.data[2, 2] == 100.0
    t.data[0, 0] = -1.0
    assert src[0, 0].item() == -1.0


def test_torch_takes_an_nnkern_tensor_and_an_f_result_without_a_copy():
    t = nnkern.tensor(np.zeros((2, 2), np.float32))
    view = torch.from_dlpack(t)
    view[0, 1] = 3.0
    assert t.data[0, 1] == 3.0
    assert t.__dlpack_device__()[0] == 1  # kDLCPU
    y = F.relu(np.array([-1.0, 2.0]))
    ty = torch.from_dlpack(y)
    ty[1] = 7.0
    assert y[1] == 7.0
    back = np.from_dlpack(t)  # NumPy reads it too
    back[1, 1] = 4.0
    assert t.data[1, 1] == 4.0


def test_a_tensor_that_requires_grad_is_not_exported_like_torch():
    w = nnkern.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(BufferError, match=r"requires grad.*detach\(\)"):
        torch.from_dlpack(w)
    assert torch.from_dlpack(w.detach()).tolist() == [1.0, 2.0]


def test_from_dlpack_refuses_what_has_no_dlpack():
    with pytest.raises(TypeError, match=r"from_dlpack takes an array exporting __dlpack__.*"
                                        r"got list"):
        nnkern.from_dlpack([1.0, 2.0])


# --- F ops and layers take foreign arrays at the boundary --------------------------------------


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
def test_f_ops_take_torch_tensors(backend):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3, 6, 6)).astype(np.float32)
    w = rng.standard_normal((5, 3, 3, 3)).astype(np.float32)
    logits = rng.standard_normal((4, 5)).astype(np.float32)
    labels = np.array([0, 4, 2, 1])
    with nnkern.device(backend):
        relu = F.relu(torch.from_numpy(x))
        conv = F.conv2d(torch.from_numpy(x), w, padding=1)  # torch and numpy mixed
        loss = F.softmax_cross_entropy(torch.from_numpy(logits), torch.from_numpy(labels))
        dx = F.relu_backward(torch.ones(4, 3, 6, 6), x=torch.from_numpy(x))
    assert isinstance(relu, np.ndarray) and isinstance(conv, np.ndarray)
    np.testing.assert_array_equal(relu, np.maximum(x, 0))
    torch.testing.assert_close(torch.from_numpy(conv),
                               torch.nn.functional.conv2d(torch.from_numpy(x),
                                                          torch.from_numpy(w), padding=1),
                               rtol=1e-4, atol=1e-4)
    expected = torch.nn.functional.cross_entropy(torch.from_numpy(logits),
                                                 torch.from_numpy(labels))
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)
    np.testing.assert_array_equal(dx, (x > 0).astype(np.float32))


def test_an_in_place_op_on_torch_tensors_writes_their_memory():
    p = torch.ones(5)
    g = torch.full((5,), 0.5)
    v = torch.zeros(5)
    with nnkern.device("cpu"):
        F.sgd_step([p], [g], [v], lr=0.1, momentum=0.9)
    torch.testing.assert_close(p, torch.full((5,), 0.95))  # no copy: the update landed
    torch.testing.assert_close(v, torch.full((5,), 0.5))
    with nnkern.device("cpu"):
        F.sgd_step((p,), (g,), (v,), lr=0.1, momentum=0.0)  # tuples are looked into too
    torch.testing.assert_close(p, torch.full((5,), 0.9))


def test_f_ops_on_tensors_still_record_with_foreign_arguments():
    x = nnkern.tensor(np.array([[1.0, -2.0, 3.0]]), requires_grad=True)
    loss = F.softmax_cross_entropy(x, torch.tensor([2]))
    loss.backward()
    p = np.exp([1.0, -2.0, 3.0]) / np.exp([1.0, -2.0, 3.0]).sum()
    np.testing.assert_allclose(x.grad[0], p - [0, 0, 1], rtol=1e-6)


def test_what_is_not_an_array_gets_a_type_error_naming_both_sides():
    accepted = r"\(accepted: numpy.ndarray, cupy.ndarray, nnkern.Tensor, or an array exporting " \
               r"__dlpack__ or __cuda_array_interface__"
    with pytest.raises(TypeError, match=rf"x must be an array, got list {accepted}"):
        F.relu([1.0, -1.0])
    with pytest.raises(TypeError, match=rf"labels must be an array, got list {accepted}"):
        F.softmax_cross_entropy(np.zeros((2, 3), np.float32), [0, 1])
    with pytest.raises(TypeError, match=r"labels must be an integer array.*got float32"):
        F.softmax_cross_entropy(np.zeros((2, 3), np.float32), torch.zeros(2))
    with pytest.raises(TypeError, match=rf"dense\w* input must be an array, got list {accepted}"):
        layers.Dense(3)([[1.0, 2.0]])


def test_a_torch_tensor_that_requires_grad_is_refused_with_the_way_out():
    with pytest.raises(TypeError, match=r"x: a torch.Tensor of dtype torch.float32 cannot be "
                                        r"shared.*x.detach\(\).*nnkern.torch"):
        F.relu(torch.ones(3, requires_grad=True))
    with pytest.raises(TypeError, match=r"torch.bfloat16 cannot be shared"):
        F.relu(torch.ones(3, dtype=torch.bfloat16))


def test_layers_and_models_take_torch_tensors():
    x = np.random.default_rng(1).standard_normal((4, 1, 8, 8)).astype(np.float32)
    model = nnkern.Sequential([layers.Input((1, 8, 8)), layers.Conv2D(2, 3),
                               layers.Flatten(), layers.Dense(3)])
    expected = model.predict(x)
    np.testing.assert_array_equal(model(torch.from_numpy(x)), expected)
    np.testing.assert_array_equal(model.predict(torch.from_numpy(x)), expected)
    dense = layers.Dense(2)
    a = dense(torch.ones(3, 4))
    np.testing.assert_array_equal(a, dense(np.ones((3, 4), np.float32)))


def test_fit_takes_torch_tensors():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((32, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    model = nnkern.Sequential([layers.Input((4,)), layers.Dense(2)])
    model.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
    history = model.fit(torch.from_numpy(x), torch.from_numpy(y), epochs=2, verbose=0)
    assert len(history.history["loss"]) == 2


# --- to_numpy / to_device for every array kind -------------------------------------------------


def test_to_numpy_and_to_device_share_host_memory_of_any_kind():
    src = torch.zeros(3)
    a = nnkern.to_numpy(src)
    b = nnkern.to_device(src, "cpu")
    src[0] = 2.0
    assert a[0] == 2.0 and b[0] == 2.0
    t = nnkern.tensor(np.ones(2))
    assert nnkern.to_numpy(t) is t.data
    assert nnkern.to_device(t, "numpy") is t.data
    assert nnkern.to_numpy([1, 2]).tolist() == [1, 2]
    assert nnkern.to_device(torch.ones(2), "cpu", dtype=np.float64).dtype == np.float64


def test_to_numpy_reads_a_numba_device_array():
    from numba import cuda  # the simulator's device array under the tests (conftest)

    d = cuda.to_device(np.arange(4.0))
    np.testing.assert_array_equal(nnkern.to_numpy(d), np.arange(4.0))


class _OnTheGPU:
    """Stands for a CUDA array of a library nnkern does not know (CUDA DLPack device)."""

    def __dlpack__(self, **kwargs):
        raise AssertionError("never read without CuPy")

    def __dlpack_device__(self):
        return (2, 0)


def test_a_missing_cupy_says_how_to_install_the_gpu_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # import cupy -> ImportError
    monkeypatch.setattr(device_mod, "cuda_simulated", lambda: False)
    with pytest.raises(ModuleNotFoundError, match=r"needs CuPy.*pip install 'nnkern\[cuda\]'"):
        nnkern.to_device(np.ones(2), "cuda")
    with pytest.raises(ModuleNotFoundError, match=r"_OnTheGPU from the GPU needs CuPy.*"
                                                  r"nnkern\[cuda\]"):
        nnkern.to_numpy(_OnTheGPU())


def test_the_readme_interop_section_runs(tmp_path, monkeypatch):
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    start = text.index("## Interop")
    section = text[start:text.find("\n## ", start + 1)]
    blocks = re.findall(r"```python\n(.*?)```", section, re.DOTALL)
    assert len(blocks) == 3
    monkeypatch.chdir(tmp_path)  # the weights file lands here
    scope = {"nnkern": nnkern, "layers": layers}
    for block in blocks:
        exec(block, scope)  # noqa: S102
    assert scope["net"].conv1.weight.grad is not None
    np.testing.assert_array_equal(scope["back"].numpy(), scope["y"])
    with torch.no_grad():
        expected = scope["net"](scope["x"]).numpy()
    np.testing.assert_allclose(scope["model"].predict(scope["x"].numpy()), expected,
                               rtol=1e-4, atol=1e-5)
    assert (tmp_path / "lenet.safetensors").exists()


def test_import_nnkern_imports_neither_torch_nor_safetensors():
    import subprocess

    code = ("import sys, nnkern, nnkern.functional, nnkern.layers, nnkern.models, "
            "nnkern.interop; print(sorted(m for m in ('torch', 'safetensors') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, check=True)
    assert out.stdout.strip() == "[]", out.stderr
