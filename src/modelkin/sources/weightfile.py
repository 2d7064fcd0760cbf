"""One weights file as a set of tensors: the format layer between transports and ``ModelSource``.

A format module subclasses ``WeightFile``: it parses its header through a ``Transport`` and fills
``tensors`` (name -> ``TensorInfo``) and ``metadata``. Tensors stored as plain little-endian element arrays
(safetensors, pickle storages, ONNX raw data, GGUF's float types) need nothing more: the element reads
below serve them. A format with block encodings (quantised GGUF types) overrides ``read_elements`` for
those dtypes; nothing above ``sources/`` knows a format exists.

All element ranges are of the flattened *stored* tensor; views are resolved by ``ModelSource``.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from ..errors import FormatError
from .dtypes import decode
from .tensors import TensorInfo
from .transport import Transport

STREAM_PIECE_ELEMS = 1 << 18  # elements per piece of a streaming pass (decoded pieces stay in L2)


class WeightFile:
    """Base class: a parsed file of tensors reachable through ``transport``."""

    format_name = "?"

    def __init__(self, transport: Transport):
        self.transport = transport
        self.name = transport.name
        self.tensors: dict[str, TensorInfo] = {}
        self.metadata: dict[str, object] = {}

    @property
    def path(self):
        """The local path (local transports) or URL of the file."""
        return getattr(self.transport, "path", self.transport.name)

    # -- what a format may carry besides tensors (GGUF: hyper-parameters and tokenizer) ------------
    def embedded_config(self) -> dict | None:
        """A config.json-like dict from the file's own metadata, used when no config.json is present."""
        return None

    def embedded_vocab(self) -> dict[str, int] | None:
        """Token string -> id from a tokenizer stored inside the file, used when no tokenizer file is."""
        return None

    def metadata_used(self) -> dict[str, object]:
        """The file's own metadata entries that ``embedded_config``/``embedded_vocab`` were read from."""
        return {}

    def data_transports(self) -> tuple[Transport, ...]:
        """Every file this one's tensors are read from: itself, and files it refers to (ONNX external
        data). Each is identified (hashed) in the report."""
        return (self.transport,)

    def _fail(self, message: str) -> FormatError:
        return FormatError(message, self.name)

    # -- raw storage ----------------------------------------------------------------------------
    def _byte_span(self, info: TensorInfo, start: int, count: int) -> tuple[int, int]:
        """(absolute offset, length) of elements [start, start+count) of a stored plain tensor."""
        bits = info.dtype.bits
        if (start * bits) % 8 or (count * bits) % 8:
            raise ValueError(f"{info.name}: elements [{start}, {start + count}) do not start and end on a byte")
        return info.data_offset + start * bits // 8, count * bits // 8

    def read_raw(self, info: TensorInfo, start: int, count: int, out: np.ndarray | None = None) -> np.ndarray:
        """Stored elements [start, start+count) in their storage dtype (packed types: their bytes)."""
        offset, n = self._byte_span(info, start, count)
        item = info.dtype.storage.itemsize
        if out is None:
            out = np.empty(n // item, dtype=info.dtype.storage)
        else:
            out = out[: n // item]
        if n:
            self.transport.read_into(offset, out)
        return out

    # -- decoded --------------------------------------------------------------------------------
    def read_elements(self, info: TensorInfo, start: int, count: int) -> np.ndarray:
        """Elements [start, start+count) of a stored tensor, decoded to float."""
        return decode(self.read_raw(info, start, count), info.dtype)

    def prefetch(self, spans: list[tuple[TensorInfo, int, int]]) -> None:
        """Fetch these element ranges ahead of their reads (remote transports batch them); a hint."""
        if self.transport.remote:
            ranges = sorted(self._byte_span(i, s, c) for i, s, c in spans if c > 0 and not i.dtype.is_block)
            if ranges:  # into the transport's cache when it keeps one, else read (and dropped) here
                getattr(self.transport, "prefetch", self.transport.read_ranges)(ranges)

    def stores_plainly(self, info: TensorInfo) -> bool:
        """Whether this tensor's elements are ``dtypes.decode`` of its stored elements, in stored order, so that
        a pass may read the stored bits (``stream_stored``) and decode them itself. True for plain element
        dtypes of a format that keeps the base class's reads; a format that overrides them (to undo a
        permutation or an offset, or to read from another file) is asked to override this too, per tensor;
        until it does, none of its tensors counts as plain."""
        cls = type(self)
        inherited = all(getattr(cls, m) is getattr(WeightFile, m) for m in ("read_raw", "read_elements", "stream_elements"))
        return inherited and not info.dtype.is_block and not info.dtype.packed

    def stream_stored(self, info: TensorInfo, start: int, count: int, piece_elems: int = STREAM_PIECE_ELEMS) -> Iterator[np.ndarray]:
        """Consecutive pieces of elements [start, start+count) in their storage dtype, ``piece_elems`` each
        (the last shorter): a local file's pieces are views of its memory map, each valid until the next
        is requested. Plain element arrays only (not block-encoded or packed dtypes)."""
        if info.dtype.is_block or info.dtype.packed:
            raise ValueError(f"{info.name}: {info.dtype.code} elements are not stored one by one")
        offset, n = self._byte_span(info, start, count)
        item = info.dtype.storage.itemsize
        for piece in self.transport.stream(offset, n, piece_elems * item):
            yield piece.view(info.dtype.storage)

    def stream_elements(self, info: TensorInfo, start: int, count: int, scratch: np.ndarray | None = None) -> Iterator[np.ndarray]:
        """Decoded consecutive pieces of elements [start, start+count); each valid until the next."""
        if info.dtype.is_block or info.dtype.packed:
            for s in range(start, start + count, STREAM_PIECE_ELEMS):
                yield self.read_elements(info, s, min(STREAM_PIECE_ELEMS, start + count - s))
            return
        for piece in self.stream_stored(info, start, count):
            yield decode(piece, info.dtype, scratch)

    def stream_raw(self, info: TensorInfo, piece_elems: int = STREAM_PIECE_ELEMS) -> Iterator[bytes]:
        """The stored bytes of a tensor, piece by piece (identity checks)."""
        offset, n = info.data_offset, info.n_bytes
        for s in range(offset, offset + n, piece_elems * 4):
            buf = np.empty(min(piece_elems * 4, offset + n - s), np.uint8)
            self.transport.read_into(s, buf)
            yield buf.tobytes()

    def close(self) -> None:
        self.transport.close()
