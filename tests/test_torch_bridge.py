"""nnkern.torch: the autograd adapters (gradcheck in float64, against torch's own ops) and the
drop-in modules (torch's arguments, Parameters and results)."""

import math

import numpy as np
import pytest

import nnkern
import nnkern.functional as F

torch = pytest.importorskip("torch")  # the bridge is optional; CI installs torch (.ci/run)
nt = pytest.importorskip("nnkern.torch")

BACKENDS = ("numpy", "cpu")


def _t(a, grad=True):
    return torch.tensor(np.asarray(a), dtype=torch.float64, requires_grad=grad)


def _spread(shape, seed):
    """Distinct values at least 0.05 apart in random order: no ties for max-pool and no value
    near a kink within gradcheck's step."""
    rng = np.random.default_rng(seed)
    n = int(np.prod(shape))
    return (rng.permutation(n) * 0.05 - n * 0.025 + 0.013).reshape(shape)


def _normal(shape, seed):
    return np.random.default_rng(seed).standard_normal(shape)


# one example per op of the table: (positional tensors, keyword arguments)
EXAMPLES = {
    "relu": lambda: ([_t(_spread((2, 3, 4), 0))], {}),
    "sigmoid": lambda: ([_t(_normal((3, 5), 1))], {}),
    "tanh": lambda: ([_t(_normal((3, 5), 2))], {}),
    "softmax": lambda: ([_t(_normal((3, 5), 3))], {"axis": 0}),
    "log_softmax": lambda: ([_t(_normal((3, 5), 4))], {"axis": -1}),
    "bias_add": lambda: ([_t(_normal((2, 3, 4, 4), 5)), _t(_normal(3, 6))], {}),
    "dropout": lambda: ([_t(_normal((4, 6), 7))], {"p": 0.3, "training": True, "seed": 11}),
    "matmul": lambda: ([_t(_normal((3, 4), 8)), _t(_normal((5, 4), 9))], {"trans_b": True}),
    "linear": lambda: ([_t(_spread((3, 4), 10)), _t(_normal((5, 4), 11)),
                        _t(_normal(5, 12))], {"activation": None}),
    "conv2d": lambda: ([_t(_normal((2, 4, 6, 5), 13)), _t(_normal((6, 2, 3, 2), 14)),
                        _t(_normal(6, 15))], {"stride": (2, 1), "padding": 1, "groups": 2}),
    "max_pool2d": lambda: ([_t(_spread((2, 2, 6, 6), 16))],
                           {"kernel_size": 3, "stride": 2, "padding": 1}),
    "avg_pool2d": lambda: ([_t(_normal((2, 2, 6, 5), 17))],
                           {"kernel_size": 2, "padding": 1, "count_include_pad": False}),
    "blur_pool2d": lambda: ([_t(_normal((2, 2, 7, 6), 18))], {"filt_size": 4, "stride": 2}),
    "max_blur_pool2d": lambda: ([_t(_spread((1, 2, 7, 7), 19))],
                                {"kernel_size": 2, "filt_size": 3, "stride": 2}),
    "batch_norm": lambda: ([_t(_normal((4, 3, 3, 3), 20)), _t(_normal(3, 21) + 2),
                            _t(_normal(3, 22)), _t(np.zeros(3), False), _t(np.ones(3), False)],
                           {"training": True}),
    "softmax_cross_entropy": lambda: ([_t(_normal((5, 4), 23)),
                                       torch.tensor([0, 3, 1, 1, 2])],
                                      {"label_smoothing": 0.1}),
    "binary_cross_entropy_with_logits": lambda: ([_t(_normal((5, 3), 24)),
                                                  _t(np.random.default_rng(25).random((5, 3)),
                                                     False)], {}),
    "mse_loss": lambda: ([_t(_normal((4, 3), 26)), _t(_normal((4, 3), 27))],
                         {"reduction": "sum"}),
    "local_response_norm": lambda: ([_t(_normal((2, 6, 3, 3), 28))],
                                    {"size": 3, "alpha": 1.0, "beta": 0.75, "k": 2.0}),
}


def test_every_op_of_the_table_has_an_adapter_and_an_example():
    from nnkern.autograd.rules import TABLE

    present = {name for name in TABLE if hasattr(F, name)}
    assert set(nt.FUNCTIONS) == present
    assert set(EXAMPLES) == present  # a new op of the table needs a gradcheck below


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_gradcheck_of_each_adapter_float64(name, backend):
    tensors, kwargs = EXAMPLES[name]()
    op = nt.OPS[name]
    with nnkern.device(backend):
        assert torch.autograd.gradcheck(lambda *ts: op(*ts, **kwargs), tensors, eps=1e-6,
                                        atol=1e-7, rtol=1e-5)


# the same ops by torch's own functions (an independent oracle for the forward values)
TORCH_SAME = {
    "relu": lambda x: torch.relu(x),
    "softmax": lambda x: torch.softmax(x, 0),
    "log_softmax": lambda x: torch.log_softmax(x, -1),
    "matmul": lambda a, b: a @ b.T,
    "linear": lambda x, w, b: torch.nn.functional.linear(x, w, b),
    "conv2d": lambda x, w, b: torch.nn.functional.conv2d(x, w, b, (2, 1), 1, 1, 2),
    "max_pool2d": lambda x: torch.nn.functional.max_pool2d(x, 3, 2, 1),
    "avg_pool2d": lambda x: torch.nn.functional.avg_pool2d(x, 2, padding=1,
                                                           count_include_pad=False),
    "softmax_cross_entropy": lambda x, y: torch.nn.functional.cross_entropy(
        x, y, label_smoothing=0.1),
    "binary_cross_entropy_with_logits": lambda x, t: (
        torch.nn.functional.binary_cross_entropy_with_logits(x, t)),
    "mse_loss": lambda a, b: torch.nn.functional.mse_loss(a, b, reduction="sum"),
    "local_response_norm": lambda x: torch.nn.functional.local_response_norm(x, 3, 1.0, 0.75,
                                                                             2.0),
}


@pytest.mark.parametrize("name", sorted(TORCH_SAME))
def test_adapters_match_torch_values_and_gradients(name):
    tensors, kwargs = EXAMPLES[name]()
    ours = nt.OPS[name](*tensors, **kwargs)
    ours.sum().backward()
    mine = [t.grad.clone() if t.requires_grad else None for t in tensors]
    for t in tensors:
        t.grad = None
    theirs = TORCH_SAME[name](*tensors)
    theirs.sum().backward()
    torch.testing.assert_close(ours, theirs.detach(), rtol=1e-10, atol=1e-12)
    for m, t in zip(mine, tensors):
        if m is not None:
            torch.testing.assert_close(m, t.grad, rtol=1e-10, atol=1e-12)


def test_gradients_of_a_shared_input_accumulate_and_survive_retain_graph():
    x = _t(_spread((2, 3), 30))
    y = nt.relu(x) * 2 + nt.tanh(x)          # x used by two adapters
    y.sum().backward(retain_graph=True)
    first = x.grad.clone()
    y.sum().backward()                        # the same nnkern tapes a second time
    expected = (x.detach() > 0).double() * 2 + 1 - torch.tanh(x.detach()) ** 2
    torch.testing.assert_close(first, expected)
    torch.testing.assert_close(x.grad, 2 * expected)


def test_an_input_changed_in_place_before_backward_raises_torchs_error():
    x = _t(_normal((2, 3), 31))
    h = x * 1
    z = nt.sigmoid(h)
    with torch.no_grad():
        h.add_(1)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        z.sum().backward()


def test_a_non_differentiable_input_that_requires_grad_is_refused():
    logits = _t(_normal((4, 3), 32))
    targets = _t(np.full((4, 3), 0.5))        # requires grad, but nnkern gives none for it
    with pytest.raises(ValueError, match=r"targets requires grad.*\('logits',\)"):
        nt.binary_cross_entropy_with_logits(logits, targets)


# --- modules ------------------------------------------------------------------------------------


def _copy_params(src, dst):
    dst.load_state_dict(src.state_dict())
    return dst


def _compare_modules(ours, theirs, x, *extra):
    x1 = x.clone().requires_grad_(True)
    x2 = x.clone().requires_grad_(True)
    y1, y2 = ours(x1, *extra), theirs(x2, *extra)
    torch.testing.assert_close(y1, y2, rtol=1e-4, atol=1e-5)
    w = torch.randn_like(y1)
    (y1 * w).sum().backward()
    (y2 * w).sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-4, atol=1e-5)
    if not isinstance(theirs, torch.nn.Module):
        return
    for (n1, p1), (n2, p2) in zip(ours.named_parameters(), theirs.named_parameters()):
        assert n1 == n2
        torch.testing.assert_close(p1.grad, p2.grad, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("args,kwargs", [
    ((3, 8, 3), {}),
    ((3, 8, (3, 2)), {"stride": 2, "padding": 1, "bias": False}),
    ((4, 6, 3), {"padding": "same", "dilation": 2, "groups": 2}),
])
def test_conv2d_module_is_torchs_with_nnkern_kernels(args, kwargs):
    torch.manual_seed(0)
    ours = nt.Conv2d(*args, **kwargs)
    assert isinstance(ours, torch.nn.Conv2d)
    assert all(isinstance(p, torch.nn.Parameter) for p in ours.parameters())
    theirs = _copy_params(ours, torch.nn.Conv2d(*args, **kwargs))
    _compare_modules(ours, theirs, torch.randn(2, args[0], 9, 8))


def test_linear_module_takes_any_leading_shape():
    torch.manual_seed(1)
    ours = nt.Linear(6, 4)
    assert list(ours.state_dict()) == ["weight", "bias"]
    theirs = _copy_params(ours, torch.nn.Linear(6, 4))
    _compare_modules(ours, theirs, torch.randn(2, 3, 6))


@pytest.mark.parametrize("cls,kwargs", [
    ("MaxPool2d", {"kernel_size": 2}),
    ("MaxPool2d", {"kernel_size": 3, "stride": 2, "padding": 1}),
    ("AvgPool2d", {"kernel_size": 3, "stride": 2, "padding": 1, "count_include_pad": False}),
    ("AvgPool2d", {"kernel_size": 2}),
])
def test_pool_modules_are_torchs(cls, kwargs):
    x = torch.tensor(_spread((2, 3, 9, 8), 40), dtype=torch.float32)
    _compare_modules(getattr(nt, cls)(**kwargs), getattr(torch.nn, cls)(**kwargs), x)


def test_max_pool_indices_are_torchs():
    x = torch.tensor(_spread((2, 3, 8, 8), 41), dtype=torch.float32)
    y1, i1 = nt.MaxPool2d(2, return_indices=True)(x)
    y2, i2 = torch.nn.MaxPool2d(2, return_indices=True)(x)
    torch.testing.assert_close(y1, y2)
    assert torch.equal(i1, i2)


def _torch_blur(channels, filt_size, stride):
    """antialiased-cnns' BlurPool written with torch ops: reflect pad, binomial taps,
    depthwise strided conv."""
    taps = np.array([math.comb(filt_size - 1, k) for k in range(filt_size)], np.float64)
    filt = np.outer(taps, taps)
    filt = torch.tensor(filt / filt.sum(), dtype=torch.float32)
    weight = filt[None, None].repeat(channels, 1, 1, 1)
    lo, hi = (filt_size - 1) // 2, math.ceil((filt_size - 1) / 2)

    def blur(x):
        x = torch.nn.functional.pad(x, (lo, hi, lo, hi), mode="reflect")
        return torch.nn.functional.conv2d(x, weight, stride=stride, groups=channels)

    return blur


@pytest.mark.parametrize("filt_size", [3, 4])
def test_blur_pool_modules_follow_antialiased_cnns(filt_size):
    x = torch.randn(2, 5, 9, 10)
    blur = _torch_blur(5, filt_size, 2)
    _compare_modules(nt.BlurPool2d(5, filt_size=filt_size), blur, x)
    x = torch.tensor(_spread((2, 5, 9, 10), 42), dtype=torch.float32)
    _compare_modules(nt.MaxBlurPool2d(5, kernel_size=2, filt_size=filt_size),
                     lambda t: blur(torch.nn.functional.max_pool2d(t, 2, 1)), x)


def test_cross_entropy_module_is_torchs():
    logits = torch.randn(7, 5)
    labels = torch.tensor([0, 4, 2, 2, 1, 3, 0])
    for kwargs in ({}, {"reduction": "sum", "label_smoothing": 0.2}, {"reduction": "none"}):
        _compare_modules(nt.CrossEntropyLoss(**kwargs), torch.nn.CrossEntropyLoss(**kwargs),
                         logits, labels)


@pytest.mark.parametrize("make,match", [
    (lambda: nt.Conv2d(1, 2, 3, padding_mode="reflect"), "padding_mode='zeros'"),
    (lambda: nt.MaxPool2d(2, dilation=2), "dilation=1"),
    (lambda: nt.MaxPool2d(2, ceil_mode=True), "ceil_mode=False"),
    (lambda: nt.AvgPool2d(2, divisor_override=3), "divisor_override=None"),
    (lambda: nt.CrossEntropyLoss(weight=torch.ones(3)), "weight=None"),
    (lambda: nt.CrossEntropyLoss(ignore_index=0), "ignore_index=-100"),
    (lambda: nt.BlurPool2d(4, pad_type="zero"), "pad_type='reflect'"),
])
def test_arguments_without_an_nnkern_kernel_are_refused(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_blur_pool_checks_its_channels():
    with pytest.raises(ValueError, match=r"BlurPool2d\(4\) takes \(N, 4, H, W\).*\(1, 3, 8, 8\)"):
        nt.BlurPool2d(4)(torch.zeros(1, 3, 8, 8))


def test_the_torch_lenet_example_trains_like_pure_torch():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "examples" / "torch_lenet.py"
    spec = importlib.util.spec_from_file_location("example_torch_lenet", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    out = example.main(num_epochs=2, verbose=False)
    (torch_acc, torch_ms), (ours_acc, ours_ms) = (out["results"]["pure torch"],
                                                  out["results"]["torch + nnkern.torch"])
    assert torch_acc > 0.75  # two epochs of LeNet-5 on the digits
    assert abs(ours_acc - torch_acc) <= 0.02  # same start, same batches, same math
    assert out["same"] == out["n_test"]  # the weights predict alike in nnkern's Sequential
    assert torch_ms > 0 and ours_ms > 0
