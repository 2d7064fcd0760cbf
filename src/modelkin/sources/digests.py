"""Identity of weights files: sha256, with a cache so a local file is hashed once, not on every comparison.

Hashing runs at about 1 GB/s per core — slower than the comparison itself — so digests are remembered per
file, keyed by (real path, size, modification time in ns, inode): a file that changes in any of those is
hashed again. A file's name is never taken as its digest (a blob named by a sha256 may hold anything):
every local file is hashed. A remote file is not downloaded to be hashed: its record carries the sha256
and ETag the server reported, marked as such (``source``).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

HASH_BLOCK_BYTES = 8 << 20


@dataclass(frozen=True, slots=True)
class FileDigest:
    """One weights file's identity as reported in the JSON (``a.files``)."""

    size: int
    sha256: str | None
    sha256_source: str  # "hashed" (computed here from the bytes), "hub" (reported by the server), "none"
    etag: str | None = None


def file_digest(transport, use_cache: bool = True) -> FileDigest:
    """The identity record of a transport's file: hashed if local, as reported if remote."""
    if transport.remote:
        sha = getattr(transport, "reported_sha256", None)
        return FileDigest(transport.size, sha, "hub" if sha else "none", getattr(transport, "etag", None))
    return FileDigest(transport.size, sha256_file(transport.path, use_cache), "hashed")


def cache_path() -> Path:
    root = os.environ.get("MODELKIN_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "modelkin")
    return Path(root) / "sha256.json"


def _key(path: Path) -> tuple[str, list[int]]:
    real = os.path.realpath(path)
    st = os.stat(real)
    return real, [st.st_size, st.st_mtime_ns, st.st_ino]


def _load(cache: Path) -> dict:
    try:
        data = json.loads(cache.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _save(cache: Path, data: dict) -> None:
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache.parent, prefix=".sha256.")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f)
        os.replace(tmp, cache)
    except OSError:
        pass  # a read-only home is no reason to fail a comparison


def sha256_file(path: Path, use_cache: bool = True) -> str:
    real, stamp = _key(path)
    cache = cache_path()
    data = _load(cache) if use_cache else {}
    hit = data.get(real)
    if isinstance(hit, dict) and hit.get("stamp") == stamp and isinstance(hit.get("sha256"), str):
        return hit["sha256"]
    h = hashlib.sha256()
    with open(real, "rb") as f:
        while block := f.read(HASH_BLOCK_BYTES):
            h.update(block)
    digest = h.hexdigest()
    if use_cache:
        data = _load(cache)  # re-read: another process may have added entries meanwhile
        data[real] = {"stamp": stamp, "sha256": digest}
        _save(cache, data)
    return digest
