"""Compile every nnkern CUDA kernel to sm_90 without a GPU and check what ptxas makes of it.

The tests run the CUDA kernels under Numba's simulator, which executes Python, so errors only
the real compiler sees (type unification, unsupported constructs, bad shared/local array
declarations) can hide there. This script compiles every kernel of the seven families with
NVVM, in float32 and float64, exactly as the launchers compile them: each
``kernels/<family>/cuda.py`` exposes ``build(T) -> {name: (function, signature)}`` and its
launchers compile those same pairs (``cuda.jit(signature)``), with the GPU configuration (block
and tile sizes chosen when NUMBA_ENABLE_CUDASIM is off). No driver is needed: the
compute-capability lookup is stubbed to (9, 0) and libdevice is looked up in the usual places.

Per kernel and dtype it reports the PTX size, the number of float64 instructions (any PTX
instruction with a ``.f64`` operand type: arithmetic, loads, moves and conversions such as
``cvt.f64.f32``) and, when ``ptxas`` is found (env NNKERN_PTXAS, /usr/local/cuda/bin,
/tmp/nvlibs/nvidia/cuda_nvcc/bin, or PATH), registers, spills, stack frame (local memory)
and shared memory for sm_90.

It FAILS (exit status 1) when a kernel does not compile, when a float32 kernel has any
float64 instruction (a float64 FMA runs at 1/64 of the float32 rate on an H100 PCIe-class
part, 1/2 on SXM, and every conversion costs an issue slot), or when any kernel spills.

Run (from the repository root, WITHOUT the simulator):

    python bench/ptx_check.py              # all families
    python bench/ptx_check.py gemm conv    # some families
    python bench/ptx_check.py --no-ptxas   # NVVM only
    python bench/ptx_check.py --json out.jsonl   # also one JSON line per kernel

Not a test module (pytest does not collect it) and not imported by the package or by
``python -m bench``.
"""

import glob
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import types

os.environ.pop("NUMBA_ENABLE_CUDASIM", None)  # the real compiler, and the GPU block sizes

from numba import cuda, float32, float64
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
        "/usr/local/cuda/bin/ptxas",
        "/tmp/nvlibs/nvidia/cuda_nvcc/bin/ptxas",
        shutil.which("ptxas"),
    ):
        if p and os.path.exists(p):
            return p
    return None


def _ptxas(ptxas, ptx):
    """Assemble for sm_90; return {regs, spill, stack, smem} or raise with the error."""
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

    def most(pattern):
        found = re.findall(pattern, text)
        return max(map(int, found)) if found else 0

    return {
        "regs": most(r"Used (\d+) registers"),
        "spill": most(r"(\d+) bytes spill stores") + most(r"(\d+) bytes spill loads"),
        "stack": most(r"(\d+) bytes stack frame"),
        "smem": most(r"(\d+) bytes smem"),
    }


_F64 = re.compile(r"^\s*(?:@!?%p\d+\s+)?[a-z][\w.]*\.f64\b", re.MULTILINE)


def float64_instructions(ptx):
    """Instructions whose opcode names a .f64 type (cvt.f64.f32, add.f64, cvt.rn.f32.f64...)."""
    return len(_F64.findall(ptx))


FAMILIES = ("gemm", "conv", "pool", "norm", "optim", "softmax_ce", "elementwise", "lrn")


def kernels_of(family, T):
    """[(name, function, signature)] of one family for the Numba float type T."""
    mod = importlib.import_module(f"nnkern.kernels.{family}.cuda")
    return [(name, fn, sig) for name, (fn, sig) in mod.build(T).items()]


def check(fam, name, fn, sig, T, ptxas):
    """Compile one kernel; return (ok, report dict)."""
    ptx, _ = cuda.compile_ptx(fn, sig, cc=CC)
    rec = {"family": fam, "kernel": name, "dtype": T.name, "ptx_bytes": len(ptx),
           "f64": float64_instructions(ptx)}
    if ptxas:
        rec.update(_ptxas(ptxas, ptx))
    problems = []
    if T == float32 and rec["f64"]:
        problems.append(f"{rec['f64']} float64 instructions in a float32 kernel")
    if rec.get("spill"):
        problems.append(f"spills {rec['spill']} B")
    rec["problems"] = problems
    return not problems, rec


def _line(ok, rec):
    extra = ""
    if "regs" in rec:
        extra = (f" regs={rec['regs']:3d} spill={rec['spill']}B local={rec['stack']}B "
                 f"smem={rec['smem']}B")
    why = ("  <- " + "; ".join(rec["problems"])) if rec["problems"] else ""
    return (f"{'ok  ' if ok else 'FAIL'} {rec['family']:12s} {rec['kernel']:26s} "
            f"{rec['dtype']:8s} f64={rec['f64']:<4d}{extra}{why}")


def main(argv):
    use_ptxas = "--no-ptxas" not in argv
    json_path = None
    if "--json" in argv:
        json_path = argv[argv.index("--json") + 1]
        argv = [a for a in argv if a not in ("--json", json_path)]
    names = [a for a in argv if not a.startswith("--")] or list(FAMILIES)
    unknown = [n for n in names if n not in FAMILIES]
    if unknown:
        print(f"unknown families {unknown}; choose from {list(FAMILIES)}")
        return 2
    ptxas = _find_ptxas() if use_ptxas else None
    print(f"target sm_{CC[0]}{CC[1]}; ptxas: {ptxas or 'not used'}")
    out = open(json_path, "w") if json_path else None  # noqa: SIM115 (closed below)
    failed = total = 0
    for fam in names:
        for T in (float32, float64):
            try:
                entries = kernels_of(fam, T)
            except Exception as e:  # noqa: BLE001 (the module failed to import / build)
                failed += 1
                total += 1
                print(f"FAIL {fam:12s} {'<module>':26s} {T.name:8s} {type(e).__name__}: {e}")
                continue
            for name, fn, sig in entries:
                total += 1
                try:
                    ok, rec = check(fam, name, fn, sig, T, ptxas)
                except Exception as e:  # noqa: BLE001 (report every kernel, then exit 1)
                    ok = False
                    msg = " ".join(str(e).split())[:400]
                    rec = {"family": fam, "kernel": name, "dtype": T.name,
                           "problems": [f"{type(e).__name__}: {msg}"]}
                    print(f"FAIL {fam:12s} {name:26s} {T.name:8s} {rec['problems'][0]}")
                else:
                    print(_line(ok, rec))
                failed += not ok
                if out:
                    out.write(json.dumps(rec) + "\n")
    if out:
        out.close()
    print(f"{total - failed}/{total} kernels pass (compile; no float64 in float32 kernels; "
          f"no spills), {failed} fail")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
