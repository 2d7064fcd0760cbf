"""Where bytes come from: the one small protocol every weights format reads through.

A transport answers "these bytes of this file" — ``read_into(offset, out)`` fills a caller-owned buffer,
``read_ranges`` fetches several ranges at once (a remote transport coalesces and parallelises them), and
``stream`` hands out consecutive pieces of a long range for one pass over it. Formats (``weightfile`` and
its subclasses) parse their headers and locate tensors through this protocol, so every format works over
every transport: a local file (here) or HTTP ranges (``http``).
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path
from typing import Iterator, Protocol, Sequence

import numpy as np

from ..errors import FormatError, SourceNotFoundError


class Transport(Protocol):
    name: str  # path or URL, for messages and as the file's key
    size: int  # bytes
    remote: bool

    def read_into(self, offset: int, out: np.ndarray) -> None: ...

    def read_ranges(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]: ...

    def stream(self, offset: int, n_bytes: int, piece_bytes: int) -> Iterator[np.ndarray]: ...

    def close(self) -> None: ...


def _bytes_view(out: np.ndarray) -> memoryview:
    if not out.flags.c_contiguous:
        raise ValueError("read_into needs a C-contiguous buffer")
    # Go through uint8: numpy cannot export ml_dtypes arrays (bfloat16, float8) via the buffer protocol.
    return memoryview(out.reshape(-1).view(np.uint8))


class LocalFile:
    """A local file read with ``os.preadv`` (copies into caller buffers; releases the GIL), and streamed
    through a memory map whose pages are dropped as soon as a piece is done, so resident memory stays at
    one piece per reader whatever the file size."""

    remote = False

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.name = str(path)
        try:
            self.size = self.path.stat().st_size
        except FileNotFoundError:
            raise SourceNotFoundError("no such file", path) from None
        except OSError as e:
            raise FormatError(f"cannot read: {e.strerror or e}", path) from None
        self._fd: int | None = None
        self._map: mmap.mmap | None = None

    def _descriptor(self) -> int:
        if self._fd is None:
            try:
                self._fd = os.open(self.path, os.O_RDONLY)
            except OSError as e:
                raise FormatError(f"cannot open: {e.strerror or e}", self.path) from None
        return self._fd

    def read_into(self, offset: int, out: np.ndarray) -> None:
        view = _bytes_view(out)
        fd = self._descriptor()
        done = 0
        while done < len(view):
            n = os.preadv(fd, [view[done:]], offset + done)
            if n <= 0:
                raise FormatError(f"file ended while reading bytes {offset + done}.. (changed on disk?)", self.path)
            done += n

    def read_ranges(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        out = []
        for offset, n in ranges:
            buf = np.empty(n, np.uint8)
            self.read_into(offset, buf)
            out.append(buf.tobytes())
        return out

    def stream(self, offset: int, n_bytes: int, piece_bytes: int) -> Iterator[np.ndarray]:
        """Consecutive uint8 pieces of [offset, offset+n_bytes), mapped rather than copied.

        Each piece is valid until the next is requested; its pages are then dropped from this process
        (they stay in the OS page cache).
        """
        if n_bytes <= 0:
            return
        if offset + n_bytes > self.size:
            raise FormatError(f"bytes {offset}..{offset + n_bytes} lie past the end of the {self.size}-byte file", self.path)
        if self._map is None:
            self._map = mmap.mmap(self._descriptor(), 0, access=mmap.ACCESS_READ)
        for s in range(offset, offset + n_bytes, piece_bytes):
            n = min(piece_bytes, offset + n_bytes - s)
            piece = np.frombuffer(self._map, dtype=np.uint8, count=n, offset=s)
            try:
                yield piece
            finally:
                del piece
                self._release(s, n)

    def _release(self, offset: int, n_bytes: int) -> None:
        if self._map is None or n_bytes <= 0 or not hasattr(mmap, "MADV_DONTNEED"):
            return
        start = offset - offset % mmap.PAGESIZE
        self._map.madvise(mmap.MADV_DONTNEED, start, min(offset + n_bytes, len(self._map)) - start)

    def close(self) -> None:
        if self._map is not None:
            try:
                self._map.close()
            except BufferError:  # an array still views the map; the OS frees it with the process
                pass
            self._map = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class MemoryFile:
    """Bytes held in memory as a ``Transport`` (tests, fuzzing, small files built on the fly). Reads past
    the end fail with ``FormatError`` as a local file's do."""

    remote = False

    def __init__(self, data: bytes, name: str = "<memory>"):
        self._data = np.frombuffer(data, np.uint8)
        self.name = name
        self.size = len(data)

    def _check(self, offset: int, n: int) -> None:
        if offset < 0 or n < 0 or offset + n > self.size:
            raise FormatError(f"file ended while reading bytes {offset}..{offset + n}", self.name)

    def read_into(self, offset: int, out: np.ndarray) -> None:
        view = _bytes_view(out)
        self._check(offset, len(view))
        view[:] = self._data[offset : offset + len(view)].tobytes()

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
