"""Helpers shared by the CPU kernel families: the vector width, 512-bit vectors, stack tiles.

Why these exist (measured on the 2-vCPU AVX-512 development machine, shared PERF.md):

- SLP vectorizer. A register tile written as Numba loops (accumulators in a
  stack buffer, constant trip counts) becomes an FMA loop only with LLVM's SLP
  vectorizer on (5-8 GFLOP/s without it, 77-90 with it on one AVX2 core).
  Numba turns it off by default; ``kernels/__init__.py`` turns it on before
  any kernel compiles, because the on-disk cache does not record the setting.
  Kernels that rely on it say so in their headers.
- ``VECTOR_LANES``: the float32 lanes of the widest vector register Numba
  compiles for (16 with AVX-512, 8 with AVX2, 4 otherwise). Register tiles are
  sized by it; it is read from the code generator's target features, so a
  cached kernel (whose cache key holds those features) always matches.
- ``wide_vectors()``: LLVM's x86 tuning prefers 256-bit vectors on most
  AVX-512 cores and Numba has no switch for it; this sets the calling
  function's attributes so its loops use 512-bit vectors (about 1.1x on the
  conv kernels' register tiles).
- ``stack_array(like, n)``: a register tile's accumulators. A stack buffer of
  compile-time size indexed by unrolled constant indices is promoted to
  registers by LLVM; ``np.empty`` (heap memory that LLVM must assume escapes)
  is not.
- ``transpose_block(...)``: a VECTOR_LANES x VECTOR_LANES block transposed in
  registers (vector loads, a shuffle network, vector stores). Numba's loops
  cannot express it: written as a loop, the same copy runs one element at a
  time (the conv "sv" layout change took 0.15 of a 0.36 ms LeNet layer that
  way, about 0.02 with this). ``vector_at`` and ``butterfly`` are its code-generation
  pieces (a vector pointer into an array, the shuffle network), shared with the
  GEMM's intrinsics.
- ``run_pieces(piece, npiece, args)``: a parallel loop whose
  body is compiled once. Numba links a prange body's callees into the kernel and
  optimises and compiles them again at each of its four levels; calling the piece
  through its address is most of what took the main job's cold compile share from
  15.4-16.6 to 10.5-10.7 s (conv's sv and GEMM's small version run through it;
  bench/compile_time.py --main-job, quiet, against d14117b in the same session).

Example (inside an ``@njit`` kernel)::

    from nnkern.kernels._cpu import TILE, stack_array, wide_vectors

    wide_vectors()
    acc = stack_array(y, TILE)  # TILE: a module-level int constant
    for i in range(TILE):
        acc[i] = 0
"""

import numpy as np
from llvmlite import ir
from numba import njit, prange, typeof, types
from numba._dispatcher import compute_fingerprint
from numba.core import errors
from numba.extending import intrinsic


def _target_features():
    # The features Numba's code generator targets (its configured ones, else the host's).
    from numba.core.registry import cpu_target

    try:
        return cpu_target.target_context.codegen()._tm_features
    except AttributeError:  # a Numba without that attribute: the host's features
        import llvmlite.binding as llvm

        return llvm.get_host_cpu_features().flatten()


def vector_lanes():
    """float32 lanes of the widest vector register Numba compiles for (16, 8 or 4)."""
    features = _target_features()
    if "+avx512f" in features:
        return 16
    if "+avx" in features:
        return 8
    return 4


VECTOR_LANES = vector_lanes()
AVX512 = VECTOR_LANES == 16


@intrinsic
def wide_vectors(typingctx):
    """Let LLVM vectorise the calling function with 512-bit vectors on AVX-512 targets.

    (llvmlite validates only the attribute names it knows, hence set.add.)
    """

    def codegen(context, builder, signature, args):
        if AVX512:
            set.add(builder.function.attributes, '"prefer-vector-width"="512"')
            set.add(builder.function.attributes, '"min-legal-vector-width"="512"')
        return context.get_dummy_value()

    return types.none(), codegen


@intrinsic(prefer_literal=True)
def stack_array(typingctx, like, n):
    """A 1-D C array of ``n`` uninitialised elements of ``like``'s dtype on the stack.

    ``n`` must be a compile-time constant (a module-level int, or an int literal).
    The alloca sits in the function's entry block, so a call inside a loop reuses
    one buffer; the array lives as long as the calling function runs.
    """
    if not isinstance(n, types.IntegerLiteral):
        raise errors.TypingError(
            f"stack_array: n must be a compile-time integer constant, got {n}"
        )
    size = n.literal_value
    dtype = like.dtype if isinstance(like, types.Array) else like
    out = types.Array(dtype, 1, "C")

    def codegen(context, builder, signature, args):
        elt = context.get_value_type(dtype)
        with builder.goto_entry_block():
            data = builder.alloca(ir.ArrayType(elt, size))
        arr = context.make_array(out)(context, builder)
        itemsize = context.get_abi_sizeof(elt)
        intp = context.get_value_type(types.intp)
        context.populate_array(
            arr,
            data=builder.bitcast(data, elt.as_pointer()),
            shape=[ir.Constant(intp, size)],
            strides=[ir.Constant(intp, itemsize)],
            itemsize=ir.Constant(intp, itemsize),
            meminfo=None,
        )
        return arr._getvalue()

    return out(like, n), codegen


def vector_at(context, builder, arr_type, arr, index, vec):
    """Code-generation helper for intrinsics: a pointer to the LLVM vector type ``vec`` at
    element ``index`` of a 1-D contiguous array ``arr`` (of Numba type ``arr_type``)."""
    data = context.make_array(arr_type)(context, builder, arr).data
    return builder.bitcast(builder.gep(data, [index]), vec.as_pointer())


def butterfly(builder, rows):
    """Code-generation helper for intrinsics: the n LLVM vectors of n lanes ``rows`` (n a
    power of two) transposed by a shuffle network: at step h, vectors h apart swap their
    h-wide blocks, so after the last step vector j holds element j of every row."""
    n = len(rows)
    mask = ir.VectorType(ir.IntType(32), n)
    h = 1
    while h < n:
        lo = [k if (k // h) % 2 == 0 else k - h + n for k in range(n)]
        hi = [k + h if (k // h) % 2 == 0 else k + n for k in range(n)]
        nxt = list(rows)
        for i in range(n):
            if (i // h) % 2 == 0:
                a, b = rows[i], rows[i + h]
                nxt[i] = builder.shuffle_vector(a, b, ir.Constant(mask, lo))
                nxt[i + h] = builder.shuffle_vector(a, b, ir.Constant(mask, hi))
        rows = nxt
        h *= 2
    return rows


@intrinsic
def transpose_block(typingctx, dst, d, dld, src, s, sld, nr, c0, nc):
    """``dst[d + (j - c0)*dld + i] = src[s + i*sld + j]`` for ``i < VECTOR_LANES`` and
    ``c0 <= j < c0 + nc``, where the rows ``i >= nr`` read as zeros.

    dst and src are 1-D contiguous arrays of one dtype; every row read,
    ``src[s + i*sld : s + i*sld + VECTOR_LANES]`` for ``i < max(nr, 1)``, must lie inside
    src, and every row written, ``dst[d + k*dld : d + k*dld + VECTOR_LANES]`` for
    ``k < nc``, inside dst (whole vectors are read and written). One call is
    VECTOR_LANES vector loads, a shuffle network and nc vector stores.
    """
    lanes = VECTOR_LANES
    for arg in (d, dld, s, sld, nr, c0, nc):
        if not isinstance(arg, types.Integer):
            raise errors.TypingError(f"transpose_block: indices must be integers, got {arg}")

    def codegen(context, builder, sig, args):
        dv, sv = args[0], args[3]
        # every index as intp (the arguments may be signed or unsigned)
        dd, dl, so, sl, nrow, first, count = (
            context.cast(builder, args[i], sig.args[i], types.intp) for i in (1, 2, 4, 5, 6, 7, 8))
        elt = context.get_value_type(dst.dtype)
        size = context.get_abi_sizeof(elt)
        vec = ir.VectorType(elt, lanes)

        def const(v):
            return ir.Constant(dd.type, v)

        last = builder.sub(nrow, const(1))
        rows = []
        for i in range(lanes):
            inside = builder.icmp_signed("<", const(i), nrow)
            # a row past nr reads row nr - 1 (inside src) and is replaced by zeros
            at = builder.add(so, builder.mul(sl, builder.select(inside, const(i), last)))
            value = builder.load(vector_at(context, builder, src, sv, at, vec), align=size)
            rows.append(builder.select(inside, value, ir.Constant(vec, None)))
        rows = butterfly(builder, rows)
        for j in range(lanes):
            k = builder.sub(const(j), first)
            wanted = builder.and_(builder.icmp_signed(">=", k, const(0)),
                                  builder.icmp_signed("<", k, count))
            with builder.if_then(wanted):
                at = builder.add(dd, builder.mul(dl, k))
                builder.store(rows[j], vector_at(context, builder, dst, dv, at, vec),
                              align=size)
        return context.get_dummy_value()

    return types.void(dst, d, dld, src, s, sld, nr, c0, nc), codegen


@intrinsic
def call_native(typingctx, address, args):
    """Call the compiled Numba function whose native entry is at ``address`` (from
    ``native_address``) on the values of the tuple ``args``; True when it raised (its
    exception is dropped: propagated out of a prange body it corrupted the heap)."""
    if not isinstance(address, types.Integer) or not isinstance(args, types.BaseTuple):
        raise errors.TypingError(f"call_native: (int, tuple) expected, got ({address}, {args})")
    argtys = tuple(args)

    def codegen(context, builder, sig, llargs):
        fnty = context.call_conv.get_function_type(types.none, argtys)
        fn = builder.inttoptr(llargs[0], fnty.as_pointer())
        values = [builder.extract_value(llargs[1], i) for i in range(len(argtys))]
        status, _ = context.call_conv.call_function(builder, fn, types.none, argtys, values)
        return status.is_error

    return types.boolean(address, args), codegen


_ADDRESSES = {}


def native_address(kernel, args):
    """The native entry of the njit function ``kernel(piece, npiece, args)`` compiled (or
    loaded from the cache) for the types of the tuple ``args``.

    Looked up by the fingerprint Numba's dispatcher computes for the same purpose (each
    array's dtype, rank, layout and writability, each scalar's type) in about 0.4 us;
    a key built in Python from the arrays' flags took 2.9 us for conv's sv arguments.
    """
    key = (kernel, compute_fingerprint(args))
    address = _ADDRESSES.get(key)
    if address is None:
        sig = (types.int64, types.int64, typeof(args))
        kernel.compile(sig)
        cres = kernel.overloads[sig]
        address = cres.library.get_pointer_to_function(cres.fndesc.llvm_func_name)
        _ADDRESSES[key] = address
    return address


@njit(parallel=True, cache=True)
def _run_pieces(address, failed, args):
    # failed (npiece,) bool: set where a piece raised
    npiece = failed.shape[0]
    for piece in prange(npiece):
        failed[piece] = call_native(address, (np.int64(piece), np.int64(npiece), args))


def run_pieces(kernel, npiece, args):
    """``kernel(piece, npiece, args)`` for each piece < npiece on Numba's threads: a prange
    loop whose body is compiled once. kernel is an njit function that returns nothing;
    an exception inside it becomes a RuntimeError here.

    Why: Numba links a parallel kernel's callees into it and optimises them and compiles
    them to machine code again at each of its four levels (the prange body, two gufunc
    wrappers, the kernel): 0.34 s per level for conv's sv forward. Here the piece is
    compiled once as an ordinary njit function and called through its address, and the
    small loop above (about 0.3 s cold per argument-tuple type) is all prange compiles.

    Example::

        @njit(cache=True)
        def double(p, npiece, args):
            out, x = args
            for i in range(p, x.size, npiece):
                out[i] = 2 * x[i]

        run_pieces(double, numba.get_num_threads(), (out, x))
    """
    failed = np.zeros(npiece, np.bool_)
    _run_pieces(native_address(kernel, args), failed, args)
    if np.count_nonzero(failed):
        raise RuntimeError(f"{kernel.py_func.__qualname__} raised inside run_pieces (its "
                           "exception is not carried out of the parallel loop)")
