"""Optimizer updates (family 'optim') on every backend against the NumPy reference,
trajectories over several steps (against torch.optim when it imports), lists of
arrays, and validation errors."""

import numpy as np
import pytest
from harness import BACKENDS, DTYPES, assert_close, check_op

import nnkern
import nnkern.functional as F
from nnkern.device import to_device, to_numpy

SGD_CASES = [
    {"lr": 0.1},
    {"lr": 0.05, "momentum": 0.9},
    {"lr": 0.05, "momentum": 0.9, "weight_decay": 1e-2},
    {"lr": 0.05, "momentum": 0.8, "weight_decay": 1e-2, "nesterov": True},
]
ADAM_CASES = [
    {"step": 1, "lr": 1e-3},
    {"step": 7, "lr": 1e-2, "beta1": 0.8, "beta2": 0.99, "eps": 1e-6},
    {"step": 3, "lr": 1e-3, "weight_decay": 0.1},
]


def _shape(backend):
    # the simulator runs one Python thread per GPU thread: keep cuda tiny
    return (3, 37) if backend == "cuda" else (37, 1031)  # host: above PARALLEL_MIN


def _state(shape, count, seed=1):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape) for _ in range(count)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kwargs", SGD_CASES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_sgd_step_matches_reference(backend, kwargs, dtype):
    check_op("sgd_step", _state(_shape(backend), 3), backend, dtype, kwargs, backward=False)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kwargs", ADAM_CASES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_adam_step_matches_reference(backend, kwargs, dtype):
    p, g, m, v = _state(_shape(backend), 4)
    check_op("adam_step", [p, g, m, np.abs(v)], backend, dtype, kwargs, backward=False)


def _trajectory(backend, dtype, op, kwargs, shape, steps=5):
    """Run ``steps`` updates with fresh gradients; return the final params and state."""
    rng = np.random.default_rng(7)
    p0 = rng.standard_normal(shape)
    grads = [rng.standard_normal(shape) for _ in range(steps)]
    n_state = 1 if op == "sgd_step" else 2
    with nnkern.device(backend):
        p = to_device(p0.astype(dtype), backend)
        state = [to_device(np.zeros(shape, dtype), backend) for _ in range(n_state)]
        for t, g in enumerate(grads, start=1):
            extra = {"step": t} if op == "adam_step" else {}
            getattr(F, op)(p, to_device(g.astype(dtype), backend), *state, **kwargs, **extra)
    return [to_numpy(a) for a in [p, *state]]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op,kwargs", [("sgd_step", SGD_CASES[3]),
                                       ("adam_step", {"lr": 1e-2, "weight_decay": 0.01})])
@pytest.mark.parametrize("backend", BACKENDS)
def test_trajectory_matches_reference(backend, op, kwargs, dtype):
    shape = _shape(backend)
    expected = _trajectory("numpy", np.float64, op, kwargs, shape)
    got = _trajectory(backend, dtype, op, kwargs, shape)
    for i, (a, e) in enumerate(zip(got, expected)):
        assert_close(a, e, dtype, f"{op}[{backend}] after 5 steps, array {i}")



@pytest.mark.parametrize("n", [1000, 1 << 17])  # the serial loop and the parallel one
@pytest.mark.parametrize("dtype", DTYPES)
def test_adam_cpu_stores_subnormal_moments_as_zero(n, dtype):
    # weights whose gradient stays 0: m and v decay below the smallest normal number.
    # The CPU kernel stores those moments as 0 (a subnormal operand costs a microcode
    # assist on every later step); everything else matches the float64 reference.
    tiny = float(np.finfo(dtype).tiny)
    rng = np.random.default_rng(3)
    p = rng.standard_normal(n)
    g = np.where(np.arange(n) % 3 == 0, rng.standard_normal(n), 0.0)
    m = np.full(n, 1.05 * tiny)  # beta1 * m crosses below tiny
    m[1::3] = 40 * tiny          # stays normal
    v = np.full(n, 1.0005 * tiny)  # beta2 * v crosses below tiny
    v[2::3] = 1e-6
    m[4], v[4] = np.nan, np.nan    # NaN is kept, never flushed
    kwargs = {"step": 900, "lr": 1e-3}
    with nnkern.device("numpy"):
        want = [a.copy() for a in (p, g, m, v)]
        F.adam_step(*want, **kwargs)
    got = [a.astype(dtype) for a in (p, g, m, v)]
    with nnkern.device("cpu"):
        F.adam_step(*got, **kwargs)
    for name, a, e in (("m", got[2], want[2]), ("v", got[3], want[3])):
        small = np.abs(e) < tiny
        assert small.sum() > n // 4, f"the case must make subnormal {name}"
        assert (a[small] == 0).all(), f"{name} below the normal range must be stored as 0"
        normal = ~small & ~np.isnan(e)
        assert_close(a[normal], e[normal], dtype, f"adam {name} in the normal range")
        assert np.isnan(a[4]), f"a NaN {name} must stay NaN"
    assert_close(np.delete(got[0], 4), np.delete(want[0], 4), dtype, "adam params")


@pytest.mark.parametrize("backend", BACKENDS)
def test_lists_equal_one_call_per_array(backend):
    shapes = [(4, 3), (5,), (2, 1, 3)]
    with nnkern.device(backend):
        arrays = [[to_device(a, backend) for a in _state(s, 4, seed=i)]
                  for i, s in enumerate(shapes)]
        for a in arrays:
            a[3] = abs(a[3])
        singles = [tuple(x.copy() for x in a) for a in arrays]
        p, m, v = F.adam_step(*[[a[k] for a in arrays] for k in range(4)], step=2, lr=0.1)
        assert isinstance(p, list) and len(p) == 3
        for i, (ps, gs, ms, vs) in enumerate(singles):
            F.adam_step(ps, gs, ms, vs, step=2, lr=0.1)
            for got, want in zip((p[i], m[i], v[i]), (ps, ms, vs)):
                np.testing.assert_array_equal(to_numpy(got), to_numpy(want))
        # the returned arrays are the caller's own, updated in place
        assert p[0] is arrays[0][0]


def test_cuda_grid_stride_loop(monkeypatch):
    # fewer threads than elements: each thread updates several (the path large buffers take)
    import nnkern.kernels.optim.cuda as K

    monkeypatch.setattr(K, "MAX_BLOCKS", 2)
    p, g, m, v = _state((5, 29), 4)
    check_op("adam_step", [p, g, m, np.abs(v)], "cuda", np.float64, ADAM_CASES[1], backward=False)


@pytest.mark.parametrize("backend", BACKENDS)
def test_sgd_without_momentum_needs_no_buffer(backend):
    with nnkern.device(backend):
        p, g = (nnkern.to_device(a) for a in _state((4, 5), 2))
        expected = nnkern.to_numpy(p) - 0.1 * nnkern.to_numpy(g)
        out, buf = F.sgd_step(p, g, None, lr=0.1)
        assert buf is None and out is p
        np.testing.assert_allclose(nnkern.to_numpy(p), expected)


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "cuda"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op,kwargs", [
    ("sgd_step", {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.01}),
    ("sgd_step", {"lr": 0.05, "momentum": 0.9, "nesterov": True}),
    ("adam_step", {"lr": 1e-2, "beta1": 0.85, "beta2": 0.99, "weight_decay": 0.01}),
])
def test_trajectory_matches_torch(backend, dtype, op, kwargs):
    torch = pytest.importorskip("torch")
    shape = (17, 9)
    got = _trajectory(backend, dtype, op, kwargs, shape)
    rng = np.random.default_rng(7)
    p = torch.tensor(rng.standard_normal(shape).astype(dtype), requires_grad=True)
    if op == "sgd_step":
        opt = torch.optim.SGD([p], **kwargs)
    else:
        kw = dict(kwargs)
        kw["betas"] = (kw.pop("beta1"), kw.pop("beta2"))
        opt = torch.optim.Adam([p], **kw)
    for _ in range(5):
        p.grad = torch.tensor(rng.standard_normal(shape).astype(dtype))
        opt.step()
    assert_close(got[0], p.detach().numpy(), dtype, f"{op} vs torch.optim")


def test_errors():
    p, g, v = _state((3, 4), 3)
    with pytest.raises(ValueError, match=r"lr must be a number in \[0.0, inf\), got -0.1"):
        F.sgd_step(p, g, v, lr=-0.1)
    with pytest.raises(ValueError, match=r"momentum must be a number in \[0.0, inf\), got -1"):
        F.sgd_step(p, g, v, lr=0.1, momentum=-1)
    with pytest.raises(ValueError, match=r"nesterov=True requires momentum > 0"):
        F.sgd_step(p, g, v, lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match=r"velocities must be arrays like params"):
        F.sgd_step(p, g, None, lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match=r"grads must have shape \(3, 4\), got \(4, 3\)"):
        F.sgd_step(p, g.T.copy(), v, lr=0.1)
    with pytest.raises(TypeError, match=r"velocities has dtype float32 but params has float64"):
        F.sgd_step(p, g, v.astype(np.float32), lr=0.1)
    with pytest.raises(ValueError, match=r"grads must hold as many arrays as params \(2\), got 1"):
        F.sgd_step([p, p.copy()], [g], [v, v.copy()], lr=0.1)
    with pytest.raises(TypeError, match=r"both be arrays or both be lists"):
        F.sgd_step(p, [g], v, lr=0.1)
    with pytest.raises(ValueError, match=r"params must be C-contiguous"):
        F.sgd_step(p.T, g.T, v.T.copy(), lr=0.1)
    with pytest.raises(TypeError, match=r"grads\[1\] must be float32 or float64, got dtype int64"):
        F.sgd_step([p, p.copy()], [g, g.astype(np.int64)], [v, v.copy()], lr=0.1)
    with pytest.raises(ValueError, match=r"beta1 must be a number in \[0.0, 1.0\), got 1.0"):
        F.adam_step(p, g, v, v.copy(), step=1, lr=1e-3, beta1=1.0)
    with pytest.raises(ValueError, match=r"beta2 must be a number in \[0.0, 1.0\), got -0.5"):
        F.adam_step(p, g, v, v.copy(), step=1, lr=1e-3, beta2=-0.5)
    with pytest.raises(ValueError, match=r"step must be an int >= 1 .* got 0"):
        F.adam_step(p, g, v, v.copy(), step=0, lr=1e-3)
    with pytest.raises(ValueError, match=r"eps must be a number in \[0.0, inf\), got -1e-08"):
        F.adam_step(p, g, v, v.copy(), step=1, lr=1e-3, eps=-1e-8)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op,kwargs", [("sgd_step", SGD_CASES[3]), ("adam_step", ADAM_CASES[2])])
def test_cuda_real_shapes(op, kwargs, dtype):
    n_state = 3 if op == "sgd_step" else 4
    inputs = _state((1_000_003,), n_state)
    if op == "adam_step":
        inputs[3] = np.abs(inputs[3])
    check_op(op, inputs, "cuda", dtype, kwargs, backward=False)
