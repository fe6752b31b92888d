"""Benchmark every nnkern kernel on every backend against its peers.

    python -m bench                                  # everything found here
    python -m bench --quick                          # small shapes, a minute or two
    python bench/run.py --ops gemm,conv --devices cpu --peers numpy,torch
    python -m bench --devices numpy,cpu --peers numpy,torch --out bench/results/mybox

Each case is validated against nnkern's numpy reference (float64) before it
is timed, warmed up outside the timing, and timed as the median of several
repeats (perf_counter on the host, CUDA events on the GPU). Ceilings (a large
SGEMM and a copy) and every peer are measured in the same run; ratios are
``peer ms / nnkern ms``. Results go to ``bench/results/<machine>/`` (with
``--quick``: ``.../quick/``): table.txt, results.json, results.md and PNGs.
Peers and devices that cannot run here are skipped with the reason printed.
"""

import argparse
import os
import sys
import time

if __package__ in (None, ""):  # run as a script: python bench/run.py
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import cases as case_registry
from bench import core, report


def _list(text, allowed, what):
    items = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in items if t not in allowed]
    if bad:
        raise argparse.ArgumentTypeError(
            f"unknown {what}: {', '.join(bad)} (choose from {', '.join(allowed)})")
    return items


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ops", default=",".join(case_registry.FAMILIES),
                   type=lambda t: _list(t, case_registry.FAMILIES, "op family"),
                   help="comma-separated op families (default: all)")
    p.add_argument("--devices", default=",".join(core.ALL_DEVICES),
                   type=lambda t: _list(t, core.ALL_DEVICES, "device"),
                   help="nnkern backends to time (default: numpy,cpu,cuda; those "
                        "missing here are skipped)")
    p.add_argument("--peers", default=",".join(core.ALL_PEERS),
                   type=lambda t: _list(t, core.ALL_PEERS, "peer"),
                   help="peer libraries (default: numpy,torch,cupy; each used when importable)")
    p.add_argument("--quick", action="store_true",
                   help="small shapes: a smoke run of the whole suite")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed samples per implementation (default 7, quick 3)")
    p.add_argument("--numpy-repeats", type=int, default=3,
                   help="at most this many samples for the slow numpy reference backend")
    p.add_argument("--budget", type=float, default=None,
                   help="seconds of timing per implementation before repeats are cut "
                        "(default 20, quick 2)")
    p.add_argument("--sample-ms", type=float, default=None,
                   help="length of one timed sample (calls are repeated to fill it; "
                        "default 50, quick 20): long samples average out a busy machine")
    p.add_argument("--settle-ms", type=float, default=0.0,
                   help="idle time before each host sample (default 0: OpenBLAS's "
                        "spinning is cut to a few cycles instead, see bench/__init__.py)")
    p.add_argument("--out", default=None,
                   help="output folder (default bench/results/<machine>/, quick: .../quick/)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    return p.parse_args(argv)


def main(argv=None):
    core.prepare_environment()  # before PyTorch or CuPy load (in core.probe)
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    repeats = args.repeats or (3 if args.quick else 7)
    budget = args.budget or (2.0 if args.quick else 20.0)
    sample_s = (args.sample_ms or (20.0 if args.quick else 50.0)) / 1e3
    settle_s = args.settle_ms / 1e3
    t_start = time.perf_counter()

    def log(msg):
        print(msg, flush=True)

    load_start = core.load_average()
    env = core.probe(args.devices, args.peers)
    log(f"devices: {', '.join(env.devices) or 'none'}; peers: "
        + ", ".join(f"{k} {v}" for k, v in env.peers.items()))
    for what, name, why in env.skipped:
        log(f"skipped {what} {name}: {why}")

    ceilings = {}
    if any(d in core.HOST_DEVICES for d in env.devices) or not env.devices:
        ceilings["host"] = core.host_ceilings(args.quick, repeats)
    if "cuda" in env.devices:
        ceilings["gpu"] = core.gpu_ceilings(args.quick, repeats)
    for line in report.ceiling_lines(ceilings):
        log("ceiling " + line[2:])

    results, skipped, refs = [], list(env.skipped), {}
    for case in case_registry.load(args.ops, args.quick):
        found, why = core.run_case(case, env, args.devices, args.peers, repeats, ceilings, log,
                                   budget_s=budget, numpy_repeats=args.numpy_repeats,
                                   target_s=sample_s, ref_cache=refs, settle_s=settle_s)
        results += found
        skipped += why

    again = {}
    if "host" in ceilings:
        again["host"] = core.host_ceilings(args.quick, repeats)
    if "gpu" in ceilings:
        again["gpu"] = core.gpu_ceilings(args.quick, repeats)
    ceilings = core.fold_vendor_sgemm(core.merge_ceilings(ceilings, again), results)
    core.apply_ceilings(results, ceilings)
    for line in report.ceiling_lines(ceilings):
        log("ceiling " + line[2:])
    facts = core.machine_facts(env, ["python", "-m", "bench", *argv])
    facts["load_average_at_start"] = load_start
    options = {"ops": args.ops, "devices": args.devices, "peers": args.peers,
               "quick": args.quick, "repeats": repeats, "numpy_repeats": args.numpy_repeats,
               "budget_s": budget, "sample_s": sample_s, "settle_s": settle_s,
               "seconds": round(time.perf_counter() - t_start, 1)}
    log("")
    log(report.text_table(results) if results else "no measurements")
    worst = report.furthest(results)
    if worst:
        log("\nfurthest from their peer:")
        for r, m, peer in worst:
            log(f"  {m.case} ({m.impl}): {r:.2f}x {peer}")
    if skipped:
        log("\nskipped:")
        for what, name, why in skipped:
            log(f"  {what} {name}: {why}")
    out = args.out or os.path.join(core.REPO, "bench", "results", facts["machine"],
                                   "quick" if args.quick else "")
    written = report.write_all(out, results, facts, ceilings, skipped, options, log,
                               plots=not args.no_plots)
    log(f"\nwrote {', '.join(written)} to {os.path.relpath(out)} "
        f"in {options['seconds']:.0f} s")
    bad = [m for m in results if m.status.startswith(("invalid", "error"))]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
