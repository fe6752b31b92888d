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

Example (inside an ``@njit`` kernel)::

    from nnkern.kernels._cpu import TILE, stack_array, wide_vectors

    wide_vectors()
    acc = stack_array(y, TILE)  # TILE: a module-level int constant
    for i in range(TILE):
        acc[i] = 0
"""

from llvmlite import ir
from numba import types
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
