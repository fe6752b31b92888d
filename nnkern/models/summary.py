"""``model.summary()``: the Keras table of layers, output shapes and parameter counts.

A nested model is one row (its own ``summary()`` shows its layers); a layer called
several times (shared weights) is one row whose inputs list every call.
"""

from ..layers.base import Input


def _format_bytes(n):
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.2f} {unit}"
        n /= 1024


def _count(layer):
    """(trainable, non-trainable, trainable bytes, non-trainable bytes) of a layer or model."""
    leaves = layer._leaf_layers() if hasattr(layer, "_leaf_layers") else [layer]
    t = nt = tb = nb = 0
    for leaf in leaves:
        a, b = leaf.count_params()
        item = leaf.dtype.itemsize if leaf.dtype is not None else 4
        t, nt, tb, nb = t + a, nt + b, tb + a * item, nb + b * item
    return t, nt, tb, nb


def print_summary(model, print_fn=None):
    """Print ``model``'s table (see ``Model.summary``)."""
    from .sequential import Sequential

    model._require_built()
    print_fn = print_fn or print
    functional = not isinstance(model, Sequential)
    header = ["Layer (type)", "Output Shape", "Param #"] + (["Connected to"] if functional
                                                             else [])
    calls = {}
    for node in model._nodes:
        calls.setdefault(id(node.layer), []).append(node)
    rows = []
    for layer in model._layers:
        if not functional and isinstance(layer, Input):
            continue
        if isinstance(layer, Input):
            shapes = [layer.output.shape]
        else:
            shapes = [t.shape for t in calls[id(layer)][0].outputs]
        shape = str(shapes[0]) if len(shapes) == 1 else ", ".join(map(str, shapes))
        t, nt, _, _ = _count(layer)
        row = [f"{layer.name} ({type(layer).__name__})", shape, f"{t + nt:,}"]
        if functional:
            sources = ["; ".join(", ".join(s.layer.name for s in node.inputs)
                                 for node in calls.get(id(layer), []))]
            row.append(sources[0] or "-")
        rows.append(row)
    widths = [max(len(h), *(len(r[i]) for r in rows)) + 2 for i, h in enumerate(header)]
    widths = [max(w, m) for w, m in zip(widths, (29, 24, 11, 20))]
    total_width = sum(widths)

    def line(cells):
        out = ""
        for i, (cell, w) in enumerate(zip(cells, widths)):
            out += cell.rjust(w - 2) + "  " if i == 2 else cell.ljust(w)
        return " " + out.rstrip()

    trainable, non_trainable, t_bytes, n_bytes = _count(model)
    lines = [f'Model: "{model.name}"', "_" * total_width, line(header), "=" * total_width]
    for i, row in enumerate(rows):
        lines.append(line(row))
        lines.append("_" * total_width if i < len(rows) - 1 else "=" * total_width)
    lines += [
        f" Total params: {trainable + non_trainable:,} ({_format_bytes(t_bytes + n_bytes)})",
        f" Trainable params: {trainable:,} ({_format_bytes(t_bytes)})",
        f" Non-trainable params: {non_trainable:,} ({_format_bytes(n_bytes)})",
        "_" * total_width,
    ]
    print_fn("\n".join(lines))
