"""Reading the safetensors format: header parsing with the format's exact rules, lazy ranged reads.

The rules (from the format specification): an 8-byte little-endian header length N, then N bytes of
UTF-8 JSON starting with ``{``, then the byte buffer. Each tensor entry has ``dtype``, ``shape`` and
``data_offsets`` [BEGIN, END) relative to the start of the buffer; entries are contiguous and together
cover the buffer exactly; END - BEGIN equals numel * bits / 8. ``__metadata__`` maps strings to strings.
Every violation becomes one FormatError naming the file.

The header is read through a ``Transport`` (a local file or HTTP ranges); tensor data is read by the
``WeightFile`` base class, never mapped or loaded whole here.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

from .dtypes import lookup
from .tensors import TensorInfo
from .transport import LocalFile, Transport
from .weightfile import WeightFile

MAX_HEADER_BYTES = 100_000_000  # the format's limit
HEADER_LENGTH_BYTES = 8
# Remote files: the first read is 1/4096 of the file, at most 256 KB (a 1 GB shard's header is a few tens of
# KB; a file of a few MB wastes no more than a few hundred bytes when its header is shorter).
HEADER_PROBE_SHIFT = 12
HEADER_PROBE_MAX = 256 << 10


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


class SafetensorsFile(WeightFile):
    """One ``.safetensors`` file: validated header; its data is read by ``WeightFile``."""

    format_name = "safetensors"

    def __init__(self, source: str | Path | Transport):
        super().__init__(LocalFile(source) if isinstance(source, (str, Path)) else source)
        self._parse_header()

    # -- header ---------------------------------------------------------------------------------
    def _read(self, offset: int, n: int) -> bytes:
        buf = np.empty(n, np.uint8)
        self.transport.read_into(offset, buf)
        return buf.tobytes()

    def _parse_header(self) -> None:
        size = self.transport.size
        if size < HEADER_LENGTH_BYTES:
            raise self._fail(f"file is {size} bytes, too short to hold the 8-byte safetensors header length (truncated?)")
        # A remote file's first read also takes the header's likely bytes: one round trip instead of two.
        probe = HEADER_LENGTH_BYTES
        if self.transport.remote:
            probe = min(size, max(probe, size >> HEADER_PROBE_SHIFT), HEADER_PROBE_MAX)
        head = self._read(0, probe)
        (n_header,) = struct.unpack("<Q", head[:HEADER_LENGTH_BYTES])
        if n_header > MAX_HEADER_BYTES:
            raise self._fail(f"header length {n_header} exceeds the format's limit of {MAX_HEADER_BYTES} bytes (not a safetensors file?)")
        if HEADER_LENGTH_BYTES + n_header > size:
            raise self._fail(f"header length {n_header} runs past the end of the {size}-byte file (truncated or not a safetensors file)")
        raw = head[HEADER_LENGTH_BYTES : HEADER_LENGTH_BYTES + n_header]
        if len(raw) < n_header:
            raw += self._read(len(head), HEADER_LENGTH_BYTES + n_header - len(head))
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
        expected = dtype.n_bytes(numel)
        if expected is None:
            raise self._fail(f"tensor {name!r}: {numel} elements of {dtype.code} do not fill whole bytes")
        if end - begin != expected:
            raise self._fail(
                f"tensor {name!r}: shape {shape} of {dtype.code} needs {expected} bytes but data_offsets span {end - begin}"
            )
        return TensorInfo(name, dtype, tuple(shape), self.name, buffer_start + begin, end - begin)
