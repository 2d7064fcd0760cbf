"""Making a fingerprint: the rows of a model that modelkin's sampled read mode reads, in one small file.

Which rows? Those the sampled compare reads from a model, found by running that compare (the model against
itself, in sampled mode) with every read recorded, joined with each tensor's own key-seeded sample (so a
partner that pairs tensors differently still finds its rows). Reads that depend on the partner and fall
outside both (a re-mapped vocabulary's token rows, a fused matrix split to meet separate q/k/v) are not
held; a comparison against the fingerprint leaves such pairs out and says so.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import struct
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .. import __version__
from ..atomic import atomic_file
from ..sampling import DEFAULT_SAMPLE, SamplePolicy, sample_rows
from ..sources import ModelSource, open_model
from ..sources.fingerprint_format import FORMAT_NAME, MAGIC_KEY, VERSION, policy_to_dict
from ..sources.tensors import TensorInfo


@dataclass(frozen=True, slots=True)
class FingerprintSummary:
    path: str
    n_bytes: int  # size of the fingerprint file
    n_parameters: int  # parameters of the model
    model_bytes: int  # bytes of the model's tensors
    kept_bytes: int  # payload bytes (rows kept)
    n_tensors: int
    n_whole: int  # tensors kept whole
    seconds: float


class _Recorder:
    """Marks, per stored tensor, the rows any read touched."""

    def __init__(self, src: ModelSource):
        self.marks: dict[str, np.ndarray] = {}
        self._undo = []
        for f in src.files:
            for meth in ("read_raw", "read_elements", "stream_elements"):
                orig = getattr(f, meth)
                setattr(f, meth, self._wrap(orig))
                self._undo.append((f, meth))

    def mark(self, info: TensorInfo, start: int, count: int) -> None:
        n = info.shape[0] if info.shape else 1
        m = self.marks.setdefault(info.name, np.zeros(n, bool))
        if not info.shape or count <= 0:
            m[:] = True
            return
        row_len = info.numel // n if n else 0
        if row_len:
            m[start // row_len: (start + count - 1) // row_len + 1] = True

    def _wrap(self, orig):
        def read(info, start, count, *args, **kw):
            self.mark(info, start, count)
            return orig(info, start, count, *args, **kw)
        return read

    def close(self) -> None:
        for f, meth in self._undo:
            f.__dict__.pop(meth, None)


def rows_to_keep(src: ModelSource, policy: SamplePolicy, threads: int = 2) -> dict[str, np.ndarray | None]:
    """Stored tensor name -> sorted rows to keep (None: the whole tensor)."""
    from ..alignment.reads import sample_key
    from ..api import compare
    from ..inventory import build_inventory

    rec = _Recorder(src)
    try:
        compare(src, src, read_mode="sampled", sample_policy=policy, hash_files=False, threads=threads)
    finally:
        rec.close()
    keys = {e.info.name: sample_key(e) for e in build_inventory(src).tensors}
    out: dict[str, np.ndarray | None] = {}
    for name, info in src.tensors.items():
        m = rec.marks.get(name)
        m = np.zeros(info.shape[0] if info.shape else 1, bool) if m is None else m
        if info.shape and info.n_bytes:
            own = sample_rows(keys.get(name, name), info.shape[0], info.n_bytes, policy)
            if own is None:
                m[:] = True
            else:
                m[own] = True
        else:
            m[:] = True
        out[name] = None if m.all() else np.flatnonzero(m)
    return out


def _runs(rows: np.ndarray) -> list[list[int]]:
    if len(rows) == 0:
        return []
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    starts = np.concatenate([[0], breaks])
    ends = np.concatenate([breaks, [len(rows)]])
    return [[int(rows[s]), int(e - s)] for s, e in zip(starts, ends)]


def _payload(src: ModelSource, info: TensorInfo, rows: np.ndarray | None) -> tuple[str, np.ndarray]:
    """(dtype code, stored bytes of the kept rows): plain types as stored, block/packed types decoded to F32."""
    plain = not info.dtype.is_block and not info.dtype.packed
    f = src.file_of(info)
    row_len = info.numel // info.shape[0] if info.shape and info.shape[0] else info.numel
    spans = [(0, info.numel)] if rows is None else [(r0 * row_len, n * row_len) for r0, n in _runs(rows)]
    parts = []
    for start, count in spans:
        if count == 0:
            continue
        if plain:
            parts.append(np.ascontiguousarray(f.read_raw(info, start, count)).view(np.uint8).reshape(-1))
        else:
            parts.append(np.asarray(f.read_elements(info, start, count), dtype="<f4").view(np.uint8).reshape(-1))
    data = np.concatenate(parts) if parts else np.empty(0, np.uint8)
    return (info.dtype.code if plain else "F32"), data


def _vocab(src: ModelSource) -> dict[str, int] | None:
    from ..alignment.vocab import load_vocab

    return load_vocab(src)


def make_fingerprint(location, out, *, revision: str | None = None, policy: SamplePolicy = DEFAULT_SAMPLE,
                     threads: int = 2, hash_files: bool = True) -> FingerprintSummary:
    """Read ``location`` (local path, Hub id or URL) in sampled mode and write its fingerprint to ``out``."""
    import time

    t0 = time.perf_counter()
    src = location if isinstance(location, ModelSource) else open_model(location, revision)
    try:
        keep = rows_to_keep(src, policy, threads)
        vocab = _vocab(src)
        files = {k: asdict(v) for k, v in src.file_records().items()} if hash_files else None
        tensors, payload_header, blobs, offset = {}, {}, [], 0
        n_params = sum(i.numel for i in src.tensors.values())
        for i, (name, info) in enumerate(sorted(src.tensors.items())):
            rows = keep[name]
            code, data = _payload(src, info, rows)
            pname = f"p{i}"
            pshape = list(info.shape) if rows is None else [len(rows)] + list(info.shape[1:])
            payload_header[pname] = {"dtype": code, "shape": pshape, "data_offsets": [offset, offset + data.size]}
            blobs.append(data)
            offset += data.size
            tensors[name] = {"dtype": code, "source_dtype": info.dtype.code, "shape": list(info.shape), "payload": pname,
                             "rows": None if rows is None else _runs(rows)}
        header = {
            "format": FORMAT_NAME, "version": VERSION, "policy": policy_to_dict(policy),
            "source": {"location": str(src.location), "revision": src.revision, "files": files},
            "config": src.config, "vocab": vocab,
            "vocab_sha256": None if vocab is None else hashlib.sha256(
                json.dumps(sorted(vocab.items()), ensure_ascii=False).encode()).hexdigest(),
            "tensors": tensors, "modelkin_version": __version__,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "parameters": n_params, "claims": read_claims(src),
        }
        n_bytes = write_safetensors(out, payload_header, blobs, {MAGIC_KEY: json.dumps(header, separators=(",", ":"))})
        return FingerprintSummary(str(out), n_bytes, n_params, src.n_bytes, offset, len(tensors),
                                  sum(1 for r in keep.values() if r is None), time.perf_counter() - t0)
    finally:
        if src is not location:
            src.close()


def write_safetensors(out, entries: dict, blobs: list[np.ndarray], metadata: dict[str, str]) -> int:
    """Write a safetensors file atomically (a temporary file in the same folder, then renamed)."""
    head = dict(entries)
    head["__metadata__"] = metadata
    text = json.dumps(head, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)
    out = Path(out)
    with atomic_file(out, durable=True) as fh:
        fh.write(struct.pack("<Q", len(text)))
        fh.write(text)
        for b in blobs:
            fh.write(memoryview(b))
    return out.stat().st_size


def _front_matter(text: str) -> dict[str, list[str]]:
    """``key: value`` and ``key:`` + ``- item`` lines of a model card's YAML front matter (no YAML library
    needed for these two keys; anything else is ignored)."""
    if not text.startswith("---"):
        return {}
    end = text.find("\n---", 3)
    out: dict[str, list[str]] = {}
    key = None
    for line in text[3: end if end > 0 else len(text)].splitlines():
        if not line.strip():
            continue
        if line.startswith((" ", "-", "\t")) and key is not None:
            item = line.strip().lstrip("-").strip().strip("'\"")
            if item:
                out[key].append(item)
            continue
        k, _, v = line.partition(":")
        key = k.strip()
        out[key] = [v.strip().strip("'\"")] if v.strip() else []
    return out


def read_claims(src: ModelSource) -> dict:
    """The parents and license a model claims: ``base_model`` and ``license`` of its model card (README.md
    front matter, local folders) or config. Recorded as claims, compared with the evidence by ``audit``."""
    bases: list[str] = []
    lic = None
    cfg = src.config or {}
    for k in ("base_model", "base_model_name_or_path"):
        v = cfg.get(k)
        bases += [v] if isinstance(v, str) else [x for x in v if isinstance(x, str)] if isinstance(v, list) else []
    root = Path(str(src.root)) if not src.remote else None
    card = None
    if root is not None:
        folder = root if root.is_dir() else root.parent
        if (folder / "README.md").is_file():
            try:
                card = (folder / "README.md").read_text(encoding="utf-8", errors="replace")[:1_000_000]
            except OSError:
                card = None
    if card:
        fm = _front_matter(card)
        bases += fm.get("base_model", [])
        lic = (fm.get("license") or [None])[0]
    return {"base_model": list(dict.fromkeys(b for b in bases if b))[:64], "license": lic}
