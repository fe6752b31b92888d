"""Data-parallel training on several processes: MPI (mpi4py) for host arrays, NCCL (CuPy) for GPUs.

Every process (a *rank*) runs the same script on the same data; ``fit`` gives
each rank its own part of every batch and averages the gradients, so P ranks
with a global batch of B train as one process with batch B::

    # mpiexec -n 2 python train.py
    import nnkern
    from nnkern import distributed

    distributed.init()                         # rank and size from MPI (NCCL on the GPU)
    model.fit(x, y, batch_size=64, epochs=10, distributed=True)
    if distributed.is_main():
        model.save("model.npz")

``fit(..., distributed=True)`` is the short form of ``distributed=DataParallel()``;
pass a ``DataParallel`` to choose its communicator or timeout. Under it:

* rank 0's weights, buffers, optimizer state, layer seeds and dropout counters are
  broadcast before the first step, so every rank starts the same (a resumed run restarts
  from rank 0's checkpoint: the other ranks need no copy of the file);
* each global batch of the epoch's shuffled order (the same on every rank: it is
  drawn from ``(seed, epoch)``, and rank 0's seed is used) is split into P
  contiguous, disjoint parts, one per rank, so the ranks cover the epoch once;
* after ``backward`` the flat gradient buffer of each dtype is averaged with one
  allreduce, weighted by the parts' sizes when they differ (the global gradient
  is then exactly that of the mean loss over the global batch; a loss with
  ``reduction="sum"`` is summed instead, and a plain-function loss is taken to
  be a mean over the batch, as the built-in ones are);
* the loss and metric counts are summed over the ranks at every step and the
  validation set is split and summed likewise, so every rank's logs, history and
  callbacks see the global values; a stop asked for by a callback on any rank
  stops them all at the same step;
* only rank 0 prints the progress bar and runs the callbacks that write files
  (``ModelCheckpoint``, ``CSVLogger``: ``main_process_only``);
* dropout masks differ across ranks and stay reproducible: a rank draws its masks
  from (layer seed, step, rank);
* batch norm normalises with each rank's own part of the batch (local
  statistics, as PyTorch's DistributedDataParallel does by default); the running
  mean and variance are averaged over the ranks at the end of every epoch,
  before validation and checkpoints. The running mean then equals that of one
  process (the moving average is linear); the running variance is the mean of
  the local variances, which leaves out the spread of the local means.

Faults: a rank that raises an uncaught exception prints it and aborts every rank
(``init`` installs the hook); a rank that dies is noticed by ``mpiexec``, which
ends the others; a collective that waits longer than ``timeout`` seconds
(default 300, ``NNKERN_DIST_TIMEOUT``) prints which call and rank waited and
aborts every rank, so a hung or diverged rank never hangs the job.
"""

import os
import pickle
import sys
import threading
import time

import numpy as np

DEFAULT_TIMEOUT = 300.0

_communicators = {}  # "mpi" / "nccl" -> the process's communicator of that kind
_rank_stream = ()  # (rank,) in one rank of several: its dropout masks are its own


class DistributedError(RuntimeError):
    """A collective failed, timed out, or the ranks disagree on their inputs."""


def _default_timeout(timeout):
    if timeout is None:
        timeout = float(os.environ.get("NNKERN_DIST_TIMEOUT", DEFAULT_TIMEOUT))
    timeout = float(timeout)
    if not timeout > 0:
        raise ValueError(f"timeout must be a number of seconds > 0, got {timeout!r}")
    return timeout


# --- fault detection -----------------------------------------------------------------------------


class Watchdog:
    """Calls ``on_timeout(what, waited)`` from a background thread when one guarded call
    lasts more than ``timeout`` seconds. A guarded call only writes three attributes (the
    description is written out only on a timeout), so it costs about a microsecond next to
    a collective. One call at a time: collectives do not nest.

        >>> dog = Watchdog(5.0, on_timeout=lambda what, waited: print(what, waited))
        >>> with dog.guard("allreduce", np.zeros(4)):
        ...     pass
    """

    def __init__(self, timeout, on_timeout):
        self.timeout = _default_timeout(timeout)
        self.on_timeout = on_timeout
        self._since, self._what, self._array = None, None, None
        self._thread = None

    def guard(self, what, array=None):
        """``with dog.guard("allreduce", array):`` around one call."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._watch, name="nnkern-watchdog",
                                            daemon=True)
            self._thread.start()
        self._what, self._array = what, array
        return self

    def __enter__(self):
        self._since = time.monotonic()

    def __exit__(self, *exc):
        self._since = None

    def _watch(self):
        while True:
            time.sleep(min(1.0, self.timeout / 10))
            since, what, array = self._since, self._what, self._array
            if since is not None and time.monotonic() - since > self.timeout:
                self._since = None
                if array is not None:
                    what = f"{what} of {array.size:,} {array.dtype}"
                self.on_timeout(what, time.monotonic() - since)


# --- communicators -------------------------------------------------------------------------------


class Communicator:
    """The collectives data-parallel training needs; ``rank`` and ``size`` of this process.

    Every call is collective: each rank must make it, in the same order. Arrays are
    changed in place and returned.

    >>> comm = LocalCommunicator()
    >>> comm.allreduce_mean(np.ones(3)), comm.rank, comm.size
    (array([1., 1., 1.]), 0, 1)
    """

    rank, size, kind = 0, 1, "local"

    def allreduce_sum(self, array):
        """Sum ``array`` over the ranks, in place."""
        raise NotImplementedError

    def allreduce_mean(self, array):
        """Average a floating-point ``array`` over the ranks, in place."""
        raise NotImplementedError

    def broadcast(self, array, root=0):
        """Copy rank ``root``'s ``array`` into every rank's, in place."""
        raise NotImplementedError

    def broadcast_object(self, obj, root=0):
        """Rank ``root``'s picklable ``obj`` on every rank (the others pass anything)."""
        raise NotImplementedError

    def barrier(self):
        """Return once every rank has called it."""
        raise NotImplementedError

    def abort(self, message, code=1):
        """Print ``message`` and end every rank with exit status ``code``."""
        raise NotImplementedError

    def _check(self, array, what, floating=False):
        xp_ok = self._accepts(array)
        if not xp_ok:
            raise TypeError(f"{type(self).__name__}.{what} takes {self._accepted}, got "
                            f"{type(array).__name__}")
        if not array.flags.c_contiguous:
            raise ValueError(f"{type(self).__name__}.{what} needs a C-contiguous array (it works "
                             f"in place), got strides {array.strides} for shape {array.shape}")
        if floating and array.dtype.kind != "f":
            raise TypeError(f"{type(self).__name__}.{what} averages floating-point arrays, got "
                            f"dtype {array.dtype}")


class LocalCommunicator(Communicator):
    """One rank: every collective leaves its argument as it is."""

    _accepted = "an array"

    def _accepts(self, array):
        return hasattr(array, "dtype") and hasattr(array, "flags")

    def allreduce_sum(self, array):
        self._check(array, "allreduce_sum")
        return array

    def allreduce_mean(self, array):
        self._check(array, "allreduce_mean", floating=True)
        return array

    def broadcast(self, array, root=0):
        _check_root(root, 1)
        self._check(array, "broadcast")
        return array

    def broadcast_object(self, obj, root=0):
        _check_root(root, 1)
        return obj

    def barrier(self):
        pass

    def abort(self, message, code=1):
        raise DistributedError(message)


def _check_root(root, size):
    if isinstance(root, bool) or int(root) != root or not 0 <= root < size:
        raise ValueError(f"root must be a rank in [0, {size}), got {root!r}")


class _Watched(Communicator):
    """A communicator whose waits are bounded: past ``timeout`` seconds, every rank aborts."""

    def _watch(self, timeout):
        self.watchdog = Watchdog(timeout, self._timed_out)

    @property
    def timeout(self):
        return self.watchdog.timeout

    @timeout.setter
    def timeout(self, value):
        self.watchdog.timeout = _default_timeout(value)

    def _say(self, message):
        sys.stderr.write(f"nnkern.distributed: rank {self.rank} of {self.size}: {message}\n")
        sys.stderr.flush()

    def _timed_out(self, what, waited):
        self.abort(
            f"{what} waited {waited:.1f} s, more than the timeout of {self.timeout:g} s: "
            f"another rank has died, hangs, or stopped making the same calls (a diverged "
            f"loop); aborting every rank. Change the limit with DataParallel(timeout=...) or "
            f"NNKERN_DIST_TIMEOUT.", code=3)


class MPICommunicator(_Watched):
    """Collectives over mpi4py on host (NumPy) arrays; ``comm`` defaults to COMM_WORLD.

    A call that waits longer than ``timeout`` seconds prints what waited and aborts
    every rank (``MPI_Abort``).

        >>> comm = MPICommunicator()             # doctest: +SKIP
        >>> comm.allreduce_mean(grad)            # doctest: +SKIP
    """

    kind = "mpi"
    _accepted = "a NumPy array (host memory)"

    def __init__(self, comm=None, timeout=None):
        MPI = _import_mpi()
        self._MPI = MPI
        self.comm = MPI.COMM_WORLD if comm is None else comm
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self._watch(timeout)

    def _accepts(self, array):
        return isinstance(array, np.ndarray)

    def local_rank_and_size(self):
        """This rank's index among the ranks that share its machine, and their number."""
        shared = self.comm.Split_type(self._MPI.COMM_TYPE_SHARED, self.rank)
        try:
            return shared.Get_rank(), shared.Get_size()
        finally:
            shared.Free()

    def allreduce_sum(self, array):
        self._check(array, "allreduce_sum")
        with self.watchdog.guard("allreduce", array):
            self.comm.Allreduce(self._MPI.IN_PLACE, array, op=self._MPI.SUM)
        return array

    def allreduce_mean(self, array):
        self._check(array, "allreduce_mean", floating=True)
        self.allreduce_sum(array)
        if self.size > 1:
            array /= self.size
        return array

    def broadcast(self, array, root=0):
        _check_root(root, self.size)
        self._check(array, "broadcast")
        with self.watchdog.guard(f"broadcast from rank {root}", array):
            self.comm.Bcast(array, root=root)
        return array

    def broadcast_object(self, obj, root=0):
        _check_root(root, self.size)
        with self.watchdog.guard(f"broadcast of a Python object from rank {root}"):
            return self.comm.bcast(obj, root=root)

    def barrier(self):
        with self.watchdog.guard("barrier"):
            self.comm.Barrier()

    def abort(self, message, code=1):
        self._say(message)
        # mpiexec forwards each rank's output asynchronously and MPI_Abort kills the ranks
        # at once: on a loaded machine the message was lost without a moment to pass it on
        time.sleep(0.5)
        self.comm.Abort(code)


def _import_mpi():
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise ImportError(
            f"data-parallel training on the CPU needs mpi4py and an MPI library ({exc}); "
            f"install them with: pip install -e \".[distributed]\" (mpi4py and the mpich "
            f"wheel, which brings mpiexec)"
        ) from exc
    return MPI


# NCCL: the numbers of ncclDataType_t, looked up by name in the nccl module
_NCCL_TYPES = {"int8": "NCCL_INT8", "uint8": "NCCL_UINT8", "int32": "NCCL_INT32",
               "uint32": "NCCL_UINT32", "int64": "NCCL_INT64", "uint64": "NCCL_UINT64",
               "float16": "NCCL_FLOAT16", "float32": "NCCL_FLOAT32", "float64": "NCCL_FLOAT64"}
NCCL_ID_BYTES = 128


def _device_pointer(array):
    """The address of ``array``'s first element: CuPy's device pointer, or a NumPy array's
    host address (the simulator and the tests' stand-in for NCCL)."""
    if isinstance(array, np.ndarray):
        return array.ctypes.data
    return array.data.ptr


class NCCLCommunicator(_Watched):
    """Collectives over NCCL (CuPy's ``cupy.cuda.nccl``) on GPU arrays, one GPU per rank.

    ``unique_id``: rank 0's ``nccl.get_unique_id()``, given to every rank (``init`` passes
    it over MPI, or over TCP when the ranks were started with ``RANK``/``WORLD_SIZE``/
    ``MASTER_ADDR``/``MASTER_PORT``, as torchrun does). The collectives are queued on the
    legacy default stream, where nnkern launches its kernels; the calls that bring a value
    back to the host wait at most ``timeout`` seconds, then abort the communicator and
    every rank. Each call waits for its collective to finish (polling the stream, under
    the same timeout): a step syncs with the host once anyway (its loss), and a sync that
    no timeout guards would block forever on a lost rank.

    ``nccl`` and ``xp`` (the array module) may be replaced, which the tests do to check
    the calls without a GPU.
    """

    kind = "nccl"
    _accepted = "a GPU (CuPy) array"
    STREAM = 0  # the legacy default stream (see nnkern/device.py)

    def __init__(self, rank, size, unique_id, timeout=None, nccl=None, xp=None):
        if nccl is None:
            from cupy.cuda import nccl
        if xp is None:
            import cupy as xp
        self.nccl, self.xp = nccl, xp
        self.rank, self.size = int(rank), int(size)
        _check_root(self.rank, self.size)
        self._watch(timeout)
        self.comm = nccl.NcclCommunicator(self.size, _nccl_id_tuple(unique_id), self.rank)
        self._avg = getattr(nccl, "NCCL_AVG", None)

    def _accepts(self, array):
        return isinstance(array, self.xp.ndarray)

    def _type(self, array):
        name = _NCCL_TYPES.get(array.dtype.name)
        if name is None or not hasattr(self.nccl, name):
            raise TypeError(f"NCCL has no type for dtype {array.dtype}; use one of "
                            f"{sorted(_NCCL_TYPES)}")
        return getattr(self.nccl, name)

    def _allreduce(self, array, op):
        ptr = _device_pointer(array)
        self.comm.allReduce(ptr, ptr, array.size, self._type(array), op, self.STREAM)
        self.wait("allreduce", array)
        return array

    def allreduce_sum(self, array):
        self._check(array, "allreduce_sum")
        return self._allreduce(array, self.nccl.NCCL_SUM)

    def allreduce_mean(self, array):
        self._check(array, "allreduce_mean", floating=True)
        if self._avg is not None:
            return self._allreduce(array, self._avg)
        self._allreduce(array, self.nccl.NCCL_SUM)  # NCCL before 2.10: sum, then divide
        array /= self.size
        return array

    def broadcast(self, array, root=0):
        _check_root(root, self.size)
        self._check(array, "broadcast")
        self.comm.bcast(_device_pointer(array), array.size, self._type(array), int(root),
                        self.STREAM)
        self.wait(f"broadcast from rank {root}", array)
        return array

    def broadcast_object(self, obj, root=0):
        _check_root(root, self.size)
        payload = pickle.dumps(obj) if self.rank == root else b""
        length = self.broadcast(self.xp.asarray(np.array([len(payload)], np.int64)), root)
        n = int(length[0])
        data = self.xp.asarray(np.frombuffer(payload, np.uint8) if self.rank == root
                               else np.zeros(n, np.uint8))
        self.broadcast(data, root)
        return obj if self.rank == root else pickle.loads(_host_bytes(data))

    def barrier(self):
        self.allreduce_sum(self.xp.zeros(1, self.xp.float32))

    def wait(self, what, array=None):
        """Wait for the queued collectives, at most ``timeout`` seconds: the stream is
        polled, so a lost rank cannot block the host forever."""
        if self.xp is np:  # the tests' stand-in: the calls are done when they return
            return
        stream = self.xp.cuda.Stream.null
        with self.watchdog.guard(what, array):
            start = time.perf_counter()
            while not stream.done:  # spin 1 ms (a step's allreduce), then poll gently
                if time.perf_counter() - start > 1e-3:
                    time.sleep(1e-4)

    def abort(self, message, code=1):
        self._say(message)
        try:
            self.comm.abort()
        finally:
            mpi = _communicators.get("mpi")
            if mpi is not None:
                mpi.comm.Abort(code)
            os._exit(code)


def _host_bytes(array):
    return bytes(np.asarray(array.get() if hasattr(array, "get") else array, np.uint8))


def _nccl_id_tuple(unique_id):
    """NCCL's 128-byte id as CuPy's NcclCommunicator takes it: a tuple of signed chars."""
    if isinstance(unique_id, (bytes, bytearray)):
        unique_id = [b - 256 if b > 127 else b for b in unique_id]
    unique_id = tuple(int(v) for v in unique_id)
    if len(unique_id) != NCCL_ID_BYTES or not all(-128 <= v <= 127 for v in unique_id):
        raise ValueError(f"unique_id must be NCCL's {NCCL_ID_BYTES}-byte id (from "
                         f"nccl.get_unique_id()), got {len(unique_id)} values")
    return unique_id


def _nccl_id_bytes(unique_id):
    return bytes(v & 0xFF for v in _nccl_id_tuple(unique_id))


# --- exchanging NCCL's id without MPI: a TCP rendezvous at rank 0 -------------------------------

_MAGIC = b"nnkern-nccl-id\x00"


def exchange_id(payload, rank, size, address, port, timeout=60.0):
    """Rank 0 serves ``payload`` (bytes) at ``address:port`` to the ``size - 1`` other ranks,
    which connect (retrying until ``timeout``) and return it. Rank 0 returns ``payload``
    once every rank has it.

        >>> exchange_id(b"id", 0, 1, "127.0.0.1", 29500)
        b'id'
    """
    import socket

    deadline = time.monotonic() + float(timeout)
    if rank == 0:
        if size == 1:
            return payload
        with socket.create_server((address, int(port)), reuse_port=False) as server:
            served = 0
            while served < size - 1:
                server.settimeout(max(0.01, deadline - time.monotonic()))
                try:
                    conn, _ = server.accept()
                except TimeoutError:
                    raise DistributedError(
                        f"rank 0: only {served} of the {size - 1} other ranks connected to "
                        f"{address}:{port} within {timeout:g} s to fetch the NCCL id (are "
                        f"they running with the same MASTER_ADDR/MASTER_PORT?)") from None
                with conn:
                    conn.sendall(_MAGIC + len(payload).to_bytes(4, "little") + payload)
                served += 1
        return payload
    while True:
        try:
            conn = socket.create_connection((address, int(port)),
                                            timeout=max(0.01, deadline - time.monotonic()))
            break
        except OSError as exc:
            if time.monotonic() >= deadline:
                raise DistributedError(
                    f"rank {rank}: could not reach rank 0 at {address}:{port} within "
                    f"{timeout:g} s to fetch the NCCL id ({exc}); is rank 0 running, and do "
                    f"MASTER_ADDR/MASTER_PORT name its machine and a free port?") from None
            time.sleep(0.05)
    chunks = []
    with conn:  # rank 0 closes the connection after sending
        conn.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            while chunk := conn.recv(4096):
                chunks.append(chunk)
        except TimeoutError:
            pass
    data = b"".join(chunks)
    if not data.startswith(_MAGIC):
        raise DistributedError(f"rank {rank}: {address}:{port} did not answer as nnkern's rank "
                               f"0 (another program holds the port?)")
    n = int.from_bytes(data[len(_MAGIC):len(_MAGIC) + 4], "little")
    body = data[len(_MAGIC) + 4:]
    if len(body) != n:
        raise DistributedError(f"rank {rank}: got {len(body)} of the {n} bytes of the NCCL id "
                               f"from {address}:{port}")
    return body


def _env_launch():
    """(rank, size, local_rank, address, port) from torchrun-style variables, or None."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    try:
        rank, size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local = int(os.environ.get("LOCAL_RANK", rank))
        port = int(os.environ.get("MASTER_PORT", "29500"))
    except ValueError as exc:
        raise ValueError(f"RANK, WORLD_SIZE, LOCAL_RANK and MASTER_PORT must be integers "
                         f"({exc})") from None
    return rank, size, local, os.environ.get("MASTER_ADDR", "127.0.0.1"), port


# --- the process's communicator ------------------------------------------------------------------


def init(device=None, timeout=None):
    """The communicator of this process for ``device`` (default: the current device),
    created on first use and kept: ``cpu``/``numpy`` use MPI, ``cuda`` uses NCCL.

    Rank and size come from MPI (``mpiexec -n P``); for NCCL they may instead come from
    ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/``MASTER_ADDR``/``MASTER_PORT``. With several
    ranks, ``init`` also makes an uncaught exception abort every rank, and on the CPU
    gives each rank its share of the machine's cores (all cores divided by the ranks on
    the machine) unless ``NUMBA_NUM_THREADS`` is set.

        >>> comm = init()                          # doctest: +SKIP
        >>> comm.rank, comm.size                   # doctest: +SKIP
        (0, 2)
    """
    from .device import _resolve, cuda_simulated, get_device

    backend = _resolve(device) if device is not None else get_device()
    # the simulator's "GPU" arrays are NumPy arrays: MPI carries them
    kind = "nccl" if backend == "cuda" and not cuda_simulated() else "mpi"
    comm = _communicators.get(kind)
    if comm is None:
        comm = _create_nccl(timeout) if kind == "nccl" else MPICommunicator(timeout=timeout)
        _communicators[kind] = comm
        if comm.size > 1:
            _set_rank_stream(comm)
            _abort_on_uncaught_exception(comm)
            if backend == "cpu":
                _share_cores(comm)
    elif timeout is not None:
        comm.timeout = timeout
    return comm


def _create_nccl(timeout):
    launch = _env_launch()
    if launch is not None:
        rank, size, local, address, port = launch
    else:
        mpi = init("cpu", timeout)
        rank, size = mpi.rank, mpi.size
        local = mpi.local_rank_and_size()[0]
    import cupy
    from cupy.cuda import nccl
    from numba import cuda

    gpu = local % cupy.cuda.runtime.getDeviceCount()
    cupy.cuda.Device(gpu).use()
    cuda.select_device(gpu)
    uid = _nccl_id_bytes(nccl.get_unique_id()) if rank == 0 else None
    if launch is not None:
        uid = exchange_id(uid, rank, size, address, port, _default_timeout(timeout))
    else:
        uid = mpi.broadcast_object(uid)
    return NCCLCommunicator(rank, size, uid, timeout=timeout)


def _share_cores(comm):
    if "NUMBA_NUM_THREADS" in os.environ:
        return
    import numba

    local = comm.local_rank_and_size()[1]
    if local > 1:
        numba.set_num_threads(max(1, numba.config.NUMBA_NUM_THREADS // local))


def _abort_on_uncaught_exception(comm):
    previous = sys.excepthook

    def hook(kind, value, traceback):
        message = f"stopped by {kind.__name__}: {value}; aborting every rank"
        say = getattr(comm, "_say", None)
        if say is not None:
            # the reason first: printing the traceback can take longer than another rank's
            # timeout, and its abort would then cut this rank off before it says why
            say(message)
        previous(kind, value, traceback)
        comm.abort(message)

    sys.excepthook = hook


def describe(comm):
    """One line on ``comm``: how many processes, over what, with how many threads each.

        >>> describe(LocalCommunicator())
        '1 process (local), 1 CPU thread'
    """
    import numba

    processes = f"{comm.size} process{'es' if comm.size > 1 else ''} ({comm.kind})"
    if comm.kind == "nccl":
        return f"{processes}, one GPU each"
    threads = numba.get_num_threads()
    return f"{processes}, {threads} CPU thread{'s' if threads > 1 else ''}" + (
        " each" if comm.size > 1 else "")


def _current():
    comm = _communicators.get("nccl") or _communicators.get("mpi")
    return comm if comm is not None else init()


def rank():
    """This process's rank (0 .. world_size() - 1); calls ``init()`` if needed."""
    return _current().rank


def world_size():
    """The number of ranks; calls ``init()`` if needed."""
    return _current().size


def is_main():
    """True on rank 0, the rank that prints, logs and writes checkpoints."""
    return _current().rank == 0


def seed_stream():
    """What a rank adds to the seeds of its random draws (dropout masks): ``(rank,)`` in a
    process that is one rank of several (after ``init()`` or a data-parallel ``fit``), else
    ``()``: one process draws as it always did."""
    return _rank_stream


def _set_rank_stream(comm):
    global _rank_stream
    _rank_stream = (comm.rank,) if comm.size > 1 else ()


# --- strategies: what fit asks at each point of training --------------------------------------


class LocalStrategy:
    """One process: each global batch is this process's batch; every hook is a no-op.
    ``fit``'s default."""

    rank, size, is_main = 0, 1, True

    def callbacks(self, callbacks):
        return list(callbacks)

    def verbose(self, verbose):
        return verbose

    def steps(self, n, batch_size):
        """Batches per epoch: a last batch too small to split (fewer than 2 samples per
        rank: batch norm cannot normalise one sample) is folded into the one before."""
        steps = -(-n // batch_size)
        if steps > 1 and 0 < n % batch_size < 2 * self.size:
            steps -= 1
        return steps

    def batches(self, order, batch_size, steps):
        """``[(indices of this rank's part, size of the global batch), ...]`` for one epoch's
        ``order``; the last batch takes what the others leave."""
        n = len(order)
        out = []
        for step in range(steps):
            idx = order[step * batch_size:n if step == steps - 1 else (step + 1) * batch_size]
            out.append((self._part(idx), len(idx)))
        return out

    def _part(self, idx):
        return idx

    def start(self, model, resumed, initial_epoch, seed, n):
        """Before the first epoch: returns ``(resumed, initial_epoch, seed)`` to train with."""
        return resumed, initial_epoch, seed

    def reduce_gradients(self, model, n_local, n_global):
        """After ``backward``: make the gradient buffers those of the global batch."""

    def running(self, model):
        """A tracker whose ``reduce(total, count)`` turns this rank's running loss sum,
        sample count and metric counts into the global ones."""
        return _LOCAL_RUNNING

    def agree(self, stop):
        """True on every rank when ``stop`` is true on any."""
        return stop

    def end_epoch(self, model):
        """After an epoch's last step, before validation and checkpoints."""

    def eval_range(self, n):
        """The ``[start, stop)`` of ``n`` evaluation samples this rank evaluates."""
        return 0, n


class _LocalRunning:
    def reduce(self, total, count):
        return total, count


_LOCAL_RUNNING = _LocalRunning()
LOCAL = LocalStrategy()


class DataParallel(LocalStrategy):
    """Data-parallel training over ``comm`` (default: ``init()`` for the model's device):
    see the module's docstring for what it does at each point.

    ``timeout``: seconds a collective may wait before every rank is aborted.

        >>> strategy = DataParallel(timeout=120)     # doctest: +SKIP
        >>> model.fit(x, y, batch_size=64, distributed=strategy)   # doctest: +SKIP
    """

    def __init__(self, comm=None, timeout=None):
        self._comm = comm
        self._timeout = timeout
        if comm is not None:
            self._bind(comm)

    def _bind(self, comm):
        if not isinstance(comm, Communicator):
            raise TypeError(f"comm must be a nnkern.distributed.Communicator, got "
                            f"{type(comm).__name__}")
        self._comm = comm
        if self._timeout is not None:
            comm.timeout = self._timeout
        self.rank, self.size, self.is_main = comm.rank, comm.size, comm.rank == 0

    @property
    def comm(self):
        if self._comm is None:
            self._bind(init(timeout=self._timeout))
        return self._comm

    def for_model(self, model):
        """Bind to the communicator of ``model``'s device (once)."""
        if self._comm is None:
            self._bind(init(model._device, timeout=self._timeout))
        return self

    def callbacks(self, callbacks):
        return [cb for cb in callbacks
                if self.is_main or not getattr(cb, "main_process_only", False)]

    def verbose(self, verbose):
        return verbose if self.is_main else 0

    def _part(self, idx):
        m = len(idx)
        return idx[self.rank * m // self.size:(self.rank + 1) * m // self.size]

    def start(self, model, resumed, initial_epoch, seed, n):
        comm = self.comm
        counts = np.zeros(self.size)
        counts[self.rank] = n
        counts = _host_allreduce_sum(comm, counts)
        if (counts != n).any():
            raise DistributedError(
                f"the ranks passed different numbers of training samples "
                f"{[int(c) for c in counts]}: every rank passes the same x and y to fit and "
                f"takes its own part of each batch")
        if n < self.size:
            raise ValueError(f"{n} training samples cannot be split over {self.size} ranks")
        unsummable = [m.name for m in model.metrics if not getattr(m, "counts", ())]
        if unsummable:
            raise TypeError(f"metrics {unsummable} name no additive counts (Metric.counts), so "
                            f"data-parallel fit cannot sum them over the ranks")
        leaves = model._leaf_layers()
        state = None
        if self.is_main:
            state = {"resumed": resumed, "initial_epoch": initial_epoch, "seed": seed,
                     "weights": model.get_weights(),
                     "optimizer": model.optimizer.state_dict(),
                     "layers": [(layer.seed, getattr(layer, "steps", None)) for layer in leaves]}
        state = comm.broadcast_object(state)
        if not self.is_main:
            model.set_weights(state["weights"])
            model.optimizer.load_state_dict(state["optimizer"])
            for layer, (layer_seed, steps) in zip(leaves, state["layers"]):
                layer.seed = layer_seed  # dropout draws from it
                if steps is not None:
                    layer.steps = steps
        if self.size > 1:
            _set_rank_stream(comm)
        return state["resumed"], state["initial_epoch"], state["seed"]

    def reduce_gradients(self, model, n_local, n_global):
        comm = self.comm
        share = n_local * self.size
        for g in model._params.grad_arrays():
            if model.loss.reduction == "sum":
                comm.allreduce_sum(g)
                continue
            if share != n_global:  # unequal parts: weight each rank's mean by its size
                g *= share / n_global
            comm.allreduce_mean(g)

    def running(self, model):
        return _Running(self.comm, model.metrics)

    def agree(self, stop):
        flag = np.array([1.0 if stop else 0.0])
        return bool(self._host_sum(flag)[0] > 0)

    def end_epoch(self, model):
        buffers = [a for layer in model._leaf_layers() for a in layer.state.values()
                   if a.dtype.kind == "f"]
        xp = _array_module_of(buffers[0]) if buffers else np
        for dtype in sorted({a.dtype.str for a in buffers}):
            group = [a for a in buffers if a.dtype.str == dtype]
            flat = xp.concatenate([a.reshape(-1) for a in group])
            self.comm.allreduce_mean(flat)
            offset = 0
            for a in group:
                a[...] = flat[offset:offset + a.size].reshape(a.shape)
                offset += a.size

    def eval_range(self, n):
        return self.rank * n // self.size, (self.rank + 1) * n // self.size

    def _host_sum(self, values):
        return _host_allreduce_sum(self.comm, values)


def _array_module_of(array):
    if isinstance(array, np.ndarray):
        return np
    import cupy
    return cupy


def _host_allreduce_sum(comm, values):
    """Sum a small host vector over the ranks (through the device for NCCL)."""
    if comm.kind != "nccl" or comm.xp is np:
        return comm.allreduce_sum(values)
    return comm.xp.asnumpy(comm.allreduce_sum(comm.xp.asarray(values)))


class _Running:
    """The running loss sum, sample count and metric counts of one epoch (or one
    evaluation), kept global: each ``reduce`` sums what every rank added since the last."""

    def __init__(self, comm, metrics):
        self.comm, self.metrics = comm, list(metrics)
        self.names = [(m, name) for m in self.metrics for name in m.counts]
        self.seen = np.zeros(2 + len(self.names))

    def reduce(self, total, count):
        now = np.array([total, count] + [getattr(m, name) for m, name in self.names],
                       np.float64)
        added = _host_allreduce_sum(self.comm, now - self.seen)
        self.seen = self.seen + added
        for (m, name), value in zip(self.names, self.seen[2:]):
            setattr(m, name, round(value) if isinstance(getattr(m, name), int)
                    else float(value))
        return float(self.seen[0]), round(self.seen[1])


def strategy_for(distributed, model=None):
    """``fit``'s ``distributed`` argument as a strategy: None/False -> one process,
    True -> ``DataParallel()``, a strategy -> itself."""
    if distributed is None or distributed is False:
        return LOCAL
    if distributed is True:
        distributed = DataParallel()
    if not isinstance(distributed, LocalStrategy):
        raise TypeError(f"distributed must be True, False or a nnkern.distributed.DataParallel, "
                        f"got {type(distributed).__name__}")
    if model is not None and isinstance(distributed, DataParallel):
        distributed.for_model(model)
    return distributed
