"""Builders of Impl objects shared by the case modules: nnkern backends and peers.

Each builder checks that what it needs exists and raises ``Skip`` with the
reason otherwise (an op not merged yet, a backend module missing, PyTorch
without CUDA), so the runner can say what it left out.

A case's ``peers`` maps a peer key to a builder ``(place, env) -> Impl``. The
key is a library, optionally with a setting in brackets, and is the peer's
name everywhere (the runner labels the Impl with it)::

    peers={"torch": _torch,                                   # NCHW, defaults
           "torch[channels_last]": partial(_torch, channels_last=True),
           "numpy": child_peer("numpy", partial(_numpy, ...)),  # own process
           "numpy[alternating]": _numpy}                       # in turn with nnkern

``child_peer`` runs a peer in a child process started from the environment
the bench started with (before nnkern's import set its OpenBLAS settings),
so the library runs at its own defaults.
"""

from functools import partial

import numpy as np

from bench.core import Impl, Skip, child_impl


def _key(library, setting):
    return f"{library}[{setting}]" if setting else library


def _fetch_numpy(to_numpy):
    def fetch(outputs):
        if not isinstance(outputs, tuple):
            outputs = (outputs,)
        return tuple(None if o is None else np.asarray(to_numpy(o)) for o in outputs)
    return fetch


def check_nnkern(backend, families, ops):
    """Raise Skip unless ``F`` has every op and each family has a ``backend`` module."""
    import nnkern.functional as F
    from nnkern._dispatch import BackendError, kernels

    missing = [op for op in ops if not callable(getattr(F, op, None))]
    if missing:
        raise Skip(f"nnkern.functional has no {', '.join(missing)} yet")
    for family in families:
        try:
            kernels(family, backend)
        except BackendError as exc:
            raise Skip(str(exc)) from None
        except Exception as exc:  # noqa: BLE001  (a half-written kernel module: skip it)
            raise Skip(f"kernels of '{family}' on '{backend}' fail to load: "
                       f"{type(exc).__name__}: {exc}") from None


def nnkern_impl(backend, family, ops, run, prepare=None, families=None):
    """An nnkern backend: inputs moved with ``nnkern.to_device``, ``run(state)`` under
    ``nnkern.device(backend)``; ``prepare(dev_inputs)`` may add to the state."""
    import nnkern

    check_nnkern(backend, families or (family,), ops)

    def _prepare(inputs):
        dev = {k: nnkern.to_device(v, backend) if isinstance(v, np.ndarray) else v
               for k, v in inputs.items()}
        return prepare(dev) if prepare else dev

    return Impl(
        label=f"nnkern[{backend}]", kind="nnkern",
        place="gpu" if backend == "cuda" else "host",
        prepare=_prepare, run=run, fetch=_fetch_numpy(nnkern.to_numpy),
        context=lambda: nnkern.device(backend), device=backend,
    )


def child_peer(library, builder, unset=(), setenv=None, solo=True):
    """A peer builder whose Impl runs in a child process (bench.core.ChildPeer).

    ``builder(place, env)`` is an ordinary peer builder of ``library``; it must
    be a module-level function or a partial of one (it is pickled). The child
    starts from the environment ``python -m bench`` started with (none of
    nnkern's settings; the bench's own, core.BENCH_SETTINGS and
    core.TORCH_SETTINGS: TF32 off, passive OpenMP waiting), less the variables in ``unset``, plus ``setenv``. The
    child imports no nnkern. ``solo`` (default): its samples are
    taken in a block of their own after the other implementations' rounds,
    then a pause lets its idle threads stop spinning, so neither side's
    threads land in the other's samples; its ratios are then unpaired (every
    sample against every sample, see bench.core.ratio_stats).

    Example: NumPy at OpenBLAS's defaults in its own row::

        peers={"numpy": child_peer("numpy", partial(_numpy, ta=ta, tb=tb))}
    """
    return partial(child_impl, builder, library, unset=tuple(unset), setenv=setenv, solo=solo)


def torch_impl(place, env, prepare, run, setting=""):
    """PyTorch on the host (``torch.from_numpy``, no copy) or the GPU.

    ``prepare(inputs, T, torch)`` builds the state; ``T(x, grad=False)``
    makes a tensor on the right device (``requires_grad`` when ``grad``).
    Outputs in oneDNN's own layout (``Tensor.to_mkldnn()``) are made dense
    when fetched. ``setting`` names the peer ``torch[setting]``.
    """
    torch = env.torch
    if torch is None:
        raise Skip("PyTorch is not installed")
    if place == "gpu" and not env.torch_cuda:
        raise Skip("this PyTorch has no CUDA")
    device = "cuda" if place == "gpu" else "cpu"

    def T(x, grad=False):
        t = torch.from_numpy(x) if device == "cpu" else torch.as_tensor(x, device=device)
        return t.requires_grad_(True) if grad else t

    def dense(o):
        o = o.detach()
        return o.to_dense() if o.layout == torch._mkldnn else o

    def fetch(outputs):
        if not isinstance(outputs, tuple):
            outputs = (outputs,)
        return tuple(None if o is None else dense(o).cpu().numpy() for o in outputs)

    return Impl(label=_key("torch", setting), kind="peer", place=place,
                prepare=lambda inputs: prepare(inputs, T, torch), run=run,
                fetch=fetch, device=f"torch-{device}")


def numpy_impl(place, env, run, prepare=None, setting=""):
    """NumPy itself (OpenBLAS for matmul); a host peer only. ``setting`` names the
    peer ``numpy[setting]``."""
    if place != "host":
        raise Skip("numpy is a host peer")
    return Impl(label=_key("numpy", setting), kind="peer", place="host",
                prepare=prepare or (lambda inputs: inputs), run=run,
                fetch=_fetch_numpy(np.asarray), device="numpy")


def cupy_impl(place, env, run, prepare=None):
    """CuPy (cuBLAS for matmul); a GPU peer only."""
    if place != "gpu":
        raise Skip("cupy is a GPU peer")
    cp = env.cupy
    if cp is None:
        raise Skip("CuPy is not installed")

    def _prepare(inputs):
        dev = {k: cp.asarray(v) if isinstance(v, np.ndarray) else v for k, v in inputs.items()}
        return prepare(dev) if prepare else dev

    return Impl(label="cupy", kind="peer", place="gpu", prepare=_prepare, run=run,
                fetch=_fetch_numpy(cp.asnumpy), device="cupy")


def uniform(rng, shape, low=-1.0, high=1.0):
    """float32 uniform in [low, high): never zeros, never denormals in practice."""
    return rng.uniform(low, high, size=shape).astype(np.float32)


def nbytes(*shapes, itemsize=4):
    """Bytes of float32 tensors of the given shapes, each counted once."""
    return float(sum(int(np.prod(s)) for s in shapes) * itemsize)
