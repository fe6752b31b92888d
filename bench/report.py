"""Outputs of a benchmark run: terminal table, JSON, Markdown and PNG plots.

Ratios read ``x peer`` = peer time / nnkern time, the median over rounds of the
two samples taken back to back: above 1 nnkern is faster, below 1 the peer is.
"% ceil" is the rate as a fraction of the ceiling measured in the same run on
the same place (SGEMM GFLOP/s for compute-bound cases, copy GB/s for
memory-bound ones).
"""

import importlib.util
import json
import math
import os
from dataclasses import asdict


def _num(value, fmt):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return format(value, fmt)


def _rate(m):
    if math.isnan(m.rate):
        return ""
    if m.rate_unit == "us/call":
        return f"{m.rate:.1f} us/call"
    if m.rate_unit == "img/s":
        return f"{m.rate:.0f} img/s"
    return f"{m.rate:.1f} {m.rate_unit}"


def peer_labels(results):
    seen = []
    for m in results:
        if m.kind == "peer" and m.impl not in seen:
            seen.append(m.impl)
    return seen


def rows(results, nnkern_only=False):
    """Table rows (lists of strings) and the header, one row per measurement."""
    peers = peer_labels(results)
    header = ["case", "impl", "on", "ms", "best ms", "rate", "% ceil"]
    header += [f"x {p}" for p in peers]
    header.append("status")
    out = []
    for m in results:
        if nnkern_only and m.kind != "nnkern":
            continue
        row = [m.case, m.impl, m.place, _num(m.ms, ".3f"), _num(m.best_ms, ".3f"), _rate(m),
               _num(m.ceiling_fraction * 100, ".0f")]
        row += [_num(m.ratios.get(p), ".2f") for p in peers]
        row.append("" if m.ok() else m.status[:90])
        out.append(row)
    return header, out


def headline_rows(results):
    """One row per nnkern measurement: time, rate, ceiling share, ratios, the issue bar."""
    peers = peer_labels(results)
    header = ["case", "nnkern", "ms", "rate", "% ceil"] + [f"x {p}" for p in peers] + ["bar"]
    out = []
    for m in results:
        if m.kind != "nnkern":
            continue
        if not m.ok():
            out.append([m.case, m.impl, "", m.status[:60], ""] + [""] * len(peers) + [""])
            continue
        out.append([m.case, m.impl, _num(m.ms, ".3f"), _rate(m),
                    _num(m.ceiling_fraction * 100, ".0f")]
                   + [_num(m.ratios.get(p), ".2f") for p in peers] + [m.bar])
    return header, out


def furthest(results, count=3):
    """The ``count`` compiled-backend measurements furthest behind their fastest peer."""
    worst = []
    for m in results:
        if m.kind == "nnkern" and m.impl != "nnkern[numpy]" and m.ok() and m.ratios:
            peer, r = min(m.ratios.items(), key=lambda kv: kv[1])
            worst.append((r, m, peer))
    worst.sort(key=lambda t: t[0])
    return worst[:count]


def text_table(results):
    header, body = rows(results)
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h)
              for i, h in enumerate(header)]
    right = set(range(3, len(header) - 1))

    def line(r):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(r, widths, strict=True))).rstrip()

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), sep] + [line(r) for r in body])


def markdown_table(header, body):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in r) + " |" for r in body]
    return "\n".join(lines)


def ceiling_lines(ceilings):
    out = []
    for place, c in ceilings.items():
        for kind, d in c.items():
            unit = "GFLOP/s" if kind == "flop" else "GB/s"
            end = (f", {d['median_at_end']:.1f} at the end" if "median_at_end" in d else "")
            src = d.get("from", "fastest sample")
            out.append(f"- {place}: **{d['rate']:.1f} {unit}** ({src}; the ceiling test's "
                       f"median {d['median']:.1f} at the start{end}) — {d['what']}, "
                       f"{d['repeats']} samples")
    return out


def markdown(results, facts, ceilings, skipped):
    t = facts.get("threads", {})
    head = [
        f"# nnkern benchmark — {facts['machine']}",
        "",
        f"- Date: {facts['date_utc']}; command: `{facts['command']}`",
        (f"- CPU: {facts['cpu_model']} ({facts['logical_cpus']} logical CPUs, "
         f"flags {', '.join(facts['cpu_flags'])}); threads: numba {t.get('numba')}, "
         f"torch {t.get('torch')}, OpenBLAS {t.get('openblas')}"),
        f"- GPU: {facts['gpu'] or 'none'}",
        (f"- Load average (1/5/15 min) at start {facts.get('load_average_at_start')}, "
         f"at end {facts.get('load_average')}: the machine is shared"),
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in facts["versions"].items() if v),
        f"- git: {facts['git_commit'][:12]}"
        + (" (uncommitted changes)" if facts["git_dirty"] else ""),
        "",
        ("Ratios: `x peer` = peer time / nnkern time, the median over rounds of the two "
         "samples taken back to back in this run (above 1: nnkern faster). `ms` = median "
         "sample. `% ceil` = rate / ceiling measured in this run. The machine is shared "
         "and its speed drifts (up to 2x within a minute here), so read the ratios, not "
         "the absolute times."),
        "",
        "## Ceilings (measured in this run)",
        "",
        *ceiling_lines(ceilings),
        "",
        "## Headline: nnkern against its peers",
        "",
        markdown_table(*headline_rows(results)),
        "",
        "## Furthest from their peer",
        "",
        *[f"{i}. {m.case} ({m.impl}): {r:.2f}x {peer} ({m.ms:.3f} ms)"
          for i, (r, m, peer) in enumerate(furthest(results), 1)],
        "",
        "## All measurements",
        "",
        markdown_table(*rows(results)),
        "",
    ]
    if skipped:
        head += ["## Skipped", ""]
        head += [f"- {what} `{name}`: {why}" for what, name, why in skipped]
        head.append("")
    return "\n".join(head)


def _clean(obj):
    if isinstance(obj, float) and (math.isnan(obj) or math.isinf(obj)):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def to_json(results, facts, ceilings, skipped, options):
    return json.dumps(_clean({
        "machine": facts, "options": options, "ceilings": ceilings,
        "skipped": [{"what": a, "name": b, "why": c} for a, b, c in skipped],
        "results": [asdict(m) for m in results],
    }), indent=1)


# --------------------------------------------------------------------------------------
# plots


def _short(name):
    return (name.replace(" fwd+bwd", "").replace("softmax-CE", "CE")
            .replace("max_pool2d 2x2", "maxpool").replace("batch_norm", "bn"))


def plot_ratios(results, path):
    """Horizontal bars, one panel per nnkern backend: for every case, the ratio to
    each peer on the same place (log scale; right of 1: nnkern faster)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    backends, cases, peers = [], [], []
    value = {}
    for m in results:
        if m.kind != "nnkern" or not m.ok() or not m.ratios:
            continue
        if m.case not in cases:
            cases.append(m.case)
        if m.impl not in backends:
            backends.append(m.impl)
        for p, r in m.ratios.items():
            if (m.place, p) not in peers:
                peers.append((m.place, p))
            value[(m.case, m.impl, m.place, p)] = r
    if not value:
        return False
    # compiled backends first; the numpy reference last
    backends.sort(key=lambda b: (b == "nnkern[numpy]", b))
    colors = {("host", "numpy"): "#2ca02c", ("host", "torch"): "#d62728",
              ("gpu", "torch"): "#ff7f0e", ("gpu", "cupy"): "#9467bd"}
    height = 0.8 / len(peers)
    lo, hi = min(value.values()), max(value.values())
    size = (4.5 + 4.5 * len(backends), 1.6 + 0.3 * len(cases) * len(peers))
    fig, axes = plt.subplots(1, len(backends), sharey=True, squeeze=False, figsize=size)
    for ax, backend in zip(axes[0], backends, strict=True):
        for j, (place, peer) in enumerate(peers):
            ys, xs = [], []
            for i, c in enumerate(cases):
                r = value.get((c, backend, place, peer))
                if r is not None:
                    ys.append(i + (j - (len(peers) - 1) / 2) * height)
                    xs.append(r)
            label = f"vs {peer}" + (" (GPU)" if place == "gpu" else "")
            ax.barh(ys, xs, height=height * 0.9, color=colors.get((place, peer), "grey"),
                    label=label)
            for y, x in zip(ys, xs, strict=True):
                ax.text(x * 1.04, y, f"{x:.2f}", va="center", fontsize=8)
        ax.set_xscale("log")
        ax.axvline(1.0, color="black", lw=1)
        ax.set_xlim(min(0.5, lo / 1.5), max(2.0, hi * 2.0))
        ax.set_title(backend)
        ax.set_xlabel("peer time / nnkern time")
        ax.grid(axis="x", which="both", alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    axes[0][0].set_yticks(range(len(cases)))
    axes[0][0].set_yticklabels([_short(c) for c in cases], fontsize=9)
    axes[0][0].invert_yaxis()
    fig.suptitle("nnkern vs peers in the same run (median of paired samples; "
                 "right of 1: nnkern faster)")
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def _roof_label(case):
    words = _short(case).split()
    if words[0] == "sgemm":
        return f"sgemm {words[-1]}"
    if words[0] == "conv":
        return f"conv {words[1]}"
    return words[0]


def plot_roofline(results, ceilings, place, path):
    """Attained GFLOP/s against arithmetic intensity, under the measured ceilings."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = ceilings.get(place)
    pts = [m for m in results if m.ok() and m.place == place and m.flops and m.bytes
           and m.rate_unit in ("GFLOP/s", "GB/s")]
    if not c or not pts:
        return False
    peak, bw = c["flop"]["rate"], c["byte"]["rate"]
    fig, ax = plt.subplots(figsize=(10, 6.5))
    ais = [m.flops / m.bytes for m in pts]
    x = [min(ais) / 3, max(ais) * 3, peak / bw]
    x = sorted(set(x))
    xs = [x[0], peak / bw, x[-1]]
    ax.plot(xs[:2], [bw * xs[0], peak], color="black", lw=2, ls="--",
            label=f"copy ceiling {bw:.1f} GB/s")
    ax.plot(xs[1:], [peak, peak], color="black", lw=2,
            label=f"SGEMM ceiling {peak:.0f} GFLOP/s")
    impls = []
    for m in pts:
        if m.impl not in impls:
            impls.append(m.impl)
    markers = dict(zip(impls, "osD^v<>p*hH8dP" * 2, strict=False))
    colors = plt.get_cmap("tab10")
    for k, impl in enumerate(impls):
        sel = [m for m in pts if m.impl == impl]
        ax.scatter([m.flops / m.bytes for m in sel],
                   [m.flops / (m.ms / 1e3) / 1e9 for m in sel],
                   marker=markers[impl], color=colors(k), s=45, label=impl, zorder=3)
    # one label per op and size (the four SGEMM transposes share one), at nnkern's point
    seen = set()
    named = "nnkern[cuda]" if place == "gpu" else "nnkern[cpu]"
    for m in sorted(pts, key=lambda m: m.impl != named):
        label = _roof_label(m.case)
        if m.kind != "nnkern" or label in seen:
            continue
        seen.add(label)
        ax.annotate(label, (m.flops / m.bytes, m.flops / (m.ms / 1e3) / 1e9),
                    textcoords="offset points", xytext=(7, -3), fontsize=8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (flop / byte, each tensor counted once)")
    ax.set_ylabel("attained GFLOP/s")
    where = "CPU" if place == "host" else "GPU"
    ax.set_title(f"Roofline ({where}) with ceilings measured in this run")
    ax.grid(which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_training(results, path):
    """Images/s of the LeNet-5 training step by batch size, nnkern backends and PyTorch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [m for m in results if m.ok() and m.family == "train_step"]
    if not pts:
        return False
    impls = []
    for m in pts:
        key = (m.impl, m.place)
        if key not in impls:
            impls.append(key)
    cases = []
    for m in pts:
        if m.case not in cases:
            cases.append(m.case)
    fig, ax = plt.subplots(figsize=(9, 5))
    width = 0.8 / len(impls)
    colors = plt.get_cmap("tab10")
    for j, (impl, place) in enumerate(impls):
        xs, ys = [], []
        for i, c in enumerate(cases):
            for m in pts:
                if m.case == c and m.impl == impl and m.place == place:
                    xs.append(i + (j - (len(impls) - 1) / 2) * width)
                    ys.append(m.rate)
        ax.bar(xs, ys, width=width * 0.9, color=colors(j),
               label=impl + (" (GPU)" if place == "gpu" else ""))
        for x, y in zip(xs, ys, strict=True):
            ax.text(x, y, f"{y:.0f}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(cases)))
    ax.set_xticklabels([c.replace("LeNet-5 train step ", "") for c in cases])
    ax.set_ylim(0, 1.25 * max(m.rate for m in pts))
    ax.set_ylabel("images / s (higher is better)")
    ax.set_title("LeNet-5 training step (28x28, Adam), same run")
    ax.legend(fontsize=9, loc="upper left", ncol=len(impls))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_all(out_dir, results, facts, ceilings, skipped, options, log, plots=True):
    """Write table.txt, results.json, results.md and the plots into ``out_dir``."""
    os.makedirs(out_dir, exist_ok=True)
    written = []

    def put(name, text):
        with open(os.path.join(out_dir, name), "w") as f:
            f.write(text if text.endswith("\n") else text + "\n")
        written.append(name)

    put("table.txt", text_table(results))
    put("results.json", to_json(results, facts, ceilings, skipped, options))
    put("results.md", markdown(results, facts, ceilings, skipped))
    if not plots:
        return written
    if importlib.util.find_spec("matplotlib") is None:
        log("plots skipped: matplotlib is not installed")
        return written
    figures = [("ratios.png", lambda p: plot_ratios(results, p)),
             ("roofline_host.png", lambda p: plot_roofline(results, ceilings, "host", p)),
             ("roofline_gpu.png", lambda p: plot_roofline(results, ceilings, "gpu", p)),
             ("train_step.png", lambda p: plot_training(results, p))]
    for name, fn in figures:
        path = os.path.join(out_dir, name)
        if fn(path):
            written.append(name)
        elif os.path.exists(path):
            os.remove(path)
    return written
