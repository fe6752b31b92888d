"""Benchmark every nnkern kernel on every backend against its peers.

    python -m bench                                  # everything found here
    python -m bench --quick                          # small shapes, a minute or two
    python bench/run.py --ops gemm,conv --devices cpu --peers numpy,torch
    python -m bench --devices numpy,cpu --peers numpy,torch --out bench/results/mybox
    python -m bench --compare OLD NEW                # what changed between two runs

Each case is validated against nnkern's numpy reference (float64) before it
is timed, warmed up outside the timing, and timed as the median of several
repeats (perf_counter on the host, CUDA events on the GPU). Ceilings (a large
SGEMM and a copy) and every peer are measured in the same run; ratios are
``peer ms / nnkern ms`` with the spread of their paired samples, and a ratio
too spread out, or timed while other processes were busy, is "unstable" and
never a headline. Results go to ``bench/out/<machine>/`` (with ``--quick``:
``.../quick/``; git ignores bench/out): table.txt, results.json, results.md
and PNGs. The committed results are written only on request (``--out
bench/results/<machine>``). Peers and devices that cannot run here are
skipped with the reason printed.
"""

import argparse
import dataclasses
import os
import sys
import time

if __package__ in (None, ""):  # run as a script: python bench/run.py
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import cases as case_registry
from bench import core, report


def _list(text, allowed, what, name=lambda t: t):
    items = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in items if name(t) not in allowed]
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
                   type=lambda t: _list(t, core.ALL_PEERS, "peer library", core.peer_library),
                   help="peer libraries, each with all its settings, or single peer keys such "
                        "as torch[channels_last] (default: numpy,torch,cupy; each used when "
                        "importable)")
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
                   help="idle time before each host sample (default 0: an idle gap makes "
                        "the next parallel call start on one vCPU of a small VM)")
    limits = core.Limits()
    p.add_argument("--max-spread", type=float, default=limits.max_spread,
                   help="a ratio whose 25-75 %% range is wider than this share of it is "
                        f"unstable (default {limits.max_spread:g})")
    p.add_argument("--max-median-over-best", type=float, default=limits.max_median_over_best,
                   help="a ratio is unstable when either side's median sample is more than "
                        f"this times its fastest (default {limits.max_median_over_best:g})")
    p.add_argument("--max-busy", type=float, default=limits.max_busy,
                   help="a case is unstable when other processes take more than this share "
                        f"of the CPUs while it is timed (default {limits.max_busy:g})")
    p.add_argument("--out", default=None,
                   help="output folder (default bench/out/<machine>/, quick: .../quick/; "
                        "the committed results: bench/results/<machine>)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--compare", nargs=2, metavar=("OLD", "NEW"), default=None,
                   help="compare two runs (results.json or their folders) case by case and "
                        "say which ratio changes stand out from the noise; runs nothing. "
                        "Exit status 1 when one got worse beyond the noise")
    p.add_argument("--noise-floor", type=float, default=0.10,
                   help="with --compare: changes smaller than this share never stand out "
                        "(run-to-run drift; default 0.10)")
    return p.parse_args(argv)


def main(argv=None):
    core.prepare_environment()  # before PyTorch or CuPy load (in core.probe)
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.compare:
        text, worse = report.compare_text(*args.compare, floor=args.noise_floor)
        print(text)
        return 1 if worse else 0
    repeats = args.repeats or (3 if args.quick else 7)
    budget = args.budget or (2.0 if args.quick else 20.0)
    sample_s = (args.sample_ms or (20.0 if args.quick else 50.0)) / 1e3
    settle_s = args.settle_ms / 1e3
    limits = core.Limits(max_spread=args.max_spread,
                         max_median_over_best=args.max_median_over_best,
                         max_busy=args.max_busy)
    t_start = time.perf_counter()
    cpu_start = core.cpu_snapshot()

    def log(msg):
        print(msg, flush=True)

    load_start = core.load_average()
    if load_start and load_start[0] > 0.5 * (os.cpu_count() or 1):
        log(f"note: load average {load_start[0]:g} on {os.cpu_count()} CPUs before the run: "
            "the machine is busy, expect unstable ratios")
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
                                   target_s=sample_s, ref_cache=refs, settle_s=settle_s,
                                   limits=limits)
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
    facts["load"] = core.run_load(cpu_start, core.cpu_snapshot(), results, limits, load_start)
    facts["busy"] = core.is_busy(facts["load"], limits)
    facts["limits"] = dataclasses.asdict(limits)
    options = {"ops": args.ops, "devices": args.devices, "peers": args.peers,
               "quick": args.quick, "repeats": repeats, "numpy_repeats": args.numpy_repeats,
               "budget_s": budget, "sample_s": sample_s, "settle_s": settle_s,
               "limits": dataclasses.asdict(limits),
               "seconds": round(time.perf_counter() - t_start, 1)}
    log("")
    log(report.text_table(results, facts) if results else "no measurements")
    worst = report.furthest(results)
    if worst:
        log("\nfurthest from their peer (sound ratios only):")
        for r, m, peer in worst:
            log(f"  {m.case} ({m.impl}): {r:.2f}x {peer}")
    if skipped:
        log("\nskipped:")
        for what, name, why in skipped:
            log(f"  {what} {name}: {why}")
    out = args.out or default_out(facts["machine"], args.quick)
    written = report.write_all(out, results, facts, ceilings, skipped, options, log,
                               plots=not args.no_plots)
    log(f"\nwrote {', '.join(written)} to {os.path.relpath(out)} "
        f"in {options['seconds']:.0f} s")
    log(report.summary_line(facts, results))
    bad = [m for m in results if m.status.startswith(("invalid", "error"))]
    return 1 if bad else 0


def default_out(machine, quick):
    """bench/out/<machine>/ (quick: .../quick/): ignored by git, so a run leaves the
    checkout clean; the committed results are written only with --out."""
    return os.path.join(core.REPO, "bench", "out", machine, "quick" if quick else "")


if __name__ == "__main__":
    sys.exit(main())
