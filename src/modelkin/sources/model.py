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

from .digests import FileDigest, file_digest
from .tensors import TensorInfo
from .weightfile import WeightFile


@dataclass
class ModelSource:
    location: str  # what the user gave (path, URL or hub id)
    root: Path | str  # the file or folder the weights were found in (a URL for remote models)
    files: tuple[WeightFile, ...]
    tensors: dict[str, TensorInfo]
    config: dict | None = None
    config_path: Path | None = None
    extra_files: dict[str, Path] = field(default_factory=dict)  # tokenizer.json etc., by name (local copies)
    revision: str | None = None  # commit the files were read at (remote sources)
    _by_name: dict[str, WeightFile] = field(default_factory=dict, init=False, repr=False)
    _digests: dict[str, FileDigest] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self._by_name = {f.name: f for f in self.files}

    @property
    def remote(self) -> bool:
        return any(f.transport.remote for f in self.files)

    def embedded_vocab(self) -> dict[str, int] | None:
        """Token string -> id from a tokenizer stored inside a weights file (GGUF), if any."""
        return next((v for f in self.files if (v := f.embedded_vocab()) is not None), None)

    def file_of(self, info: TensorInfo) -> WeightFile:
        return self._by_name[info.file]

    # -- data access ----------------------------------------------------------------------------
    # Element ranges are of the tensor flattened in its stored orientation. A view (``TensorInfo.rows``
    # or ``columns``) is turned into ranges of its stored base here; nothing above sources/ sees how.
    def _row_len(self, info: TensorInfo) -> int:
        return info.numel // info.shape[0] if info.shape and info.shape[0] else 0

    def _contiguous(self, info: TensorInfo, start: int, count: int) -> tuple[TensorInfo, int]:
        """(stored tensor, start element there) of a contiguous element range of ``info``."""
        if count < 0 or start < 0 or start + count > info.numel:
            raise IndexError(f"{info.name}: elements [{start}, {start + count}) out of range {info.numel}")
        if info.sampled:
            raise ValueError(f"{info.name}: a sample is read by rows, not as one range")
        if info.strided:
            raise ValueError(f"{info.name}: a window of columns is read by rows, not as one range")
        if info.base is None:
            return info, start
        return info.base, info.row0 * self._row_len(info.base) + start

    def read_raw(self, info: TensorInfo, start: int = 0, count: int | None = None, out: np.ndarray | None = None) -> np.ndarray:
        """Elements [start, start+count) of a tensor in its storage dtype, flattened."""
        count = info.numel - start if count is None else count
        stored, s = self._contiguous(info, start, count)
        return self.file_of(stored).read_raw(stored, s, count, out)

    def read(self, info: TensorInfo, start: int = 0, count: int | None = None) -> np.ndarray:
        """Elements [start, start+count) decoded to float."""
        count = info.numel - start if count is None else count
        if info.sampled:
            return self._read_sample(info, start, count)
        stored, s = self._contiguous(info, start, count)
        return self.file_of(stored).read_elements(stored, s, count)

    def stream(self, info: TensorInfo, start: int, count: int, scratch: np.ndarray | None = None) -> Iterator[np.ndarray]:
        """Decoded consecutive pieces of elements [start, start+count), each valid until the next; the
        fastest way through a long range (a local file is mapped and released piece by piece)."""
        if info.sampled:
            from .weightfile import STREAM_PIECE_ELEMS

            flat = self._read_sample(info, start, count)
            return (flat[p : p + STREAM_PIECE_ELEMS] for p in range(0, count, STREAM_PIECE_ELEMS))
        stored, s = self._contiguous(info, start, count)
        return self.file_of(stored).stream_elements(stored, s, count, scratch)

    def stores_plainly(self, info: TensorInfo) -> bool:
        """Whether ``stream_stored`` of this tensor, decoded by ``dtypes.decode``, gives its values: a
        contiguous range of a plainly stored tensor (see ``WeightFile.stores_plainly``)."""
        return not info.sampled and not info.strided and self.file_of(info.stored).stores_plainly(info.stored)

    def stream_stored(self, info: TensorInfo, start: int, count: int, piece_elems: int) -> Iterator[np.ndarray]:
        """Elements [start, start+count) in their storage dtype, ``piece_elems`` per piece, each valid until
        the next (plain element dtypes only): for passes that decode as they compute."""
        stored, s = self._contiguous(info, start, count)
        return self.file_of(stored).stream_stored(stored, s, count, piece_elems)

    def _read_sample(self, info: TensorInfo, start: int, count: int) -> np.ndarray:
        if count < 0 or start < 0 or start + count > info.numel:
            raise IndexError(f"{info.name}: elements [{start}, {start + count}) out of range {info.numel}")
        row_len = self._row_len(info)
        if count == 0 or row_len == 0:
            return np.empty(0, np.float32)
        r0, r1 = start // row_len, (start + count - 1) // row_len + 1
        rows = self.read_rows(info, np.arange(r0, r1)).reshape(-1)
        return rows[start - r0 * row_len : start - r0 * row_len + count]

    def _row_spans(self, info: TensorInfo, rows: np.ndarray) -> list[tuple[int, int, int]]:
        """(first position in ``rows``, number of rows, start element in the stored tensor) per read:
        consecutive rows are read in one request (a remote block is one request)."""
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) and (rows.min() < 0 or rows.max() >= info.shape[0]):
            raise IndexError(f"{info.name}: rows out of range {info.shape[0]}")
        stored = info.stored
        stored_len = self._row_len(stored)
        if info.gather is not None:
            rows = np.asarray(info.gather, dtype=np.int64)[rows]
        else:
            rows = rows + info.row0
        if not len(rows):
            return []
        if info.strided:  # a window of columns: every row is its own range
            cuts = np.arange(len(rows) + 1)
        else:  # runs of consecutive rows
            cuts = np.concatenate(([0], np.flatnonzero(np.diff(rows) != 1) + 1, [len(rows)]))
        starts = rows[cuts[:-1]] * stored_len + info.col0
        return [(int(i), int(j - i), int(s)) for i, j, s in zip(cuts[:-1], cuts[1:], starts)]

    def read_rows(self, info: TensorInfo, rows: np.ndarray) -> np.ndarray:
        """Selected rows (first axis) of a tensor, decoded, shape (len(rows), prod(shape[1:]))."""
        row_len = self._row_len(info)
        stored = info.stored
        f = self.file_of(stored)
        decoded = np.float64 if info.dtype.decoded == np.float64 else np.float32
        if hasattr(f, "gather_rows") and not info.strided and len(rows):  # a small file held in memory
            rows = np.asarray(rows, np.int64)
            if rows.min() < 0 or rows.max() >= info.shape[0]:
                raise IndexError(f"{info.name}: rows out of range {info.shape[0]}")
            got = f.gather_rows(stored, np.asarray(info.gather, np.int64)[rows] if info.gather is not None else rows + info.row0)
            if got is not None:
                return got.reshape(len(rows), row_len).astype(decoded, copy=False)
        out = np.empty((len(rows), row_len), dtype=decoded)
        for pos, n, start in self._row_spans(info, rows):
            out[pos : pos + n] = f.read_elements(stored, start, n * row_len).reshape(n, row_len)
        return out

    def read_block(self, info: TensorInfo, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        """Rows r0:r1, columns c0:c1 of a 2-D tensor (stored orientation), decoded."""
        return self.read_rows(info.columns(c0, c1), np.arange(r0, r1))

    def prefetch_rows(self, requests: list[tuple[TensorInfo, np.ndarray]], background: bool = False) -> None:
        """Hint: these rows will be read soon (a remote source fetches them together, in parallel).
        ``background``: return at once and fetch them beside the reads that follow (a full read: the reads
        start as their bytes arrive instead of after the last one)."""
        by_file: dict[str, list] = {}
        for info, rows in requests:
            row_len = self._row_len(info)
            for _, n, start in self._row_spans(info, rows):
                by_file.setdefault(info.stored.file, []).append((info.stored, start, n * row_len))
        for name, spans in by_file.items():
            f = self._by_name[name]
            stats = getattr(f.transport, "stats", None)
            if stats is not None:
                stats.planned += sum(i.dtype.n_bytes(c) or 0 for i, _, c in spans)
            if background and hasattr(f.transport, "in_background"):
                with f.transport.in_background():
                    f.prefetch(spans)
            else:
                f.prefetch(spans)

    def unfetched_bytes(self, info: TensorInfo) -> int:
        """Bytes that reading all of ``info`` would still fetch: all of them from a local file (a read costs its
        bytes), from a remote one what its cache does not hold yet."""
        stored = info.stored
        missing = getattr(self.file_of(stored).transport, "missing_bytes", None)
        if missing is None or not info.shape or not info.n_bytes or stored.dtype.is_block or stored.dtype.bits % 8:
            return info.n_bytes
        row_bytes = self._row_len(info) * stored.dtype.bits // 8
        return missing([(stored.data_offset + start * stored.dtype.bits // 8, n * row_bytes)
                        for _, n, start in self._row_spans(info, np.arange(info.shape[0]))])

    def row_products(self, info: TensorInfo, rows: np.ndarray, basis: TensorInfo, basis_rows: np.ndarray) -> np.ndarray | None:
        """Rows ``rows`` of matrix ``info`` times rows ``basis_rows`` of matrix ``basis``, transposed (float32
        [len(rows), len(basis_rows)]), where a file holds them computed (a fingerprint's ``products``); None
        otherwise: read the rows and multiply."""
        if info.base is not None or basis.base is not None:  # views of fused or sampled tensors: never held
            return None
        f = self.file_of(info)
        if not hasattr(f, "row_products") or self.file_of(basis) is not f:
            return None
        return f.row_products(info, np.asarray(rows, np.int64), basis, np.asarray(basis_rows, np.int64))

    def hold_fetches(self, on: bool) -> None:
        """While on, a read of remote bytes not fetched yet raises ``MissingRowsError`` instead of fetching them
        (a byte cap: a step that needs more than was fetched for it is skipped, as for a fingerprint)."""
        for f in self.files:
            for t in f.data_transports():
                if hasattr(t, "held_only"):
                    t.held_only = on

    def iter_chunks(self, info: TensorInfo, chunk_elems: int) -> Iterator[tuple[int, np.ndarray]]:
        """(start, decoded chunk) pairs covering the tensor in order."""
        for start in range(0, info.numel, chunk_elems):
            yield start, self.read(info, start, min(chunk_elems, info.numel - start))

    def covers(self, info: TensorInfo) -> bool:
        """Whether every row ``info`` reads is held (a fingerprint holds some rows only; files hold all)."""
        stored = info.stored
        f = self.file_of(stored)
        if not hasattr(f, "covers") or not info.shape:
            return True
        if info.gather is not None:
            return f.covers(stored, np.unique(np.asarray(info.gather, dtype=np.int64)))
        return f.covers(stored, np.arange(info.row0, info.row0 + info.shape[0]))  # sorted, distinct

    # -- identity -------------------------------------------------------------------------------
    def file_records(self, use_cache: bool = True) -> dict[str, FileDigest]:
        """Identity of every file the weights are read from (weights files and the data files they refer
        to, such as ONNX external data), by path relative to the root: sha256 (hashed locally, cached by
        stat; or as the Hub reports it for remote files) and size (see ``digests``)."""
        if self._digests is None:
            self._digests = {self._relative(t): file_digest(t, use_cache) for f in self.files for t in f.data_transports()}
        return self._digests

    def file_names(self) -> list[str]:
        """The names ``file_records`` keys its records by, without hashing anything."""
        return [self._relative(t) for f in self.files for t in f.data_transports()]

    def file_digests(self, use_cache: bool = True) -> dict[str, str | None]:
        """sha256 of every weights file, by path relative to the root."""
        return {k: v.sha256 for k, v in self.file_records(use_cache).items()}

    def relative_name(self, f: WeightFile) -> str:
        return self._relative(f.transport)

    def _relative(self, transport) -> str:
        if transport.remote:
            return getattr(transport, "relative_name", os.path.basename(transport.name))
        root = Path(self.root)
        base = root if root.is_dir() else root.parent
        try:
            return str(Path(getattr(transport, "path", transport.name)).relative_to(base))
        except ValueError:
            return os.path.basename(transport.name)

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
