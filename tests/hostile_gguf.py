"""Byte-by-byte builders of GGUF files, valid and hostile, for the GGUF tests and the GGUF fuzz target.

GGUF v3: ``GGUF``, uint32 version, uint64 tensor count, uint64 metadata count, the metadata entries
(string key, uint32 value type, value), the tensor infos (string name, uint32 n_dims, uint64 dims with ne0
first, uint32 ggml type, uint64 offset into the data section), padding to the alignment, the data.
These helpers write exactly the bytes asked for, with no validation, so a test can break any one rule.
"""

from __future__ import annotations

import struct

import numpy as np

U32, STR, ARR, F32_T = 4, 8, 9, 6
F32, F16, Q8_0 = 0, 1, 8  # ggml types


def string(s: str | bytes, claimed: int | None = None) -> bytes:
    b = s.encode("utf-8") if isinstance(s, str) else s
    return struct.pack("<Q", len(b) if claimed is None else claimed) + b


def kv_str(key: str, value: str) -> bytes:
    return string(key) + struct.pack("<I", STR) + string(value)


def kv_u32(key: str, value: int) -> bytes:
    return string(key) + struct.pack("<I", U32) + struct.pack("<I", value)


def kv_str_array(key: str, values: list[str], claimed: int | None = None) -> bytes:
    n = len(values) if claimed is None else claimed
    return string(key) + struct.pack("<II", ARR, STR) + struct.pack("<Q", n) + b"".join(string(v) for v in values)


def tensor_info(name: str, dims: list[int], ggml_type: int, offset: int, n_dims: int | None = None) -> bytes:
    return (string(name) + struct.pack("<I", len(dims) if n_dims is None else n_dims)
            + b"".join(struct.pack("<Q", d) for d in dims) + struct.pack("<IQ", ggml_type, offset))


def gguf_bytes(kvs: list[bytes], infos: list[bytes], data: bytes, *, version: int = 3, n_tensors: int | None = None,
               n_kv: int | None = None, alignment: int = 32, magic: bytes = b"GGUF") -> bytes:
    head = magic + struct.pack("<IQQ", version, len(infos) if n_tensors is None else n_tensors, len(kvs) if n_kv is None else n_kv)
    body = head + b"".join(kvs) + b"".join(infos)
    body += b"\0" * (-len(body) % alignment)
    return body + data


def small_model(rows: int = 8, cols: int = 32) -> bytes:
    """A valid llama-architecture GGUF: two heads of Q rows (permuted on disk), one F32 norm, one F16 matrix,
    a three-token vocabulary."""
    q = np.arange(rows * cols, dtype=np.float32).reshape(rows, cols) / 7
    up = np.linspace(-1, 1, rows * cols, dtype=np.float32).astype(np.float16)
    norm = np.ones(cols, np.float32)
    kvs = [kv_str("general.architecture", "llama"), kv_u32("llama.attention.head_count", 2),
           kv_u32("llama.embedding_length", cols), kv_u32("llama.block_count", 1),
           kv_str_array("tokenizer.ggml.tokens", ["<s>", "a", "b"])]
    blobs = [q.tobytes(), up.tobytes(), norm.tobytes()]
    infos, offset, data = [], 0, b""
    for name, dims, t, blob in (("blk.0.attn_q.weight", [cols, rows], F32, blobs[0]),
                                ("blk.0.ffn_up.weight", [cols, rows], F16, blobs[1]),
                                ("blk.0.attn_norm.weight", [cols], F32, blobs[2])):
        infos.append(tensor_info(name, dims, t, offset))
        data += blob + b"\0" * (-len(blob) % 32)
        offset = len(data)
    return gguf_bytes(kvs, infos, data)
