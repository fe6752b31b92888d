"""nnkern.distributed in one process: the strategy's hooks, the sharding rule, the watchdog,
the communicators' checks, the NCCL calls (against a stand-in for CuPy's nccl module: no GPU
here) and the TCP exchange of NCCL's id. The runs on 2 MPI ranks are in
test_distributed_mpi.py."""

import ctypes
import socket
import sys
import threading
import time
import types

import numpy as np
import pytest
from distributed_cases import CASES, build, case_data

import nnkern
from nnkern import distributed, metrics
from nnkern.device import cuda_simulated
from nnkern.distributed import (
    DataParallel,
    DistributedError,
    LocalCommunicator,
    LocalStrategy,
    NCCLCommunicator,
    Watchdog,
)

# --- the strategy's hooks with one rank change nothing -------------------------------------------


@pytest.mark.parametrize("case", ["adam_dropout", "adam_batchnorm", "adam_uneven"])
def test_data_parallel_on_one_rank_is_plain_fit_bit_for_bit(case):
    x, y, xv, yv = case_data(case)
    runs = []
    for strategy in (None, DataParallel(LocalCommunicator())):
        model = build(case)
        history = model.fit(x, y, batch_size=CASES[case][4], epochs=2, verbose=0,
                            validation_data=(xv, yv), distributed=strategy)
        runs.append((model.get_weights(), history.history))
    for a, b in zip(runs[0][0], runs[1][0]):
        np.testing.assert_array_equal(a, b)
    assert runs[0][1] == runs[1][1]


class _FakeNccl:
    """CuPy's ``cupy.cuda.nccl`` for ranks that are threads of this process: the calls take
    raw addresses, as NCCL's do, and read and write the memory behind them."""

    NCCL_SUM, NCCL_UINT8, NCCL_INT64, NCCL_FLOAT32, NCCL_FLOAT64 = 0, 1, 4, 7, 8

    def __init__(self, size, avg=True):
        self.types = {1: np.uint8, 4: np.int64, 7: np.float32, 8: np.float64}
        if avg:
            self.NCCL_AVG = 4
        self.size, self.calls = size, []
        self._barrier, self._slots = threading.Barrier(size), [None] * size
        fake = self

        class NcclCommunicator:
            def __init__(self, ndev, commId, rank):
                assert ndev == fake.size and len(commId) == 128
                assert all(isinstance(v, int) and -128 <= v <= 127 for v in commId)
                self.rank = rank

            def allReduce(self, send, recv, count, datatype, op, stream):
                fake.calls.append(("allReduce", count, datatype, op, stream))
                fake._slots[self.rank] = fake._view(send, count, datatype).copy()
                fake._barrier.wait()
                total = np.sum(fake._slots, axis=0)
                fake._barrier.wait()
                fake._view(recv, count, datatype)[:] = (
                    total / fake.size if op == getattr(fake, "NCCL_AVG", None) else total)

            def bcast(self, buff, count, datatype, root, stream):
                fake.calls.append(("bcast", count, datatype, root, stream))
                if self.rank == root:
                    fake._slots[root] = fake._view(buff, count, datatype).copy()
                fake._barrier.wait()
                fake._view(buff, count, datatype)[:] = fake._slots[root]
                fake._barrier.wait()

        self.NcclCommunicator = NcclCommunicator

    def _view(self, address, count, datatype):
        dtype = np.dtype(self.types[datatype])
        memory = (ctypes.c_byte * (count * dtype.itemsize)).from_address(address)
        return np.frombuffer(memory, dtype, count)


UID = bytes(range(128))  # stands for rank 0's nccl.get_unique_id()


def on_ranks(size, body, nccl=None):
    """Run ``body(comm)`` on ``size`` thread ranks over the fake NCCL; their results."""
    nccl = nccl or _FakeNccl(size)
    results, errors = [None] * size, []

    def run(rank):
        try:
            results[rank] = body(NCCLCommunicator(rank, size, UID, nccl=nccl, xp=np))
        except Exception as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(r,)) for r in range(size)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    return results


def test_nccl_communicator_calls():
    def body(comm):
        r = comm.rank
        mean = comm.allreduce_mean(np.array([1.0, 2.0, 4.0], np.float32) * (r + 1))
        total = comm.allreduce_sum(np.full(5, r + 1, np.float64))
        shared = comm.broadcast(np.full(3, r, np.int64), root=2)
        obj = comm.broadcast_object({"rank": r, "weights": [np.arange(3.0)]} if r == 1 else None,
                                    root=1)
        comm.barrier()
        return mean, total, shared, obj

    nccl = _FakeNccl(3)
    for mean, total, shared, obj in on_ranks(3, body, nccl):
        np.testing.assert_allclose(mean, np.array([1.0, 2.0, 4.0]) * 2)  # (1 + 2 + 3) / 3
        assert mean.dtype == np.float32
        np.testing.assert_array_equal(total, np.full(5, 6.0))
        np.testing.assert_array_equal(shared, [2, 2, 2])
        assert obj["rank"] == 1 and np.array_equal(obj["weights"][0], np.arange(3.0))
    first = nccl.calls[0]  # counts are elements, the type NCCL's, on the default stream
    assert first == ("allReduce", 3, nccl.NCCL_FLOAT32, nccl.NCCL_AVG, 0)


def test_nccl_mean_without_the_avg_op_sums_then_divides():
    nccl = _FakeNccl(2, avg=False)
    means = on_ranks(2, lambda comm: comm.allreduce_mean(np.full(4, comm.rank * 2.0)), nccl)
    for mean in means:
        np.testing.assert_array_equal(mean, np.ones(4))
    assert {call[3] for call in nccl.calls} == {nccl.NCCL_SUM}


def test_data_parallel_fit_over_nccl_with_one_rank_is_plain_fit():
    # the NCCL communicator's path through fit (objects, means, logged sums) on one rank
    x, y, xv, yv = case_data("adam_dropout")
    plain = build("adam_dropout")
    plain.fit(x, y, batch_size=12, epochs=2, verbose=0, validation_data=(xv, yv))
    model = build("adam_dropout")
    comm = NCCLCommunicator(0, 1, UID, nccl=_FakeNccl(1), xp=np)
    model.fit(x, y, batch_size=12, epochs=2, verbose=0, validation_data=(xv, yv),
              distributed=DataParallel(comm))
    for a, b in zip(plain.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)


class _DeviceArray(np.ndarray):
    """Stands for a CuPy array: GPU memory, which NCCL takes and host arrays are not."""


class _FakeCupy:
    ndarray, float32 = _DeviceArray, np.float32
    cuda = types.SimpleNamespace(Stream=types.SimpleNamespace(
        null=types.SimpleNamespace(done=True)))

    @staticmethod
    def asarray(a):
        return np.array(a).view(_DeviceArray)

    @staticmethod
    def asnumpy(a):
        return np.array(a).view(np.ndarray)

    @staticmethod
    def zeros(*args, **kwargs):
        return np.zeros(*args, **kwargs).view(_DeviceArray)


def test_the_strategy_moves_its_host_values_through_the_gpu_for_nccl():
    # the sample counts, the logged sums and the stop flag live on the host; NCCL only
    # takes GPU memory, so they go to the device and back
    comm = NCCLCommunicator(0, 1, UID, nccl=_FakeNccl(1), xp=_FakeCupy)
    with pytest.raises(TypeError, match="takes a GPU"):
        comm.allreduce_sum(np.zeros(2))
    strategy = DataParallel(comm)
    model = build("adam")
    assert strategy.start(model, None, 0, 7, 48) == (None, 0, 7)
    assert strategy.agree(True) is True and strategy.agree(False) is False
    assert strategy.running(model).reduce(3.5, 4) == (3.5, 4)


def test_nccl_communicator_rejects_bad_input():
    comm = NCCLCommunicator(0, 1, UID, nccl=_FakeNccl(1), xp=np)
    with pytest.raises(TypeError, match="NCCL has no type for dtype bool"):
        comm.allreduce_sum(np.zeros(2, bool))
    with pytest.raises(TypeError, match="averages floating-point arrays, got dtype int64"):
        comm.allreduce_mean(np.zeros(2, np.int64))
    with pytest.raises(TypeError, match="takes a GPU \\(CuPy\\) array, got list"):
        comm.allreduce_sum([1.0])
    with pytest.raises(ValueError, match="C-contiguous"):
        comm.broadcast(np.zeros((4, 4))[:, 1])
    with pytest.raises(ValueError, match="root must be a rank in \\[0, 1\\), got 1"):
        comm.broadcast(np.zeros(2), root=1)
    with pytest.raises(ValueError, match="NCCL's 128-byte id"):
        NCCLCommunicator(0, 1, b"short", nccl=_FakeNccl(1), xp=np)


def test_nccl_id_bytes_round_trip_as_signed_chars():
    signed = distributed._nccl_id_tuple(UID)
    assert signed[127] == 127 and distributed._nccl_id_tuple(bytes([200] * 128))[0] == -56
    assert distributed._nccl_id_bytes(signed) == UID


# --- sharding ------------------------------------------------------------------------------------


class _Rank(LocalStrategy):
    """The sharding of DataParallel for rank ``rank`` of ``size``, without a communicator."""

    def __init__(self, rank, size):
        self.rank, self.size = rank, size

    _part = DataParallel._part


@pytest.mark.parametrize("n, batch_size, size", [
    (23, 6, 2), (100, 32, 3), (10, 10, 2), (37, 8, 4), (9, 4, 1), (64, 5, 5), (12, 12, 3),
])
def test_every_epoch_is_covered_once_and_every_rank_takes_the_same_steps(n, batch_size, size):
    order = np.random.default_rng(1).permutation(n)
    per_rank = [_Rank(r, size) for r in range(size)]
    steps = per_rank[0].steps(n, batch_size)
    batches = [s.batches(order, batch_size, steps) for s in per_rank]
    seen = np.concatenate([idx for rank in batches for idx, _ in rank])
    np.testing.assert_array_equal(np.sort(seen), np.arange(n))  # each sample exactly once
    for step in range(steps):
        parts = [rank[step][0] for rank in batches]
        assert len({rank[step][1] for rank in batches}) == 1  # one global size per step
        assert sum(len(p) for p in parts) == batches[0][step][1]
        # no rank is left without samples, nor with 1 where the batch gives each 2
        assert min(len(p) for p in parts) >= min(2, batch_size // size)
        start = step * batch_size  # the parts are the global batch, in rank order
        np.testing.assert_array_equal(np.concatenate(parts),
                                      order[start:start + batches[0][step][1]])


def test_a_last_batch_too_small_to_split_is_folded():
    # 2 ranks: a last batch of 3 would leave a rank 1 sample (batch norm needs 2)
    assert _Rank(0, 2).steps(27, 8) == 3 and _Rank(0, 2).steps(28, 8) == 4
    assert _Rank(0, 1).steps(25, 8) == 3 and _Rank(0, 1).steps(26, 8) == 4  # as before


# --- checks --------------------------------------------------------------------------------------


class _OtherRankDisagrees(LocalCommunicator):
    """Rank 0 of 2, where the other rank passed one sample more."""

    rank, size = 0, 2

    def allreduce_sum(self, array):
        array[1] = array[0] + 1
        return array


def test_ranks_with_different_data_are_an_error():
    x, y, _, _ = case_data("sgd")
    with pytest.raises(DistributedError, match=r"different numbers of training samples \[48, 49\]"):
        build("sgd").fit(x, y, verbose=0, distributed=DataParallel(_OtherRankDisagrees()))


def test_a_metric_without_counts_is_an_error():
    class Median(metrics.Metric):
        name = "median"

        def reset(self):
            self.values = []

    x, y, _, _ = case_data("sgd")
    model = build("sgd")
    model.compile("sgd", "sparse_categorical_crossentropy", [Median()])
    with pytest.raises(TypeError, match=r"metrics \['median'\] name no additive counts"):
        model.fit(x, y, verbose=0, distributed=DataParallel(LocalCommunicator()))


def test_distributed_argument_is_checked():
    x, y, _, _ = case_data("sgd")
    with pytest.raises(TypeError, match="distributed must be True, False or a nnkern"):
        build("sgd").fit(x, y, verbose=0, distributed="mpi")
    with pytest.raises(TypeError, match="comm must be a nnkern.distributed.Communicator"):
        DataParallel(comm=object())
    with pytest.raises(ValueError, match="timeout must be a number of seconds > 0, got 0"):
        Watchdog(0, print)


def test_local_communicator_checks_and_leaves_arrays():
    comm = LocalCommunicator()
    a = np.arange(3.0)
    assert comm.allreduce_mean(a) is a and comm.broadcast_object({"a": 1}) == {"a": 1}
    with pytest.raises(TypeError, match="averages floating-point arrays, got dtype int64"):
        comm.allreduce_mean(np.arange(3))
    with pytest.raises(DistributedError, match="stop"):
        comm.abort("stop")


def test_without_mpi4py_init_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    monkeypatch.setattr(distributed, "_communicators", {})
    with pytest.raises(ImportError, match=r'pip install -e "\.\[distributed\]"'):
        distributed.init("cpu")


def test_one_process_draws_dropout_as_before():
    assert distributed.seed_stream() == ()


def test_torchrun_variables_are_read_and_checked(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    assert distributed._env_launch() is None
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("MASTER_ADDR", "node0")
    assert distributed._env_launch() == (1, 4, 1, "node0", 29500)
    monkeypatch.setenv("LOCAL_RANK", "x")
    with pytest.raises(ValueError, match="must be integers"):
        distributed._env_launch()


# --- MPI in this process (one rank) --------------------------------------------------------------


def test_mpi_communicator_on_one_rank():
    pytest.importorskip("mpi4py", reason="needs: pip install -e '.[distributed]'")
    comm = distributed.MPICommunicator()
    a = np.arange(4.0)
    assert comm.allreduce_mean(a) is a and np.array_equal(a, np.arange(4.0))
    assert comm.broadcast_object([1, "x"]) == [1, "x"] and comm.local_rank_and_size() == (0, 1)
    comm.barrier()
    with pytest.raises(ValueError, match="C-contiguous"):
        comm.allreduce_sum(np.zeros((3, 3))[:, 0])
    with pytest.raises(TypeError, match="takes a NumPy array \\(host memory\\), got list"):
        comm.broadcast([1.0])
    assert "1 process (mpi)" in distributed.describe(comm)


def test_init_picks_mpi_for_host_arrays_and_under_the_cuda_simulator():
    # NCCL is for GPU memory; the simulator's "GPU" arrays are NumPy arrays, which MPI
    # carries (conftest turns the simulator on when no GPU is asked for)
    pytest.importorskip("mpi4py", reason="needs: pip install -e '.[distributed]'")
    comm = distributed.init("cpu")
    assert comm.kind == "mpi" and distributed.init("numpy") is comm
    if cuda_simulated():
        assert distributed.init("cuda") is comm
    assert (distributed.rank(), distributed.world_size(), distributed.is_main()) == (0, 1, True)


# --- the watchdog --------------------------------------------------------------------------------


def test_watchdog_fires_on_a_long_call_only():
    fired = []
    dog = Watchdog(0.3, lambda what, waited: fired.append((what, waited)))
    with dog.guard("quick"):
        pass
    time.sleep(0.5)
    assert fired == []
    with dog.guard("allreduce of 10 float32"):
        time.sleep(1.0)
    assert len(fired) == 1 and fired[0][0] == "allreduce of 10 float32" and fired[0][1] > 0.3


# --- exchanging NCCL's id over TCP ---------------------------------------------------------------


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_tcp_exchange_gives_every_rank_rank_0s_id():
    port, size = _free_port(), 4
    got = [None] * size

    def run(rank):
        got[rank] = distributed.exchange_id(UID if rank == 0 else None, rank, size,
                                            "127.0.0.1", port, timeout=20)

    threads = [threading.Thread(target=run, args=(r,)) for r in reversed(range(size))]
    for t in threads:  # the others start first: they retry until rank 0 listens
        t.start()
        time.sleep(0.05)
    for t in threads:
        t.join(30)
    assert got == [UID] * size


def test_tcp_exchange_times_out_with_a_clear_error():
    port = _free_port()
    with pytest.raises(DistributedError, match=f"rank 1: could not reach rank 0 at "
                                               f"127.0.0.1:{port} within 0.3 s"):
        distributed.exchange_id(None, 1, 2, "127.0.0.1", port, timeout=0.3)
    with pytest.raises(DistributedError, match="rank 0: only 0 of the 2 other ranks connected"):
        distributed.exchange_id(UID, 0, 3, "127.0.0.1", port, timeout=0.3)


def test_every_step_agrees_on_stopping():
    # a stop asked for on one rank only must stop every rank at the same step: the
    # strategy ORs the flags (here the other rank asks, through the communicator)
    class OtherRankStops(LocalCommunicator):
        rank, size = 0, 2

        def allreduce_sum(self, array):
            array += 1.0 if array.size == 1 else 0.0
            return array

    assert DataParallel(OtherRankStops()).agree(False) is True
    assert DataParallel(LocalCommunicator()).agree(False) is False


def test_nnkern_distributed_is_a_submodule():
    assert nnkern.distributed is distributed
