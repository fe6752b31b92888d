"""Model files: the architecture as JSON, weights and optimizer state, in one ``.npz``;
the weights alone as a PyTorch-style ``state_dict``, in ``.safetensors``.

    file            written by           holds                           read by
    .npz            model.save           architecture, weights, buffers, load_model,
                                         optimizer state                 model.load_weights
    .safetensors    model.save_weights   model.state_dict()              model.load_weights

Any other extension given to a save is an error that names these two, never an NPZ under
a foreign name. ``state_dict`` keys are PyTorch's: ``<layer name>.<weight>`` (a nested
model adds its name in front), with ``weight``/``bias`` for dense, conv and batch-norm
weights and ``running_mean``/``running_var`` for the batch-norm buffers, in PyTorch's
layouts (conv ``(K, C/groups, R, S)``, dense ``(out, in)``), so a torch model's
``state_dict()`` loads into the same nnkern architecture whose layers carry the torch
modules' names. Safetensors files are read and written through the ``safetensors``
package's NumPy API (``pip install 'nnkern[safetensors]'``): a header and raw arrays,
nothing executable.

Files never hold pickled code: the architecture is JSON inside the archive
(``__meta__``), every array is a plain NumPy array, and ``np.load`` runs with
``allow_pickle=False``. Writes are atomic: a temporary file in the target's folder,
flushed and fsynced, then renamed over the target, so a failed or killed save leaves
the old file intact. Temporary files left by a killed save are removed by the next
save of the same target.

Format ``nnkern-model-2`` stores a functional graph as its layers plus its calls in
execution order (a layer may be called several times; a model may be a layer), so
shared layers, several inputs and outputs, and nested models round-trip. Files of
format 1 (one call per layer, one input, one output) still load.
"""

import contextlib
import json
import os
import secrets
import time
import zipfile
from typing import NamedTuple

import numpy as np

from .. import callbacks as callbacks_mod
from .. import losses as losses_mod
from .. import optimizers as optimizers_mod
from ..device import to_device, to_numpy
from ..layers import base as layers_base
from ..layers.base import Input

FORMAT = "nnkern-model-2"
READABLE = ("nnkern-model-1", FORMAT)
WEIGHTS_FORMAT = "nnkern-state-dict-1"

FILE_KINDS = {
    ".npz": "the full model: architecture, weights and optimizer state (model.save, "
            "nnkern.models.load_model)",
    ".safetensors": "the weights alone, model.state_dict() (model.save_weights, "
                    "model.load_weights)",
}


def check_path(path, allowed, action):
    """Return ``path`` as a string when its extension is one of ``allowed``; otherwise a
    ValueError that names nnkern's two file kinds and the call that writes the asked one."""
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if ext in allowed:
        return path
    kinds = "; ".join(f"{k} = {v}" for k, v in FILE_KINDS.items())
    hint = ""
    if ext == ".safetensors":
        hint = "; for the weights alone use model.save_weights(path)"
    elif ext == ".npz":
        hint = "; for the whole model in one file use model.save(path)"
    raise ValueError(f"{action} writes {' or '.join(allowed)} files, got {path!r}. nnkern's "
                     f"files: {kinds}{hint}")


# --- architecture ------------------------------------------------------------------------------


def model_config(model):
    """The architecture of ``model`` as JSON-able data (see the module docstring)."""
    from .sequential import Sequential

    model._require_built()
    layers = [{"class": type(layer).__name__, "config": layer.get_config()}
              for layer in model._layers]
    config = {"class": type(model).__name__, "name": model.name, "seed": model.seed,
              "layers": layers}
    if isinstance(model, Sequential):
        return config
    call_index, calls = {}, []

    def ref(t):
        if t.node is None:
            return [t.layer.name, 0, 0]
        return [t.layer.name, call_index[id(t.node)], t.index]

    counts = {}
    for node in model._nodes:
        k = counts.get(id(node.layer), 0)
        counts[id(node.layer)] = k + 1
        call_index[id(node)] = k
        calls.append({"layer": node.layer.name, "inputs": [ref(t) for t in node.inputs],
                      "many": node.many})
    config["calls"] = calls
    config["inputs"] = [ref(t) for t in model._inputs]
    config["outputs"] = [ref(t) for t in model._outputs]
    return config


def _upgrade(config):
    """A format-1 functional config (one call per layer, named inbound layers) as format 2."""
    if config["class"] != "Model" or "calls" in config:
        return config
    layers, calls = [], []
    for entry in config["layers"]:
        layers.append({"class": entry["class"], "config": entry["config"]})
        if entry["class"] != "Input":
            calls.append({"layer": entry["config"]["name"],
                          "inputs": [[src, 0, 0] for src in entry["inbound"]],
                          "many": entry["many"]})
    first = config["layers"][0]["config"]["name"]
    last = config["layers"][-1]["config"]["name"]
    return {**config, "layers": layers, "calls": calls, "inputs": [[first, 0, 0]],
            "outputs": [[last, 0, 0]]}


def model_from_config(config):
    """Rebuild an (untrained) model from ``get_config()`` output."""
    from .graph import Model
    from .sequential import Sequential

    config = _upgrade(config)
    layer_objs = []
    for entry in config["layers"]:
        cls = layers_base.layer_class(entry["class"])
        layer_objs.append(cls.from_config(dict(entry["config"])))
    if config["class"] == "Sequential":
        return Sequential(layer_objs, name=config["name"], seed=config["seed"])
    if config["class"] != "Model":
        raise ValueError(f"unknown model class {config['class']!r}")
    by_name = {layer.name: layer for layer in layer_objs}
    tensors, counts = {}, {}
    for layer in layer_objs:
        if isinstance(layer, Input):
            tensors[(layer.name, 0, 0)] = layer.output
    for call in config["calls"]:
        layer = by_name[call["layer"]]
        ins = [tensors[tuple(ref)] for ref in call["inputs"]]
        out = layer(ins if call["many"] else ins[0])
        k = counts.get(layer.name, 0)
        counts[layer.name] = k + 1
        for i, t in enumerate(out if isinstance(out, list) else [out]):
            tensors[(layer.name, k, i)] = t
    inputs = [tensors[tuple(ref)] for ref in config["inputs"]]
    outputs = [tensors[tuple(ref)] for ref in config["outputs"]]
    return Model(inputs if len(inputs) > 1 else inputs[0],
                 outputs if len(outputs) > 1 else outputs[0],
                 name=config["name"], seed=config["seed"])


# --- writing -------------------------------------------------------------------------------------


def _leaf_names(model):
    leaves = model._leaf_layers()
    names = [layer.name for layer in leaves]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"layer names must be unique within a model and its nested models, "
                         f"repeated: {dup}")
    return leaves


def _arrays(model):
    arrays = {}
    for layer in _leaf_names(model):
        for kind, store in (("params", layer.params), ("state", layer.state)):
            for key, value in store.items():
                arrays[f"{kind}/{layer.name}/{key}"] = to_numpy(value)
    return arrays


def _meta(model):
    leaves = model._leaf_layers()
    meta = {"format": FORMAT, "architecture": model_config(model),
            "layer_names": [layer.name for layer in leaves],
            "layer_classes": [type(layer).__name__ for layer in leaves],
            "counters": {layer.name: layer.steps for layer in leaves if hasattr(layer, "steps")},
            "compile": None}
    if model.optimizer is not None and model.loss is not None:
        meta["compile"] = {"optimizer": model.optimizer.get_config(),
                           "loss": model.loss.get_config(),
                           "metrics": [m.name for m in model.metrics]}
    return meta


def save_model(model, path, include_optimizer=True, extra=None, action="model.save"):
    """Write ``model`` to ``path`` (see ``Model.save``)."""
    model._require_built()
    path = check_path(path, (".npz",), action)
    meta = _meta(model)
    arrays = _arrays(model)
    if include_optimizer and model.optimizer is not None and model.optimizer.params is not None:
        state = model.optimizer.state_dict()
        meta["optimizer_state"] = {k: state[k] for k in ("iterations", "lr", "t")}
        meta["optimizer_state"]["slots"] = [len(slot) for slot in state["slots"]]
        for i, slot in enumerate(state["slots"]):
            for j, a in enumerate(slot):
                arrays[f"optimizer/{i}/{j}"] = a
    meta.update(extra or {})
    arrays["__meta__"] = np.array(json.dumps(meta))
    write_atomically(path, lambda f: np.savez(f, **arrays))


def _temporary_name(path):
    folder, base = os.path.split(os.path.abspath(path))
    return os.path.join(folder, f".{base}.{os.getpid()}.{secrets.token_hex(6)}.tmp")


def remove_stale_temporaries(path, max_age_s=600.0):
    """Delete temporary files that a killed save of ``path`` left behind: those whose
    writing process is gone, or, for names without a process id, older than
    ``max_age_s``. Returns the removed paths."""
    folder, base = os.path.split(os.path.abspath(path))
    prefix = f".{base}."
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        if not (name.startswith(prefix) and name.endswith(".tmp")):
            continue
        middle = name[len(prefix):-len(".tmp")].split(".")
        full = os.path.join(folder, name)
        stale = False
        if len(middle) == 2 and middle[0].isdigit():
            stale = not _process_alive(int(middle[0]))
        else:
            with contextlib.suppress(OSError):
                stale = time.time() - os.path.getmtime(full) > max_age_s
        if stale:
            with contextlib.suppress(OSError):
                os.remove(full)
                removed.append(full)
    return removed


def _process_alive(pid):
    if pid == os.getpid():
        return False  # this process saves synchronously: its own leftovers are stale
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


def write_atomically(path, write):
    """Call ``write(file)`` on a temporary file next to ``path``, then rename it over
    ``path``; on any failure the temporary file is removed and ``path`` is untouched."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    remove_stale_temporaries(path)
    tmp = _temporary_name(path)
    # os.open applies the umask to 0o666 as a plain open() does (mkstemp would give 0600)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    fd = os.open(tmp, flags, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    _fsync_folder(folder)


def _fsync_folder(folder):
    """Make a rename inside ``folder`` durable (POSIX); a no-op where folders cannot be
    opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


# --- reading -------------------------------------------------------------------------------------


def read_file(path):
    """The arrays and metadata of an nnkern model file, or a ValueError that names the file
    and says what was expected."""
    path = os.fspath(path)
    expected = "an nnkern model file (.npz written by Model.save)"
    try:
        loaded = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise ValueError(f"{path} is not {expected}: it cannot be read as a zip archive "
                         f"({type(exc).__name__}: {exc}); it may be cut short") from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):  # a bad file, not a bad argument type
        raise ValueError(f"{path} holds a single NumPy array (.npy), not {expected}")  # noqa: TRY004
    try:
        with loaded as data:
            arrays = {k: data[k] for k in data.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise ValueError(f"{path} is not {expected}: an entry cannot be read "
                         f"({type(exc).__name__}: {exc}); it may be cut short") from None
    if "__meta__" not in arrays:
        raise ValueError(f"{path} is not {expected} (no __meta__ entry)")
    try:
        meta = json.loads(str(arrays.pop("__meta__")))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: its __meta__ entry is not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") not in READABLE:
        got = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise ValueError(f"{path}: unknown format {got!r}, expected one of {READABLE}")
    return arrays, meta


def _saved_layers(meta):
    """(names, classes) of the saved layers that hold weights, in order."""
    if "layer_classes" in meta:
        return meta["layer_names"], meta["layer_classes"]
    pairs = [(n, e["class"]) for n, e in zip(meta["layer_names"], meta["architecture"]["layers"])
             if e["class"] != "Input"]
    return [n for n, _ in pairs], [c for _, c in pairs]


def _checked_weight(path, what, value, target):
    if value is None or tuple(value.shape) != tuple(target.shape):
        got = None if value is None else tuple(value.shape)
        raise ValueError(f"{path}: {what} has shape {got}, this model needs "
                         f"{tuple(target.shape)}")
    if value.dtype.kind != "f":
        raise ValueError(f"{path}: {what} has dtype {value.dtype}; weights must be real "
                         f"floats (float32 or float64)")
    if not np.isfinite(value).all():
        raise ValueError(f"{path}: {what} contains NaN or infinite values")
    return value


def load_weights(model, path):
    """Load the weights, buffers and optimizer state of ``path`` into ``model`` (see
    ``Model.load_weights``); returns the file's metadata."""
    if os.fspath(path).lower().endswith(".safetensors"):
        state, meta = read_safetensors(path)
        load_state_dict(model, state, strict=True, source=os.fspath(path))
        return meta
    arrays, meta = read_file(path)
    model._require_built()
    names, classes = _saved_layers(meta)
    leaves = model._leaf_layers()
    if len(names) != len(leaves):
        raise ValueError(f"{path} holds {len(names)} layers with weights but this model has "
                         f"{len(leaves)}")
    for layer, saved, cls in zip(leaves, names, classes):
        if cls != type(layer).__name__:
            raise ValueError(f"{path}: layer {saved} is a {cls} but this model's layer "
                             f"{layer.name} is a {type(layer).__name__}")
        for kind, store in (("params", layer.params), ("state", layer.state)):
            for key, target in store.items():
                value = _checked_weight(path, f"{kind} {saved}/{key}",
                                        arrays.get(f"{kind}/{saved}/{key}"), target)
                target[...] = to_device(value.astype(target.dtype), model._backend)
        if hasattr(layer, "steps"):
            layer.steps = int(meta["counters"].get(saved, 0))
    model._params.mark_updated()
    opt_state = meta.get("optimizer_state")
    if opt_state and model.optimizer is not None:
        if model.optimizer.params is not model._params:  # compiled, not yet fitted
            model.optimizer.bind(model.parameters())
        slots = [[arrays[f"optimizer/{i}/{j}"] for j in range(count)]
                 for i, count in enumerate(opt_state["slots"])]
        model.optimizer.load_state_dict({**opt_state, "slots": slots})
    return meta


def save_checkpoint(model, path, epoch, logs=None):
    """Model + optimizer state + finished epochs + history (see ``Model.save_checkpoint``)."""
    recorded = model.history if model.history is not None else callbacks_mod.History()
    history = {k: list(v) for k, v in recorded.history.items()}
    if logs and (not recorded.epoch or recorded.epoch[-1] < epoch - 1):
        for key, value in logs.items():
            history.setdefault(key, []).append(value)
    states = [[type(cb).__name__, cb.get_state()] for cb in model._fit_callbacks]
    save_model(model, path, extra={"checkpoint": {"epoch": int(epoch), "history": history,
                                                  "callbacks": states}},
               action="a checkpoint")


def load_checkpoint_into(model, path, return_info=False):
    """Restore a checkpoint into ``model``; the epoch to continue from (or the info dict)."""
    remove_stale_temporaries(path)
    meta = load_weights(model, path)
    info = meta.get("checkpoint")
    if info is None:
        raise ValueError(f"{path} is a saved model, not a checkpoint (no epoch in it)")
    return info if return_info else info["epoch"]


def load_model(path, compile=True, custom_objects=None):
    """Load a model written by ``Model.save``: architecture, weights, buffers, and (when
    ``compile``) its compile settings and optimizer state. A loss given as a function is
    found by name in ``custom_objects``.

    >>> # model.save("m.npz"); m2 = nnkern.models.load_model("m.npz")
    """
    if os.fspath(path).lower().endswith(".safetensors"):
        raise ValueError(f"{os.fspath(path)} holds weights alone (a state_dict), no "
                         f"architecture: build the model in Python and call "
                         f"model.load_weights(path)")
    _, meta = read_file(path)
    model = model_from_config(meta["architecture"])
    if compile and meta.get("compile"):
        c = meta["compile"]
        model.compile(optimizer=optimizers_mod.get(c["optimizer"]),
                      loss=losses_mod.get(c["loss"], custom_objects), metrics=c["metrics"])
    load_weights(model, path)
    return model


def load_checkpoint(path, custom_objects=None):
    """Rebuild a compiled model from a ``ModelCheckpoint`` file; returns
    ``(model, initial_epoch)`` to continue with ``model.fit(..., initial_epoch=...)``."""
    model = load_model(path, custom_objects=custom_objects)
    return model, model.load_checkpoint(path)


# --- state_dict and safetensors ------------------------------------------------------------------

# nnkern's weight names -> PyTorch's (the layouts are already PyTorch's)
TORCH_NAMES = {"w": "weight", "b": "bias", "gamma": "weight", "beta": "bias"}
# keys of PyTorch state dicts that nnkern has no use for: BatchNorm's batch counter (only
# used by momentum=None, which nnkern does not have)
IGNORED_KEYS = ("num_batches_tracked",)


class IncompatibleKeys(NamedTuple):
    """What ``load_state_dict(strict=False)`` left out, as PyTorch returns it."""

    missing_keys: list
    unexpected_keys: list


def state_entries(model):
    """``{key: (layer, store, name)}`` for every weight and buffer of ``model`` under
    PyTorch's dotted key; a layer shared by several calls (or models) appears once."""
    from .graph import Model

    entries, seen = {}, set()

    def walk(m, prefix):
        for layer in m._layers:
            if isinstance(layer, Input) or id(layer) in seen:
                continue
            seen.add(id(layer))
            if isinstance(layer, Model):
                walk(layer, f"{prefix}{layer.name}.")
                continue
            for store in ("params", "state"):
                for name in getattr(layer, store):
                    key = f"{prefix}{layer.name}.{TORCH_NAMES.get(name, name)}"
                    if key in entries:
                        raise ValueError(f"two weights of model {model.name!r} map to the "
                                         f"state_dict key {key!r}; give the layers unique names")
                    entries[key] = (layer, store, name)

    model._require_built()
    walk(model, "")
    return entries


def state_dict(model):
    """Host copies of every weight and buffer under PyTorch's keys (see the module
    docstring), in layer order."""
    return {key: np.array(to_numpy(getattr(layer, store)[name]), copy=True)
            for key, (layer, store, name) in state_entries(model).items()}


def load_state_dict(model, state, strict=True, source="state_dict"):
    """Copy ``state`` (key -> array of any kind: NumPy, torch tensors, ...) into ``model``.

    Every key of the model must be given and every given key must belong to the model
    (``strict``; PyTorch's ``num_batches_tracked`` is accepted and ignored); a value of the
    wrong shape, a non-float or a non-finite value is always an error. One error lists
    every problem, and nothing is copied unless all values are good. Returns
    ``IncompatibleKeys(missing_keys, unexpected_keys)``.
    """
    if not hasattr(state, "items"):
        raise TypeError(f"state_dict must be a mapping of names to arrays, got "
                        f"{type(state).__name__}")
    entries = state_entries(model)
    missing = [k for k in entries if k not in state]
    unexpected = [k for k in state if k not in entries
                  and k.rsplit(".", 1)[-1] not in IGNORED_KEYS]
    problems, values = [], {}
    for key in entries:
        if key not in state:
            continue
        layer, store, name = entries[key]
        target = getattr(layer, store)[name]
        try:
            value = np.asarray(to_numpy(state[key]))
            values[key] = _checked_weight(source, key, value, target)
        except (ValueError, TypeError, BufferError) as exc:
            problems.append(str(exc))
    if strict and missing:
        problems.append(f"missing keys (the model has them, the state_dict not): {missing}")
    if strict and unexpected:
        problems.append(f"unexpected keys (not weights of this model): {unexpected}")
    if problems:
        raise ValueError(
            f"load_state_dict into model {model.name!r}: " + "; ".join(problems)
            + f". The model's keys: {list(entries)} (name layers like the torch modules, "
              f"e.g. layers.Conv2D(6, 5, name='conv1'))"
        )
    for key, value in values.items():
        layer, store, name = entries[key]
        target = getattr(layer, store)[name]
        target[...] = to_device(value.astype(target.dtype), model._backend)
    model._params.mark_updated()
    return IncompatibleKeys(missing, unexpected)


def _safetensors():
    try:
        import safetensors.numpy
    except ImportError as exc:
        raise ModuleNotFoundError(
            f".safetensors files need the safetensors package ({exc}): "
            f"pip install 'nnkern[safetensors]'", name="safetensors") from None
    return safetensors


def save_weights(model, path):
    """Write ``model.state_dict()`` to a ``.safetensors`` file, atomically (see
    ``Model.save_weights``)."""
    path = check_path(path, (".safetensors",), "model.save_weights")
    st = _safetensors()
    meta = {"format": WEIGHTS_FORMAT, "model": model.name}
    blob = st.numpy.save(state_dict(model), metadata=meta)
    write_atomically(path, lambda f: f.write(blob))


def read_safetensors(path):
    """The arrays and metadata of a safetensors file, or a ValueError that names the file."""
    path = os.fspath(path)
    st = _safetensors()
    if not os.path.exists(path):
        raise FileNotFoundError(path)
    try:
        with st.safe_open(path, framework="np") as f:
            meta = f.metadata() or {}
            arrays = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118
    except (st.SafetensorError, OSError, ValueError) as exc:
        raise ValueError(f"{path} is not a readable safetensors file ({exc}); it may be cut "
                         f"short") from None
    return arrays, meta
