"""Compile every nnkern CUDA kernel to PTX for sm_90 without a GPU: a typing/lowering check.

The tests run the CUDA kernels under Numba's simulator, which executes Python, so errors only
the real compiler sees (type unification, unsupported constructs, bad shared/local array
declarations) can hide there. This script compiles each ``@cuda.jit`` kernel of the seven
families (gemm, conv, pool, norm, optim, softmax_ce, elementwise) with NVVM, in float32 and
float64, for the argument types the op surface passes (Python ints -> int64, bools ->
boolean, C-contiguous arrays), with the GPU configuration (block/tile sizes chosen when
NUMBA_ENABLE_CUDASIM is off). No driver is needed: the compute-capability lookup is stubbed
to (9, 0) and libdevice is looked up in the usual places.

Optionally, when ``ptxas`` is found (env NNKERN_PTXAS, else
/tmp/nvlibs/nvidia/cuda_nvcc/bin/ptxas, else on PATH; e.g. after
``pip install --target /tmp/nvlibs nvidia-cuda-nvcc-cu12``), the PTX is also assembled for
sm_90 (the ``.version`` line is lowered to what that ptxas accepts) and registers, stack frame,
spills and shared memory are reported.

Run (from the repository root, WITHOUT the simulator):

    /work/venv/bin/python bench/ptx_check.py              # all families
    /work/venv/bin/python bench/ptx_check.py gemm conv    # some families
    /work/venv/bin/python bench/ptx_check.py --no-ptxas   # NVVM only

One line per kernel and dtype; exit status 1 when any kernel fails. Not a test module (pytest
does not collect it) and not imported by the package or by ``python -m bench``.
"""

import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import types

os.environ.pop("NUMBA_ENABLE_CUDASIM", None)  # the real compiler, and the GPU block sizes

from numba import boolean, cuda, float32, float64, int64
from numba.cuda.cudadrv import libs, nvrtc, nvvm

CC = (9, 0)


# ----------------------------------------------------------------------------
# no-GPU patches


def _patch():
    """Stub the lookups that need a driver (compute capability) or a CUDA toolkit layout."""
    nvrtc.get_supported_ccs = lambda: [(7, 5), (8, 0), (8, 6), (9, 0)]
    candidates = sorted(glob.glob("/usr/local/cuda*/nvvm/libdevice/libdevice.10.bc"))
    candidates += glob.glob("/tmp/nvlibs/nvidia/cuda_nvcc/nvvm/libdevice/libdevice.10.bc")
    candidates += glob.glob(
        os.path.join(
            sys.prefix,
            "lib",
            "python3*",
            "site-packages",
            "nvidia",
            "*",
            "nvvm",
            "libdevice",
            "libdevice.10.bc",
        )
    )
    if candidates:
        path = candidates[-1]
        libs.get_libdevice = lambda: path
        nvvm.get_libdevice = libs.get_libdevice
    fake = lambda: types.SimpleNamespace(compute_capability=CC)
    from numba.cuda import dispatcher

    dispatcher.get_current_device = fake
    # device functions ask the current device too (their module may differ by version)
    devmod = sys.modules[type(cuda.jit(device=True)(lambda: None)).__module__]
    devmod.get_current_device = fake


_patch()


def _find_ptxas():
    for p in (
        os.environ.get("NNKERN_PTXAS"),
        "/tmp/nvlibs/nvidia/cuda_nvcc/bin/ptxas",
        shutil.which("ptxas"),
    ):
        if p and os.path.exists(p):
            return p
    return None


def _ptxas(ptxas, ptx):
    """Assemble for sm_90; return a short 'regs/spills/smem' string or raise with the error."""
    ptx = re.sub(r"^\.version \d+\.\d+", ".version 8.8", ptx, count=1, flags=re.MULTILINE)
    with tempfile.NamedTemporaryFile("w", suffix=".ptx", delete=False) as fh:
        fh.write(ptx)
    try:
        r = subprocess.run(
            [ptxas, f"-arch=sm_{CC[0]}{CC[1]}", "-v", fh.name, "-o", os.devnull],
            check=False,
            capture_output=True,
            text=True,
        )
    finally:
        os.unlink(fh.name)
    text = r.stdout + r.stderr
    if r.returncode:
        raise RuntimeError("ptxas: " + " | ".join(text.strip().splitlines()[:3]))
    regs = re.findall(r"Used (\d+) registers", text)
    spill = re.findall(r"(\d+) bytes spill stores", text)
    smem = re.findall(r"(\d+) bytes smem", text)
    stack = re.findall(r"(\d+) bytes stack frame", text)
    return (
        f"regs={max(map(int, regs)) if regs else '?'} "
        f"stack={max(map(int, stack)) if stack else 0}B "
        f"spill={max(map(int, spill)) if spill else 0}B "
        f"smem={max(map(int, smem)) if smem else 0}B"
    )


# ----------------------------------------------------------------------------
# per family: (kernel, signature) for one numba float type T, as the launchers pass them


def _arrays(T):
    return T[::1], T[:, ::1], T[:, :, ::1], T[:, :, :, ::1]


def gemm(T):
    import numpy as np
    from nnkern.kernels.gemm import cuda as K

    dt = np.dtype(T.name)
    A1, A2, _, _ = _arrays(T)
    i, b = int64, boolean
    return [
        ("gemm_tiled", K.gemm_tiled[dt], (A2, A2, A2, i, i, i, b, b, b)),
        ("gemm_regtile", K.gemm_regtile[dt], (A2, A2, A2, i, i, i, b, b, b, A1, b, b)),
        ("linear_grad_out_kernel", K.linear_grad_out_kernel, (A2, A2, A2, A1, b)),
    ]


def conv(T):
    from nnkern.kernels.conv import cuda as K

    k = K._kernels(T.name)
    A1, A2, A3, A4 = _arrays(T)
    i, b = int64, boolean
    geom = (i,) * 7  # sh, sw, ph, pw, dh, dw, G
    return [
        ("fwd_direct", k["fwd_direct"], (A4, A4, A1, b, A4) + geom),
        ("bwd_data_direct", k["bwd_data_direct"], (A4, A4, A4) + geom),
        ("bwd_weights_direct", k["bwd_weights_direct"], (A4, A4, A4, A1) + geom + (i, i)),
        ("im2col", k["im2col"], (A4, i, i, A2) + (i,) * 9),
        ("col2im", k["col2im"], (A2, A4) + (i,) * 13),
        ("add_bias", k["add_bias"], (A3, A1)),
    ]


def pool(T):
    from nnkern.kernels.pool import cuda as K

    _, _, _, A4 = _arrays(T)
    I4 = int64[:, :, :, ::1]
    i, b = int64, boolean
    win = (i,) * 6  # R, S, SH, SW, PH, PW
    return [
        ("_max_forward", K._max_forward, (A4, A4, I4) + win),
        ("_max_backward", K._max_backward, (A4, I4, A4) + win),
        ("_avg_forward", K._avg_forward, (A4, A4) + win + (b,)),
        ("_avg_backward", K._avg_backward, (A4, A4) + win + (b,)),
        ("_blur_forward", K._blur_forward, (A4, A4, i, i, i)),
        ("_blur_backward", K._blur_backward, (A4, A4, i, i, i)),
        ("_max_blur_forward", K._max_blur_forward, (A4, A4) + (i,) * 5),
        ("_max_blur_backward", K._max_blur_backward, (A4, A4, A4) + (i,) * 5),
    ]


def norm(T):
    from nnkern.kernels.norm import cuda as K

    A1, _, A3, _ = _arrays(T)
    return [
        ("_forward_kernel", K._forward_kernel, (A3, A1, A1, A1, A1, A3, boolean, float64, float64)),
        (
            "_backward_kernel",
            K._backward_kernel,
            (A3, A3, A1, A1, A1, A3, A1, A1, boolean, float64),
        ),
    ]


def optim(T):
    from nnkern.kernels.optim import cuda as K

    A1 = T[::1]
    return [
        ("_sgd_kernel", K._sgd_kernel, (A1, A1, A1, T, T, T, boolean)),
        ("_adam_kernel", K._adam_kernel, (A1, A1, A1, A1) + (T,) * 8),
    ]


def softmax_ce(T):
    from nnkern.kernels.softmax_ce import cuda as K

    A1, A2, _, _ = _arrays(T)
    return [
        (
            "_softmax_ce_rows",
            K._softmax_ce_rows,
            (A2, int64[::1], A1, float64, float64, A1, A2, boolean),
        ),
        ("_bce_forward", K._bce_forward, (A1, A1, A1)),
        ("_bce_backward", K._bce_backward, (A1, float64, A1, A1, A1)),
        ("_mse_forward", K._mse_forward, (A1, A1, A1)),
        ("_mse_backward", K._mse_backward, (A1, float64, A1, A1, A1)),
    ]


def elementwise(T):
    from nnkern.kernels.elementwise import cuda as K
    from numba import uint64

    A1, A2, A3, _ = _arrays(T)
    return [
        ("_activation_forward", K._activation_forward, (A1, A1, int64)),
        ("_activation_backward", K._activation_backward, (A1, A1, A1, int64)),
        ("_softmax_rows", K._softmax_rows, (A2, A2, boolean)),
        ("_softmax_rows_backward", K._softmax_rows_backward, (A2, A2, A2, boolean)),
        ("_softmax_columns", K._softmax_columns, (A3, A3, boolean)),
        ("_softmax_columns_backward", K._softmax_columns_backward, (A3, A3, A3, boolean)),
        ("_bias_add", K._bias_add, (A3, A1, A3)),
        ("_bias_grad", K._bias_grad, (A3, A1)),
        ("_dropout", K._dropout, (A1, A1, uint64, float64, uint64)),
    ]


FAMILIES = {f.__name__: f for f in (gemm, conv, pool, norm, optim, softmax_ce, elementwise)}


def main(argv):
    use_ptxas = "--no-ptxas" not in argv
    names = [a for a in argv if not a.startswith("--")] or list(FAMILIES)
    unknown = [n for n in names if n not in FAMILIES]
    if unknown:
        print(f"unknown families {unknown}; choose from {list(FAMILIES)}")
        return 2
    ptxas = _find_ptxas() if use_ptxas else None
    print(f"target sm_{CC[0]}{CC[1]}; ptxas: {ptxas or 'not used'}")
    failed = total = 0
    for fam in names:
        for T in (float32, float64):
            try:
                entries = FAMILIES[fam](T)
            except Exception as e:  # noqa: BLE001 (the module failed to import / build)
                failed += 1
                total += 1
                print(f"FAIL {fam:12s} {'<module>':28s} {T.name:8s} {type(e).__name__}: {e}")
                continue
            for name, kern, sig in entries:
                total += 1
                fn = getattr(kern, "py_func", kern)
                try:
                    ptx, _ = cuda.compile_ptx(fn, sig, cc=CC)
                    extra = _ptxas(ptxas, ptx) if ptxas else ""
                    print(f"ok   {fam:12s} {name:28s} {T.name:8s} ptx={len(ptx)}B {extra}")
                except Exception as e:  # noqa: BLE001 (report every kernel, then exit 1)
                    failed += 1
                    msg = " ".join(str(e).split())[:400]
                    print(f"FAIL {fam:12s} {name:28s} {T.name:8s} {type(e).__name__}: {msg}")
    print(f"{total - failed}/{total} kernels compiled, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
