"""The metric pass's compiled kernels (numba): one read of each stored byte, decoding inline.

Optional accelerator (``pip install modelkin[fast]``); ``streaming`` keeps the numpy reference path and
uses these only when numba imports, compiles and agrees with that reference on a self-check.

Each kernel takes the stored bits of two pieces as unsigned integers (``uint32`` for F32, ``uint16`` for
BF16 and F16, ``uint64`` for F64), decodes every element exactly (bit casts; F16 through LLVM's
half -> float extension, which is exact), and returns the six float64 sums of the pass plus the number of
elements whose stored bits differ:

    (Σa, Σb, Σa², Σb², Σab, Σ(a−b)², n_bits_differ)

A float32 product is exact in float64 (24 + 24 significant bits < 53), so only the float64 additions round.
``fastmath`` allows reassociation (and fused multiply-adds) so the loop vectorises; no assumption about
NaN or infinity is made, so they propagate into the sums as in the numpy path.
Kernels are compiled once per machine and cached on disk (``cache=True``); they release the GIL.
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

_FASTMATH = {"reassoc", "contract"}
_I16, _I32, _I64 = ir.IntType(16), ir.IntType(32), ir.IntType(64)


@intrinsic
def _f32_bits(typingctx, u):
    """float32 whose bits are ``u`` (uint32)."""

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.uint32), codegen


@intrinsic
def _f64_bits(typingctx, u):
    """float64 whose bits are ``u`` (uint64)."""

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(types.uint64), codegen


@intrinsic
def _bf16_bits(typingctx, u):
    """float32 of bfloat16 bits ``u`` (uint16): they are the float32's top half."""

    def codegen(context, builder, sig, args):
        wide = builder.shl(builder.zext(args[0], _I32), ir.Constant(_I32, 16))
        return builder.bitcast(wide, ir.FloatType())

    return types.float32(types.uint16), codegen


@intrinsic
def _f16_bits(typingctx, u):
    """float32 of IEEE half bits ``u`` (uint16), exactly (subnormals, infinities, NaN included)."""

    def codegen(context, builder, sig, args):
        return builder.fpext(builder.bitcast(args[0], ir.HalfType()), ir.FloatType())

    return types.float32(types.uint16), codegen


# Four kernels with one body each, written out: numba's on-disk cache keys a kernel by its own source,
# so generating them from one template would let them overwrite each other's cached code.


@numba.njit(nogil=True, fastmath=_FASTMATH, cache=True)
def sums_f32(ua, ub):
    sa = sb = saa = sbb = sab = sdd = 0.0
    nd = 0
    for i in range(ua.size):
        x = np.float64(_f32_bits(ua[i]))
        y = np.float64(_f32_bits(ub[i]))
        sa += x
        sb += y
        saa += x * x
        sbb += y * y
        sab += x * y
        sdd += (x - y) * (x - y)
        nd += ua[i] != ub[i]
    return sa, sb, saa, sbb, sab, sdd, nd


@numba.njit(nogil=True, fastmath=_FASTMATH, cache=True)
def sums_bf16(ua, ub):
    sa = sb = saa = sbb = sab = sdd = 0.0
    nd = 0
    for i in range(ua.size):
        x = np.float64(_bf16_bits(ua[i]))
        y = np.float64(_bf16_bits(ub[i]))
        sa += x
        sb += y
        saa += x * x
        sbb += y * y
        sab += x * y
        sdd += (x - y) * (x - y)
        nd += ua[i] != ub[i]
    return sa, sb, saa, sbb, sab, sdd, nd


@numba.njit(nogil=True, fastmath=_FASTMATH, cache=True)
def sums_f16(ua, ub):
    sa = sb = saa = sbb = sab = sdd = 0.0
    nd = 0
    for i in range(ua.size):
        x = np.float64(_f16_bits(ua[i]))
        y = np.float64(_f16_bits(ub[i]))
        sa += x
        sb += y
        saa += x * x
        sbb += y * y
        sab += x * y
        sdd += (x - y) * (x - y)
        nd += ua[i] != ub[i]
    return sa, sb, saa, sbb, sab, sdd, nd


@numba.njit(nogil=True, fastmath=_FASTMATH, cache=True)
def sums_f64(ua, ub):
    sa = sb = saa = sbb = sab = sdd = 0.0
    nd = 0
    for i in range(ua.size):
        x = _f64_bits(ua[i])
        y = _f64_bits(ub[i])
        sa += x
        sb += y
        saa += x * x
        sbb += y * y
        sab += x * y
        sdd += (x - y) * (x - y)
        nd += ua[i] != ub[i]
    return sa, sb, saa, sbb, sab, sdd, nd


@numba.njit(nogil=True, fastmath=_FASTMATH, cache=True)
def sums_float(a, b):
    """Decoded pieces (float32 or float64 arrays of one dtype); bits are not compared (returns 0)."""
    sa = sb = saa = sbb = sab = sdd = 0.0
    for i in range(a.size):
        x = np.float64(a[i])
        y = np.float64(b[i])
        sa += x
        sb += y
        saa += x * x
        sbb += y * y
        sab += x * y
        sdd += (x - y) * (x - y)
    return sa, sb, saa, sbb, sab, sdd, 0


RAW = {"F32": (np.uint32, sums_f32), "BF16": (np.uint16, sums_bf16), "F16": (np.uint16, sums_f16), "F64": (np.uint64, sums_f64)}
VERSION = numba.__version__
