"""Data-parallel training on this machine: allreduce throughput and time per epoch.

    pip install -e ".[distributed]"
    python bench/allreduce.py                  # both parts, about 2 minutes on 2 cores
    python bench/allreduce.py --part allreduce --ranks 2
    python bench/allreduce.py --part epochs --rounds 3 --epochs 8

Part 1, allreduce: ``MPICommunicator.allreduce_mean`` (what ``fit`` calls once
per step and dtype) on ``--ranks`` ranks, for the flat gradient buffer of the
main job's LeNet-style CNN (53,002 float32, 212 KB) and of the residual net of
``examples/resnet_digits.py`` (10,170 float32, 41 KB), then a sweep of sizes to
fit the cost model ``t(bytes) = alpha + bytes / beta`` that the README's "More
than one machine" uses. Reported per size: the median time of one call (the
slowest rank's, after a barrier), the algorithm bandwidth ``bytes / t`` and the
bus bandwidth ``2 (P - 1) / P * bytes / t`` (what each rank sends and receives
in a ring allreduce, comparable across P; the convention of nccl-tests).

Part 2, epochs: the time of one training epoch (median of epochs 2 to
``--epochs``: epoch 1 loads the kernels) of the same two networks, batch 32, on
the cpu backend, for

    plain fit            1 process x 2 threads, no MPI (fit's default)
    1 rank x 2 threads   mpiexec -n 1, fit(distributed=True): the strategy's own cost
    2 ranks x 1 thread   mpiexec -n 2, each rank half of every batch
    one rank's share alone   1 process x 1 thread, plain fit on half the data with half
                         the batch: a rank's computation, with the machine to itself
    two shares at once, no MPI   the same, twice at the same time (the slower one): what
                         2 ranks would take if communicating and waiting for each
                         other cost nothing

The configurations take turns (``--rounds`` rounds, each launches every
configuration once) so a change of load on a shared machine hits them alike;
the ratio column is the median over rounds of (plain fit) / (configuration),
both from the same round: above 1 is faster than one plain process. The best
round is in brackets: on a shared machine it is the closest to a quiet one
(ranks that wait for each other lose the most when other work takes a core).
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SIZES = [2**k for k in range(8, 25, 2)]  # float32 elements: 1 KB .. 64 MB


def _models():
    """name -> a function building the compiled network."""
    sys.path.insert(0, str(ROOT / "examples"))
    import resnet_digits

    from nnkern.main_job import build_lenet

    return {"lenet": build_lenet, "resnet": resnet_digits.build}


# --- the ranks' side -----------------------------------------------------------------------------


def worker_allreduce(repeats):
    import numpy as np

    from nnkern import distributed

    comm = distributed.init("cpu")
    rows = []
    buffers = [(name, len(build().parameters().arrays()[0]))
               for name, build in _models().items()]
    buffers += [(f"{n * 4 / 1024:g} KB", n) for n in SIZES]
    for name, n in buffers:
        a = np.ones(n, np.float32)
        calls = max(1, min(200, (1 << 22) // n))  # about 16 MB moved per sample
        for _ in range(3):
            comm.allreduce_mean(a)
        samples = []
        for _ in range(repeats):
            comm.barrier()
            start = time.perf_counter()
            for _ in range(calls):
                comm.allreduce_mean(a)
            elapsed = np.array([(time.perf_counter() - start) / calls])
            comm.comm.Allreduce(comm._MPI.IN_PLACE, elapsed, op=comm._MPI.MAX)
            samples.append(float(elapsed[0]))
        rows.append({"buffer": name, "elements": n, "bytes": 4 * n,
                     "seconds": statistics.median(samples), "best": min(samples)})
    if comm.rank == 0:
        print(json.dumps({"ranks": comm.size, "rows": rows}))


def worker_epochs(model_name, epochs, plain, share):
    import numpy as np

    import nnkern
    from nnkern import distributed
    from nnkern.main_job import EpochTimer, load_split

    with nnkern.device("cpu"):
        comm = None if plain else distributed.init()
        x_train, _, y_train, _ = load_split()
        n = len(x_train) // share
        model = _models()[model_name]()
        timer = EpochTimer()
        model.fit(x_train[:n], y_train[:n], batch_size=32 // share, epochs=epochs, verbose=0,
                  callbacks=[timer], distributed=not plain)
    if comm is None or comm.rank == 0:
        print(json.dumps({"epoch_seconds": float(np.median(timer.times[1:])),
                          "threads": __import__("numba").get_num_threads()}))


# --- the driver ----------------------------------------------------------------------------------


def _mpiexec():
    found = shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or shutil.which(
        "mpiexec")
    if found is None:
        sys.exit("no mpiexec: pip install -e '.[distributed]' (mpi4py and the mpich wheel)")
    return found


def _launch(command, threads, copies=1):
    """Run ``copies`` instances of ``command`` at once; the last JSON line of each."""
    env = dict(os.environ, NUMBA_NUM_THREADS=str(threads))
    procs = [subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(copies)]
    results = []
    for proc in procs:
        out, err = proc.communicate()
        if proc.returncode != 0:
            sys.exit(f"{' '.join(command)} failed:\n{out}\n{err}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def run_allreduce(ranks, repeats):
    me = [sys.executable, __file__, "--worker", "allreduce", "--repeats", str(repeats)]
    result = _launch([_mpiexec(), "-n", str(ranks), *me], threads=1)[0]
    p = result["ranks"]
    print(f"\nallreduce_mean over MPI, {p} ranks on this machine (float32, median of "
          f"{repeats} samples, slowest rank; best sample in brackets)\n")
    print("| buffer | bytes | time per call (best) | algbw GB/s (best) | busbw GB/s |")
    print("| --- | --- | --- | --- | --- |")
    for row in result["rows"]:
        t, best = row["seconds"], row["best"]
        alg = row["bytes"] / t / 1e9
        print(f"| {row['buffer']} | {row['bytes']:,} | {t * 1e6:,.1f} us ({best * 1e6:,.1f}) | "
              f"{alg:.2f} ({row['bytes'] / best / 1e9:.2f}) | {alg * 2 * (p - 1) / p:.2f} |")
    sweep = [r for r in result["rows"] if r["buffer"].endswith("KB")]
    small, large = sweep[0], sweep[-1]
    beta = (large["bytes"] - small["bytes"]) / (large["seconds"] - small["seconds"])
    alpha = small["seconds"] - small["bytes"] / beta
    print(f"\ncost model fitted on {small['buffer']} and {large['buffer']}: "
          f"alpha = {alpha * 1e6:.1f} us, beta = {beta / 1e9:.2f} GB/s (algorithm bandwidth)")
    return result


def run_epochs(rounds, epochs):
    me = [sys.executable, __file__, "--worker", "epochs", "--epochs", str(epochs)]
    mpi = _mpiexec()
    share = me + ["--plain", "--share", "2"]
    configs = {  # name: (command, threads, copies run at once)
        "plain fit, 1 process x 2 threads": (me + ["--plain"], 2, 1),
        "1 rank x 2 threads": ([mpi, "-n", "1", *me], 2, 1),
        "2 ranks x 1 thread": ([mpi, "-n", "2", *me], 1, 1),
        "one rank's share alone": (share, 1, 1),
        "two shares at once, no MPI": (share, 1, 2),
    }
    times = {(m, c): [] for m in ("lenet", "resnet") for c in configs}
    for r in range(rounds):
        for model in ("lenet", "resnet"):
            for name, (command, threads, copies) in configs.items():
                results = _launch(command + ["--model", model], threads, copies)
                times[(model, name)].append(max(r["epoch_seconds"] for r in results))
        print(f"round {r + 1}/{rounds} done", file=sys.stderr)
    print(f"\ntime per epoch (1,438 digits, batch 32, cpu backend; median of epochs 2-{epochs} "
          f"per launch; median over {rounds} rounds)\n")
    print("| network | configuration | s per epoch (best) | images/s of the job | x plain fit |")
    print("| --- | --- | --- | --- | --- |")
    plain = "plain fit, 1 process x 2 threads"
    for model in ("lenet", "resnet"):
        for name in configs:
            t = times[(model, name)]
            ratio = statistics.median(p / c for p, c in zip(times[(model, plain)], t))
            med = statistics.median(t)
            print(f"| {model} | {name} | {med:.3f} ({min(t):.3f}) | {1438 / med:,.0f} | "
                  f"{ratio:.2f} |")
    return times


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["all", "allreduce", "epochs"], default="all")
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--worker", choices=["allreduce", "epochs"], help=argparse.SUPPRESS)
    parser.add_argument("--model", default="lenet", help=argparse.SUPPRESS)
    parser.add_argument("--plain", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--share", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker == "allreduce":
        return worker_allreduce(args.repeats)
    if args.worker == "epochs":
        return worker_epochs(args.model, args.epochs, args.plain, args.share)
    print(f"python bench/allreduce.py {' '.join(argv or sys.argv[1:])}".strip())
    if args.part in ("all", "allreduce"):
        run_allreduce(args.ranks, args.repeats)
    if args.part in ("all", "epochs"):
        run_epochs(args.rounds, args.epochs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
