"""GEMM and the dense layer on the CPU with Numba.

Shapes: op(a) is (M, K), op(b) is (K, N), c is (M, N); op(x) = x.T when trans_x.
The dense layer is c = x @ w.T (trans_b) with bias + relu applied as c is stored.

Versions (VERSIONS; choose() picks one per call and says why), in reading order:

    naive   i-k-j loops, so the inner loop streams a row of b and of c. The
            readable baseline, and the fastest for tiny products (M*N*K <= 16^3),
            where anything else costs more to set up than it saves.
    small   the register-tiled micro-kernel (below) reading op(a) and op(b) where
            they lie: no packing, no scratch. Only the strips that cannot be read
            in place are copied into stack buffers (op(b) = b.T, whose rows are
            not contiguous, and the ragged last strips, zero-padded). Blocks of
            c's columns go to threads (one parallel region per call); below
            SERIAL_WORK the calling thread runs them all before any parallel
            launch (a launch with a team of one still cost about 9 us: 64^3 took
            16 us instead of 7). Each B strip meets every A strip while it sits
            in L1. Every tile runs the micro-kernel on data addresses and offsets
            (tile_at), not on views passed to a function: each view passed took
            NRT reference counts, a dozen calls and atomics per tile, about 200
            cycles a tile (64^3 kernel: 4.9 -> 3.4-3.6 us); an edge tile goes to
            a stack tile through the same call site (edge_tile then stores it).
            The b.T strips are copied MR x MR blocks at a time by register
            transposes (transpose_mr; 64^3 NT through F 8.1 -> 6.4 us, element
            by element before). Exists for the fixed cost of small and middle
            products: at 64^3 the packed version spent 15 us of a 25 us call on
            packing, scratch and launch, against 5 us for OpenBLAS; at 256^3 its two
            parallel regions (B packing, then the blocks) each wait for a worker
            to wake. Beyond about 320^3 the strided reads lose to packed panels
            (1024^3: 13 ms against 7 ms).
    small_t small on the transposed product: c^T = op(b)^T @ op(a)^T into scratch (N, M),
            then stored transposed with the epilogue (one scalar pass over c). Chosen on
            one thread when M is whole strips of NR and small's copies of op(b) cost more
            than the product: (1) the dense layer x @ w.T with M = NR rows and K >= KC,
            where small transposes every strip of w into the stack for one strip of rows
            (transposed, w is the broadcast operand, read once in place, and the copied
            strip is of x); (2) N ends in a ragged strip among fewer than RAGGED_FEW,
            which small copies element by element (with its bounds tests) at each step of
            K. Measured, small -> small_t (us, float32, one process, best of 7 x 2 turns,
            /work/scratch/mlp3/grid.py; no bench row yet, the MLP step's row shows it): NT
            32x128x784 (the MLP's first layer) 61.8 -> 49.6, 32x128x256 21.3 -> 17.6,
            32x10x64 4.1 -> 2.1, 64x120x400 64.6 -> 50.0 (LeNet's first dense layer),
            64x84x120 17.9 -> 13.9, 32x100x300 31.1 -> 17.3; NN 32x40x2000 107 -> 52,
            96x20x500 37.8 -> 30.2. Not chosen, because they lose: NT 32x512x64 20.1 ->
            28.6, 64x64x128 9.0 -> 10.5, 32x32x32 1.75 -> 2.08, NN 32x128x784 46.8 -> 53.5
            (b is read in place there), 32x1000x100 (one ragged strip of 32) 50.4 -> 70.0,
            and products with M ragged (the strip of op(a)^T is then ragged: 8x128x784 28.8
            -> 56.2 in an earlier NumPy-transposed try). Close: NN 128x84x120 26.1 -> 27.4,
            chosen (it wins 1.06x NT). small_t runs small_task itself, on the swapped
            operands (store_transposed), so a network compiles the micro-kernel once:
            as a kernel of its own it added 1.5-1.6 s to the main job's cold compile
            (bench/compile_time.py --main-job, one window: 13.8 -> 11.7 s).
    packed  the Goto/BLIS scheme, on one thread or on all of them.
            - op(b) is packed once into strips of NR columns, k-major, cut into
              steps of KC along K (b_panel_shape); op(a) is packed per thread,
              one row block and one step of K at a time, into strips of MR rows
              (pack_a_block). The transposes are absorbed by the packing, so one
              compute loop serves all four cases; ragged edges are zero-padded.
            - blocks of c (about MC = 128 rows; columns split too when c has few
              rows) go to threads with prange, no two writing one element (MC =
              256 before: 2048^3 47.8-48.0 against 45.8-46.1 ms best of 12 turns,
              its 2 MB block of c per thread left L2 at every step of K; 1024^3
              is cut into 8 blocks of 128 rows either way), and of at most NC =
              1024 columns (2048^3 split 16 x 2 instead of 16 x 1: 47.0-48.8 ->
              45.3-46.4 ms best of 10 turns, though each column block packs its A
              rows again; 1536^3 21.55 -> 21.20 ms); each B strip
              (KC x NR, <= 32 KB) stays in L1 while the block's A strips stream
              from L2, and the next B strip is prefetched while the first A strip
              runs (without that, blocks of few rows waited on L3 at each new B
              strip: 57 instead of 110 GFLOP/s).
            - op(a) = a.T is packed PB=8 rows of a at a time, strip by strip, each
              MR-value piece one vector copy (copy_lanes): half the time of scalar
              row-by-row packing, which made TN 4-6% slower than NN.
            - op(a) = a is packed MR x MR blocks at a time, each transposed in
              registers (transpose_mr: 8 vector loads, 24 shuffles, 8 stores):
              1024^2 in 0.20 ms instead of 0.32 ms element by element.
            - op(b) = b is packed row piece by row piece as W32-lane vector copies
              (copy_lanes): 1024^2 in 0.34-0.37 ms instead of 0.48 ms for the
              element loop, which LLVM left scalar (3% of the 2-thread 1024^3).
              A packing task is BG = 8 strips of one step of K, copied row by row of
              b (pack_b_strips), so each row gives one 1 KB run: a strip per task read
              128 bytes of each of 256 rows 8 KB apart, each a miss the hardware
              prefetcher (which stays within a page) did not foresee. All of op(b) at
              2048^3 on both threads: 1.62 -> 0.64 ms (best of 10 turns; the strip
              with a software prefetch 8 rows ahead: 0.79 ms); it had been 3% of the
              product, a separate phase before the blocks that nothing overlaps.
            - by columns (gemm_packed's by_columns; when the column blocks are a
              multiple of the threads, as at 2048^3: 16 x 2 blocks): one prange
              iteration per column block, which runs all its row blocks; the first
              packs the block's B strips step by step of K just before its tiles
              use them, so op(b) is packed without a phase of its own (2048^3 with
              the whole op(b) packed first, even in groups: 2.8 ms of 59.4 by
              median went when the phase was skipped (stale panel), 5%) and without
              the wait for the slower thread at its end, and each thread packs only
              its own columns' B strips, while they are in its L2. The A strips are
              packed as often as before (once per block). Measured in one process,
              implementations in rotating turns (/work/scratch/gemm3/abn.py, split.py;
              other engineers' tests ran beside, so read them as ranges): 2048^3 NN
              paired median 1.042x main's kernel over 20 turns (NumPy 1.045x in the
              same turns; the grouped B packing alone 1.004x), NT 1.026x, TN 0.999x
              (grouped alone 1.015x); against the same kernel with the whole op(b)
              packed first, on the same 16 x 2 split, 1.032x (one of the two CPUs
              taken by another process). 1024^3 keeps its 8 x 1 row blocks (8 x 2 by
              columns: 0.985x, A packed twice).
            - op(b) = b.T is packed MR x MR blocks at a time, transposed in
              registers (transpose_mr with the strip's row stride): 1024^2 on one
              thread in 0.39 ms instead of 0.71 ms element by element.
            - every tile through tile_at (offsets into the panels and c, the next
              B strip prefetched by the first A strip's tile only: two call sites),
              as in the small version: a micro-kernel call on views cost about 200
              cycles of reference counting per tile, 10% of a 256-step tile (1024^3
              5.95 -> 5.66 ms, 2048^3 49.6 -> 48.2 ms, best of 8-12 turns in one process
              against the previous kernel).
            - the packing panels come from the reused workspace (no page faults
              inside the parallel region, see _workspace.py).
            - one compiled kernel for one thread and for all: small work runs it
              with numba.set_num_threads(1) (a team of one runs inline, waking no
              thread), so the serial case no longer compiles the tree a second time.

Gathered operands (gemm_operands; Gathered): an operand given as two offset tables into
one array, X[i, j] = src[rows[i] + cols[j]], never stored. It exists for im2col
(kernels/conv/cpu.py), whose column matrix is such an operand of the zero-padded input:
written out (8 MB per batch, at memory speed) and packed again by this GEMM, it took 8 ms of
a 31.5 ms forward pass on N128 C32 28x28 K64 (direct 13.4).
- As op(b) it is packed straight from src (pack_b_gathered, chosen at compile time by
  pack_b): a strip whose offsets run is W32-lane vector copies per step of K, and MR x MR
  blocks of rows that start anywhere are transposed in registers (transpose_rows).
- As op(a) it is not packed at all: tile_gathered, the micro-kernel with A read through
  the two tables (the MR row addresses formed before the loop, one int64 column offset
  loaded per step of K and shared by the MR broadcasts), reads every strip where it lies
  (tile_a and pack_a, chosen at compile time by the operand's type). im2col's strips of
  col each fed only one or two tiles (Kg = 32 or 64 columns), so packing them was a large
  share of its GEMMs. Packed straight from the input (vector copies, masked loads across
  a row's end, register transposes), the forward pass had gone 31.5 -> 18.6 ms; read in
  place, the three passes went 59.0 -> 48.2 ms (forward 17.2 -> 14.8, backward-data
  20.6 -> 16.1, backward-weights 21.2 -> 17.2; direct 36.0; medians of 5 turns in one
  process), and the im2col GEMM's cold compile lost a packing loop.
A packer passed as a function argument would be simpler, but Numba does not cache a
function that takes one (its type holds the function's address), so the choice is made by
the operand's type. Cost to the other users: the packed float32 kernel's cold compile went
from 5.8 to 6.0-6.1 CPU s (fresh cache, one NN product; 6.2 s before pack_a and pack_b
were inlined).

The micro-kernel (_emit_tile, called as tile_at) multiplies one A strip (kc x MR) by
one B strip (kc x NR) into an MR x NR tile of c (or of the stack, at c's edges): 2*MR
vector accumulators, 2*MR FMAs per step of K, bias + relu applied as vector code to
the tile after the last step of K (linear's epilogue; as a Numba loop it cost 1.1 s
of cold compile), c read only when added to (a fresh output then takes one page fault
per page instead of two: 1024^3 into a new c went from about 100 to 190 GFLOP/s).
It is LLVM vector code, not Numba loops: a 6x16 tile written as Numba loops
(accumulators in a stack buffer, constant trip counts, SLP on) becomes 12 AVX2
FMAs per step, and that is all LLVM emits even on AVX-512 CPUs, which it tunes to
prefer 256-bit vectors. Measured on the 2-vCPU AVX-512 development machine (one
thread, data in L1): 103 GFLOP/s for that loop, 160 for the 8x32 tile of 512-bit
vectors; the whole SGEMM went from about 0.5x to 0.75-1x OpenBLAS. The tile
follows the CPU Numba compiles for: 8x32 float32 with AVX-512 (32 registers), 6x16
with AVX2 (16 registers).

Cold compile (one float32 kernel, CPU seconds, fresh cache): gemm_small 3.1 s before
tile_at; 4.9 s with tile_at beside the view-based edge-tile kernel and a Numba
epilogue loop; 3.5 s with one tile_at call site and the vector epilogue; 1.4-1.6 s
as small_task (the main job, bench/compile_time.py --main-job): the one-task call passed
a literal 0, which compiled small_columns a second time (1 s), and the parallel kernel's
four levels each optimised and compiled the tree again. Now the calling thread runs
small_task itself (a tuple of the nine values costs no more to pass: 64^3 3.87 vs 3.91
us) and more tasks go to _cpu.run_pieces (about 0.3 s per argument type). The packed
kernel: 6.1 -> 5.35 s.

Measured (SGEMM NN against numpy's OpenBLAS in the same process on the shared 2-vCPU
AVX-512 machine, implementations taking turns, best of 30-40 turns):
    - before tile_at: 64^3 small 7.2 us through the kernel entry against packed
      17.6 us and OpenBLAS 4.3 us (0.60x); 128^3 small 46 us against packed 77 us.
    - with tile_at: 64^3 gemm_small 3.4-3.9 us (dispatch 0.45 us, setup 0.2 us, 16
      tiles at about 0.16 us), the kernel entry 4.0-4.6 us, F.matmul 5.4-6.0 us,
      OpenBLAS 3.2-4.0 us (F.matmul 0.59-0.66x). 256^3 on both threads: small 94 us
      against OpenBLAS 113-124 us (its whole-call sustained average: 100-118 against
      119-134 us). The 0.5x of issue 13 at 256^3 was the bench's doing (passive
      waiting forced on nnkern, then OpenBLAS's threads of the child peer still
      spinning through nnkern's samples), not the kernel's.

Per call (gemm_bias_relu's fast path): a product below SERIAL_WORK, where choose()
does not look at the thread count and small runs one task, keeps its version in a
dict by (M, N, K, trans_a, trans_b, dtype); on a hit with a, b and c C-contiguous it
calls small_task or gemm_naive at once, with a shared one-element array as the absent
bias. Everything else (strided operands or output, empty sizes, forced_version, small_t,
packed, multi-threaded small) goes on to _gemm_any, the general path. 64^3 NN, one
process, min of 25 interleaved rounds of 3000 calls (/work/scratch/gemm64/prof4.py),
main -> this: F.matmul as the bench calls it (keywords) 7.61 -> 6.60 us, F's function
unwrapped from its Tensor wrapper 6.86 -> 5.94, the kernel entry gemm 5.56 -> 4.78,
small_task alone 4.42 / 4.16 (Numba's dispatch of the nine-value tuple about 0.43),
NumPy's a @ b 4.20 / 3.94 in the same runs. Python in gemm_bias_relu above small_task:
0.99 -> 0.53 us (choose() was 0.25, small_tasks() 0.08, the c[0] view 0.05, the
ascontiguousarray calls 0.09). Paired in one process, main's module against this one
(/work/scratch/gemm64/ab.py, benchab.py): the entry gemm 5.46 -> 4.88 us by median (1.12x;
128^3 1.03x); the bench's own NN 64 row (its HostTimer, inputs and F.matmul call) 6.96 ->
6.53 us (1.07x). What is left above the kernel: the Tensor wrapper
(nnkern/autograd/rules.py, 0.66-0.76 us with keyword arguments, 0.2-0.4 without),
F.matmul's checks and output allocation (about 1.1 us), the dispatch (0.4 us).

Tried and dropped (with numbers):
    - the fast path written into gemm() itself (no gemm_bias_relu frame, the key built
      from c.shape and a.shape without unpacking them, no bool() of the flags): 4.84
      against 4.82 us for the kernel entry (min of 30 rounds, trim.py beside prof4.py):
      nothing. Skipping the contiguity tests of a, b and c as well: 4.65 us, but a
      strided a or b would then be read as if contiguous (wrong results), so not kept.
    - keeping a row block's A strips for every step of K (1 MB a thread at 2048^3) so
      the next column block of the same rows packs none (A packed once instead of
      twice), and prefetching the next step's rows of a into L2 a part per B strip
      during the tiles (the packing then reads L2): 2048^3 NN paired medians against
      main's kernel 1.003-1.012 with either or both, 1.006 without (one process, 24
      turns, rotating order, /work/scratch/gemm3/abn.py): inside the noise, not kept.
    - NN's A packing (register transposes of MR rows 8 KB apart at 2048^3) was suspected of
      NN 2048's 0.93x; it is not the slow part: the whole product's packing pattern alone
      takes 0.50 ms against 0.98 ms for TN's row copies (best of 20, prof3.py), and a
      software prefetch of the next strip's rows (0.60 ms) or of 64 values ahead (0.51
      ms) does not help it. Per piece (2048^3 NN, main's kernel with parts switched off,
      best of 10): whole 50.4 ms, without B packing 48.4, without A packing 48.8, tiles
      alone 46.3, NumPy 49.8 in the same turns.
    - other splits by columns at 2048^3 (paired medians against 16 x 2 by columns, one
      CPU busy with other work): 8 x 2 0.993x, 12 x 2 1.013x, 32 x 2 about equal.
    - 6-row tiles on AVX-512: 8 rows measured 6-8% faster (1024^3: 290 vs 268
      GFLOP/s); 12 rows no better.
    - handing the blocks of c out dynamically (numba.parallel_chunksize(1)):
      slower than the static split.
    - a separate serial compilation of the packed version: 4.2 s of cold compile
      for no speed (the one-thread team of the parallel kernel runs inline).
    - 256^3 small in 2 column blocks (one per thread) instead of 8: 91.6 against
      94.1 us, inside the noise of one run; kept 8 (TASKS_PER_THREAD).
    - one tile_at call site in the packed version too, prefetching the strip being
      read where there is no next one: the small version with that prefetch ran
      256^3 in 116 us against 105 us without; the packed version keeps two sites.

Considered, not tried: packing the A strips of the small version (contiguous
broadcasts instead of eight strided rows). Its strided loop already runs near the
FMA bound (64x64x1024: 126 GFLOP/s, OpenBLAS 132, same run), and the 8x8 register
transposes would cost about 1500 shuffle cycles per 64^3 (24 shuffles per block).
"""

from collections import namedtuple

import numba
import numpy as np
from llvmlite import ir
from nnkern.kernels._cpu import (
    VECTOR_LANES,
    butterfly,
    run_pieces,
    stack_array,
    vector_at,
)
from nnkern.kernels._workspace import workspace
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

VERSIONS = {
    "naive": "i-k-j loops (tiny products)",
    "small": "register tiles read in place, no packing (small and middle products)",
    "small_t": "small on the transposed product, stored transposed (few rows, op(b) = b.T)",
    "packed": "packed panels, register tiles, one or all threads",
}
"""Every version, in reading order (see the header)."""

SMALL_WORK = 4096  # M*N*K up to which naive wins (measured: about 16^3)
SMALL_PATH_WORK = 1 << 25  # M*N*K up to which small wins over packed (about 320^3)
SERIAL_WORK = 1 << 22  # M*N*K below which small and packed run on one thread (161^3)
RAGGED_FEW = 4  # strips of c's columns below which a ragged last strip sends small to small_t


def choose(M, N, K, trans_b, why=True, trans_a=False, dtype=np.float32):
    """(version, why) for a product op(a) (M, K) @ op(b) (K, N) of ``dtype``; why is False
    when not asked for (each call asks with why=False: the message alone cost 0.2 us of a
    6 us 64^3).

    >>> choose(64, 64, 64, False)[0]
    'small'
    >>> choose(NR32, 128, 784, True)[0]  # x @ w.T, one strip of rows (32 on AVX-512)
    'small_t'
    """
    work = M * N * K
    if work <= SMALL_WORK:
        return "naive", why and f"M*N*K = {work} <= {SMALL_WORK}: setting up tiles costs more"
    if work >= SERIAL_WORK and N < numba.get_num_threads() * NR32:
        return "packed", why and f"{N} columns are too few to share between threads by columns"
    if work <= SMALL_PATH_WORK:
        nr = NR[np.dtype(dtype)]
        if work < SERIAL_WORK and M % nr == 0:
            # one thread, M whole strips of c^T's columns: small_t when small's copies
            # of op(b) cost more than the product (measured, see the header)
            if N % nr and N < RAGGED_FEW * nr:
                return "small_t", why and (
                    f"N = {N} ends in a ragged strip, copied element by element at each "
                    f"step of K, among fewer than {RAGGED_FEW} strips; M = {M} is whole strips")
            if trans_b and not trans_a and M == nr and K >= KC:
                return "small_t", why and (
                    f"op(b) = b.T: each of its strips is transposed into the stack for only "
                    f"M = {M} = one strip of rows; transposed, b is read in place")
        return "small", why and (
            f"M*N*K = {work} <= {SMALL_PATH_WORK}: packing costs more than it saves")
    return "packed", why and f"M*N*K = {work} > {SMALL_PATH_WORK}: packed panels stay in cache"


# ----------------------------------------------------------------------------
# version "naive": i-k-j loops


@njit(cache=True)
def gemm_naive(a, b, c, trans_a, trans_b, accumulate, bias, has_bias, relu):
    # a: (M, K) or (K, M); b: (K, N) or (N, K); c: (M, N); bias: (N,) when has_bias
    M, N = c.shape
    K = a.shape[0] if trans_a else a.shape[1]
    for i in range(M):
        if not accumulate:
            for j in range(N):
                c[i, j] = 0
        for p in range(K):
            aip = a[p, i] if trans_a else a[i, p]
            if trans_b:
                for j in range(N):
                    c[i, j] += aip * b[j, p]
            else:
                for j in range(N):
                    c[i, j] += aip * b[p, j]
        if has_bias or relu:
            for j in range(N):
                v = c[i, j]
                if has_bias:
                    v += bias[j]
                if relu and v < 0:
                    v = 0
                c[i, j] = v


# ----------------------------------------------------------------------------
# the register tile shared by "small" and "packed"


class team:
    """Run the parallel kernels called in this block on ``threads`` threads.

    One compiled kernel serves one thread and all of them: a team of one runs its
    prange inline and wakes no other thread. (Set here, not inside the kernel, where
    numba.set_num_threads would make it uncachable.)
    """

    def __init__(self, threads):
        self.threads = threads

    def __enter__(self):
        self.before = numba.get_num_threads()
        if self.threads != self.before:
            numba.set_num_threads(self.threads)

    def __exit__(self, *exc):
        if self.threads != self.before:
            numba.set_num_threads(self.before)


W32 = VECTOR_LANES  # float32 lanes per vector register; float64 has half
# rows of the micro-tile (broadcasts of A per step of K): the 2*MR accumulators,
# two B vectors and a broadcast must fit the vector register file (32 registers
# with AVX-512, 16 with AVX2 and SSE)
MR = 8 if W32 == 16 else 6
# columns of the micro-tile: two vector registers per row
NR32 = 2 * W32
NR64 = W32
NR = {np.dtype(np.float32): NR32, np.dtype(np.float64): NR64}
KC = 256  # depth of one micro-kernel call: A strip <= 8 KB, B strip <= 32 KB: L1
MC = 128  # rows of c per block (16 strips): the block's A panel (128 KB) in L2
TASKS_PER_THREAD = 4  # blocks of c per thread in the packed version
NC = 1024  # columns of c per block at most: its MC x NC block of c (512 KB) stays in L2
BY_COLUMNS = True  # packed: a thread's column blocks pack their own B strips (gemm_packed)
# sizes of the stack buffers (compile-time constants): an edge tile of c, and the
# A and B strips the small version cannot read in place
TILE_STACK = MR * NR32
A_STACK = KC * MR
B_STACK = KC * NR32


def _emit_tile(context, builder, dtype, kcv, a_at, b_at, c_at, addv, next_at, epilogue):
    """The micro-kernel's LLVM code: out(MR x NR) (+)= sum over p < kc of A[p, :] x B[p, :].

    a_at(p, i): pointer to A[p, i]; b_at(p): to row p of B (NR contiguous values);
    c_at(i): to row i of the output tile (NR contiguous values); next_at(p): a row of
    the B strip to prefetch into L2, or None; epilogue: (bias pointer, add bias?, relu?)
    (the flags as runtime i1 values) applied to the stored tile. The 2*MR accumulators are
    loop-carried vector values (phi nodes), so they live in registers by construction; each step
    loads two vectors of B, broadcasts MR values of A and issues 2*MR fused
    multiply-adds. Written with explicit vectors because LLVM's vectorizers stop at
    256 bits on CPUs that prefer them (most AVX-512 parts), which halves the
    throughput against OpenBLAS there; the vector type below is split into narrower
    registers where the CPU has no AVX-512.
    """
    nr = NR[np.dtype(str(dtype))]
    w = nr // 2
    elt = context.get_value_type(dtype)
    size = context.get_abi_sizeof(elt)
    vec = ir.VectorType(elt, w)
    i32 = ir.IntType(32)
    intp = context.get_value_type(types.intp)
    fma = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(vec, [vec] * 3), f"llvm.fma.v{w}f{8 * size}"
    )
    zero_vec = ir.Constant(vec, None)
    undef = ir.Constant(vec, ir.Undefined)
    splat_mask = ir.Constant(ir.VectorType(i32, w), [0] * w)
    zero = ir.Constant(intp, 0)

    def vector_ptr(row, h):  # the h-th vector of a row of NR values
        return builder.bitcast(builder.gep(row, [ir.Constant(intp, h * w)]), vec.as_pointer())

    # the tile of c is read and written after the loop: prefetch it now so the
    # misses (often to L3 for large c) overlap the loop instead of following it
    i8p = ir.IntType(8).as_pointer()
    one = ir.Constant(i32, 1)
    prefetch = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]), "llvm.prefetch.p0"
    )
    crows = [c_at(i) for i in range(MR)]
    for crow in crows:
        for off in range(0, nr, 64 // size):
            ptr = builder.bitcast(builder.gep(crow, [ir.Constant(intp, off)]), i8p)
            builder.call(prefetch, [ptr, one, ir.Constant(i32, 3), one])

    pre = builder.basic_block
    loop = builder.append_basic_block("tile.loop")
    done = builder.append_basic_block("tile.done")
    builder.cbranch(builder.icmp_signed(">", kcv, zero), loop, done)

    builder.position_at_end(loop)
    p = builder.phi(intp)
    accs = [builder.phi(vec) for _ in range(2 * MR)]
    brow = b_at(p)
    bvecs = [builder.load(vector_ptr(brow, h), align=size) for h in range(2)]
    if next_at is not None:
        # prefetch row p of the B strip the next micro-kernels will read into L2, so
        # that strip does not arrive from L3 a step at a time
        nrow = next_at(p)
        for off in range(0, nr, 64 // size):
            ptr = builder.bitcast(builder.gep(nrow, [ir.Constant(intp, off)]), i8p)
            builder.call(prefetch, [ptr, ir.Constant(i32, 0), ir.Constant(i32, 2), one])
    new = []
    for i in range(MR):
        a = builder.load(a_at(p, i))
        a = builder.shuffle_vector(
            builder.insert_element(undef, a, ir.Constant(i32, 0)), undef, splat_mask
        )
        for h in range(2):
            new.append(builder.call(fma, [a, bvecs[h], accs[2 * i + h]]))
    p_next = builder.add(p, ir.Constant(intp, 1))
    body_end = builder.basic_block
    p.add_incoming(zero, pre)
    p.add_incoming(p_next, body_end)
    for phi, value in zip(accs, new):
        phi.add_incoming(zero_vec, pre)
        phi.add_incoming(value, body_end)
    builder.cbranch(builder.icmp_signed("<", p_next, kcv), loop, done)

    builder.position_at_end(done)
    finals = []
    for value in new:
        final = builder.phi(vec)
        final.add_incoming(zero_vec, pre)
        final.add_incoming(value, body_end)
        finals.append(final)
    ptrs = [vector_ptr(crow, h) for crow in crows for h in range(2)]
    # c is read only when added to: a fresh output array (untouched pages) is
    # then only written, one page fault per page instead of a read fault
    # (zero page) and a write fault (measured: 1024^3 with a new c each call
    # 18.5 ms against 10.3 ms into a reused c)
    with builder.if_else(addv) as (then, otherwise):
        with then:
            for ptr, final in zip(ptrs, finals):
                old = builder.load(ptr, align=size)
                builder.store(builder.fadd(final, old), ptr, align=size)
        with otherwise:
            for ptr, final in zip(ptrs, finals):
                builder.store(final, ptr, align=size)
    # linear's bias + relu on the stored tile, as vector code (the same loop written
    # in Numba took 1.1 s of each kernel's cold compile): v + bias[j], then 0 where
    # v < 0 (a NaN stays NaN, as in torch)
    bias_ptr, biasv, reluv = epilogue
    with builder.if_then(builder.or_(biasv, reluv)):
        bvecs = [builder.load(vector_ptr(bias_ptr, h), align=size) for h in range(2)]
        for k, ptr in enumerate(ptrs):
            v = builder.load(ptr, align=size)
            v = builder.select(biasv, builder.fadd(v, bvecs[k % 2]), v)
            clipped = builder.select(builder.fcmp_ordered("<", v, zero_vec), zero_vec, v)
            builder.store(builder.select(reluv, clipped, v), ptr, align=size)


@intrinsic
def tile_at(typingctx, dtype, kc, a, ao, a_ps, a_is, b, bo, b_ps, c, co, c_rs, add, bnext, bias,
            add_bias, relu):
    """The micro-kernel on data addresses and offsets, with no array views.

    a, b, c, bias are data addresses (``arr.ctypes.data``) of arrays of ``dtype``;
    offsets and strides count elements: A[p, i] = a[ao + p*a_ps + i*a_is], row p of
    B = b[bo + p*b_ps:][:NR], row i of the tile = c[co + i*c_rs:][:NR], which gets the
    product (+ itself when ``add``); ``bnext``: None, or the offset of a B strip (the
    next one) whose row p, at b[bnext + p*b_ps:], is prefetched into L2 at step p (a
    prefetch of the strip being read, as a stand-in for None, made the small version's
    256^3 10% slower: 116 against 105 us). Then, when
    ``add_bias``, bias[:NR] is added to each row, and when ``relu``, negative values
    become 0 (linear's epilogue, on the last step of K only).

    Why addresses: a view per operand passed to a micro-kernel call took NRT reference
    counts (a dozen calls and atomics per tile), about 200 cycles a tile, 1.3 us of a
    64^3 product; and plain ints let one call site serve every tile (whole tiles of c
    and the stack tile of edge_tile alike): one unrolled loop to compile per call site.
    """

    def a_reader(context, builder, ptr, args):
        (_, _, av, aov, apsv, aisv) = args[:6]
        intp = context.get_value_type(types.intp)
        a_base = builder.gep(builder.inttoptr(av, ptr), [aov])
        a_rows = [builder.gep(a_base, [builder.mul(aisv, ir.Constant(intp, i))])
                  for i in range(MR)]
        return lambda p, i: builder.gep(a_rows[i], [builder.mul(p, apsv)])

    sig = types.void(dtype, kc, a, ao, a_ps, a_is, b, bo, b_ps, c, co, c_rs, add, bnext, bias,
                     add_bias, relu)
    return sig, _tile_codegen(a_reader)


@intrinsic
def tile_gathered(typingctx, dtype, kc, a, rows, cols, valid, b, bo, b_ps, c, co, c_rs, add,
                  bnext, bias, add_bias, relu):
    """tile_at with A read where it lies, through two offset tables: A[p, i] =
    a[rows[i] + cols[p]], where ``rows`` and ``cols`` are the data addresses of int64
    tables (the strip's first row and the step's first column already added) and ``a``
    the data address of the source (a Gathered operand's src). Only the first ``valid``
    rows exist (a ragged last strip): the others read row 0 again, and their results go
    to the stack tile with the rest of the edge tile, which edge_tile drops. The MR row
    addresses are formed before the loop, and each step loads one column offset, shared
    by the MR broadcasts: A is never packed (im2col's col, whose packed strips fed only
    one or two tiles each, Kg = 32 or 64 columns)."""

    def a_reader(context, builder, ptr, args):
        (_, _, av, rowsv, colsv, validv) = args[:6]
        i64 = ir.IntType(64)
        src = builder.inttoptr(av, ptr)
        rows_ptr = builder.inttoptr(rowsv, i64.as_pointer())
        cols_ptr = builder.inttoptr(colsv, i64.as_pointer())

        def row(i):  # rows[i], or rows[0] past the valid rows
            at = ir.Constant(i64, i)
            at = builder.select(builder.icmp_signed("<", at, validv), at, ir.Constant(i64, 0))
            return builder.load(builder.gep(rows_ptr, [at]))
        a_rows = [builder.gep(src, [row(i)]) for i in range(MR)]
        step = {}

        def a_at(p, i):  # one load of cols[p] per step, shared by the MR rows
            if id(p) not in step:
                step.clear()
                step[id(p)] = builder.load(builder.gep(cols_ptr, [p]))
            return builder.gep(a_rows[i], [step[id(p)]])
        return a_at

    sig = types.void(dtype, kc, a, rows, cols, valid, b, bo, b_ps, c, co, c_rs, add, bnext,
                     bias, add_bias, relu)
    return sig, _tile_codegen(a_reader)


def _tile_codegen(a_reader):
    # the codegen of tile_at and tile_gathered, whose arguments differ only in how A is
    # found (a_reader(context, builder, element pointer type, args) -> a_at(p, i)); the
    # arguments from b on are the same
    def codegen(context, builder, sig, args):
        (bv, bov, bpsv, cv, cov, crsv, addv, bnv, biv, hbv, rlv) = args[6:]
        ptr = context.get_value_type(sig.args[0].dtype).as_pointer()
        intp = context.get_value_type(types.intp)

        def base(address, offset):
            return builder.gep(builder.inttoptr(address, ptr), [offset])

        b_base, c_base = base(bv, bov), base(cv, cov)
        next_at = None
        if isinstance(sig.args[13], types.Integer):
            n_base = base(bv, bnv)
            next_at = lambda p: builder.gep(n_base, [builder.mul(p, bpsv)])
        _emit_tile(
            context, builder, sig.args[0].dtype, args[1],
            a_reader(context, builder, ptr, args),
            lambda p: builder.gep(b_base, [builder.mul(p, bpsv)]),
            lambda i: builder.gep(c_base, [builder.mul(crsv, ir.Constant(intp, i))]),
            addv, next_at,
            (builder.inttoptr(biv, ptr), hbv, rlv),
        )
        return context.get_dummy_value()
    return codegen


@njit(cache=True)
def edge_tile(tile, nr, c, i0, j0, add, last, epilogue):
    # A tile of c cut by its edges (rows past M or columns past N), computed by tile_at
    # into the stack tile ``tile`` (MR rows of nr): the part inside c is stored, added to
    # c when ``add``, with bias + relu on the last step of K.
    _, bias, has_bias, relu = epilogue
    M, N = c.shape
    for i in range(min(MR, M - i0)):
        for j in range(min(nr, N - j0)):
            v = tile[i * nr + j]
            if add:
                v += c[i0 + i, j0 + j]
            if last:
                if has_bias:
                    v += bias[j0 + j]
                if relu and v < 0:
                    v = 0
            c[i0 + i, j0 + j] = v


# ----------------------------------------------------------------------------
# version "small": the micro-kernel on op(a) and op(b) in place


@njit(cache=True)
def small_columns(a, b, c, trans_a, trans_b, s0, s1, epilogue):
    # c[:, s0*NR:s1*NR] (column strips s0..s1-1) of op(a) @ op(b); a: (M, K) or (K, M);
    # b: (K, N) or (N, K); c: (M, N). A strip of op(a) is read in place, strided (rows
    # of a, or columns of a.T), one value at a time by the micro-kernel's broadcasts; a
    # B strip of op(b) = b is read in place (its rows are contiguous); b.T strips and the
    # ragged last strips are copied to the stack. Each B strip then meets every A strip
    # while it sits in L1. Every tile goes through tile_at (data addresses and offsets,
    # no views: no reference counting per tile); an edge tile through the stack tile,
    # which edge_tile stores.
    accumulate, bias, has_bias, relu = epilogue
    M, N = c.shape
    K = a.shape[0] if trans_a else a.shape[1]
    nr = NR32 * 4 // c.itemsize
    abuf = stack_array(a, A_STACK)
    bbuf = stack_array(b, B_STACK)
    tile = stack_array(c, TILE_STACK)
    # data addresses for tile_at (the arrays, stack buffers included, outlive every use)
    a_addr, b_addr, c_addr = a.ctypes.data, b.ctypes.data, c.ctypes.data
    abuf_addr, bbuf_addr, tile_addr = abuf.ctypes.data, bbuf.ctypes.data, tile.ctypes.data
    bias_addr = bias.ctypes.data
    a_ps, a_is = (M, 1) if trans_a else (1, K)  # A strip element (p, i): steps along a
    for k0 in range(0, K, KC):
        kc = min(KC, K - k0)
        first, last = k0 == 0, k0 + kc == K
        add = accumulate or not first
        add_bias, clip = has_bias and last, relu and last  # linear's epilogue, in tile_at
        for s in range(s0, s1):
            j0 = s * nr
            if trans_b or j0 + nr > N:
                bs = bbuf[: kc * nr].reshape((kc, nr))
                whole = 0  # steps of K copied by MR x MR register transposes
                if trans_b and j0 + nr <= N and MR & (MR - 1) == 0:
                    whole = kc - kc % MR
                    for jb in range(0, nr, MR):  # (scalar copies: 64^3 NT 8.1 us, NN 5.6)
                        for pb in range(0, whole, MR):
                            transpose_mr(bbuf, pb * nr + jb, b, (j0 + jb) * K + k0 + pb, K, nr)
                for p in range(whole, kc):
                    for j in range(nr):
                        n = min(j0 + j, N - 1)
                        v = b[n, k0 + p] if trans_b else b[k0 + p, n]
                        bs[p, j] = v if j0 + j < N else 0
                bsrc, bo, bps = bbuf_addr, 0, nr
            else:
                bsrc, bo, bps = b_addr, k0 * N + j0, N
            for i0 in range(0, M, MR):
                if i0 + MR <= M:
                    ao = k0 * M + i0 if trans_a else i0 * K + k0
                    asrc, aps, ais = a_addr, a_ps, a_is
                else:  # the ragged last rows: the strip copied to the stack, zero-padded
                    for p in range(kc):
                        for i in range(MR):
                            m = min(i0 + i, M - 1)
                            v = a[k0 + p, m] if trans_a else a[m, k0 + p]
                            abuf[p * MR + i] = v if i0 + i < M else 0
                    asrc, ao, aps, ais = abuf_addr, 0, MR, 1
                whole_tile = i0 + MR <= M and j0 + nr <= N
                if whole_tile:  # straight into c
                    cdst, co, crs, tadd, tb, tr = c_addr, i0 * N + j0, N, add, add_bias, clip
                else:  # into the stack tile, then edge_tile
                    cdst, co, crs, tadd, tb, tr = tile_addr, 0, nr, False, False, False
                tile_at(c.dtype, kc, asrc, ao, aps, ais, bsrc, bo, bps, cdst, co, crs, tadd, None,
                        bias_addr + j0 * c.itemsize, tb, tr)
                if not whole_tile:
                    edge_tile(tile, nr, c, i0, j0, add, last, epilogue)


@njit(cache=True)
def store_transposed(ct, c, accumulate, bias, has_bias, relu):
    # version "small_t": c (M, N) = op(a) @ op(b) is computed as c^T = op(b)^T @ op(a)^T
    # into scratch ct (N, M) by small_task itself (called from Python with the operands
    # swapped and their flags flipped: the same compiled small_task as version "small", so
    # the main job compiles the micro-kernel once; a kernel of its own calling
    # small_columns cost 1.5 s more of its cold compile), then stored here transposed with
    # linear's epilogue. op(b)^T is b when trans_b, op(a)^T is a.T read in place, so the
    # one strip small_columns copies is of op(a) (M columns of c^T), not of b.T: for the
    # dense layer x @ w.T with M = NR rows, w (N, K) is streamed once as the broadcast
    # operand instead of being transposed strip by strip into the stack (see the header).
    M, N = c.shape
    for i in range(M):
        for j in range(N):
            v = ct[j, i]
            if accumulate:
                v += c[i, j]
            if has_bias:
                v += bias[j]
            if relu and v < 0:  # a NaN stays NaN, as in torch
                v = 0
            c[i, j] = v


@njit(cache=True)
def small_task(task, tasks, args):
    # Block `task` of `tasks` blocks of c's column strips; args = (a, b, c, trans_a, trans_b,
    # accumulate, bias, has_bias, relu). One task runs on the calling thread, called from
    # Python with no parallel launch (one costs about 9 us even for a team of one: more
    # than the whole 64^3 product; the tuple costs no more to pass than the nine values);
    # more go to run_pieces.
    a, b, c, trans_a, trans_b, accumulate, bias, has_bias, relu = args
    strips = (c.shape[1] + NR32 * 4 // c.itemsize - 1) // (NR32 * 4 // c.itemsize)
    small_columns(a, b, c, trans_a, trans_b, task * strips // tasks,
                  (task + 1) * strips // tasks, (accumulate, bias, has_bias, relu))


def small_tasks(M, N, K, dtype):
    """Tasks of version "small": one (the calling thread) below SERIAL_WORK, else column
    blocks for all threads."""
    if M * N * K < SERIAL_WORK:
        return 1
    strips = (N + NR[dtype] - 1) // NR[dtype]
    return min(strips, TASKS_PER_THREAD * numba.get_num_threads())


# ----------------------------------------------------------------------------
# version "packed": packed panels, one or all threads


PB = 8  # rows of a read together when packing op(a) = a.T


@intrinsic(prefer_literal=True)
def copy_lanes(typingctx, dst, d, src, o, n):
    """dst[d:d+n] = src[o:o+n] as one n-lane vector load and store (1-D contiguous arrays;
    n a compile-time constant)."""
    lanes = n.literal_value

    def codegen(context, builder, sig, args):
        dv, dd, sv, so, _ = args
        elt = context.get_value_type(dst.dtype)
        vec = ir.VectorType(elt, lanes)
        size = context.get_abi_sizeof(elt)
        value = builder.load(vector_at(context, builder, src, sv, so, vec), align=size)
        builder.store(value, vector_at(context, builder, dst, dv, dd, vec), align=size)
        return context.get_dummy_value()

    return types.void(dst, d, src, o, n), codegen


@intrinsic
def transpose_mr(typingctx, dst, d, src, o, lda, ldd):
    """dst[d + ldd*j + i] = src[o + lda*i + j] for i, j < MR: an MR x MR block of rows of src
    (row stride lda) stored transposed (row stride ldd), as MR vector loads, a shuffle
    network and MR vector stores (C-contiguous arrays, indexed flat). The butterfly needs
    MR a power of two; otherwise (MR = 6 without AVX-512) the block is copied element by
    element, so the callers compile everywhere (they use it only for power-of-two MR)."""

    def codegen(context, builder, sig, args):
        dv, dd, sv, so, ld, ldd_v = args
        elt = context.get_value_type(dst.dtype)
        size = context.get_abi_sizeof(elt)
        if MR & (MR - 1):
            src_data = context.make_array(src)(context, builder, sv).data
            dst_data = context.make_array(dst)(context, builder, dv).data
            for i in range(MR):
                for j in range(MR):
                    at = builder.add(so, builder.add(builder.mul(ld, ir.Constant(ld.type, i)),
                                                     ir.Constant(ld.type, j)))
                    to = builder.add(dd, builder.add(builder.mul(ldd_v, ir.Constant(ld.type, j)),
                                                     ir.Constant(ld.type, i)))
                    value = builder.load(builder.gep(src_data, [at]), align=size)
                    builder.store(value, builder.gep(dst_data, [to]), align=size)
            return context.get_dummy_value()
        vec = ir.VectorType(elt, MR)
        rows = []
        for i in range(MR):
            at = builder.add(so, builder.mul(ld, ir.Constant(ld.type, i)))
            rows.append(builder.load(vector_at(context, builder, src, sv, at, vec), align=size))
        rows = butterfly(builder, rows)
        for j in range(MR):
            at = builder.add(dd, builder.mul(ldd_v, ir.Constant(ldd_v.type, j)))
            builder.store(rows[j], vector_at(context, builder, dst, dv, at, vec), align=size)
        return context.get_dummy_value()

    return types.void(dst, d, src, o, lda, ldd), codegen


def b_panel_shape(N, K, dtype):
    # op(b) packed as (ceil(K/KC), ceil(N/NR), kc, NR): block [kb, s] holds
    # op(b)[kb*kc:(kb+1)*kc, s*NR:(s+1)*NR]. The strips of one step along K are
    # adjacent, so a row block's micro-kernels stream through one contiguous panel.
    R = NR[np.dtype(dtype)]
    nk = (K + KC - 1) // KC
    kc = (K + nk - 1) // nk  # equal steps along K: 300 -> 150 + 150, not 256 + 44
    return nk, (N + R - 1) // R, kc, R


BG = 8  # B strips per packing task of the shared panel (each row of b gives 1 KB)


@njit(cache=True)
def pack_b_strips(b, trans_b, bp, kb, s0, s1):
    # strips [s0, s1) of step kb of op(b) (b: (K, N) or (N, K)) -> bp[kb, s0:s1]. With
    # op(b) = b the whole strips are copied row by row of b, each row's (s1-s0)*NR values
    # read as one run: a strip at a time read only NR values (128 bytes) of each of kc
    # rows, rows often a multiple of 4 KB apart, every one a miss that the hardware
    # prefetcher (which stays inside a page) did not foresee (2048^3: all of op(b) packed
    # in 1.62 ms instead of 0.64 as groups of BG strips, best of 10 turns).
    S, KC, R = bp.shape[1:]
    K = b.shape[1] if trans_b else b.shape[0]
    N = b.shape[0] if trans_b else b.shape[1]
    if not trans_b:
        k0 = kb * KC
        kc = min(KC, K - k0)
        whole = max(s0, min(s1, N // R))  # strips lying wholly inside b
        src = b.reshape(-1)
        dst = bp.reshape(-1)
        for p in range(kc):
            for s in range(s0, whole):
                d = ((kb * S + s) * KC + p) * R
                for q in range(0, R, W32):
                    copy_lanes(dst, d + q, src, (k0 + p) * N + s * R + q, W32)
        s0 = whole
    for s in range(s0, s1):  # b.T strips, or the ragged strip
        pack_b_strip(b, trans_b, bp, kb * S + s)


@njit(cache=True)
def pack_b_strip(b, trans_b, bp, t):
    # b: (K, N) or (N, K) -> bp[kb, s] for strip t = kb * S + s, a strip of b.T or the
    # ragged last strip; columns past N are zero, rows past K in the last step are never read
    S, KC, R = bp.shape[1:]
    K = b.shape[1] if trans_b else b.shape[0]
    N = b.shape[0] if trans_b else b.shape[1]
    kb = t // S
    s = t - kb * S
    k0 = kb * KC
    kc = min(KC, K - k0)
    j0 = s * R
    if j0 + R <= N and trans_b:  # R rows of b, MR x MR blocks transposed in registers
        dst = bp[kb, s].reshape(-1)
        whole = kc - kc % MR if MR & (MR - 1) == 0 else 0  # transpose_mr needs 2^n rows
        for jb in range(0, R, MR):
            for pb in range(0, whole, MR):
                transpose_mr(dst, pb * R + jb, b, (j0 + jb) * K + k0 + pb, K, R)
        for p in range(whole, kc):
            for j in range(R):
                bp[kb, s, p, j] = b[j0 + j, k0 + p]
    else:  # the ragged strip (whole strips of b are pack_b_strips'), zero-padded
        for p in range(kc):
            for j in range(R):
                n = j0 + j
                if n < N:
                    bp[kb, s, p, j] = b[n, k0 + p] if trans_b else b[k0 + p, n]
                else:
                    bp[kb, s, p, j] = 0


@njit(cache=True)
def pack_a_block(a, trans_a, ap, s0, s1, k0, kc):
    # op(a)[s0*MR:s1*MR, k0:k0+kc] -> ap[:s1-s0, :kc, :] (strips of MR rows, k-major);
    # rows past M are zero
    M = a.shape[1] if trans_a else a.shape[0]
    full = min(s1, M // MR)  # strips lying wholly inside op(a)
    if trans_a:  # a is (K, M): row k0+p of a holds row p of every strip, MR values each
        # PB rows of a at a time, strip by strip: the PB rows' slices stay in L1
        # (their stride is M floats, often a multiple of 4 KB, so a whole row
        # block of a per strip would not), and each strip is written in order;
        # each MR-value piece is one vector copy (scalar copies: 2x the time)
        src = a.reshape(-1)
        dst = ap.reshape(-1)
        lda, KCP = a.shape[1], ap.shape[1]  # floats per row of a and per k of a strip
        for pb in range(0, kc, PB):
            rows = min(kc - pb, PB)
            for s in range(full - s0):
                o = (k0 + pb) * lda + (s0 + s) * MR
                d = (s * KCP + pb) * MR
                for p in range(rows):
                    copy_lanes(dst, d, src, o, MR)
                    o += lda
                    d += MR
    else:  # a is (M, K): each strip reads MR rows of a, MR x MR blocks transposed
        src = a.reshape(-1)
        dst = ap.reshape(-1)
        lda, KCP = a.shape[1], ap.shape[1]
        whole = kc - kc % MR if MR & (MR - 1) == 0 else 0  # transpose_mr needs 2^n rows
        for s in range(full - s0):
            row = (s0 + s) * MR
            for p in range(0, whole, MR):
                transpose_mr(dst, (s * KCP + p) * MR, src, row * lda + k0 + p, lda, MR)
            for p in range(whole, kc):
                for i in range(MR):
                    ap[s, p, i] = a[row + i, k0 + p]
    for s in range(max(full, s0) - s0, s1 - s0):  # the ragged strip, zero-padded
        for p in range(kc):
            for i in range(MR):
                m = (s0 + s) * MR + i
                if m < M:
                    ap[s, p, i] = a[k0 + p, m] if trans_a else a[m, k0 + p]
                else:
                    ap[s, p, i] = 0


@njit(cache=True)
def block(a, trans_a, b, trans_b, bp, ap, c, s0, s1, n0, n1, K, epilogue, own_b):
    # c[s0*MR:s1*MR, n0*NR:n1*NR]: A strips [s0, s1) times B strips [n0, n1). Per
    # step of KC along K, the block's A strips are packed into ap (this task's
    # L2-sized scratch, >= s1-s0 strips), then every B strip (KC x NR, kept in
    # L1) meets every A strip. Every tile goes through tile_at (addresses and offsets,
    # no views: no reference counting per tile); an edge tile of c through the stack
    # tile, which edge_tile stores. own_b: this block packs its B strips of each step
    # first (the first row block of a column block, gemm_packed by columns).
    accumulate, bias, has_bias, relu = epilogue
    NK, S, KC, R = bp.shape
    M, N = c.shape
    strip = ap.shape[1] * MR  # values per packed A strip
    tile = stack_array(c, TILE_STACK)
    ap_addr, bp_addr, c_addr = ap.ctypes.data, bp.ctypes.data, c.ctypes.data
    tile_addr, bias_addr = tile.ctypes.data, bias.ctypes.data
    for kb in range(NK):
        k0 = kb * KC
        kc = min(KC, K - k0)
        if own_b:
            pack_b(b, trans_b, bp, kb, n0, n1)
        pack_a(a, trans_a, ap, s0, s1, k0, kc)
        first, last = kb == 0, kb == NK - 1
        add = accumulate or not first
        add_bias, clip = has_bias and last, relu and last  # linear's epilogue, in tile_at
        for sn in range(n0, n1):
            j0 = sn * R
            bo = (kb * S + sn) * KC * R
            # the next B strip is prefetched while the first A strip runs
            bn = bo + KC * R if sn + 1 < n1 else ((kb + 1) * S + n0) * KC * R if kb + 1 < NK else bo
            for s in range(s1 - s0):
                i0 = (s0 + s) * MR
                whole_tile = i0 + MR <= M and j0 + R <= N
                if whole_tile:  # straight into c
                    cdst, co, crs, tadd, tb, tr = c_addr, i0 * N + j0, N, add, add_bias, clip
                else:  # into the stack tile, then edge_tile
                    cdst, co, crs, tadd, tb, tr = tile_addr, 0, R, False, False, False
                bias_j = bias_addr + j0 * c.itemsize
                if s == 0:  # (two call sites: no prefetch for the other strips, see tile_at)
                    tile_a(a, c.dtype, kc, ap_addr, 0, i0, k0, bp_addr, bo, R, cdst, co, crs,
                           tadd, bn, bias_j, tb, tr)
                else:
                    tile_a(a, c.dtype, kc, ap_addr, s * strip, i0, k0, bp_addr, bo, R, cdst, co,
                           crs, tadd, None, bias_j, tb, tr)
                if not whole_tile:
                    edge_tile(tile, R, c, i0, j0, add, last, epilogue)


@njit(cache=True)
def task_block(a, trans_a, b, trans_b, bp, ap, c, task, nbm, nbn, K, epilogue):
    # task number -> (row block, column block) of c, each of about equal size
    SM = (c.shape[0] + MR - 1) // MR
    SN = bp.shape[1]
    bm = task // nbn
    bn = task - bm * nbn
    s0, s1 = bm * SM // nbm, (bm + 1) * SM // nbm
    n0, n1 = bn * SN // nbn, (bn + 1) * SN // nbn
    block(a, trans_a, b, trans_b, bp, ap, c, s0, s1, n0, n1, K, epilogue, False)


@njit(cache=True)
def column_block(a, trans_a, b, trans_b, bp, ap, c, bn, nbm, nbn, K, epilogue):
    # column block bn of c, row block by row block; the first packs the B strips
    SM = (c.shape[0] + MR - 1) // MR
    SN = bp.shape[1]
    n0, n1 = bn * SN // nbn, (bn + 1) * SN // nbn
    for bm in range(nbm):
        s0, s1 = bm * SM // nbm, (bm + 1) * SM // nbm
        block(a, trans_a, b, trans_b, bp, ap, c, s0, s1, n0, n1, K, epilogue, bm == 0)


@njit(parallel=True, cache=True)
def gemm_packed(a, b, c, trans_a, trans_b, K, bp, ap, nbm, nbn, by_columns, accumulate, bias,
                has_bias, relu):
    # nbm x nbn blocks of c, no two writing the same element of c, on the caller's thread
    # count (run_packed sets it; with one thread the team of one runs inline and wakes no
    # other thread). A thread packs the A strips of its blocks into its own panel
    # ap[thread id], which stays in its L2. op(b) is packed into bp:
    # - by_columns: one prange iteration per column block, which runs its row blocks one
    #   after another; the first packs the block's B strips step by step of K just before
    #   its tiles use them (no phase of its own, no wait for the other threads);
    # - else: all of op(b) first, BG strips per iteration, then one iteration per block.
    # a and b: arrays, or Gathered operands (pack_a, pack_b); K: the depth of the product.
    epilogue = (accumulate, bias, has_bias, relu)
    if by_columns:
        for bn in prange(nbn):
            column_block(a, trans_a, b, trans_b, bp, ap[numba.get_thread_id()], c, bn, nbm, nbn,
                         K, epilogue)
    else:
        NK, S = bp.shape[0], bp.shape[1]
        G = (S + BG - 1) // BG
        for t in prange(NK * G):
            kb = t // G
            s0 = (t - kb * G) * BG
            pack_b(b, trans_b, bp, kb, s0, min(S, s0 + BG))
        for task in prange(nbm * nbn):
            task_block(a, trans_a, b, trans_b, bp, ap[numba.get_thread_id()], c, task, nbm, nbn,
                       K, epilogue)


def packing_scratch(M, N, K, dtype, threads, nbm):
    # the packed op(b) and one A panel per thread, from the reused workspace (so no
    # call faults in fresh pages inside its parallel region; see _workspace.py)
    bshape = b_panel_shape(N, K, dtype)
    strips = (M + MR - 1) // MR
    most = -(-strips // nbm)  # the most A strips one row block holds
    bp = workspace("gemm.b_panel", bshape, dtype)
    ap = workspace("gemm.a_panels", (threads, most, bshape[2], MR), dtype)
    return bp, ap



def run_packed(a, b, c, trans_a, trans_b, K, accumulate, bias, has_bias, relu,
               tasks_per_thread=TASKS_PER_THREAD):
    """Version "packed": the split of c into blocks and the thread count, then the kernel."""
    M, N = c.shape
    strips = (M + MR - 1) // MR
    if M * N * K < SERIAL_WORK:  # one thread: row blocks of about MC rows
        threads = 1
        nbm, nbn = max(1, min(strips, round(M / MC))), 1
    else:
        # At least TASKS_PER_THREAD row blocks of c per thread (of at most about MC
        # rows); its columns are split too when c has too few rows for that, or more
        # than NC columns, since every column block packs its rows of op(a) again.
        threads = numba.get_num_threads()
        tasks = tasks_per_thread * threads
        nbm = min(strips, max(tasks, round(M / MC)))
        strips_n = (N + NR[c.dtype] - 1) // NR[c.dtype]
        nbn = max(1, min(strips_n, max((tasks + nbm - 1) // nbm, -(-N // NC))))
    by_columns = BY_COLUMNS and threads > 1 and nbn % threads == 0
    bp, ap = packing_scratch(M, N, K, c.dtype, threads, nbm)
    with team(threads):
        gemm_packed(a, b, c, trans_a, trans_b, K, bp, ap, nbm, nbn, by_columns, accumulate,
                    bias, has_bias, relu)


# ----------------------------------------------------------------------------
# the gathered operand: an operand read through two offset tables, packed where it lies


Gathered = namedtuple("Gathered", "src rows cols")
"""An operand X (len(rows), len(cols)) that is never stored: X[i, j] = src[rows[i] + cols[j]],
src a 1-D array, rows and cols int64 offset tables. The packed version packs its strips
straight from src (pack_a, pack_b), so a matrix that only exists as a view of another
array (im2col's column matrix: pixel offsets x tap offsets into the padded input) costs
no pass of its own; see gemm_operands. As op(a) it is not even packed: the micro-kernel
reads it through the tables (tile_gathered).

>>> import numpy as np
>>> src = np.arange(6.0, dtype=np.float32)
>>> x = Gathered(src, np.array([0, 3]), np.array([0, 1, 2]))  # src.reshape(2, 3)
>>> int(x.src[x.rows[1] + x.cols[2]])
5
"""


def _masked_runs(context, builder, src, sv, vec, at1, at2, av):
    # Code generation: the MR-lane vector src[at1 + i] for i < a, src[at2 + i - a] for
    # a <= i < MR, by two masked loads (lanes outside a run are neither read nor faulted
    # on) and a select.
    size = context.get_abi_sizeof(vec.element)
    i32 = ir.IntType(32)
    i1v = ir.VectorType(ir.IntType(1), MR)
    load = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(vec, [vec.as_pointer(), i32, i1v, vec]),
        f"llvm.masked.load.v{MR}f{8 * size}.p0")
    ivec = ir.VectorType(av.type, MR)
    split = builder.insert_element(ir.Constant(ivec, ir.Undefined), av, ir.Constant(i32, 0))
    split = builder.shuffle_vector(split, split, ir.Constant(ir.VectorType(i32, MR), [0] * MR))
    first = builder.icmp_signed("<", ir.Constant(ivec, list(range(MR))), split)
    undef = ir.Constant(vec, ir.Undefined)
    p1 = vector_at(context, builder, src, sv, at1, vec)
    p2 = vector_at(context, builder, src, sv, builder.sub(at2, av), vec)
    v1 = builder.call(load, [p1, ir.Constant(i32, size), first, undef])
    v2 = builder.call(load, [p2, ir.Constant(i32, size), builder.not_(first), undef])
    return builder.select(first, v1, v2)


@intrinsic
def transpose_rows(typingctx, dst, d, ldd, src, offs, o0, base, base2, a):
    """dst[d + ldd*j + i] = X[i, j] for i, j < MR, with row i of X = src[offs[o0 + i] + base +
    j] for j < a and src[offs[o0 + i] + base2 + j - a] for a <= j < MR: MR rows of src that
    start anywhere (at the offsets offs[o0:o0 + MR]), each one run of MR values (a = MR) or
    two (a block of MR pixels across the end of an output row), stored transposed. MR
    vector loads (two masked loads per row when a < MR), the shuffle network and MR vector
    stores (transpose_mr with gathered rows). MR must be a power of two (callers test it)."""

    def codegen(context, builder, sig, args):
        dv, dd, ldd_v, sv, ov, o0v, bv, b2v, av = args
        elt = context.get_value_type(dst.dtype)
        size = context.get_abi_sizeof(elt)
        vec = ir.VectorType(elt, MR)
        offs_data = context.make_array(offs)(context, builder, ov).data
        starts = [builder.load(builder.gep(offs_data, [builder.add(o0v, ir.Constant(o0v.type, i))]))
                  for i in range(MR)]
        whole = builder.icmp_signed(">=", av, ir.Constant(av.type, MR))
        out = builder.alloca(vec, size=ir.Constant(ir.IntType(32), MR))
        with builder.if_else(whole) as (one_run, two_runs):
            with one_run:
                for i, at in enumerate(starts):
                    at = builder.add(at, bv)
                    value = builder.load(vector_at(context, builder, src, sv, at, vec), align=size)
                    builder.store(value, builder.gep(out, [ir.Constant(ir.IntType(32), i)]))
            with two_runs:
                for i, at in enumerate(starts):
                    value = _masked_runs(context, builder, src, sv, vec, builder.add(at, bv),
                                         builder.add(at, b2v), av)
                    builder.store(value, builder.gep(out, [ir.Constant(ir.IntType(32), i)]))
        rows = [builder.load(builder.gep(out, [ir.Constant(ir.IntType(32), i)]))
                for i in range(MR)]
        rows = butterfly(builder, rows) if MR & (MR - 1) == 0 else rows
        for j in range(MR):
            at = builder.add(dd, builder.mul(ldd_v, ir.Constant(ldd_v.type, j)))
            builder.store(rows[j], vector_at(context, builder, dst, dv, at, vec), align=size)
        return context.get_dummy_value()

    return types.void(dst, d, ldd, src, offs, o0, base, base2, a), codegen


@njit(cache=True)
def _runs(offs, o, n):
    # True when offs[o:o+n] are consecutive (offs[o+i] = offs[o] + i): n values of src
    # in a row, one vector copy
    for i in range(1, n):
        if offs[o + i] != offs[o] + i:
            return False
    return True


@njit(cache=True)
def _two_runs(offs, o):
    # a when offs[o:o+MR] are one run (a = MR) or two (offs[o:o+a] and offs[o+a:o+MR]),
    # else 0
    a = 1
    while a < MR and offs[o + a] == offs[o] + a:
        a += 1
    return a if _runs(offs, o + a, MR - a) else 0


@njit(cache=True)
def pack_b_gathered(x, bp, t):
    # bp[kb, s] for task t = kb * S + s, as pack_b_strip does for arrays (NR columns,
    # k-major, columns past N zero), X[p, j] = src[rows[p] + cols[j]]:
    # - the strip's NR cols consecutive (im2col's backward-data: NR neighbouring pixels of
    #   the gradient): W32-lane vector copies per step of K;
    # - else, per MR steps of K whose rows are one run or two (backward-weights: MR
    #   neighbouring pixels of the gradient, NR channels): MR x MR blocks transposed;
    # - else element by element.
    src, rows, cols = x
    S, KC, R = bp.shape[1:]
    K, N = rows.size, cols.size
    kb = t // S
    s = t - kb * S
    k0 = kb * KC
    kc = min(KC, K - k0)
    j0 = s * R
    dst = bp[kb, s].reshape(-1)
    if j0 + R <= N and _runs(cols, j0, R):
        o = cols[j0]
        for p in range(kc):
            for q in range(0, R, W32):
                copy_lanes(dst, p * R + q, src, rows[k0 + p] + o + q, W32)
        return
    p = 0
    if j0 + R <= N and MR & (MR - 1) == 0:
        while p + MR <= kc:
            b = _two_runs(rows, k0 + p)
            if b:
                b2 = rows[k0 + p + b - (b == MR)]
                for jb in range(0, R, MR):
                    transpose_rows(dst, p * R + jb, R, src, cols, j0 + jb, rows[k0 + p], b2, b)
            else:
                for q in range(p, p + MR):
                    for j in range(R):
                        bp[kb, s, q, j] = src[rows[k0 + q] + cols[j0 + j]]
            p += MR
    for q in range(p, kc):
        for j in range(R):
            bp[kb, s, q, j] = src[rows[k0 + q] + cols[j0 + j]] if j0 + j < N else 0


@njit(cache=True)
def pack_b_gathered_strips(x, bp, kb, s0, s1):
    # strips [s0, s1) of step kb of a Gathered operand, as pack_b_strips
    for s in range(s0, s1):
        pack_b_gathered(x, bp, kb * bp.shape[1] + s)


def pack_a(a, trans_a, ap, s0, s1, k0, kc):
    """op(a)'s strips for block(): pack_a_block for an array; nothing for a Gathered
    operand, which tile_a reads in place (chosen when the caller compiles)."""


def pack_b(b, trans_b, bp, kb, s0, s1):
    """op(b)'s strips [s0, s1) of step kb: pack_b_strips, or pack_b_gathered strip by strip,
    chosen as pack_a is."""


def tile_a(a, dtype, kc, ap, a_off, i0, k0, b, bo, b_ps, c, co, c_rs, add, bnext, bias,
           add_bias, relu):
    """block()'s micro-kernel call for the strip of op(a) whose first row is i0 at step
    k0: tile_at on the packed strip at ap + a_off, or tile_gathered on a Gathered operand,
    read where it lies (chosen when the caller compiles, as pack_a is)."""


@overload(pack_a, inline="always")
def _pack_a(a, trans_a, ap, s0, s1, k0, kc):
    if isinstance(a, types.BaseTuple):  # read in place by tile_a: nothing to pack
        return lambda a, trans_a, ap, s0, s1, k0, kc: None
    return lambda a, trans_a, ap, s0, s1, k0, kc: pack_a_block(a, trans_a, ap, s0, s1, k0, kc)


@overload(tile_a, inline="always")
def _tile_a(a, dtype, kc, ap, a_off, i0, k0, b, bo, b_ps, c, co, c_rs, add, bnext, bias,
            add_bias, relu):
    if isinstance(a, types.BaseTuple):
        def tile(a, dtype, kc, ap, a_off, i0, k0, b, bo, b_ps, c, co, c_rs, add, bnext, bias,
                 add_bias, relu):
            src, rows, cols = a
            tile_gathered(dtype, kc, src.ctypes.data, rows.ctypes.data + i0 * 8,
                          cols.ctypes.data + k0 * 8, min(MR, rows.size - i0), b, bo, b_ps, c,
                          co, c_rs, add, bnext, bias, add_bias, relu)
        return tile
    return (lambda a, dtype, kc, ap, a_off, i0, k0, b, bo, b_ps, c, co, c_rs, add, bnext, bias,
            add_bias, relu: tile_at(dtype, kc, ap, a_off, MR, 1, b, bo, b_ps, c, co, c_rs, add,
                                    bnext, bias, add_bias, relu))


@overload(pack_b, inline="always")
def _pack_b(b, trans_b, bp, kb, s0, s1):
    if isinstance(b, types.BaseTuple):
        return lambda b, trans_b, bp, kb, s0, s1: pack_b_gathered_strips(b, bp, kb, s0, s1)
    return lambda b, trans_b, bp, kb, s0, s1: pack_b_strips(b, trans_b, bp, kb, s0, s1)


def gemm_operands(a, b, c, trans_a, trans_b, accumulate, bias=None,
                  tasks_per_thread=TASKS_PER_THREAD):
    """c = op(a) @ op(b) (or += when ``accumulate``) (+ bias (N,), added to every row) by
    the packed version, where a and b are C-contiguous arrays (op(x) = x.T when trans_x) or
    Gathered operands (op(x) = x, the flag ignored), one dtype; c C-contiguous.
    ``tasks_per_thread``: the fewest row blocks of c per thread (each row block reads the
    whole packed op(b); 1 suits a product of few rows and a long K, whose op(b) leaves L2).

    >>> import numpy as np
    >>> src = np.ones(64 * 64, np.float32)
    >>> a = Gathered(src, np.arange(0, 64 * 64, 64), np.arange(64))  # src as (64, 64)
    >>> c = np.empty((64, 64), np.float32)
    >>> gemm_operands(a, src.reshape(64, 64), c, False, False, False)
    >>> float(c[5, 7])
    64.0
    """
    if isinstance(a, Gathered):
        K = a.cols.size
    else:
        a = np.ascontiguousarray(a)
        K = a.shape[0] if trans_a else a.shape[1]
    if not isinstance(b, Gathered):
        b = np.ascontiguousarray(b)
    has_bias = bias is not None
    bias = np.ascontiguousarray(bias) if has_bias else c[0]  # c[0]: never read
    if c.size:
        run_packed(a, b, c, bool(trans_a), bool(trans_b), K, bool(accumulate), bias, has_bias,
                   False, tasks_per_thread)


# ----------------------------------------------------------------------------
# choosing and running a version


_forced = None  # a version name that every call runs (forced_version), or None


class forced_version:
    """Run every CPU GEMM in this block with one version (tests and the bench).

    >>> import numpy as np
    >>> c = np.empty((64, 64), np.float32)
    >>> with forced_version("naive"):
    ...     gemm(np.ones((64, 64), np.float32), np.ones((64, 64), np.float32), c, 0, 0, 0)
    >>> float(c[0, 0])
    64.0
    """

    def __init__(self, version):
        if version not in VERSIONS:
            raise ValueError(f"version must be one of {tuple(VERSIONS)}, got {version!r}")
        self.version = version

    def __enter__(self):
        global _forced
        self.before, _forced = _forced, self.version
        return self

    def __exit__(self, *exc):
        global _forced
        _forced = self.before


_SERIAL_VERSIONS = {}  # (M, N, K, trans_a, trans_b, dtype) -> choose()'s version, serial work
_SERIAL_VERSIONS_MAX = 4096  # shapes kept at most (a program with changing shapes clears it)
_NO_BIAS = {np.dtype(t): np.zeros(1, t) for t in (np.float32, np.float64)}  # never read


def gemm_bias_relu(a, b, c, trans_a, trans_b, accumulate, bias, relu):
    """c = op(a) @ op(b) (+ c) (+ bias) (then relu), by the version choose() picks."""
    # The per-call cost matters for small products (64^3: a 4 us kernel): a product below
    # SERIAL_WORK, whose choice does not depend on the thread count, looks its version up
    # by shape instead of calling choose() and small_tasks(), and with a, b and c already
    # C-contiguous calls its one-thread kernel at once (see the header's per-call list).
    M, N = c.shape
    K = a.shape[0] if trans_a else a.shape[1]
    version = None if _forced else _SERIAL_VERSIONS.get((M, N, K, trans_a, trans_b, c.dtype))
    if ((version == "small" or version == "naive") and c.flags.c_contiguous
            and a.flags.c_contiguous and b.flags.c_contiguous):
        if bias is None:
            bias, has_bias = _NO_BIAS[c.dtype], False
        else:
            bias, has_bias = np.ascontiguousarray(bias), True
        if version == "small":
            small_task(0, 1, (a, b, c, trans_a, trans_b, accumulate, bias, has_bias, relu))
        else:
            gemm_naive(a, b, c, trans_a, trans_b, accumulate, bias, has_bias, relu)
    else:
        _gemm_any(a, b, c, trans_a, trans_b, accumulate, bias, relu, version)


def _serial_version(M, N, K, trans_a, trans_b, dtype):
    # choose()'s version, kept for the fast path of gemm_bias_relu when the work is serial
    version = choose(M, N, K, trans_b, False, trans_a, dtype)[0]
    if M * N * K < SERIAL_WORK and M and N and dtype in _NO_BIAS:
        if len(_SERIAL_VERSIONS) >= _SERIAL_VERSIONS_MAX:
            _SERIAL_VERSIONS.clear()
        _SERIAL_VERSIONS[(M, N, K, trans_a, trans_b, dtype)] = version
    return version


def _gemm_any(a, b, c, trans_a, trans_b, accumulate, bias, relu, version=None):
    # gemm_bias_relu for any layout, size and version (None: _forced or choose()'s)
    if c.size == 0:
        return
    if not c.flags.c_contiguous:  # e.g. a column block of a larger array
        tmp = np.ascontiguousarray(c) if accumulate else np.empty(c.shape, c.dtype)
        _gemm_any(a, b, tmp, trans_a, trans_b, accumulate, bias, relu, version)
        c[...] = tmp
        return
    # one layout for the kernels (each other layout would be a new compilation)
    a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
    M, N = c.shape
    K = a.shape[0] if trans_a else a.shape[1]
    has_bias = bias is not None
    bias = np.ascontiguousarray(bias) if has_bias else c[0]  # c[0]: never read
    version = version or _forced or _serial_version(M, N, K, trans_a, trans_b, c.dtype)
    if version == "small":
        tasks = small_tasks(M, N, K, c.dtype)
        args = (a, b, c, trans_a, trans_b, accumulate, bias, has_bias, relu)
        if tasks == 1:
            small_task(0, 1, args)
        else:
            run_pieces(small_task, tasks, args)
    elif version == "small_t":  # c^T = op(b)^T @ op(a)^T into ct, stored transposed
        ct = (np.zeros if K == 0 else np.empty)((N, M), c.dtype)  # K = 0: no step writes ct
        small_task(0, 1, (b, a, ct, not trans_b, not trans_a, False, bias, False, False))
        store_transposed(ct, c, accumulate, bias, has_bias, relu)
    elif version == "packed":
        run_packed(a, b, c, trans_a, trans_b, K, accumulate, bias, has_bias, relu)
    else:
        gemm_naive(a, b, c, trans_a, trans_b, accumulate, bias, has_bias, relu)


# ----------------------------------------------------------------------------
# the KERNELS entry points

def gemm(a, b, c, trans_a, trans_b, accumulate):
    """c = op(a) @ op(b) (or += when ``accumulate``); a, b, c C-contiguous, one dtype."""
    gemm_bias_relu(a, b, c, bool(trans_a), bool(trans_b), bool(accumulate), None, False)


def linear(x, w, bias, y, relu):
    """y = x @ w.T (+ bias) (then relu); x (N, IN), w (OUT, IN), bias (OUT,) or None."""
    gemm_bias_relu(x, w, y, False, True, False, bias, bool(relu))


@njit(cache=True)
def linear_grad_out_kernel(g, y, dy, db, relu):
    # g, y, dy: (N, OUT); db: (OUT,), summed in float64 whatever the dtype
    N, OUT = g.shape
    total = np.zeros(OUT)
    for i in range(N):
        for j in range(OUT):
            v = g[i, j]
            if relu and y[i, j] <= 0:   # torch's select: a NaN output passes g
                v = 0
            dy[i, j] = v
            total[j] += v
    for j in range(OUT):
        db[j] = total[j]


def linear_grad_out(g, y, dy, db, relu):
    """dy = 0 where y <= 0, else g (or g); db = column sums of dy."""
    linear_grad_out_kernel(g, y, dy, db, bool(relu))
