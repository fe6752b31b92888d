"""The conv CPU rule against im2col, op by op, on layers of few output pixels.

For each layer and op: the version the rule (``choose``, algo "auto") takes, its time,
and the ratio rule time / im2col time (above 1: im2col is faster). One process, the two
taking turns, medians of ``--rounds``. The figures behind IM2COL_MAX_PIXELS,
IM2COL_MAX_CHANNELS2, IM2COL_MAX_PIXELS_BW and IM2COL_MIN_TAPS in kernels/conv/cpu.py come
from this script; rerun it after a change to either side. With ``--before-rule`` the rule is the one before
im2col entered it (im2col's thresholds set to 0), so the table compares im2col with the
direct version it replaced.

    python bench/conv_rule.py --before-rule
"""

import argparse
import time

import numpy as np

# (N, C, H = W, K, R = S, stride, padding): 3x3 layers of few pixels, where the rule took
# Winograd or cl before im2col entered it, then layers where it took px, tile or pxw
LAYERS = [
    (n, c, h, c, 3, 1, 1)
    for n in (1, 2) for h in (7, 14, 28, 56) for c in (16, 64, 256)
    if n * h * h * c <= 56 * 56 * 64
] + [
    (1, 64, 28, 128, 3, 2, 1), (1, 128, 14, 128, 1, 1, 0), (1, 256, 14, 256, 1, 1, 0),
    (1, 6, 14, 16, 5, 1, 0), (1, 1, 28, 6, 5, 1, 2), (1, 32, 28, 32, 5, 1, 2),
    (4, 128, 14, 128, 3, 1, 1), (8, 256, 7, 256, 3, 1, 1), (4, 64, 56, 64, 3, 1, 1),
    (32, 64, 56, 64, 3, 1, 1), (1, 32, 7, 32, 3, 1, 1), (1, 32, 14, 32, 3, 1, 1),
    (2, 32, 14, 32, 3, 1, 1), (1, 32, 14, 64, 3, 1, 1), (1, 128, 7, 128, 3, 1, 1),
    (1, 128, 14, 128, 3, 1, 1), (2, 128, 7, 128, 3, 1, 1), (1, 64, 14, 128, 3, 1, 1),
]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--before-rule", action="store_true",
                        help="compare with the rule as it was before im2col entered it")
    args = parser.parse_args(argv)

    import nnkern.kernels  # noqa: F401  (thread settings before the kernels load)
    from nnkern.kernels.conv import cpu as C

    if args.before_rule:
        C.IM2COL_MAX_PIXELS = C.IM2COL_MAX_PIXELS_BW = 0
    rng = np.random.default_rng(0)
    for layer in LAYERS:
        print(time_layer(C, layer, rng, args.rounds), flush=True)


def time_layer(C, layer, rng, rounds):
    """One line: the layer, then per op the rule's version, its ms and rule / im2col."""
    N, Cc, H, K, R, st, pad = layer
    OH = (H + 2 * pad - R) // st + 1
    x = rng.uniform(-1, 1, (N, Cc, H, H)).astype(np.float32)
    w = rng.uniform(-0.2, 0.2, (K, Cc, R, R)).astype(np.float32)
    b = rng.uniform(-1, 1, K).astype(np.float32)
    g = rng.uniform(-1, 1, (N, K, OH, OH)).astype(np.float32)
    y, dx = np.empty((N, K, OH, OH), np.float32), np.empty_like(x)
    dw, db = np.empty_like(w), np.empty(K, np.float32)
    conv = ((st, st), (pad, pad), (1, 1), 1)
    ops = {
        "forward": lambda a: C.conv2d_forward(x, w, b, y, *conv, a),
        "backward_data": lambda a: C.conv2d_backward_data(g, w, dx, *conv, a),
        "backward_weights": lambda a: C.conv2d_backward_weights(g, x, dw, db, *conv, a),
    }
    geo = C.Geometry(N, Cc, H, H, K, R, R, OH, OH, st, st, pad, pad, 1, 1, 1)
    for run in ops.values():  # compile and warm both
        run("auto")
        run("im2col")
    times = {(op, a): [] for op in ops for a in ("auto", "im2col")}
    for _ in range(rounds):
        for op, run in ops.items():
            for a in ("auto", "im2col"):
                t = time.perf_counter()
                run(a)
                times[op, a].append(time.perf_counter() - t)
    cells = []
    for op in ops:
        rule, im2col = (np.median(times[op, a]) for a in ("auto", "im2col"))
        cells.append(f"{op} {C.choose(op, geo)[0]} {rule * 1e3:.3f} ms x{rule / im2col:.2f}")
    return f"N{N} C{Cc} {H}x{H} K{K} {R}x{R} stride {st}: " + "  ".join(cells)

if __name__ == "__main__":
    main()
