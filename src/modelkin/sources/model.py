"""A model as modelkin sees it: a set of named tensors spread over weight files, plus its config.

``ModelSource`` is what every later stage reads from. It hands out tensor *descriptions* freely and tensor
*data* only in caller-sized pieces, so nothing downstream can load a whole model by accident.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from .digests import sha256_file
from .safetensors_format import SafetensorsFile, TensorInfo


def decode(raw: np.ndarray, info: TensorInfo, out: np.ndarray | None = None) -> np.ndarray:
    """Stored values -> float array (float32, or float64 for 64-bit types). Exact for every format.

    ``out`` (uint32 scratch of at least ``raw.size``) lets a hot loop decode bfloat16 without allocating.
    """
    if info.dtype.code == "BF16":
        # bfloat16 is the top half of a float32: widening the bits is exact and much faster than a cast.
        if out is None:
            bits = raw.view(np.uint16).astype(np.uint32)
        else:
            bits = out[: raw.size]
            np.copyto(bits, raw.view(np.uint16))
        bits <<= 16
        return bits.view(np.float32)
    return raw.astype(info.dtype.decoded, copy=False)


@dataclass
class ModelSource:
    location: str  # what the user gave (path or hub id)
    root: Path  # the file or folder the weights were found in
    files: tuple[SafetensorsFile, ...]
    tensors: dict[str, TensorInfo]
    config: dict | None = None
    config_path: Path | None = None
    extra_files: dict[str, Path] = field(default_factory=dict)  # tokenizer.json etc., by name
    _by_path: dict[Path, SafetensorsFile] = field(default_factory=dict, init=False, repr=False)
    _digests: dict[str, str] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self._by_path = {f.path: f for f in self.files}

    # -- data access ----------------------------------------------------------------------------
    def read_raw(self, info: TensorInfo, start: int = 0, count: int | None = None, out: np.ndarray | None = None) -> np.ndarray:
        """Elements [start, start+count) of a tensor in its storage dtype, flattened."""
        if info.strided:
            raise ValueError(f"{info.name}: a strided view is read by rows, not as one range")
        if count is None:
            count = info.numel - start
        if start < 0 or count < 0 or start + count > info.numel:
            raise IndexError(f"{info.name}: elements [{start}, {start + count}) out of range {info.numel}")
        if out is None:
            out = np.empty(count, dtype=info.dtype.storage)
        else:
            out = out[:count]
        if count:
            self._by_path[info.file].read_into(info.data_offset + start * info.dtype.storage.itemsize, out)
        return out

    def read(self, info: TensorInfo, start: int = 0, count: int | None = None) -> np.ndarray:
        """Elements [start, start+count) decoded to float."""
        return decode(self.read_raw(info, start, count), info)

    def _read_span(self, info: TensorInfo, element: int, out: np.ndarray) -> None:
        """Raw elements at index ``element`` of the underlying stored matrix (strided views included)."""
        self._by_path[info.file].read_into(info.data_offset + element * info.dtype.storage.itemsize, out)

    def read_block(self, info: TensorInfo, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        """Rows r0:r1, columns c0:c1 of a 2-D tensor (stored orientation), decoded; one read per row."""
        stride = info.row_stride or info.shape[1]
        raw = np.empty((r1 - r0, c1 - c0), dtype=info.dtype.storage)
        for i, r in enumerate(range(r0, r1)):
            self._read_span(info, r * stride + info.col_offset + c0, raw[i])
        return decode(raw.reshape(-1), info).reshape(r1 - r0, c1 - c0)

    def view(self, info: TensorInfo, start: int, count: int) -> np.ndarray:
        """Elements [start, start+count) in storage dtype, mapped rather than copied (see ``release``)."""
        return self._by_path[info.file].view(info.data_offset + start * info.dtype.storage.itemsize, count, info.dtype.storage)

    def release(self, info: TensorInfo, start: int, count: int) -> None:
        item = info.dtype.storage.itemsize
        self._by_path[info.file].release(info.data_offset + start * item, count * item)

    def read_rows(self, info: TensorInfo, rows: np.ndarray) -> np.ndarray:
        """Selected rows (first axis) of a tensor, decoded, shape (len(rows), prod(shape[1:]))."""
        row_len = info.numel // info.shape[0] if info.shape and info.shape[0] else 0
        raw = np.empty((len(rows), row_len), dtype=info.dtype.storage)
        if info.strided:  # one read per row of the window
            for i, r in enumerate(rows):
                self._read_span(info, int(r) * info.row_stride + info.col_offset, raw[i])
            return decode(raw.reshape(-1), info).reshape(len(rows), row_len)
        # Consecutive rows are read in one request: sorted samples of a tall tensor are often adjacent.
        order = np.argsort(rows, kind="stable")
        i = 0
        while i < len(order):
            j = i + 1
            while j < len(order) and rows[order[j]] == rows[order[j - 1]] + 1 and order[j] == order[j - 1] + 1:
                j += 1
            first = int(rows[order[i]])
            block = raw[order[i] : order[i] + (j - i)]
            self.read_raw(info, first * row_len, (j - i) * row_len, out=block.reshape(-1))
            i = j
        return decode(raw, info).reshape(len(rows), row_len)

    def iter_chunks(self, info: TensorInfo, chunk_elems: int) -> Iterator[tuple[int, np.ndarray]]:
        """(start, decoded chunk) pairs covering the tensor in order."""
        for start in range(0, info.numel, chunk_elems):
            yield start, self.read(info, start, min(chunk_elems, info.numel - start))

    # -- identity -------------------------------------------------------------------------------
    def file_digests(self, use_cache: bool = True) -> dict[str, str]:
        """sha256 of every weights file, by path relative to the root (see ``digests`` for the cache)."""
        if self._digests is None:
            self._digests = {self._relative(f.path): sha256_file(f.path, use_cache) for f in self.files}
        return self._digests

    def _relative(self, path: Path) -> str:
        base = self.root if self.root.is_dir() else self.root.parent
        try:
            return str(path.relative_to(base))
        except ValueError:
            return os.path.basename(path)

    @property
    def n_bytes(self) -> int:
        return sum(t.n_bytes for t in self.tensors.values())

    def close(self) -> None:
        for f in self.files:
            f.close()

    def __enter__(self) -> "ModelSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
