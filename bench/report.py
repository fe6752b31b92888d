"""Outputs of a benchmark run: terminal table, JSON, Markdown and PNG plots.

Ratios read ``x peer`` = peer time / nnkern time, the median over rounds of the
two samples taken back to back: above 1 nnkern is faster, below 1 the peer is.
"% ceil" is the rate as a fraction of the ceiling measured in the same run on
the same place (SGEMM GFLOP/s for compute-bound cases, copy GB/s for
memory-bound ones).
"""

import dataclasses
import importlib.util
import json
import math
import os
from dataclasses import asdict

from bench import core


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
    """Every peer key of the run, in order of first appearance."""
    seen = []
    for m in results:
        if m.kind == "peer" and m.impl not in seen:
            seen.append(m.impl)
    return seen


def peer_libraries(results):
    return list(dict.fromkeys(core.peer_library(p) for p in peer_labels(results)))


def _peer(results, m, key):
    for p in results:
        if p.case == m.case and p.place == m.place and p.impl == key and p.ok():
            return p
    return None


def ratio_cell(m, key):
    """``1.23 [1.19-1.27]``: the ratio and the 25th-75th percentiles of its pairs."""
    if key not in m.ratios:
        return ""
    lo, hi = m.ratio_iqr.get(key, (math.nan, math.nan))
    return f"{m.ratios[key]:.2f} [{lo:.2f}-{hi:.2f}]"


def fastest_setting(results, m, library):
    """``(key, why_unsure)``: the peer key of ``library`` with the lowest median on
    nnkern row ``m``'s case, and why its ratio is no headline ("" when it is one).

    Unsure when that ratio is unstable, or when another setting is unstable and
    its fastest sample beat the chosen setting's median (it may be the
    fastest on a quiet machine). ``(None, "")`` when the library has no row.
    """
    keys = [k for k in m.ratios if core.peer_library(k) == library]
    peers = {k: _peer(results, m, k) for k in keys}
    keys = [k for k in keys if peers[k] is not None]
    if not keys:
        return None, ""
    best = min(keys, key=lambda k: peers[k].ms)
    if best in m.unstable:
        return best, m.unstable[best]
    for k in keys:
        if k in m.unstable and peers[k].best_ms < peers[best].ms:
            return best, f"{k} is unstable and may be faster ({m.unstable[k]})"
    return best, ""


def rows(results):
    """The measurement table: one row per implementation of each case."""
    header = ["case", "impl", "on", "ms", "best ms", "med/best", "rate", "% ceil", "status"]
    out = []
    for m in results:
        mob = m.ms / m.best_ms if m.ok() and m.best_ms > 0 else math.nan
        status = m.status[:90] if not m.ok() else (f"unsteady: {m.unsteady}" if m.unsteady
                                                     else "")
        out.append([m.case, m.impl, m.place, _num(m.ms, ".3f"), _num(m.best_ms, ".3f"),
                    _num(mob, ".2f"), _rate(m), _num(m.ceiling_fraction * 100, ".0f"), status])
    return header, out


def ratio_rows(results):
    """The ratio table: one row per nnkern measurement and peer key, with its spread."""
    header = ["case", "nnkern", "peer", "x peer", "25-75 %ile", "spread", "pairs", "stable",
              "fastest of its library"]
    out = []
    for m in results:
        if m.kind != "nnkern" or not m.ok():
            continue
        fastest = {lib: fastest_setting(results, m, lib)[0] for lib in peer_libraries(results)}
        for key, r in m.ratios.items():
            lo, hi = m.ratio_iqr.get(key, (math.nan, math.nan))
            spread = (hi - lo) / r if r > 0 else math.nan
            out.append([m.case, m.impl, key, f"{r:.2f}", f"{lo:.2f}-{hi:.2f}",
                        f"{spread:.0%}", "paired" if m.ratio_paired.get(key, True) else "unpaired",
                        f"UNSTABLE: {m.unstable[key]}" if key in m.unstable else "yes",
                        "yes" if fastest.get(core.peer_library(key)) == key else ""])
    return header, out


def headline_rows(results):
    """One row per nnkern measurement: time, rate, ceiling share, the ratio to the
    fastest setting of each peer library (or "unstable"), that setting, the issue bar."""
    libs = peer_libraries(results)
    header = (["case", "nnkern", "ms", "rate", "% ceil"] + [f"x {lib}" for lib in libs]
              + ["fastest peer setting", "bar"])
    out = []
    for m in results:
        if m.kind != "nnkern":
            continue
        if not m.ok():
            out.append([m.case, m.impl, "", m.status[:60], ""] + [""] * len(libs) + ["", ""])
            continue
        cells, names = [], []
        for lib in libs:
            key, unsure = fastest_setting(results, m, lib)
            if key is None:
                cells.append("")
                continue
            cells.append("unstable" if unsure else ratio_cell(m, key))
            names.append(key + (" (unsure)" if unsure else ""))
        out.append([m.case, m.impl, _num(m.ms, ".3f"), _rate(m),
                    _num(m.ceiling_fraction * 100, ".0f")] + cells + ["; ".join(names), m.bar])
    return header, out


def furthest(results, count=3):
    """The ``count`` compiled-backend rows furthest behind the fastest setting of a peer
    library, among sound ratios: ``(ratio, measurement, peer key)``."""
    worst = []
    for m in results:
        if m.kind != "nnkern" or m.impl == "nnkern[numpy]" or not m.ok():
            continue
        for lib in peer_libraries(results):
            key, unsure = fastest_setting(results, m, lib)
            if key is not None and not unsure:
                worst.append((m.ratios[key], m, key))
    worst.sort(key=lambda t: t[0])
    return worst[:count]


def unstable_lines(results):
    """One line per unstable ratio: which and why."""
    return [f"- {m.case} ({m.impl}) x {key}: {why}"
            for m in results if m.kind == "nnkern" for key, why in m.unstable.items()]


def _text(header, body):
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h)
              for i, h in enumerate(header)]

    def line(r):
        return "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), sep] + [line(r) for r in body])


def text_table(results, facts=None):
    """The terminal table: the run's summary line, the measurements, the ratios."""
    head = [summary_line(facts, results), ""] if facts else []
    return "\n".join(head + [_text(*rows(results)), "", _text(*ratio_rows(results))])


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


def count_unstable(results):
    """``(unstable ratios, all ratios)`` of the run."""
    ratios = [(m, k) for m in results if m.kind == "nnkern" for k in m.ratios]
    return sum(1 for m, k in ratios if k in m.unstable), len(ratios)


def summary_line(facts, results):
    """The run's first line: whether the machine was busy, and how many ratios are unstable."""
    load = facts.get("load")
    bad, total = count_unstable(results)
    unsure = f"{bad} of {total} ratios are unstable and none of them is a headline"
    if not load:
        return f"MACHINE LOAD NOT RECORDED (a run from before it was); {unsure}"
    share = load.get("others_share")
    la = load.get("load_average_at_start")
    la = f"load average {la[0]:g} at the start" if la else "load average unknown"
    if share is None:
        return (f"MACHINE LOAD UNKNOWN (/proc/stat unreadable; {la}); every ratio rests on its "
                f"spread alone; {unsure}")
    seconds = load.get("others_cpu_s", 0.0)
    what = (f"other processes took {share:.0%} of the CPUs during this run "
            f"({seconds:.0f} CPU-seconds; {la})")
    busy_cases = load.get("busy_cases", 0)
    if facts.get("busy"):
        return (f"BUSY MACHINE: {what}; {busy_cases} cases were timed while busy; {unsure}")
    return f"Quiet machine: {what}; {unsure}"


def markdown(results, facts, ceilings, skipped):
    t = facts.get("threads", {})
    limits = facts.get("limits", {})
    title = f"# nnkern benchmark — {facts['machine']}"
    if facts.get("busy"):
        title += " — BUSY MACHINE, ratios below are not headline figures where marked"
    head = [
        title,
        "",
        f"**{summary_line(facts, results)}**",
        "",
        f"- Date: {facts['date_utc']}; command: `{facts['command']}`",
        (f"- CPU: {facts['cpu_model']} ({facts['logical_cpus']} logical CPUs, "
         f"flags {', '.join(facts['cpu_flags'])}); threads: numba {t.get('numba')}, "
         f"torch {t.get('torch')}, OpenBLAS {t.get('openblas')}"),
        f"- GPU: {facts['gpu'] or 'none'}",
        (f"- Load average (1/5/15 min) at start {facts.get('load_average_at_start')}, "
         f"at end {facts.get('load_average')}"),
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in facts["versions"].items() if v),
        f"- git: {facts['git_commit'][:12]}"
        + (" (uncommitted changes)" if facts["git_dirty"] else ""),
        "",
        ("Ratios: `x peer` = peer time / nnkern time, the median over rounds of the two "
         "samples taken back to back in this run (above 1: nnkern faster), with the 25th and "
         "75th percentiles of those pairs in brackets. `ms` = median sample. `% ceil` = rate / "
         "ceiling measured in this run. A peer is a library with an optional setting in "
         "brackets; the headline gives, per library, the ratio to its fastest setting."),
        "",
        ("Unstable (never a headline): a ratio whose 25-75 % range is wider than "
         f"{limits.get('max_spread', core.Limits.max_spread):.0%} of it, whose nnkern or peer "
         "median sample is over "
         f"{limits.get('max_median_over_best', core.Limits.max_median_over_best):g}x its "
         "fastest, that rests on fewer than "
         f"{limits.get('min_samples', core.Limits.min_samples)} pairs, or whose case was "
         f"timed while other processes took over "
         f"{limits.get('max_busy', core.Limits.max_busy):.0%} of the CPUs."),
        "",
        "## Headline: nnkern against the fastest setting of each peer",
        "",
        markdown_table(*headline_rows(results)),
        "",
        "## Furthest from their peer (sound ratios only)",
        "",
        *([f"{i}. {m.case} ({m.impl}): {r:.2f}x {peer} ({m.ms:.3f} ms)"
           for i, (r, m, peer) in enumerate(furthest(results), 1)] or ["None: no sound ratio."]),
        "",
        "## Unstable ratios",
        "",
        *(unstable_lines(results) or ["None."]),
        "",
        "## Ceilings (measured in this run)",
        "",
        *ceiling_lines(ceilings),
        "",
        "## All ratios",
        "",
        markdown_table(*ratio_rows(results)),
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

# One colour (and one roofline marker) per implementation, the same in every plot
# of every run; implementations not named here take the spare colours in order.
COLORS = {
    "nnkern[cpu]": "#1f77b4", "nnkern[cuda]": "#17becf", "nnkern[numpy]": "#7f7f7f",
    "numpy": "#2ca02c", "numpy[alternating]": "#98df8a",
    "torch": "#d62728", "torch[channels_last]": "#ff7f0e", "torch[mkldnn]": "#8c564b",
    "torch[foreach]": "#e377c2", "torch[fused]": "#9467bd", "cupy": "#bcbd22",
}
SPARE_COLORS = ("#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd",
                "#e6550d", "#31a354", "#756bb1", "#636363")
MARKERS = "osD^v<>phH8dP*X"


def palette(results):
    """``{implementation: (colour, marker)}`` for every implementation of the run."""
    labels = list(dict.fromkeys(m.impl for m in results))
    known = [lab for lab in COLORS if lab in labels]
    spare = iter(c for c in SPARE_COLORS if c not in COLORS.values())
    out = {}
    for i, lab in enumerate(known + sorted(set(labels) - set(known))):
        color = COLORS.get(lab) or next(spare, "#000000")
        out[lab] = (color, MARKERS[i % len(MARKERS)])
    return out


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _short(name):
    return (name.replace(" fwd+bwd", "").replace("softmax-CE", "CE")
            .replace("max_pool2d 2x2", "maxpool").replace("batch_norm", "bn"))


def plot_ratios(results, path, colors=None):
    """Horizontal bars, one panel per nnkern backend: for every case, the ratio to each
    peer key on the same place (log scale; right of 1: nnkern faster), the 25th-75th
    percentiles of the paired ratios as error bars, unstable ratios hollow."""
    plt = _pyplot()
    from matplotlib.patches import Patch

    colors = colors or palette(results)
    rows_of = {}
    for m in results:
        if m.kind == "nnkern" and m.ok() and m.ratios:
            rows_of.setdefault(m.impl, []).append(m)
    if not rows_of:
        return False
    backends = sorted(rows_of, key=lambda b: (b == "nnkern[numpy]", b))
    cases = list(dict.fromkeys(m.case for b in backends for m in rows_of[b]))
    width = max(len(m.ratios) for b in backends for m in rows_of[b])
    values = [v for b in backends for m in rows_of[b] for k in m.ratios
              for v in (m.ratios[k], *m.ratio_iqr.get(k, ()))]
    lo, hi = min(values), max(values)
    size = (5 + 5 * len(backends), 1.8 + 0.16 * len(cases) * (width + 1))
    fig, axes = plt.subplots(1, len(backends), sharey=True, squeeze=False, figsize=size)
    slot = 1.0 / (width + 1)
    shown = []
    for ax, backend in zip(axes[0], backends, strict=True):
        for m in rows_of[backend]:
            i = cases.index(m.case)
            keys = list(m.ratios)
            for j, key in enumerate(keys):
                y = i + (j - (len(keys) - 1) / 2) * slot
                r = m.ratios[key]
                q25, q75 = m.ratio_iqr.get(key, (r, r))
                color = colors[key][0]
                unstable = key in m.unstable
                ax.barh(y, r, height=slot * 0.85, color="none" if unstable else color,
                        edgecolor=color, linewidth=1.2, hatch="///" if unstable else None)
                ax.errorbar(r, y, xerr=[[r - q25], [q75 - r]], fmt="none", ecolor="black",
                            elinewidth=0.8, capsize=2)
                ax.text(max(r, q75) * 1.05, y, f"{r:.2f}" + (" unstable" if unstable else ""),
                        va="center", fontsize=7)
                if key not in shown:
                    shown.append(key)
        ax.set_xscale("log")
        ax.axvline(1.0, color="black", lw=1)
        ax.set_xlim(min(0.5, lo / 1.5), max(2.0, hi * 3.0))
        place = "GPU" if backend == "nnkern[cuda]" else "CPU"
        ax.set_title(f"{backend} ({place} peers)")
        ax.set_xlabel("peer time / nnkern time (log)")
        ax.grid(axis="x", which="both", alpha=0.3)
    axes[0][0].set_yticks(range(len(cases)))
    axes[0][0].set_yticklabels([_short(c) for c in cases], fontsize=8)
    axes[0][0].set_ylim(len(cases) - 0.5, -0.5)
    handles = [Patch(facecolor=colors[k][0], edgecolor=colors[k][0], label=f"vs {k}")
               for k in shown]
    handles.append(Patch(facecolor="none", edgecolor="black", hatch="///",
                         label="hollow: unstable, no headline"))
    handles.append(plt.Line2D([], [], color="black", lw=0.8,
                              label="error bar: 25th-75th percentile of the pairs"))
    ncol = min(len(handles), 4)
    legend_h = 0.25 * math.ceil(len(handles) / ncol) + 0.2
    fig.legend(handles=handles, loc="lower center", ncol=ncol, fontsize=8, frameon=False)
    fig.suptitle("nnkern vs peers in the same run (median of paired samples; "
                 "right of 1: nnkern faster)")
    fig.tight_layout(rect=(0, legend_h / size[1], 1, 0.98))
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def _number_list(numbers):
    """``[1, 2, 3, 7]`` -> ``"1-3,7"``."""
    out, run = [], []
    for n in sorted(set(numbers)):
        if run and n != run[-1] + 1:
            out.append(f"{run[0]}-{run[-1]}" if len(run) > 2 else ",".join(map(str, run)))
            run = []
        run.append(n)
    if run:
        out.append(f"{run[0]}-{run[-1]}" if len(run) > 2 else ",".join(map(str, run)))
    return ",".join(out)


def roofline_labels(points, near_x, near_y):
    """Group ``(x, y, number)`` points that would print on each other (closer than
    ``near_x`` / ``near_y`` decades on the log axes): ``[(x, y, "1-4")]``, one label
    per group, placed right of its right-most point at its middle height, so every
    point carries its case number and no two labels overlap."""
    groups = []
    for x, y, n in sorted(points, key=lambda p: (p[1], p[0])):
        lx, ly = math.log10(x), math.log10(y)
        for g in groups:
            if abs(g["x"] - lx) <= near_x and abs(g["top"] - ly) <= near_y:
                g["n"].append(n)
                g["xs"].append(lx)
                g["ys"].append(ly)
                g["top"] = ly
                break
        else:
            groups.append({"x": lx, "top": ly, "n": [n], "xs": [lx], "ys": [ly]})
    return [(10 ** max(g["xs"]), 10 ** ((min(g["ys"]) + max(g["ys"])) / 2), _number_list(g["n"]))
            for g in groups]


def plot_roofline(results, ceilings, place, path, colors=None):
    """Attained GFLOP/s against arithmetic intensity, under the measured ceilings; every
    point labelled with its case number (the key is beside the plot), unsteady
    measurements hollow."""
    plt = _pyplot()

    c = ceilings.get(place)
    pts = [m for m in results if m.ok() and m.place == place and m.flops and m.bytes
           and m.rate_unit in ("GFLOP/s", "GB/s")]
    if not c or not pts:
        return False
    colors = colors or palette(results)
    peak, bw = c["flop"]["rate"], c["byte"]["rate"]
    cases = list(dict.fromkeys(m.case for m in pts))
    number = {case: i + 1 for i, case in enumerate(cases)}
    fig, ax = plt.subplots(figsize=(13, max(6.5, 1.5 + 0.2 * len(cases))))
    ais = [m.flops / m.bytes for m in pts]
    x0, x1 = min(min(ais) / 3, peak / bw / 3), max(max(ais) * 3, peak / bw * 3)
    ax.plot([x0, peak / bw], [bw * x0, peak], color="black", lw=2, ls="--",
            label=f"copy ceiling {bw:.1f} GB/s")
    ax.plot([peak / bw, x1], [peak, peak], color="black", lw=2,
            label=f"SGEMM ceiling {peak:.0f} GFLOP/s")
    xy = []
    for impl in dict.fromkeys(m.impl for m in pts):
        color, marker = colors[impl]
        for steady in (True, False):
            sel = [m for m in pts if m.impl == impl and bool(m.unsteady) != steady]
            if not sel:
                continue
            xs = [m.flops / m.bytes for m in sel]
            ys = [m.flops / (m.ms / 1e3) / 1e9 for m in sel]
            ax.scatter(xs, ys, marker=marker, s=45, zorder=3, linewidths=1.2,
                       facecolors=color if steady else "none", edgecolors=color,
                       label=impl if steady else f"{impl} (hollow: unsteady)")
            xy += [(x, y, number[m.case]) for x, y, m in zip(xs, ys, sel, strict=True)]
    ax.set_xscale("log")
    ax.set_yscale("log")
    fig.canvas.draw()  # fixes the limits: label groups are sized in pixels
    box = ax.get_window_extent()
    (xa, xb), (ya, yb) = ax.get_xlim(), ax.get_ylim()
    near_x = 3 * math.log10(xb / xa) / box.width  # one column of points: the same work
    near_y = 11 * math.log10(yb / ya) / box.height
    for x, y, text in roofline_labels(xy, near_x, near_y):
        ax.annotate(text, (x, y), textcoords="offset points", xytext=(6, -3), fontsize=7)
    key = "\n".join(f"{number[c]:>2}  {_short(c)}" for c in cases)
    ax.text(1.02, 1.0, key, transform=ax.transAxes, va="top", ha="left", fontsize=7,
            family="monospace")
    ax.set_xlabel("arithmetic intensity (flop / byte, each tensor counted once)")
    ax.set_ylabel("attained GFLOP/s")
    where = "CPU" if place == "host" else "GPU"
    ax.set_title(f"Roofline ({where}) with ceilings measured in this run; "
                 "numbers: cases (key on the right)")
    ax.grid(which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_training(results, path, colors=None):
    """Images/s of the LeNet-5 training step by batch size, nnkern backends and peers
    (GPU bars hatched, unsteady ones hollow)."""
    plt = _pyplot()

    pts = [m for m in results if m.ok() and m.family == "train_step"]
    if not pts:
        return False
    colors = colors or palette(results)
    impls = list(dict.fromkeys((m.impl, m.place) for m in pts))
    cases = list(dict.fromkeys(m.case for m in pts))
    fig, ax = plt.subplots(figsize=(9, 5))
    width = 0.8 / len(impls)
    for j, (impl, place) in enumerate(impls):
        color = colors[impl][0]
        for i, c in enumerate(cases):
            for m in pts:
                if m.case != c or m.impl != impl or m.place != place:
                    continue
                x = i + (j - (len(impls) - 1) / 2) * width
                ax.bar(x, m.rate, width=width * 0.9, color="none" if m.unsteady else color,
                       edgecolor=color, hatch="xx" if place == "gpu" else None,
                       label=impl + (" (GPU)" if place == "gpu" else "") if i == 0 else None)
                ax.text(x, m.rate, f"{m.rate:.0f}" + ("?" if m.unsteady else ""), ha="center",
                        va="bottom", fontsize=8)
    ax.set_xticks(range(len(cases)))
    ax.set_xticklabels([c.replace("LeNet-5 train step ", "") for c in cases])
    ax.set_ylim(0, 1.3 * max(m.rate for m in pts))
    ax.set_ylabel("images / s (higher is better)")
    ax.set_title("LeNet-5 training step (28x28, Adam), same run; hollow, '?': unsteady")
    ax.legend(fontsize=8, loc="upper left", ncol=min(4, len(impls)))
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

    put("table.txt", text_table(results, facts))
    put("results.json", to_json(results, facts, ceilings, skipped, options))
    put("results.md", markdown(results, facts, ceilings, skipped))
    if not plots:
        return written
    if importlib.util.find_spec("matplotlib") is None:
        log("plots skipped: matplotlib is not installed")
        return written
    colors = palette(results)
    figures = [("ratios.png", lambda p: plot_ratios(results, p, colors)),
               ("roofline_host.png",
                lambda p: plot_roofline(results, ceilings, "host", p, colors)),
               ("roofline_gpu.png", lambda p: plot_roofline(results, ceilings, "gpu", p, colors)),
               ("train_step.png", lambda p: plot_training(results, p, colors))]
    for name, fn in figures:
        path = os.path.join(out_dir, name)
        if fn(path):
            written.append(name)
        elif os.path.exists(path):
            os.remove(path)
    return written


# --------------------------------------------------------------------------------------
# python -m bench --compare OLD NEW

COMPARE_K = 2.0  # how many combined half-spreads a change must pass to stand out


def load_run(path):
    """A run's results.json (``path`` is the file or its folder): ``(data, measurements)``.

    The measurements' ratios, spreads and stability are computed again from
    their samples, with the run's own limits, so runs written before the
    spreads were recorded compare alike.
    """
    if os.path.isdir(path):
        path = os.path.join(path, "results.json")
    with open(path) as f:
        data = json.load(f)
    names = {f.name for f in dataclasses.fields(core.Measurement)}
    derived = ("ratios", "ratios_of_medians", "ratio_iqr", "ratio_paired", "unstable")
    out = []
    for r in data["results"]:
        d = {k: v for k, v in r.items() if k in names and k not in derived}
        for k in ("ms", "best_ms", "wall_ms", "rate", "ceiling_fraction"):
            if d.get(k) is None:
                d[k] = math.nan
        out.append(core.Measurement(**d))
    known = {f.name for f in dataclasses.fields(core.Limits)}
    limits = core.Limits(**{k: v for k, v in (data["options"].get("limits") or {}).items()
                            if k in known})
    by_case = {}
    for m in out:
        by_case.setdefault(m.case, []).append(m)
    for group in by_case.values():
        core.compute_ratios(group, {}, limits)
    return data, out


def _half_spread(m, key):
    """Half the interquartile range of a ratio's pairs, in natural-log units."""
    lo, hi = m.ratio_iqr[key]
    return math.log(hi / lo) / 2 if lo > 0 and hi > 0 else math.inf


def compare_rows(old, new, floor=0.10, k=COMPARE_K):
    """Case by case, the change of each ratio from ``old`` to ``new`` (measurement lists).

    The rule: a change stands out from the noise when
    ``|ln(new / old)| > max(ln(1 + floor), k * sqrt(h_old**2 + h_new**2))``, ``h`` being
    half the interquartile range of each run's ln(paired ratios), and the
    ratio is stable in both runs. ``floor`` is the run-to-run drift that
    within-run spreads do not show (the development VM: about 10 %).
    Returns ``(header, rows, flags)``, ``flags[i]`` being "better", "worse" or "".
    """
    def index(ms):
        return {(m.case, m.impl, m.place, key): m for m in ms if m.kind == "nnkern" and m.ok()
                for key in m.ratios}

    a, b = index(old), index(new)
    header = ["case", "nnkern", "peer", "old x peer [25-75]", "new x peer [25-75]", "change",
              "noise", "nnkern ms old -> new", "verdict"]
    out, flags = [], []
    for key in list(a) + [x for x in b if x not in a]:
        case, impl, _place, peer = key
        mo, mn = a.get(key), b.get(key)
        if mo is None or mn is None:
            out.append([case, impl, peer, ratio_cell(mo, peer) if mo else "-",
                        ratio_cell(mn, peer) if mn else "-", "", "", "",
                        "only in OLD" if mn is None else "only in NEW"])
            flags.append("")
            continue
        change = mn.ratios[peer] / mo.ratios[peer]
        noise = max(math.log1p(floor),
                    k * math.hypot(_half_spread(mo, peer), _half_spread(mn, peer)))
        unsure = [w for w, m in (("OLD", mo), ("NEW", mn)) if peer in m.unstable]
        flag = ""
        if unsure:
            verdict = f"unsure: unstable in {' and '.join(unsure)}"
        elif abs(math.log(change)) > noise:
            flag = "better" if change > 1 else "worse"
            verdict = ("BETTER: nnkern gained on the peer" if flag == "better"
                       else "WORSE: nnkern lost to the peer")
        else:
            verdict = "within the noise"
        out.append([case, impl, peer, ratio_cell(mo, peer), ratio_cell(mn, peer),
                    f"{change - 1:+.0%}", f"±{math.expm1(noise):.0%}",
                    f"{mo.ms:.3f} -> {mn.ms:.3f}", verdict])
        flags.append(flag)
    return header, out, flags


def compare_text(old_path, new_path, floor=0.10):
    """The report of ``python -m bench --compare OLD NEW`` and whether anything got worse."""
    (da, ma), (db, mb) = load_run(old_path), load_run(new_path)
    header, body, flags = compare_rows(ma, mb, floor)

    def about(d):
        f = d["machine"]
        return (f"{f.get('machine')}, {f.get('date_utc')}, git {str(f.get('git_commit'))[:12]}"
                + (", BUSY" if f.get("busy") else ""))

    lines = [f"OLD: {old_path} ({about(da)})", f"NEW: {new_path} ({about(db)})"]
    if da["machine"].get("cpu_model") != db["machine"].get("cpu_model"):
        lines.append("NOTE: the two runs are from different CPUs; ratios still compare, "
                     "times do not.")
    lines += [
        ("Rule: a change stands out when |ln(new/old)| > max(ln(1 + "
         f"{floor:g}), {COMPARE_K:g} * sqrt(h_old^2 + h_new^2)), h = half the 25-75 % range "
         "of each run's ln(paired ratios), and the ratio is stable in both runs. 'noise' is "
         "that bound; ratio above 1: nnkern faster than the peer."),
        "",
        _text(header, body),
        "",
        (f"{flags.count('worse')} changes stand out as worse, {flags.count('better')} as "
         f"better, out of {sum(1 for r in body if r[5])} ratios in both runs."),
    ]
    return "\n".join(lines), "worse" in flags
