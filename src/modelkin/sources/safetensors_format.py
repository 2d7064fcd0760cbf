"""Reading the safetensors format: header parsing with the format's exact rules, lazy ranged reads.

The rules (from the format specification): an 8-byte little-endian header length N, then N bytes of
UTF-8 JSON starting with ``{``, then the byte buffer. Each tensor entry has ``dtype``, ``shape`` and
``data_offsets`` [BEGIN, END) relative to the start of the buffer; entries are contiguous and together
cover the buffer exactly; END - BEGIN equals numel * bits / 8. ``__metadata__`` maps strings to strings.
Every violation becomes one FormatError naming the file.

Data is never mapped or loaded whole: ``read_into`` copies a byte range into a caller-owned buffer with
``os.preadv`` (releases the GIL, keeps resident memory bounded by the caller's buffers).
"""

from __future__ import annotations

import json
import mmap
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import FormatError
from .dtypes import DType, lookup

MAX_HEADER_BYTES = 100_000_000  # the format's limit
HEADER_LENGTH_BYTES = 8


class _DuplicateKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return out


@dataclass(frozen=True, slots=True)
class TensorInfo:
    """Where one tensor's bytes are: ``data_offset`` is absolute within ``file``.

    ``row_stride`` > 0 marks a *strided view*: a 2-D window of a larger stored matrix (columns
    ``col_offset``… of rows ``row_stride`` elements long), as when a part is cut out of a fused matrix
    stored [in, out]. Such a view is read row by row (``ModelSource.read_rows`` / ``read_block``), never as
    one contiguous range.
    """

    name: str
    dtype: DType
    shape: tuple[int, ...]
    file: Path
    data_offset: int
    n_bytes: int
    row_stride: int = 0
    col_offset: int = 0
    numel: int = field(init=False)

    @property
    def strided(self) -> bool:
        return self.row_stride > 0

    def __post_init__(self) -> None:
        n = 1
        for d in self.shape:
            n *= d
        object.__setattr__(self, "numel", n)


class SafetensorsFile:
    """One ``.safetensors`` file: validated header, and ranged reads of its data."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.metadata: dict[str, str] = {}
        self.tensors: dict[str, TensorInfo] = {}
        self._fd: int | None = None
        self._map: mmap.mmap | None = None
        self._parse_header()

    # -- header ---------------------------------------------------------------------------------
    def _fail(self, message: str) -> FormatError:
        return FormatError(message, self.path)

    def _parse_header(self) -> None:
        try:
            size = self.path.stat().st_size
            with open(self.path, "rb") as f:
                head = f.read(HEADER_LENGTH_BYTES)
                if len(head) < HEADER_LENGTH_BYTES:
                    raise self._fail(f"file is {size} bytes, too short to hold the 8-byte safetensors header length (truncated?)")
                (n_header,) = struct.unpack("<Q", head)
                if n_header > MAX_HEADER_BYTES:
                    raise self._fail(f"header length {n_header} exceeds the format's limit of {MAX_HEADER_BYTES} bytes (not a safetensors file?)")
                if HEADER_LENGTH_BYTES + n_header > size:
                    raise self._fail(f"header length {n_header} runs past the end of the {size}-byte file (truncated or not a safetensors file)")
                raw = f.read(n_header)
        except OSError as e:
            raise self._fail(f"cannot read: {e.strerror or e}") from None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise self._fail(f"header is not valid UTF-8 (byte {e.start})") from None
        if not text.startswith("{"):
            raise self._fail("header does not start with '{' (not a safetensors file?)")
        try:
            header = json.loads(text, object_pairs_hook=_unique_keys)
        except json.JSONDecodeError as e:
            raise self._fail(f"header is not valid JSON: {e.msg} at character {e.pos}") from None
        except _DuplicateKey as e:
            raise self._fail(f"header has the key {e.args[0]!r} twice") from None
        except RecursionError:
            raise self._fail("header JSON is nested too deeply") from None
        if not isinstance(header, dict):
            raise self._fail("header is not a JSON object")
        buffer_start = HEADER_LENGTH_BYTES + n_header
        buffer_len = size - buffer_start

        meta = header.pop("__metadata__", None)
        if meta is not None:
            if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
                raise self._fail("__metadata__ must map strings to strings")
            self.metadata = meta

        spans: list[tuple[int, int, str]] = []
        for name, entry in header.items():
            info = self._parse_entry(name, entry, buffer_start, buffer_len)
            spans.append((info.data_offset - buffer_start, info.data_offset - buffer_start + info.n_bytes, name))
            self.tensors[name] = info

        # Contiguity: sorted spans must tile [0, buffer_len) with no overlap and no hole.
        spans.sort()
        expected = 0
        for begin, end, name in spans:
            if begin < expected:
                raise self._fail(f"tensor {name!r}: data_offsets [{begin}, {end}] overlap the previous tensor (ends at {expected})")
            if begin > expected:
                raise self._fail(f"tensor {name!r}: data_offsets start at {begin}, leaving a hole after byte {expected} of the data buffer")
            expected = end
        if expected != buffer_len:
            if expected > buffer_len:  # unreachable: per-entry check catches it; kept for clarity
                raise self._fail("tensor data runs past the end of the file")
            raise self._fail(f"data buffer is {buffer_len} bytes but the tensors cover only {expected} (trailing bytes)")

    def _parse_entry(self, name: object, entry: object, buffer_start: int, buffer_len: int) -> TensorInfo:
        if not isinstance(entry, dict):
            raise self._fail(f"tensor {name!r}: entry is not a JSON object")
        extra = set(entry) - {"dtype", "shape", "data_offsets"}
        if extra:
            raise self._fail(f"tensor {name!r}: unknown keys {sorted(extra)}")
        code = entry.get("dtype")
        dtype = lookup(code) if isinstance(code, str) else None
        if dtype is None:
            raise self._fail(f"tensor {name!r}: unknown dtype {code!r}")
        shape = entry.get("shape")
        if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
            raise self._fail(f"tensor {name!r}: shape must be a list of non-negative integers, got {shape!r}")
        offsets = entry.get("data_offsets")
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
        ):
            raise self._fail(f"tensor {name!r}: data_offsets must be two integers, got {offsets!r}")
        begin, end = offsets
        if begin < 0 or end < begin:
            raise self._fail(f"tensor {name!r}: invalid data_offsets [{begin}, {end}]")
        if end > buffer_len:
            raise self._fail(
                f"tensor {name!r}: data_offsets [{begin}, {end}] run past the end of the {buffer_len}-byte data buffer (truncated file?)"
            )
        numel = 1
        for d in shape:  # Python ints: no wrap-around however hostile the dims
            numel *= d
        expected = numel * dtype.bits // 8
        if end - begin != expected:
            raise self._fail(
                f"tensor {name!r}: shape {shape} of {dtype.code} needs {expected} bytes but data_offsets span {end - begin}"
            )
        return TensorInfo(name, dtype, tuple(shape), self.path, buffer_start + begin, end - begin)

    # -- data -----------------------------------------------------------------------------------
    def _descriptor(self) -> int:
        if self._fd is None:
            try:
                self._fd = os.open(self.path, os.O_RDONLY)
            except OSError as e:
                raise self._fail(f"cannot open: {e.strerror or e}") from None
        return self._fd

    def read_into(self, offset: int, out: np.ndarray) -> None:
        """Fill ``out`` (C-contiguous) with the bytes at absolute ``offset``."""
        if not out.flags.c_contiguous:
            raise ValueError("read_into needs a C-contiguous buffer")
        # Go through uint8: numpy cannot export ml_dtypes arrays (bfloat16, float8) via the buffer protocol.
        view = memoryview(out.reshape(-1).view(np.uint8))
        fd = self._descriptor()
        done = 0
        while done < len(view):
            n = os.preadv(fd, [view[done:]], offset + done)
            if n <= 0:
                raise self._fail(f"file ended while reading bytes {offset + done}.. (changed on disk?)")
            done += n

    def view(self, offset: int, count: int, dtype: np.dtype) -> np.ndarray:
        """A read-only array over ``count`` elements at absolute ``offset``, without copying.

        Pages it touches count towards resident memory until ``release`` drops them; the streaming pass
        releases every range it has finished with, so resident memory stays at a few ranges.
        """
        if self._map is None:
            self._map = mmap.mmap(self._descriptor(), 0, access=mmap.ACCESS_READ)
        return np.frombuffer(self._map, dtype=dtype, count=count, offset=offset)

    def release(self, offset: int, n_bytes: int) -> None:
        """Drop the mapped pages of a byte range from this process (they stay in the OS page cache)."""
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
