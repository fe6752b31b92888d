"""Command line: ``python -m nnkern`` trains the main job; ``python -m nnkern info`` reports the device.

    python -m nnkern            # LeNet-style CNN on the bundled digits, auto device
    python -m nnkern info       # which device auto picks and why, versions, threads, GPU
    mpiexec -n 2 python -m nnkern --distributed     # the main job, data-parallel on 2 ranks
"""

import argparse
import importlib
import platform
import sys


def _version(module_name):
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 (not installed, or broken: say which)
        return f"not available ({type(exc).__name__}: {exc})".splitlines()[0]
    return getattr(module, "__version__", "installed")


def info_lines():
    """The lines ``python -m nnkern info`` prints."""
    import numba

    import nnkern
    from nnkern.device import _resolve, cuda_simulated, cuda_status, gpu_name

    chosen = _resolve("auto")
    from nnkern.device import _auto_reason

    usable, reason = cuda_status()
    lines = [
        f"nnkern {nnkern.__version__} on Python {platform.python_version()} ({platform.machine()})",
        f"auto device: {chosen} ({_auto_reason})",
        (
            f"numpy {_version('numpy')}, numba {_version('numba')}, "
            f"numba-cuda {_version('numba_cuda')}, cupy {_version('cupy')}"
        ),
    ]
    from numba import njit, prange

    import nnkern.kernels

    @njit(parallel=True)
    def _touch(n):
        acc = 0
        for i in prange(n):
            acc += i
        return acc

    _touch(4)
    lines.append(
        f"CPU threads: {numba.get_num_threads()} (numba), threading layer: {numba.threading_layer()}"
        f" ({nnkern.kernels.wait_policy()})"
    )
    from nnkern import _blas

    lines.append(_blas.info_line())
    if cuda_simulated():
        lines.append(f"CUDA: {reason}")
    elif usable:
        lines.append(f"GPU: {gpu_name()}")
    else:
        lines.append(f"GPU: none ({reason})")
    return lines


def main(argv=None):
    """Entry point of ``python -m nnkern`` and the ``nnkern`` script."""
    parser = argparse.ArgumentParser(prog="python -m nnkern", description=__doc__.splitlines()[0])
    parser.add_argument("command", nargs="?", default="train", choices=["train", "info"])
    parser.add_argument("--device", default=None, help="auto | cpu | cuda | numpy")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--distributed", action="store_true",
                        help="data-parallel over the ranks of mpiexec (see nnkern.distributed)")
    args = parser.parse_args(argv)
    if args.command == "info":
        print("\n".join(info_lines()))
        return 0
    from nnkern.main_job import run_main_job

    return run_main_job(device=args.device, epochs=args.epochs, distributed=args.distributed)


if __name__ == "__main__":
    sys.exit(main())
