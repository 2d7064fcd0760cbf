"""Fuzz target: the safetensors header parser and element reads (``modelkin.sources.safetensors_format``).

``fuzz_one(data)`` opens ``data`` as a ``.safetensors`` file through an in-memory transport, then reads the
first and last elements of every tensor (decoded) and streams a little of each, the way the compare
stages do. Bad input may raise only ``ModelkinError``. ``SEEDS`` are small valid files built byte by byte:
several dtypes (float, bfloat16, float8, packed float4, integers, bool), metadata, an empty tensor, and an
empty file.
"""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import ml_dtypes
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from modelkin.sources.transport import MemoryFile  # noqa: E402

from modelkin.sources.safetensors_format import SafetensorsFile  # noqa: E402

MAX_READ_ELEMS = 4096


def fuzz_one(data: bytes) -> None:
    f = SafetensorsFile(MemoryFile(data, "fuzz.safetensors"))
    for info in list(f.tensors.values())[:64]:
        n = min(info.numel, MAX_READ_ELEMS)
        if n == 0:
            continue
        start_last = info.numel - n
        if info.dtype.packed:  # elements of packed types are read from whole bytes
            n -= n % 2
            start_last -= start_last % 2
        f.read_elements(info, 0, n)
        f.read_elements(info, start_last, n)
        for _ in f.stream_elements(info, 0, n):
            pass


def build(arrays: dict[str, tuple[str, list[int], bytes]], metadata: dict | None = None) -> bytes:
    """A safetensors file of (dtype code, shape, raw bytes) entries, in the order given."""
    header: dict = {"__metadata__": metadata} if metadata is not None else {}
    offset, blobs = 0, []
    for name, (code, shape, raw) in arrays.items():
        header[name] = {"dtype": code, "shape": shape, "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
        blobs.append(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the writers pad the header to 8 bytes
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


def _seeds() -> list[bytes]:
    w = np.arange(24, dtype="<f4").reshape(4, 6) / 7
    return [
        build(
            {
                "model.layers.0.self_attn.q_proj.weight": ("F32", [4, 6], w.tobytes()),
                "model.layers.0.mlp.up_proj.weight": ("F16", [3, 4], np.linspace(-1, 1, 12).astype("<f2").tobytes()),
                "model.norm.weight": ("BF16", [6], np.ones(6, ml_dtypes.bfloat16).tobytes()),
                "lm_head.weight": ("F8_E4M3", [2, 8], np.linspace(-2, 2, 16).astype(ml_dtypes.float8_e4m3fn).tobytes()),
            },
            {"format": "pt"},
        ),
        build(
            {
                "a": ("F4", [2, 4], bytes(range(0, 64, 16))),
                "b": ("I64", [3], np.array([1, -2, 3], "<i8").tobytes()),
                "c": ("BOOL", [2], b"\x01\x00"),
                "d": ("F64", [0, 3], b""),
                "e": ("F8_E8M0", [4], bytes([120, 127, 130, 0])),
                "f": ("U8", [5], bytes(range(5))),
            }
        ),
        build({}),
    ]


SEEDS: list[bytes] = _seeds()
