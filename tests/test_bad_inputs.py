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
