"""The single dtype table: safetensors dtype codes -> numpy decoding.

numpy lacks bfloat16 and the float8 formats; ml_dtypes provides them as numpy dtypes. Decoding always goes
to a float type wide enough to hold every value exactly (float32 for <=32-bit formats, float64 for F64 and
the 64-bit integers), so metrics see the stored values, not a rounded copy.
"""

from __future__ import annotations

from dataclasses import dataclass

import ml_dtypes
import numpy as np


@dataclass(frozen=True, slots=True)
class DType:
    code: str  # safetensors spelling, e.g. "BF16"
    storage: np.dtype  # how the bytes are laid out
    bits: int
    decoded: np.dtype  # float dtype the values are decoded to


def _entry(code: str, storage, decoded=np.float32) -> DType:
    storage = np.dtype(storage).newbyteorder("<")
    return DType(code, storage, storage.itemsize * 8, np.dtype(decoded))


DTYPES: dict[str, DType] = {
    d.code: d
    for d in (
        _entry("F64", np.float64, np.float64),
        _entry("F32", np.float32),
        _entry("F16", np.float16),
        _entry("BF16", ml_dtypes.bfloat16),
        _entry("F8_E4M3", ml_dtypes.float8_e4m3fn),
        _entry("F8_E5M2", ml_dtypes.float8_e5m2),
        _entry("I64", np.int64, np.float64),
        _entry("I32", np.int32, np.float64),
        _entry("I16", np.int16),
        _entry("I8", np.int8),
        _entry("U8", np.uint8),
        _entry("BOOL", np.bool_),
    )
}

FLOAT_CODES = frozenset({"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"})


def lookup(code: str) -> DType | None:
    return DTYPES.get(code)
