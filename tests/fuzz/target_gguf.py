"""Fuzz target: the GGUF header parser and block dequantisation (``modelkin.sources.gguf_format``).

``fuzz_one(data)`` opens ``data`` as a GGUF file through an in-memory transport, builds its config and
vocabulary, and reads a few elements of every tensor. Bad input may raise only ``ModelkinError``
subclasses; the file size bounds every allocation the parser makes.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the byte builders

import hostile_gguf  # noqa: E402

from modelkin.errors import FormatError  # noqa: E402
from modelkin.sources.gguf_format import GGUFFile  # noqa: E402

from modelkin.sources.transport import MemoryFile  # noqa: E402

READ_ELEMS = 4096  # per tensor: enough to cross several blocks of every type


class BytesTransport(MemoryFile):
    """This target's in-memory file (``MemoryFile`` under the target's file name)."""

    def __init__(self, data: bytes, name: str = 'fuzz.gguf'):
        super().__init__(data, name)


def fuzz_one(data: bytes) -> None:
    f = GGUFFile(BytesTransport(data))
    f.embedded_config()
    f.embedded_vocab()
    f.metadata_used()
    for info in f.tensors.values():
        n = min(info.numel, READ_ELEMS)
        if n:
            f.read_elements(info, 0, n)
            f.read_elements(info, info.numel - n, n)


SEEDS: list[bytes] = [
    hostile_gguf.small_model(),
    hostile_gguf.small_model(rows=4, cols=64),
    hostile_gguf.gguf_bytes([hostile_gguf.kv_str("general.architecture", "gemma2")], [], b""),
]
