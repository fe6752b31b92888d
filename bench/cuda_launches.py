"""CUDA launch report without a GPU: launches per LeNet step, launch geometry, host cost.

1. Launches per LeNet-5 training step (forward, backward, one Adam step over a flat
   parameter buffer), counted under Numba's simulator through ``nnkern.functional`` calls
   written out here (the model API may change; the op surface is stable). Kernels are
   counted, not run (the count does not depend on the data).
2. Launch geometry of the convolution kernels (version 1, direct, and version 3, implicit
   GEMM) for the LeNet shapes and the bench's conv shape at batch 64, 128 and 256: blocks
   per launch against the H100's 132 SMs. Issue 14's bar: at least 4 blocks per SM for
   every conv kernel at batch 64 and above.
3. ``--host``: host microseconds per launch with the simulator OFF and no CUDA driver. The
   kernels compile for sm_90 (NVVM, as bench/ptx_check.py does); the driver calls are
   stubbed (the current context, the compiled function, ``cuda.core.launch`` itself, which
   counts instead of launching), and the arrays are stand-ins with CuPy's attributes and a
   CUDA array interface built per access, as CuPy builds it. What is timed is everything
   the host does for a launch before the driver call: the launcher's Python, numba-cuda's
   argument typing and packing (or nnkern's own packing), the launch configuration. Not
   timed: the driver's own launch (a few microseconds on an H100) and, in numba-cuda's
   path, its DLPack import of a real CuPy array (stand-ins have only the CUDA array
   interface, so numba reads that instead). Each op runs in turns: the kernel files of an
   earlier revision (``--revs``, default ``main``) loaded from git beside this tree's,
   this tree with numba-cuda's own launch (``NNKERN_CUDA_FAST_LAUNCH=0``), and this tree.

Run from the repository root:

    python bench/cuda_launches.py                 # parts 1 and 2 (simulator)
    python bench/cuda_launches.py --host          # part 3 (no simulator, no driver)
    python bench/cuda_launches.py --host --revs main,945b121
"""

import os
import sys
from collections import Counter

if "--host" in sys.argv:
    os.environ.pop("NUMBA_ENABLE_CUDASIM", None)
else:
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"

import numpy as np

# LeNet-5 on 1x28x28 (the bench's train_step case): conv 6@5x5 pad 2, pool, conv 16@5x5,
# pool, dense 400-120-84-10
LENET_CONVS = [((1, 28, 28), (6, 1, 5, 5), 2), ((6, 14, 14), (16, 6, 5, 5), 0)]
BENCH_CONVS = [((32, 28, 28), (64, 32, 3, 3), 1), ((128, 56, 56), (128, 128, 3, 3), 1)]


def count_lenet_step(batch=2, algo="auto"):
    """{kernel name: launches} of one LeNet training step on the cuda backend."""
    from nnkern.kernels.conv import cuda as conv
    from numba.cuda.simulator.kernel import FakeCUDAKernel

    import nnkern
    import nnkern.functional as F

    if hasattr(conv, "IM2COL_CAP"):
        conv.IM2COL_CAP = 1 << 27  # the GPU's column-buffer size (the simulator's is small)
    counts = Counter()
    real_call = FakeCUDAKernel.__call__

    def counting_call(self, *args):
        if self._device:
            return real_call(self, *args)
        counts[self.fn.__name__] += 1
        return None  # counted, not run

    rng = np.random.default_rng(0)
    shapes = [(6, 1, 5, 5), (6,), (16, 6, 5, 5), (16,), (120, 400), (120,), (84, 120), (84,),
              (10, 84), (10,)]
    sizes = [int(np.prod(s)) for s in shapes]
    FakeCUDAKernel.__call__ = counting_call
    try:
        with nnkern.device("cuda"):
            flat = rng.standard_normal(sum(sizes)).astype(np.float32) * 0.1
            params, off = [], 0
            for s, n in zip(shapes, sizes):
                params.append(flat[off:off + n].reshape(s))
                off += n
            w1, b1, w2, b2, w3, b3, w4, b4, w5, b5 = params
            x = rng.standard_normal((batch, 1, 28, 28)).astype(np.float32)
            y = rng.integers(0, 10, batch)
            a1 = F.conv2d(x, w1, b1, padding=2, algo=algo)
            r1 = F.relu(a1)
            p1, i1 = F.max_pool2d(r1, 2, return_indices=True)
            a2 = F.conv2d(p1, w2, b2, algo=algo)
            r2 = F.relu(a2)
            p2, i2 = F.max_pool2d(r2, 2, return_indices=True)
            f = p2.reshape(batch, 400)
            h3 = F.linear(f, w3, b3, activation="relu")
            h4 = F.linear(h3, w4, b4, activation="relu")
            z = F.linear(h4, w5, b5)
            _, dz = F.softmax_cross_entropy_with_grad(z, y)
            dh4, dw5, db5 = F.linear_backward(dz, h4, w5, b5)
            dh3, dw4, db4 = F.linear_backward(dh4, h3, w4, b4, activation="relu", out=h4)
            df, dw3, db3 = F.linear_backward(dh3, f, w3, b3, activation="relu", out=h3)
            dp2 = df.reshape(p2.shape)
            dr2 = F.max_pool2d_backward(dp2, r2, 2, indices=i2)
            da2 = F.relu_backward(dr2, a2)
            dp1, dw2, db2 = F.conv2d_backward(da2, p1, w2, b2, algo=algo)
            dr1 = F.max_pool2d_backward(dp1, r1, 2, indices=i1)
            da1 = F.relu_backward(dr1, a1)
            _, dw1, db1 = F.conv2d_backward(da1, x, w1, b1, padding=2, algo=algo)
            grads = np.concatenate([g.reshape(-1) for g in
                                    (dw1, db1, dw2, db2, dw3, db3, dw4, db4, dw5, db5)])
            m, v = np.zeros_like(flat), np.zeros_like(flat)
            F.adam_step(flat, grads, m, v, 1, lr=1e-3)
    finally:
        FakeCUDAKernel.__call__ = real_call
    return counts


def geometry():
    """Rows (shape, pass, version, blocks, blocks per SM) for the conv kernels."""
    from nnkern.kernels import _cuda
    from nnkern.kernels.conv import cuda as conv

    conv.SIM = False  # plan with the GPU tile configs and the GPU's block target
    conv.MIN_BLOCKS = 4 * _cuda.SMS
    conv.v3_configs = lambda: conv.CONFIGS
    conv.v3_plan.cache_clear()
    rows = []
    for name, cases in (("lenet", LENET_CONVS), ("bench", BENCH_CONVS)):
        for (C, H, W), (K, Cg, R, S), pad in cases:
            OH, OW = H + 2 * pad - R + 1, W + 2 * pad - S + 1
            for N in (64, 128, 256):
                shape = f"{name} N{N} C{C} {H}x{W} K{K} {R}x{S}"
                Q = Cg * R * S
                v1 = {  # version 1: 128-thread element grids; NB weights per reduction block
                    "fwd": -(-N * K * OH * OW // 128),
                    "data": -(-N * C * H * W // 128),
                    "wgt": -(-(K * Q + K) // conv.NB),
                }
                v3 = {
                    "fwd": conv.v3_plan(K, N * OH * OW, Q, 1),
                    "data": conv.v3_plan(Cg, N * H * W, K * R * S, 1),
                    "wgt": conv.v3_plan(K, Q + 1, N * OH * OW, 1, split=True),
                }
                for p in ("fwd", "data", "wgt"):
                    rows.append((shape, p, "v1", v1[p], "", v1[p] / _cuda.SMS))
                    cfg, blocks, splits = v3[p]
                    extra = f"{cfg}" + (f" x{splits} splits" if splits > 1 else "")
                    rows.append((shape, p, "v3", blocks, extra, blocks / _cuda.SMS))
    return rows


# ----------------------------------------------------------------------------
# 3. host cost per launch, simulator off, no driver


def install_fake_driver():
    """Stub what needs a GPU: compute capability, context, compiled function, the launch.
    Returns the launch counter (a one-item list)."""
    import contextlib
    import types

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import ptx_check
    from numba import cuda
    from numba.cuda import api, codegen, dispatcher
    from numba.cuda.cudadrv import devices

    device = types.SimpleNamespace(compute_capability=ptx_check.CC)
    devices.get_context = lambda devnum=None: types.SimpleNamespace(device=device)
    devices._runtime.ensure_context = contextlib.nullcontext

    class Stream:  # CuPy's legacy default stream, as a CUDA-array-interface stream
        handle = 1

        def synchronize(self):
            pass

        def __int__(self):
            return 1

    class Context:
        def create_external_stream(self, ptr):
            return Stream()

    api.current_context = Context
    cufunc = types.SimpleNamespace(module=types.SimpleNamespace(initialized=True),
                                   name="stub", kernel=object())
    codegen.CUDACodeLibrary.get_cufunc = lambda self: cufunc
    launches = [0]

    def counting_launch(stream, config, kernel, *args):
        launches[0] += 1

    dispatcher.launch = counting_launch
    sys.modules["cupy"] = FakeCupyModule
    # device allocations and copies (earlier revisions' stand-ins and geometry arrays)
    cuda.to_device = lambda a, *args, **kwargs: FakeCupyModule.asarray(a)
    cuda.device_array = lambda shape, dtype=np.float64, *args, **kwargs: FakeCupyModule.empty(
        tuple(shape) if isinstance(shape, tuple) else (shape,), dtype)

    # numba-cuda's view of a CUDA-array-interface argument asks the driver about the
    # pointer; build the same view without asking
    from numba.cuda.cudadrv import devicearray as da

    real_view = da._to_strided_memory_view

    def view(obj, stream=0, copy=True, user_explicit=False):
        if da._driver.is_device_memory(obj):
            return real_view(obj, stream, copy, user_explicit)
        cai = getattr(obj, "__cuda_array_interface__", None)
        if cai is None:
            return real_view(obj, stream, copy, user_explicit)
        dtype = np.dtype(cai["typestr"])
        shape = tuple(cai["shape"])
        strides = cai["strides"] or np.empty(0, dtype).reshape(0).strides * 0 or None
        layout = da._StridedLayoutShim(strides_in_bytes=strides, is_contiguous_c=True,
                                       is_contiguous_f=len(shape) <= 1,
                                       is_contiguous_any=True)
        return da._StridedMemoryViewShim(ptr=cai["data"][0], shape=shape, dtype=dtype,
                                         size=int(np.prod(shape)), _layout=layout), False

    da._to_strided_memory_view = view
    return launches


class _Pointer:
    def __init__(self, ptr):
        self.ptr = ptr


class FakeCupy:
    """A stand-in for a C-contiguous cupy.ndarray: the attributes nnkern's launchers and
    numba-cuda read, and a CUDA array interface dict built on every access (as CuPy's)."""

    _next = 0x7F0000000000

    def __init__(self, shape, dtype, ptr=None):
        self.shape = tuple(int(n) for n in shape)
        self.dtype = np.dtype(dtype)
        self.itemsize = self.dtype.itemsize
        self.ndim = len(self.shape)
        self.size = int(np.prod(self.shape))
        strides, step = [], self.itemsize
        for n in reversed(self.shape):
            strides.append(step)
            step *= n
        self.strides = tuple(reversed(strides))
        if ptr is None:
            ptr = FakeCupy._next
            FakeCupy._next += (self.size * self.itemsize + 511) // 256 * 256
        self.data = _Pointer(ptr)

    @property
    def __cuda_array_interface__(self):
        return {"shape": self.shape, "typestr": self.dtype.str, "descr": [("", self.dtype.str)],
                "data": (self.data.ptr, False), "strides": None, "version": 3, "stream": 1}

    def reshape(self, *shape):
        shape = shape[0] if len(shape) == 1 and isinstance(shape[0], tuple) else shape
        if -1 in shape:
            known = int(np.prod([n for n in shape if n != -1]))
            shape = tuple(self.size // known if n == -1 else n for n in shape)
        return FakeCupy(shape, self.dtype, self.data.ptr)

    def __getitem__(self, index):
        # only what launchers use: a leading integer index or slice of a C-contiguous array
        index = index if isinstance(index, tuple) else (index,)
        view, offset = list(self.shape), 0
        for axis, i in enumerate(index):
            if isinstance(i, slice):
                start, stop, _ = i.indices(view[axis])
                offset += start * self.strides[axis]
                view[axis] = stop - start
            else:
                offset += i * self.strides[axis]
                view[axis] = None
        return FakeCupy([n for n in view if n is not None], self.dtype, self.data.ptr + offset)


class FakeCupyModule:
    """``cupy`` for the kernel files' scratch buffers (``empty``, ``asarray``)."""

    ndarray = FakeCupy

    @staticmethod
    def empty(shape, dtype=np.float32):
        return FakeCupy(shape if isinstance(shape, tuple) else (shape,), dtype)

    @staticmethod
    def asarray(a):
        return FakeCupy(np.shape(a), np.asarray(a).dtype)


def load_revision(rev):
    """The kernel files of git revision ``rev`` as the package ``kk_<rev>`` (imported from
    a temporary export; absolute ``nnkern.kernels.`` imports point into it)."""
    import importlib
    import subprocess
    import tarfile
    import tempfile

    name = "kk_" + "".join(c if c.isalnum() else "_" for c in rev)
    root = tempfile.mkdtemp(prefix="nnkern_rev_")
    archive = subprocess.run(["git", "archive", rev, "kernels"], check=True,
                             capture_output=True).stdout
    with tarfile.open(fileobj=__import__("io").BytesIO(archive)) as tar:
        tar.extractall(root, filter="data")
    os.rename(os.path.join(root, "kernels"), os.path.join(root, name))
    for dirpath, _, files in os.walk(os.path.join(root, name)):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(dirpath, f)
                with open(path) as fh:
                    text = fh.read()
                with open(path, "w") as fh:
                    fh.write(text.replace("nnkern.kernels.", f"{name}."))
    sys.path.insert(0, root)
    return importlib.import_module(name)


def lenet_ops(kmods, dtype=np.float32, batch=64):
    """{op: callable()} of representative launches of a LeNet-5 step at ``batch``, on the
    kernel modules ``kmods`` ({family: module}); arguments built once."""
    f = lambda *shape: FakeCupy(shape, dtype)
    x1, w1, b1, y1 = f(batch, 1, 28, 28), f(6, 1, 5, 5), f(6), f(batch, 6, 28, 28)
    ind = FakeCupy((batch, 6, 14, 14), np.int64)
    p1 = f(batch, 6, 14, 14)
    h, w3, b3, y3 = f(batch, 400), f(120, 400), f(120), f(batch, 120)
    z, lab, g1 = f(batch, 10), FakeCupy((batch,), np.int64), f(1)
    losses, dz = f(batch), f(batch, 10)
    n = 61706  # LeNet-5's parameters
    pa, ga, ma, va = f(n), f(n), f(n), f(n)
    conv, gemm, pool = kmods["conv"], kmods["gemm"], kmods["pool"]
    ew, ce, opt = kmods["elementwise"], kmods["softmax_ce"], kmods["optim"]
    flat = y1.reshape(-1)
    return {
        "relu forward (64,6,28,28)": lambda: ew.relu_forward(flat, flat),
        "linear+relu 64x400 @ 400x120": lambda: gemm.linear(h, w3, b3, y3, True),
        "conv2d forward LeNet conv1": lambda: conv.conv2d_forward(
            x1, w1, b1, y1, (1, 1), (2, 2), (1, 1), 1, "auto"),
        "max_pool2d forward 2x2": lambda: pool.max_pool2d_forward(
            y1, p1, ind, 2, 2, 2, 2, 0, 0),
        "softmax-CE fwd+bwd (64,10)": lambda: ce.softmax_ce_forward_backward(
            z, lab, g1, 1.0 / batch, 0.0, losses, dz),
        "Adam step, 61706 params": lambda: opt.adam_step(
            pa, ga, ma, va, 1, 1e-3, 0.9, 0.999, 1e-8, 0.0),
    }


def host_main(argv):
    import importlib
    import time
    import warnings

    revs = ["main"]
    if "--revs" in argv:
        revs = argv[argv.index("--revs") + 1].split(",")
    launches = install_fake_driver()
    warnings.simplefilter("ignore")  # numba's low-occupancy warnings for LeNet's small grids
    families = ("conv", "gemm", "pool", "elementwise", "softmax_ce", "optim")
    from nnkern.kernels import _cuda

    impls = {}
    for rev in revs:
        pkg = load_revision(rev)
        impls[rev] = ({f: importlib.import_module(f"{pkg.__name__}.{f}.cuda") for f in families},
                      None)
    here = {f: importlib.import_module(f"nnkern.kernels.{f}.cuda") for f in families}
    impls["this tree, numba launch"] = (here, False)
    impls["this tree"] = (here, True)
    ops = {label: lenet_ops(mods) for label, (mods, _) in impls.items()}
    names = list(next(iter(ops.values())))
    print("Host microseconds per call with the simulator off and no driver (the driver's")
    print("launch itself stubbed); median of 7 rounds, implementations in turns per round.")
    print(f"{'op':32s} {'impl':26s} {'launches':>8s} {'us/call':>9s} {'us/launch':>9s}")
    results = {}
    for op in names:
        for label, (_, fast) in impls.items():  # warm up: compile, first-launch checks
            if fast is not None:
                _cuda.FAST_LAUNCH = fast
            ops[label][op]()
        rounds = {label: [] for label in impls}
        per_call = {}
        for _ in range(7):
            for label, (_, fast) in impls.items():
                if fast is not None:
                    _cuda.FAST_LAUNCH = fast
                fn = ops[label][op]
                launches[0] = 0
                n = 200
                t0 = time.perf_counter()
                for _ in range(n):
                    fn()
                rounds[label].append((time.perf_counter() - t0) / n * 1e6)
                per_call[label] = launches[0] / n
        for label in impls:
            us = float(np.median(rounds[label]))
            results[(op, label)] = us
            k = per_call[label]
            print(f"{op:32s} {label:26s} {k:8.0f} {us:9.1f} {us / max(k, 1):9.1f}")
    _cuda.FAST_LAUNCH = True
    checked = [p for p in _cuda._LAUNCHERS.values() if p is not None and p.checked]
    fell_back = [k for k, p in _cuda._LAUNCHERS.items() if p is None]
    print(f"hand-packed kernels checked equal to numba-cuda's packing: {len(checked)}; "
          f"kernels on numba's launch: {len(fell_back)}")
    base = revs[0]
    print(f"ratio {base} / this tree (host time per call):")
    for op in names:
        print(f"  {op:32s} {results[(op, base)] / results[(op, 'this tree')]:6.1f}x")
    return 1 if fell_back else 0


def main():
    if "--host" in sys.argv:
        return host_main(sys.argv[1:])
    counts = count_lenet_step()
    print("Launches per LeNet-5 training step (cuda backend, counted under the simulator):")
    for name, n in sorted(counts.items()):
        print(f"  {name:28s} {n}")
    print(f"  {'total':28s} {sum(counts.values())}")
    for algo in ("auto", "im2col"):  # the count of the im2col path grows with the batch
        total = sum(count_lenet_step(64, algo).values())
        print(f"  total at batch 64, algo={algo!r}: {total}")
    print()
    print("Conv launch geometry on an H100 (132 SMs); bar: >= 4 blocks/SM at batch >= 64")
    failed = 0
    for shape, p, version, blocks, extra, per_sm in geometry():
        flag = ""
        if version == "v3" and per_sm < 4:
            flag = "  <- below the bar"
            failed += 1
        print(f"  {shape:34s} {p:5s} {version} {blocks:7d} blocks {per_sm:7.1f}/SM {extra}{flag}")
    print(f"version-3 conv launches below 4 blocks/SM: {failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
