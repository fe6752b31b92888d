"""Bad input gets a clear error that names the argument, never a wrong answer or an
internal error (issue 12).

First the issue's own cases (items 1, 8, 9), then the table: for every public op of
``nnkern.functional``, generated from its signature, every argument is replaced in
turn by each bad kind that applies to it (wrong type, dtype, ndim/shape, device,
out-of-range and huge ints, NaN/inf where refused, read-only state), and the op must
raise TypeError or ValueError with the argument's name in the message.
"""

import numpy as np
import pytest

import nnkern
import nnkern.functional as F
from nnkern.device import to_device, to_numpy

HOST = ["numpy", "cpu"]
BACKENDS = [*HOST, "cuda"]     # cuda: the simulator (host arrays are its arrays)


# --- item 1: max_pool2d_backward with indices from elsewhere ------------------------------


@pytest.mark.parametrize("backend", ["numpy", "cpu", "cuda"])
@pytest.mark.parametrize("bad", [-1, 16, 2**40, "other window"])
def test_max_pool_backward_refuses_indices_outside_their_window(backend, bad):
    # the case: -1 gave zeros on cpu/cuda and a gradient elsewhere on numpy
    g = np.ones((1, 1, 2, 2))
    x = np.random.default_rng(0).random((1, 1, 4, 4))
    with nnkern.device("numpy"):
        _, good = F.max_pool2d(x, 2, return_indices=True)
    indices = np.array(good)                        # a copy: not the forward's own array
    if bad == "other window":
        indices[0, 0, 0, 0] = indices[0, 0, 1, 1]   # in range, but another window's cell
    else:
        indices[0, 0, 1, 0] = bad
    with nnkern.device(backend):
        with pytest.raises(ValueError, match="indices must be flat positions .* window"):
            F.max_pool2d_backward(to_device(g), to_device(x), 2, indices=to_device(indices))
        # the same indices, unchanged, are accepted and give the recomputed argmax's answer
        dx = F.max_pool2d_backward(to_device(g), to_device(x), 2, indices=to_device(good))
        expected = F.max_pool2d_backward(to_device(g), to_device(x), 2)
    np.testing.assert_array_equal(to_numpy(dx), to_numpy(expected))


@pytest.mark.parametrize("backend", HOST)
def test_issued_indices_are_read_only_and_skip_the_check(backend, monkeypatch):
    from nnkern.functional import pool
    x = np.random.default_rng(1).random((2, 3, 6, 6))
    with nnkern.device(backend):
        _, idx = F.max_pool2d(x, 2, return_indices=True)
        assert not idx.flags.writeable
        with pytest.raises(ValueError, match="read-only"):
            idx[0, 0, 0, 0] = -1
        checked = []
        monkeypatch.setattr(pool, "_check_indices", lambda *a: checked.append(a))
        F.max_pool2d_backward(np.ones((2, 3, 3, 3)), x, 2, indices=idx)
        assert checked == []                        # the forward's own: trusted
        F.max_pool2d_backward(np.ones((2, 3, 3, 3)), x, 2, indices=idx.copy())
        assert len(checked) == 1                    # anyone else's: checked
        idx.flags.writeable = True                  # made writable again: checked again
        F.max_pool2d_backward(np.ones((2, 3, 3, 3)), x, 2, indices=idx)
        assert len(checked) == 2


# --- item 8: read-only arrays an op writes into -------------------------------------------


def _read_only(*shape):
    a = np.zeros(shape)
    a.flags.writeable = False
    return a


@pytest.mark.parametrize("backend", HOST)
@pytest.mark.parametrize("name,call", [
    ("params", lambda ro: F.sgd_step(ro, np.ones(3), np.zeros(3), lr=0.1, momentum=0.9)),
    ("velocities", lambda ro: F.sgd_step(np.ones(3), np.ones(3), ro, lr=0.1, momentum=0.9)),
    ("params", lambda ro: F.sgd_step(ro, np.ones(3), None, lr=0.1)),
    ("params", lambda ro: F.adam_step(ro, np.ones(3), np.zeros(3), np.zeros(3), 1, 0.1)),
    ("m", lambda ro: F.adam_step(np.ones(3), np.ones(3), ro, np.zeros(3), 1, 0.1)),
    ("v", lambda ro: F.adam_step(np.ones(3), np.ones(3), np.zeros(3), ro, 1, 0.1)),
    ("params[1]", lambda ro: F.sgd_step([np.ones(2), ro], [np.ones(2), np.ones(3)],
                                        [np.zeros(2), np.zeros(3)], lr=0.1, momentum=0.5)),
    ("running_mean", lambda ro: F.batch_norm(np.ones((4, 3)), None, None, ro, np.ones(3))),
    ("running_var", lambda ro: F.batch_norm(np.ones((4, 3)), None, None, np.zeros(3), ro)),
])
def test_read_only_state_is_named(backend, name, call):
    # cpu gave a Numba TypingError page, numpy a message naming no array
    with nnkern.device(backend), pytest.raises(ValueError, match=rf"{name.replace('[', '.')}"
                                               r" is read-only"):
        call(_read_only(3))


@pytest.mark.parametrize("backend", HOST)
@pytest.mark.parametrize("shape", [(6, 3), (2, 3, 2, 2)])      # both CPU kernels
def test_batch_norm_eval_reads_read_only_statistics(backend, shape):
    # a valid call (eval only reads them) that failed to compile on cpu
    rng = np.random.default_rng(2)
    x, g = rng.standard_normal(shape), rng.standard_normal(shape)
    rm, rv = rng.standard_normal(3), rng.uniform(0.5, 2, 3)
    with nnkern.device("numpy"):
        y_ref = F.batch_norm(x, None, None, rm.copy(), rv.copy(), training=False)
        dx_ref = F.batch_norm_backward(g, x, None, None, rm, rv, training=False)[0]
    rm.flags.writeable = rv.flags.writeable = False
    with nnkern.device(backend):
        y = F.batch_norm(x, None, None, rm, rv, training=False)
        dx = F.batch_norm_backward(g, x, None, None, rm, rv, training=False)[0]
        F.batch_norm_backward(g, x, None, None, rm, rv, training=True)  # reads nothing
    np.testing.assert_allclose(y, y_ref, rtol=1e-12)
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-12)


# --- item 9: huge ints ----------------------------------------------------------------------


@pytest.mark.parametrize("backend", HOST)
@pytest.mark.parametrize("value", [2**31, 2**62, 2**63, 2**100])
@pytest.mark.parametrize("name", ["stride", "padding", "dilation"])
def test_huge_ints_are_refused_by_name(backend, name, value):
    # 2^63 gave OverflowError (Python int too large to convert to C long), 2^62 NumPy's
    # "Maximum allowed dimension exceeded"
    x, w = np.ones((1, 1, 5, 5)), np.ones((1, 1, 3, 3))
    with nnkern.device(backend), pytest.raises(ValueError, match=rf"{name} must be <= "):
        F.conv2d(x, w, **{name: value})
    with nnkern.device(backend), pytest.raises(ValueError, match=name):
        F.conv2d_output_shape(x.shape, w.shape, **{name: value})


# --- the table: every public op, every argument, every bad kind -----------------------------

def _family(op):
    # F's ops keep the module of their family (nnkern.functional.<family>) through F's wrapper
    return getattr(F, op).__module__.rsplit(".", 1)[1]


# every public op of F, by family: a new family or op joins the tables by itself (and fails
# them until VALID and KIND say how to call it)
FAMILIES = sorted({_family(op) for op in F.__all__})


def _ops(family):
    return [op for op in F.__all__ if _family(op) == family]


def _a(*shape, seed=0):
    """A float64 array of the shape, values in [0.5, 1.5) (no ties, no kinks, no zeros)."""
    return np.random.default_rng(seed).uniform(0.5, 1.5, shape)


class FakeGpuArray:
    """What a CuPy array shows the checks (``__cuda_array_interface__``), without a GPU."""

    def __init__(self, like):
        self.shape, self.dtype, self.ndim, self.size = like.shape, like.dtype, like.ndim, like.size
        self.device = 0
        self.flags = like.flags
        self.__cuda_array_interface__ = {"shape": like.shape, "typestr": like.dtype.str,
                                         "data": (0, False), "version": 3}


def _indices():
    with nnkern.device("numpy"):
        return F.max_pool2d(_a(1, 2, 4, 4), 2, return_indices=True)[1]


# One valid call per op, every argument by name. Shapes: N=2 C=3 (images 5x5 or 4x4).
X4, W4 = _a(2, 3, 5, 5), _a(4, 3, 3, 3, seed=1)
VALID = {
    "conv2d": {"x": X4, "w": W4, "b": _a(4), "stride": 1, "padding": 1, "dilation": 1,
               "groups": 1, "algo": "auto"},
    "conv2d_backward": {"g": _a(2, 4, 5, 5), "x": X4, "w": W4, "b": _a(4), "stride": 1,
                        "padding": 1, "dilation": 1, "groups": 1, "algo": "auto",
                        "input_grad": True},
    "conv2d_output_shape": {"x_shape": (2, 3, 5, 5), "w_shape": (4, 3, 3, 3), "stride": 1,
                            "padding": 1, "dilation": 1},
    "relu": {"x": _a(2, 3)},
    "relu_backward": {"grad_out": _a(2, 3), "x": _a(2, 3)},
    "sigmoid": {"x": _a(2, 3)},
    "sigmoid_backward": {"grad_out": _a(2, 3), "x": _a(2, 3), "out": _a(2, 3)},
    "tanh": {"x": _a(2, 3)},
    "tanh_backward": {"grad_out": _a(2, 3), "x": _a(2, 3), "out": _a(2, 3)},
    "softmax": {"x": _a(2, 3), "axis": -1},
    "softmax_backward": {"grad_out": _a(2, 3), "x": _a(2, 3), "axis": 1, "out": _a(2, 3)},
    "log_softmax": {"x": _a(2, 3), "axis": 0},
    "log_softmax_backward": {"grad_out": _a(2, 3), "x": _a(2, 3), "axis": -2,
                             "out": _a(2, 3)},
    "bias_add": {"x": X4, "b": _a(3)},
    "bias_add_backward": {"grad_out": X4, "x": X4, "b": _a(3)},
    "dropout": {"x": _a(2, 3), "p": 0.5, "training": True, "seed": 3},
    "dropout_backward": {"grad_out": _a(2, 3), "x": _a(2, 3), "p": 0.5, "training": True,
                         "seed": 3},
    "matmul": {"a": _a(2, 3), "b": _a(3, 4), "trans_a": False, "trans_b": False},
    "matmul_backward": {"g": _a(2, 4), "a": _a(2, 3), "b": _a(3, 4), "trans_a": False,
                        "trans_b": False},
    "linear": {"x": _a(2, 3), "w": _a(4, 3), "b": _a(4), "activation": "relu"},
    "linear_backward": {"g": _a(2, 4), "x": _a(2, 3), "w": _a(4, 3), "b": _a(4),
                        "activation": "relu", "out": _a(2, 4), "input_grad": True,
                        "grad_w": _a(4, 3), "grad_b": _a(4), "add_w": True, "add_b": False},
    "batch_norm": {"x": X4, "gamma": _a(3), "beta": _a(3), "running_mean": _a(3),
                   "running_var": _a(3), "training": True, "momentum": 0.1, "eps": 1e-5},
    "batch_norm_backward": {"grad_out": X4, "x": X4, "gamma": _a(3), "beta": _a(3),
                            "running_mean": _a(3), "running_var": _a(3), "training": True,
                            "momentum": 0.1, "eps": 1e-5},
    "sgd_step": {"params": _a(5), "grads": _a(5), "velocities": _a(5), "lr": 0.1,
                 "momentum": 0.9, "weight_decay": 0.01, "nesterov": True},
    "adam_step": {"params": _a(5), "grads": _a(5), "m": _a(5), "v": _a(5), "step": 3,
                  "lr": 0.01, "beta1": 0.9, "beta2": 0.99, "eps": 1e-8, "weight_decay": 0.0},
    "max_pool2d": {"x": _a(1, 2, 4, 4), "kernel_size": 2, "stride": 2, "padding": 1,
                   "return_indices": True},
    "max_pool2d_backward": {"grad_out": _a(1, 2, 2, 2), "x": _a(1, 2, 4, 4), "kernel_size": 2,
                            "stride": 2, "padding": 0, "return_indices": False,
                            "indices": _indices()},
    "avg_pool2d": {"x": X4, "kernel_size": 3, "stride": 2, "padding": 1,
                   "count_include_pad": False},
    "avg_pool2d_backward": {"grad_out": _a(2, 3, 3, 3), "x": X4, "kernel_size": 3, "stride": 2,
                            "padding": 1, "count_include_pad": True},
    "blur_pool2d": {"x": X4, "filt_size": 3, "stride": 2},
    "blur_pool2d_backward": {"grad_out": _a(2, 3, 3, 3), "x": X4, "filt_size": 3, "stride": 2},
    "max_blur_pool2d": {"x": X4, "kernel_size": 2, "filt_size": 3, "stride": 2},
    "max_blur_pool2d_backward": {"grad_out": _a(2, 3, 2, 2), "x": X4, "kernel_size": 2,
                                 "filt_size": 3, "stride": 2},
    "pool2d_output_shape": {"op": "max_pool2d", "x_shape": (2, 3, 5, 5), "kernel_size": 2},
    "softmax_cross_entropy": {"logits": _a(3, 4), "labels": np.array([0, 3, 1]),
                              "reduction": "mean", "label_smoothing": 0.1},
    "softmax_cross_entropy_backward": {"grad_out": np.array(1.0), "logits": _a(3, 4),
                                       "labels": np.array([0, 3, 1]), "reduction": "sum",
                                       "label_smoothing": 0.0},
    "softmax_cross_entropy_with_grad": {"logits": _a(3, 4), "labels": np.array([2, 0, 1]),
                                        "reduction": "none", "label_smoothing": 0.2},
    "binary_cross_entropy_with_logits": {"logits": _a(3, 4), "targets": _a(3, 4, seed=1),
                                         "reduction": "mean"},
    "binary_cross_entropy_with_logits_backward": {"grad_out": _a(3, 4), "logits": _a(3, 4),
                                                  "targets": _a(3, 4, seed=1),
                                                  "reduction": "none"},
    "mse_loss": {"pred": _a(3, 4), "target": _a(3, 4, seed=1), "reduction": "sum"},
    "mse_loss_backward": {"grad_out": np.array(2.0), "pred": _a(3, 4),
                          "target": _a(3, 4, seed=1), "reduction": "mean"},
    "local_response_norm": {"x": X4, "size": 3, "alpha": 1e-4, "beta": 0.75, "k": 1.0},
    "local_response_norm_backward": {"grad_out": X4, "x": X4, "size": 3, "alpha": 1e-4,
                                     "beta": 0.75, "k": 1.0},
}

# The kind of each argument, by name; (op, name) where one name means different things.
KIND = {
    "x": "array_nd", "w": "array_nd", "a": "array_nd", "logits": "array_nd",
    "pred": "array", "targets": "array_dep", "target": "array_dep",
    "grad_out": "array_dep", "g": "array_dep", "b": "array_dep", "out": "array_dep",
    "gamma": "array_dep", "beta": "array_dep", "running_mean": "state",
    "running_var": "state", "params": "state", "grads": "array_dep", "m": "state",
    "v": "state", "velocities": "state",
    "labels": "labels", "indices": "indices",
    "kernel_size": "size", "stride": "size", "dilation": "size", "padding": "padding",
    "groups": "count", "filt_size": "count", "step": "count", "axis": "axis", "seed": "seed",
    "p": "unit", "beta1": "unit", "beta2": "unit", "label_smoothing": "unit",
    "lr": "nonneg", "weight_decay": "nonneg", "eps": "nonneg",
    "training": "flag", "trans_a": "flag", "trans_b": "flag", "return_indices": "flag",
    "input_grad": "flag",
    "count_include_pad": "flag", "nesterov": "flag",
    "reduction": "choice", "algo": "choice", "activation": "choice", "op": "choice",
    "x_shape": "shape", "w_shape": "shape",
    "size": "count", "alpha": "nonneg", "k": "nonneg",
}
KIND_OVERRIDES = {
    ("matmul", "b"): "array_nd", ("matmul_backward", "b"): "array_nd",
    ("batch_norm", "momentum"): "unit", ("batch_norm_backward", "momentum"): "unit",
    ("sgd_step", "momentum"): "nonneg",
    ("relu", "x"): "array", ("sigmoid", "x"): "array", ("tanh", "x"): "array",
    ("relu_backward", "x"): "array", ("sigmoid_backward", "x"): "array",
    ("tanh_backward", "x"): "array", ("dropout", "x"): "array",
    ("dropout_backward", "x"): "array", ("softmax", "x"): "array",
    ("log_softmax", "x"): "array", ("softmax_backward", "x"): "array",
    ("log_softmax_backward", "x"): "array",
    ("binary_cross_entropy_with_logits", "logits"): "array",
    ("binary_cross_entropy_with_logits_backward", "logits"): "array",
    ("softmax_cross_entropy_backward", "grad_out"): "loss_grad",
    ("mse_loss_backward", "grad_out"): "loss_grad",
    # batch norm's backward never writes the running statistics: read-only ones are valid
    ("batch_norm_backward", "running_mean"): "array_dep",
    ("batch_norm_backward", "running_var"): "array_dep",
    # buffers linear_backward adds the weight and bias gradients into
    ("linear_backward", "grad_w"): "state", ("linear_backward", "grad_b"): "state",
    ("linear_backward", "add_w"): "flag", ("linear_backward", "add_b"): "flag",
    # local response norm takes (N, C, ...) of any rank >= 3; its beta is an exponent
    ("local_response_norm", "x"): "array", ("local_response_norm_backward", "x"): "array",
    ("local_response_norm", "beta"): "nonneg", ("local_response_norm_backward", "beta"): "nonneg",
}


# arguments without a None default that take None all the same (documented in the op)
OPTIONAL = {(op, name) for op in ("batch_norm", "batch_norm_backward")
            for name in ("gamma", "beta", "running_mean", "running_var")}


def _grown(v):
    return np.concatenate([v, v[..., :1]], axis=-1)


def _read_only_copy(v):
    c = v.copy()
    c.flags.writeable = False
    return c


def _bad_values(kind, valid, optional):
    """(what, bad value) pairs for an argument of this kind; ``valid`` is its valid value."""
    if kind.startswith("array") or kind in ("state", "labels", "indices", "loss_grad"):
        arr = np.asarray(valid)
        bad = [("a list", arr.reshape(-1).tolist()), ("a string", "x"),
               ("another device", FakeGpuArray(arr))]
        if kind != "loss_grad":  # a reduced loss takes its grad_out as a number too
            bad += [("a Python float", 1.5), ("a NumPy scalar", arr.flat[0])]
        if not optional:
            bad.append(("None", None))
        if kind in ("labels", "indices"):
            return [*bad, ("float dtype", arr.astype(np.float64)), ("bool dtype", arr > 0),
                    ("negative", arr - arr.max() - 1), ("too large", arr + 2**40),
                    ("one more dimension", arr[None]), ("grown", _grown(arr))]
        bad += [(f"dtype {d}", arr.astype(d)) for d in
                (np.int32, np.int64, np.float16, np.complex128, np.bool_, ">f8")]
        if kind in ("array_nd", "array_dep", "state") or (kind == "loss_grad" and arr.ndim):
            bad.append(("one more dimension", arr[None]))
            if arr.ndim:
                bad.append(("one dimension fewer", arr[0]))
        if kind in ("array_dep", "state") or (kind == "loss_grad" and arr.ndim):
            bad.append(("grown", _grown(arr)))
        if kind == "state":
            bad.append(("read-only", _read_only_copy(arr)))
        return bad
    common = [("a string", "1"), ("a list", [valid]), ("nan", np.nan)]
    if not optional:
        common.append(("None", None))
    if kind in ("size", "padding", "count", "axis", "seed"):
        bad = [*common, ("a float", 1.5), ("a bool", True)]
        if kind == "seed":
            return bad                   # any int is a seed (taken modulo 2^64)
        bad += [("2^63", 2**63), ("2^100", 2**100), ("-2^63 - 1", -(2**63) - 1)]
        if kind in ("size", "count"):
            bad += [("0", 0), ("-1", -1)]
        if kind == "size":
            bad.append(("three values", (1, 1, 1)))
        if kind == "padding":
            bad += [("-1", -1), ("three values", (1, 1, 1))]
        if kind == "axis":
            bad += [("out of range", 5), ("out of range", -5)]
        return bad
    if kind in ("unit", "nonneg"):
        bad = [*common, ("a bool", True), ("inf", np.inf), ("-inf", -np.inf), ("-1", -1.0)]
        return [*bad, ("2", 2.0)] if kind == "unit" else bad
    if kind == "flag":
        return [("a string", "yes"), ("an int", 2), ("None", None), ("a float", 1.0)]
    if kind == "choice":
        bad = [("unknown", "bogus"), ("an int", 3), ("a list", [valid])]
        return bad if optional else [*bad, ("None", None)]
    if kind == "shape":
        return [("three values", (2, 3, 5)), ("negative", (2, 3, -1, 5)), ("a string", "x"),
                ("None", None), ("floats", (2.0, 3, 5, 5))]
    raise AssertionError(f"no bad values for kind {kind!r}")


def _cases(op):
    import inspect
    fn = getattr(F, op)
    valid = VALID[op]
    params = inspect.signature(fn).parameters
    for name, param in params.items():
        if param.kind is param.VAR_KEYWORD:
            continue
        assert name in valid, f"{op}: the valid call in VALID lacks argument {name!r}"
        kind = KIND_OVERRIDES.get((op, name), KIND.get(name))
        assert kind, f"{op}: no kind for argument {name!r}: add it to KIND"
        optional = param.default is None or (op, name) in OPTIONAL
        for what, bad in _bad_values(kind, valid[name], optional):
            yield name, what, bad


def _names(message, name):
    import re
    return re.search(rf"(?<![A-Za-z0-9_]){re.escape(name)}(?![A-Za-z0-9_])", message)


def _copy(v):
    return v.copy() if isinstance(v, np.ndarray) and v.flags.writeable else v


def _call(op, kwargs):
    return getattr(F, op)(**{k: _copy(v) for k, v in kwargs.items()})


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("family", FAMILIES)
def test_every_op_refuses_bad_input_by_name(family, backend):
    problems, checked = [], 0
    with nnkern.device(backend):
        for op in _ops(family):
            assert op in VALID, f"{op} is a public op of F with no valid call in VALID"
            _call(op, VALID[op])                     # the table's own call must be valid
            for name, what, bad in _cases(op):
                checked += 1
                try:
                    _call(op, {**VALID[op], name: bad})
                except (TypeError, ValueError) as exc:
                    if not _names(str(exc), name):
                        problems.append(f"{op}({name}={what}): message names no {name!r}: "
                                        f"{type(exc).__name__}: {exc}")
                except Exception as exc:  # noqa: BLE001 (anything else is the bug we look for)
                    problems.append(f"{op}({name}={what}): {type(exc).__name__}: {exc}")
                else:
                    problems.append(f"{op}({name}={what}): accepted")
    assert not problems, f"{len(problems)} of {checked} bad calls:\n" + "\n".join(problems)
    assert checked > 20 * len(_ops(family))


# --- an empty batch: a valid call, or a refusal that says why (never an internal error) ------

BATCH_ARGS = ("x", "g", "grad_out", "logits", "labels", "targets", "pred", "target", "a",
              "out", "indices")
# batch statistics of nothing: refused, as torch refuses them
EMPTY_REFUSED = {"batch_norm": "more than 1 value per channel",
                 "batch_norm_backward": "more than 1 value per channel"}


def _empty_batch(op):
    """The op's valid call with every batch-carrying array cut to 0 rows, or None when the
    op has no batch axis (matmul's a is (M, K): M = 0 is its empty case)."""
    valid = VALID[op]
    lead = [np.shape(valid[k])[0] for k in BATCH_ARGS
            if isinstance(valid.get(k), np.ndarray) and np.ndim(valid[k])]
    if not lead:
        return None
    n = lead[0]
    return {k: (np.asarray(v)[:0] if k in BATCH_ARGS and isinstance(v, np.ndarray)
                and np.ndim(v) and v.shape[0] == n else v) for k, v in valid.items()}


@pytest.mark.filterwarnings("ignore:Mean of empty slice", "ignore:invalid value encountered")
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("family", FAMILIES)
def test_every_op_takes_an_empty_batch(family, backend):
    problems = []
    with nnkern.device(backend):
        for op in _ops(family):
            call = _empty_batch(op)
            if call is None:
                continue
            try:
                result = _call(op, call)
            except ValueError as exc:
                if EMPTY_REFUSED.get(op, "\0") not in str(exc):
                    problems.append(f"{op}: ValueError: {exc}")
            except Exception as exc:  # noqa: BLE001
                problems.append(f"{op}: {type(exc).__name__}: {exc}")
            else:
                if op in EMPTY_REFUSED:
                    problems.append(f"{op}: accepted an empty batch in training")
                first = result[0] if isinstance(result, tuple) else result
                if np.ndim(first) and first.shape[0] != 0 and "step" not in op:
                    problems.append(f"{op}: output of shape {first.shape} for an empty batch")
    assert not problems, "\n".join(problems)
