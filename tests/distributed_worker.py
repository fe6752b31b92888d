"""One rank of the data-parallel tests: ``mpiexec -n 2 python tests/distributed_worker.py
<scenario> <out> [options]``. Each rank writes what it saw to ``<out>``; the checks are in
test_distributed_mpi.py, in the one process of pytest.

Scenarios:
    equivalence OUT       every case of distributed_cases.CASES, data-parallel; dropout masks
    shards OUT            which samples each rank trained on, per epoch
    resume OUT CKPT CSV [KILL_EPOCH KILL_STEP]
                          fit with ModelCheckpoint(resume=True) and CSVLogger; both ranks
                          kill themselves (SIGKILL) at (epoch, step) when given
    fault MODE OUT        rank 1 dies (kill), raises (raise) or hangs (hang) at step 2
"""

import json
import os
import signal
import sys
import time

import numpy as np
from distributed_cases import CASES, EPOCHS, build, case_data

import nnkern
from nnkern import callbacks, distributed, layers


def save(out, name, weights, **extra):
    arrays = {f"w{i}": w for i, w in enumerate(weights)}
    arrays.update({k: np.array(json.dumps(v)) for k, v in extra.items()})
    np.savez(os.path.join(out, f"{name}-rank{distributed.rank()}.npz"), **arrays)


def equivalence(out):
    rank = distributed.rank()
    for case, (_, _, _, _, batch_size) in CASES.items():
        x, y, xv, yv = case_data(case)
        runs = ["", "-again"] if case == "adam_dropout" else [""]
        for suffix in runs:
            # rank 1 builds other weights and passes another shuffle seed: rank 0's are used
            model = build(case, seed=0 if rank == 0 else 5)
            history = model.fit(x, y, batch_size=batch_size, epochs=EPOCHS, verbose=0,
                                validation_data=(xv, yv), seed=0 if rank == 0 else 9,
                                distributed=True)
            test = model.evaluate(xv, yv, return_dict=True, distributed=True)
            save(out, case + suffix, model.get_weights(), history=history.history, test=test)
    # the masks of one Dropout call on a batch of ones, on each rank
    probe = nnkern.Sequential([layers.Input((64,), dtype="float64"), layers.Dropout(0.5, seed=3)])
    mask = probe(nnkern.tensor(np.ones((2, 64))), training=True).numpy() != 0
    save(out, "mask", [mask])


class _Epoch(callbacks.Callback):
    def __init__(self, seen):
        super().__init__()
        self.seen = seen

    def on_epoch_begin(self, epoch, logs=None):
        self.seen.append([])


def shards(out):
    n = 23  # batches of 6 (3 + 3 per rank), the last of 5 (2 + 3)
    x = np.stack([np.arange(n), np.linspace(-1, 1, n)], axis=1)
    y = np.arange(n) % 2
    seen = []

    def record(t):
        if seen:  # not the shape probe at build time
            seen[-1].extend(int(v) for v in t.numpy()[:, 0])
        return t

    model = nnkern.Sequential([layers.Input((2,), dtype="float64"), layers.Lambda(record),
                               layers.Dense(2)])
    model.compile("sgd", "sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=6, epochs=3, verbose=0, callbacks=[_Epoch(seen)],
              distributed=True)
    save(out, "shards", [], seen=seen)


class _KillBoth(callbacks.Callback):
    """Every rank kills itself at (epoch, step): no cleanup, no exception, as a power cut."""

    def __init__(self, epoch, step):
        super().__init__()
        self.at, self.epoch = (epoch, step), None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self.epoch, batch) == self.at:
            os.kill(os.getpid(), signal.SIGKILL)


def resume(out, ckpt, csv, kill_epoch=None, kill_step=None):
    rank = distributed.rank()
    x, y, xv, yv = case_data("adam_dropout")
    model = build("adam_dropout", seed=0 if rank == 0 else 5)
    # only rank 0 keeps checkpoints and logs: the others get paths that must stay unused
    suffix = "" if rank == 0 else f".rank{rank}-must-not-exist"
    ckpt_path = ckpt + suffix + (".npz" if suffix else "")  # a checkpoint is an .npz
    cbs = [callbacks.ModelCheckpoint(ckpt_path, resume=True),
           callbacks.CSVLogger(csv + suffix), callbacks.ReduceLROnPlateau("loss", patience=1)]
    if kill_epoch is not None:
        cbs.append(_KillBoth(int(kill_epoch), int(kill_step)))
    history = model.fit(x, y, batch_size=12, epochs=4, verbose=0, validation_data=(xv, yv),
                        callbacks=cbs, distributed=True)
    save(out, "resume", model.get_weights(), history=history.history)


class _Fault(callbacks.Callback):
    def __init__(self, mode):
        super().__init__()
        self.mode = mode

    def on_train_batch_end(self, batch, logs=None):
        if self.mode == "hang" and batch == 1:
            # a short watchdog only once every rank is training: set earlier, a rank slow to
            # start on a loaded machine would trip it in the first broadcast instead
            distributed.init().timeout = 3
        if distributed.rank() != 1 or batch != 2:
            return
        if self.mode == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if self.mode == "raise":
            raise RuntimeError("injected failure on rank 1")
        time.sleep(600)  # hang: rank 0 waits in the next collective


def fault(mode, out):
    x, y, _, _ = case_data("adam")
    model = build("adam")
    # a long watchdog until training runs (see _Fault): under load a rank can take seconds
    # to start, or to print the traceback of its error
    model.fit(x, y, batch_size=4, epochs=3, verbose=0, callbacks=[_Fault(mode)],
              distributed=distributed.DataParallel(timeout=120))
    save(out, f"fault-{mode}", model.get_weights())


if __name__ == "__main__":
    scenario, *args = sys.argv[1:]
    distributed.init()
    {"equivalence": equivalence, "shards": shards, "resume": resume, "fault": fault}[scenario](
        *args)
