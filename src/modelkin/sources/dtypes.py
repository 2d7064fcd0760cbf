"""The single dtype table: stored element types -> numpy decoding.

numpy lacks bfloat16 and the narrow float formats; ml_dtypes provides them as numpy dtypes. Decoding goes
to a float type wide enough to hold every value exactly (float32 for <=32-bit formats, float64 for F64 and
the 32/64-bit integers) — with one stated exception: I64/U64 values beyond 2^53 are rounded by float64
(``exact`` is False for them; such tensors are indices or counters, never evidence).

Every storage dtype is little-endian by the formats' definition, whatever the host's byte order: the table
fixes ``<`` and the bfloat16 fast path widens the stored ``<u2`` bits, never the host's native view.

Block formats (quantised GGUF types) are entries too: ``block_elems`` elements are stored in
``block_bytes`` bytes and only the format module that owns them can decode a block; ``storage`` is then
raw bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

import ml_dtypes
import numpy as np


@dataclass(frozen=True, slots=True)
class DType:
    code: str  # the format's spelling, e.g. "BF16" (safetensors) or "Q4_K" (GGUF)
    storage: np.dtype  # how one stored element (or, for block formats, one byte) is laid out
    bits: int  # bits per element (fractional types: 4, 6)
    decoded: np.dtype  # float dtype the values are decoded to
    exact: bool = True  # every stored value survives decoding unchanged
    block_elems: int = 1  # elements per stored block (1: plain element array)
    block_bytes: int = 0  # bytes per block (0: bits / 8 per element)
    packed: bool = False  # sub-byte elements packed several to a byte (unpacked by ``decode``)

    @property
    def is_block(self) -> bool:
        return self.block_elems > 1

    def n_bytes(self, numel: int) -> int | None:
        """Bytes that ``numel`` elements occupy; None when numel does not fill whole blocks or bytes."""
        if self.is_block:
            return None if numel % self.block_elems else numel // self.block_elems * self.block_bytes
        bits = numel * self.bits
        return None if bits % 8 else bits // 8


def _entry(code: str, storage, decoded=np.float32, exact: bool = True, bits: int | None = None) -> DType:
    storage = np.dtype(storage).newbyteorder("<")
    packed = bits is not None and bits < 8
    return DType(code, storage, bits or storage.itemsize * 8, np.dtype(decoded), exact, packed=packed)


DTYPES: dict[str, DType] = {
    d.code: d
    for d in (
        _entry("F64", np.float64, np.float64),
        _entry("F32", np.float32),
        _entry("F16", np.float16),
        _entry("BF16", ml_dtypes.bfloat16),
        _entry("F8_E4M3", ml_dtypes.float8_e4m3fn),
        _entry("F8_E5M2", ml_dtypes.float8_e5m2),
        _entry("F8_E8M0", ml_dtypes.float8_e8m0fnu),  # power-of-two block scales (MX formats)
        _entry("F4", np.uint8, bits=4),  # float4 e2m1, two per byte, first element in the low nibble
        _entry("I64", np.int64, np.float64, exact=False),
        _entry("U64", np.uint64, np.float64, exact=False),
        _entry("I32", np.int32, np.float64),
        _entry("U32", np.uint32, np.float64),
        _entry("I16", np.int16),
        _entry("U16", np.uint16),
        _entry("I8", np.int8),
        _entry("U8", np.uint8),
        _entry("BOOL", np.bool_),
    )
}

FLOAT_CODES = frozenset({"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2", "F8_E8M0", "F4"})

_F4_VALUES = np.arange(16, dtype=np.uint8).view(ml_dtypes.float4_e2m1fn).astype(np.float32)


def lookup(code: str) -> DType | None:
    return DTYPES.get(code)


def decode(raw: np.ndarray, dtype: DType, out: np.ndarray | None = None) -> np.ndarray:
    """Stored elements (as read, in ``dtype.storage``) -> a float array of the decoded values.

    ``out`` (uint32 scratch of at least ``raw.size``) lets a hot loop decode without allocating, for every
    dtype decoded to float32.
    Block formats are decoded by the format module that owns them, never here.
    """
    if dtype.is_block:
        raise ValueError(f"{dtype.code} is a block format: its file format decodes it")
    if dtype.code == "BF16":
        # bfloat16 is the top half of a float32: widening the (little-endian) bits is exact and fast.
        if out is None:
            bits = raw.view("<u2").astype(np.uint32)
        else:
            bits = out[: raw.size]
            np.copyto(bits, raw.view("<u2"))
        bits <<= 16
        return bits.view(np.float32)
    if dtype.code == "F4":  # two elements per byte, low nibble first
        b = raw.view(np.uint8)
        return np.stack((_F4_VALUES[b & 0xF], _F4_VALUES[b >> 4]), axis=-1).reshape(-1)
    if out is not None and dtype.decoded == np.float32 and raw.dtype != np.float32:
        values = out[: raw.size].view(np.float32)
        np.copyto(values, raw, casting="unsafe")
        return values
    return raw.astype(dtype.decoded, copy=False)
