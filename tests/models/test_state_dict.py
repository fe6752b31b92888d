"""Weights in PyTorch's names and layouts: state_dict round trips, a torch LeNet's weights in
nnkern, safetensors files, and the save-path rules (issue 11 item 3)."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

import nnkern
from nnkern import callbacks, layers, models

torch = pytest.importorskip("torch")  # the torch cases need torch; CI installs it (.ci/run)


def _example():
    """examples/torch_lenet.py: its torch LeNet and the same net in nnkern's layers."""
    path = Path(__file__).resolve().parents[2] / "examples" / "torch_lenet.py"
    spec = importlib.util.spec_from_file_location("example_torch_lenet", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


EXAMPLE = _example()
TorchLeNet = EXAMPLE.LeNet


_lenet = EXAMPLE.keras_lenet  # LeNet-5 in nnkern's layers, named like TorchLeNet's modules


def _digits28(n=200):
    x, y = nnkern.data.load_digits()
    idx = np.arange(28) * 8 // 28  # nearest-neighbour 8x8 -> 28x28
    return np.ascontiguousarray(x[:n][:, :, idx][:, :, :, idx]), y[:n]


def _cnn_with_norm(seed=0):
    return nnkern.Sequential([
        layers.Input((3, 6, 6)),
        layers.Conv2D(4, 3, use_bias=False, name="conv"),
        layers.BatchNorm2D(name="bn"),
        layers.ReLU(),
        layers.Flatten(),
        layers.Dense(5, name="head"),
    ], seed=seed)


def test_keys_and_layouts_are_pytorchs():
    sd = _cnn_with_norm().state_dict()
    assert {k: v.shape for k, v in sd.items()} == {
        "conv.weight": (4, 3, 3, 3), "bn.weight": (4,), "bn.bias": (4,),
        "bn.running_mean": (4,), "bn.running_var": (4,), "head.weight": (5, 64),
        "head.bias": (5,)}
    reference = torch.nn.Sequential()  # the same network in torch has the same keys
    reference.add_module("conv", torch.nn.Conv2d(3, 4, 3, bias=False))
    reference.add_module("bn", torch.nn.BatchNorm2d(4))
    reference.add_module("head", torch.nn.Linear(64, 5))
    torch_keys = {k: tuple(v.shape) for k, v in reference.state_dict().items()
                  if not k.endswith("num_batches_tracked")}
    assert torch_keys == {k: v.shape for k, v in sd.items()}


def test_state_dict_round_trip_gives_the_same_predictions_and_is_a_copy():
    x = np.random.default_rng(0).standard_normal((8, 3, 6, 6)).astype(np.float32)
    a, b = _cnn_with_norm(seed=1), _cnn_with_norm(seed=2)
    a.compile("adam", "sparse_categorical_crossentropy")
    a.fit(x, np.arange(8) % 5, epochs=2, verbose=0)  # moves the running statistics too
    assert not np.allclose(a.predict(x), b.predict(x))
    sd = a.state_dict()
    assert b.load_state_dict(sd) == ([], [])
    np.testing.assert_array_equal(a.predict(x), b.predict(x))
    sd["head.bias"][:] = 100.0  # the dict holds copies
    np.testing.assert_array_equal(a.predict(x), b.predict(x))


def test_nested_models_prefix_their_name_and_shared_layers_appear_once():
    encoder = nnkern.Sequential([layers.Input((4,)), layers.Dense(3, name="proj")],
                                name="encoder")
    first, second = layers.Input((4,)), layers.Input((4,))
    head = layers.Dense(1, name="head")
    out = head(layers.Add()([encoder(first), encoder(second)]))
    pair = nnkern.Model([first, second], out)
    assert list(pair.state_dict()) == ["encoder.proj.weight", "encoder.proj.bias",
                                       "head.weight", "head.bias"]


def test_a_torch_lenet_state_dict_gives_identical_predictions():
    torch.manual_seed(0)
    net = TorchLeNet().eval()
    x, _ = _digits28()
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    model = _lenet(seed=5)
    model.load_state_dict(net.state_dict())  # torch tensors, converted without copies
    for backend in ("numpy", "cpu"):
        with nnkern.device(backend):
            got = model.predict(x)
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(got.argmax(axis=1), expected.argmax(axis=1))
    # and back: nnkern's state_dict loads into torch with strict=True
    again = TorchLeNet()
    again.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})
    with torch.no_grad():
        np.testing.assert_array_equal(again(torch.from_numpy(x)).numpy(), expected)


def test_a_torch_batch_norm_state_dict_loads_in_evaluation():
    torch.manual_seed(1)
    reference = torch.nn.Sequential()
    reference.add_module("conv", torch.nn.Conv2d(3, 4, 3, bias=False))
    reference.add_module("bn", torch.nn.BatchNorm2d(4))
    reference.add_module("relu", torch.nn.ReLU())
    reference.add_module("flat", torch.nn.Flatten())
    reference.add_module("head", torch.nn.Linear(64, 5))
    x = torch.randn(16, 3, 6, 6)
    reference.train()
    for _ in range(3):
        reference(x)  # running statistics away from their start, num_batches_tracked = 3
    reference.eval()
    model = _cnn_with_norm()
    model.load_state_dict(reference.state_dict())  # num_batches_tracked is accepted
    with torch.no_grad():
        expected = reference(x).numpy()
    np.testing.assert_allclose(model.predict(x.numpy()), expected, rtol=1e-4, atol=1e-5)


def test_missing_unexpected_and_misshaped_keys_are_named_and_nothing_is_loaded():
    model = _cnn_with_norm()
    before = model.get_weights()
    sd = _cnn_with_norm(seed=3).state_dict()
    del sd["bn.bias"]
    sd["extra.weight"] = np.zeros(2, np.float32)
    sd["head.weight"] = np.zeros((5, 63), np.float32)
    with pytest.raises(ValueError) as err:
        model.load_state_dict(sd)
    message = str(err.value)
    assert "head.weight has shape (5, 63), this model needs (5, 64)" in message
    assert "missing keys (the model has them, the state_dict not): ['bn.bias']" in message
    assert "unexpected keys (not weights of this model): ['extra.weight']" in message
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="head.weight has shape"):  # shapes even when lax
        model.load_state_dict(sd, strict=False)
    sd["head.weight"] = np.ones((5, 64), np.float32)
    result = model.load_state_dict(sd, strict=False)
    assert result.missing_keys == ["bn.bias"] and result.unexpected_keys == ["extra.weight"]
    np.testing.assert_array_equal(model.get_layer("head").params["w"], 1.0)
    with pytest.raises(ValueError, match="conv.weight contains NaN"):
        model.load_state_dict({**sd, "conv.weight": np.full((4, 3, 3, 3), np.nan)},
                              strict=False)


# --- files ---------------------------------------------------------------------------------------


def test_safetensors_round_trip_and_pytorch_reads_the_file(tmp_path):
    from safetensors.torch import load_file

    x, _ = _digits28(50)
    model = _lenet(seed=7)
    path = tmp_path / "lenet.safetensors"
    model.save_weights(path)
    fresh = _lenet(seed=8)
    meta = fresh.load_weights(path)
    assert meta["format"] == "nnkern-state-dict-1"
    np.testing.assert_array_equal(fresh.predict(x), model.predict(x))
    net = TorchLeNet()
    net.load_state_dict(load_file(path))  # the same file in torch, strict
    with torch.no_grad():
        np.testing.assert_allclose(net(torch.from_numpy(x)).numpy(), model.predict(x),
                                   rtol=1e-4, atol=1e-5)


def test_torch_weights_saved_with_safetensors_load(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(2)
    net = TorchLeNet().eval()
    path = tmp_path / "torch.safetensors"
    save_file(net.state_dict(), path)
    model = _lenet()
    model.load_weights(path)
    x, _ = _digits28(20)
    with torch.no_grad():
        np.testing.assert_allclose(model.predict(x), net(torch.from_numpy(x)).numpy(),
                                   rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["m.keras", "m.safetensors", "m.weights.h5", "m", "m.npy"])
def test_save_refuses_every_extension_but_npz(tmp_path, name):
    model = _cnn_with_norm()
    with pytest.raises(ValueError, match=r"model.save writes .npz files.*\.npz = the full "
                                         r"model.*\.safetensors = the weights alone"):
        model.save(tmp_path / name)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("name", ["m.npz", "m.h5", "m.pt", "m.weights.h5"])
def test_save_weights_refuses_every_extension_but_safetensors(tmp_path, name):
    with pytest.raises(ValueError, match=r"model.save_weights writes .safetensors files.*"
                                         r"\.npz = the full model"):
        _cnn_with_norm().save_weights(tmp_path / name)
    assert not list(tmp_path.iterdir())


def test_a_checkpoint_path_must_be_npz(tmp_path):
    with pytest.raises(ValueError, match=r"ModelCheckpoint writes .npz files, got .*ckpt.keras"):
        callbacks.ModelCheckpoint(tmp_path / "ckpt.keras")


def test_a_truncated_or_foreign_safetensors_file_is_refused_by_name(tmp_path):
    model = _cnn_with_norm()
    path = tmp_path / "w.safetensors"
    model.save_weights(path)
    blob = path.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(blob[:-7])
    with pytest.raises(ValueError, match=f"{cut} is not a readable safetensors file.*cut short"):
        model.load_weights(cut)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 5)
    with pytest.raises(ValueError, match=f"{junk} is not a readable safetensors file"):
        model.load_weights(junk)
    with pytest.raises(ValueError, match=r"w.safetensors holds weights alone.*load_weights"):
        models.load_model(path)
    with pytest.raises(FileNotFoundError):
        model.load_weights(tmp_path / "absent.safetensors")
