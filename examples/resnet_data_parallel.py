"""The residual network of ``resnet_digits.py``, trained data-parallel over MPI.

Every process (rank) runs this same script. ``fit(..., distributed=True)``
starts every rank from rank 0's weights, gives each rank its part of every
batch of 32 (the global batch), averages the gradients with one allreduce per
step, and reduces the loss and accuracy over the ranks; only rank 0 prints.
Batch norm normalises with each rank's part of the batch (as PyTorch's
DistributedDataParallel does) and its running statistics are averaged over
the ranks at the end of every epoch.

    pip install -e ".[distributed]"                 # mpi4py and the mpich wheel (mpiexec)
    mpiexec -n 2 python examples/resnet_data_parallel.py
    mpiexec -n 1 python examples/resnet_data_parallel.py       # the same job on one rank

Expected result (measured twice each on the quiet 2-core development
machine, cpu backend, 10 epochs; the cores are split over the ranks, so 2
ranks run 1 thread each):

    2 processes (mpi), 1 CPU thread each: time per epoch 0.30 s (epochs 2-10), test accuracy 0.981
    ... second run:                                          0.28 s
    1 process (mpi), 2 CPU threads: time per epoch 0.21 s (epochs 2-10), test accuracy 0.978
    ... second run:                                 0.20 s

On one 2-core machine the two ranks lose: they share one memory system and
meet at every step, and this network's kernels already use both cores in
one process (bench/allreduce.py times the parts).
The accuracy of 2 ranks differs from 1 rank's because batch norm normalises
each rank's 16 samples with their own statistics. The time per epoch of 2
ranks swings with the load: ranks that meet at every step wait whenever
either is descheduled (the README's "More than one machine" has the
benchmark and the scaling model).
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import resnet_digits  # the network of the one-process example

from nnkern import data, distributed
from nnkern.main_job import EpochTimer


def main(num_epochs=10, verbose=True):
    """Train and evaluate on every rank; returns (test accuracy, seconds per epoch)."""
    comm = distributed.init()
    x, y = data.load_digits()
    X_train, X_test, y_train, y_test = data.train_test_split(x, y, 0.2, seed=0)
    model = resnet_digits.build()
    timer = EpochTimer()
    model.fit(X_train, y_train, batch_size=32, epochs=num_epochs, verbose=0,
              callbacks=[timer], distributed=True)
    _, acc = model.evaluate(X_test, y_test, distributed=True)
    steady = timer.times[1:] or timer.times  # epoch 1 compiles or loads the kernels
    per_epoch = sum(steady) / len(steady)
    if verbose and comm.rank == 0:
        print(f"{distributed.describe(comm)}: time per epoch {per_epoch:.2f} s (epochs "
              f"2-{num_epochs}), test accuracy {acc:.3f}")
    return acc, per_epoch


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    main(parser.parse_args().epochs)
