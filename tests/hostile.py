"""Byte-by-byte builders of safetensors files, valid and hostile, for the source and bad-input tests.

A safetensors file is: 8-byte little-endian header length N, N bytes of UTF-8 JSON, then the data buffer.
These helpers write exactly the bytes asked for, with no validation, so tests can break any one rule.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np

# safetensors dtype code -> numpy dtype used to lay the bytes out (little-endian)
NP_DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn),
    "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
}


def raw_file(path: str | Path, header: bytes | str | dict, data: bytes = b"", n_header: int | None = None) -> Path:
    """Write 8-byte length + header + data. ``n_header`` overrides the stated length (default: the true one)."""
    path = Path(path)
    if isinstance(header, dict):
        header = json.dumps(header, separators=(",", ":"))
    if isinstance(header, str):
        header = header.encode("utf-8")
    stated = len(header) if n_header is None else n_header
    path.write_bytes(struct.pack("<Q", stated) + header + data)
    return path


def entry(dtype: str, shape: list, begin: int, end: int) -> dict[str, Any]:
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


def write_tensors(path: str | Path, tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None, pad_to: int = 8) -> Path:
    """A valid safetensors file written by hand (supports BF16 / F8, which safetensors.numpy does not).

    Each array's dtype must be one of ``NP_DTYPES``' values; tensors are laid out in the given order.
    The header is padded with spaces to a multiple of ``pad_to`` bytes, like the reference writer.
    """
    codes = {v: k for k, v in NP_DTYPES.items()}
    header: dict[str, Any] = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    chunks, offset = [], 0
    for name, arr in tensors.items():
        arr = np.asarray(arr)  # (not ascontiguousarray: it turns 0-d into 1-d)
        code = codes[arr.dtype.newbyteorder("<") if arr.dtype.byteorder == "=" else arr.dtype]
        b = arr.tobytes(order="C")
        header[name] = entry(code, list(arr.shape), offset, offset + len(b))
        chunks.append(b)
        offset += len(b)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-(len(text) + 8) % pad_to)
    return raw_file(path, text, b"".join(chunks))


def f32_file(path: str | Path, n: int = 4, name: str = "w") -> Path:
    """A small valid file with one F32 tensor of ``n`` elements 0..n-1."""
    return write_tensors(path, {name: np.arange(n, dtype="<f4")})


def two_tensor_header(first: tuple[int, int], second: tuple[int, int], dtype: str = "F32") -> dict:
    """Header with two 1-D tensors at the given byte offsets (each entry's shape matches its span)."""
    item = NP_DTYPES[dtype].itemsize
    return {
        "a": entry(dtype, [(first[1] - first[0]) // item], *first),
        "b": entry(dtype, [(second[1] - second[0]) // item], *second),
    }


def index_file(path: str | Path, weight_map: dict[str, str] | None, extra: dict | None = None) -> Path:
    """A ``*.safetensors.index.json``; ``weight_map=None`` leaves the key out."""
    body: dict[str, Any] = {"metadata": {"total_size": 0}}
    if weight_map is not None:
        body["weight_map"] = weight_map
    if extra:
        body.update(extra)
    path = Path(path)
    path.write_text(json.dumps(body))
    return path
