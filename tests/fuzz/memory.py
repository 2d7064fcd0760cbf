"""An in-memory file behind the ``Transport`` protocol, for the fuzz targets whose parser reads through one.

Reads past the end fail with ``FormatError`` the way ``LocalFile``'s do, so a fuzz input that makes a
parser read outside the file shows the parser's own handling, not a harness artefact.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np

from modelkin.errors import FormatError


class MemoryFile:
    remote = False

    def __init__(self, data: bytes, name: str):
        self._data = np.frombuffer(data, np.uint8)
        self.name = name
        self.size = len(data)

    def _check(self, offset: int, n: int) -> None:
        if offset < 0 or n < 0 or offset + n > self.size:
            raise FormatError(f"file ended while reading bytes {offset}..{offset + n}", self.name)

    def read_into(self, offset: int, out: np.ndarray) -> None:
        view = out.reshape(-1).view(np.uint8)
        self._check(offset, view.size)
        view[:] = self._data[offset : offset + view.size]

    def read_ranges(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        out = []
        for offset, n in ranges:
            self._check(offset, n)
            out.append(self._data[offset : offset + n].tobytes())
        return out

    def stream(self, offset: int, n_bytes: int, piece_bytes: int) -> Iterator[np.ndarray]:
        if n_bytes <= 0:
            return
        self._check(offset, n_bytes)
        for s in range(offset, offset + n_bytes, piece_bytes):
            yield self._data[s : min(s + piece_bytes, offset + n_bytes)]

    def close(self) -> None:
        pass
