"""sha256 of weights files, with a cache so a file is hashed once, not on every comparison.

Hashing runs at about 1 GB/s per core — slower than the comparison itself — so digests are remembered per
file, keyed by (real path, size, modification time in ns, inode): a file that changes in any of those is
hashed again. A file inside a Hugging Face cache whose blob is named by its sha256 needs no hashing at all.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path

HASH_BLOCK_BYTES = 8 << 20
_SHA256_NAME = re.compile(r"[0-9a-f]{64}")


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
    blob = os.path.basename(real)
    if _SHA256_NAME.fullmatch(blob) and os.sep + "blobs" + os.sep in real:
        return blob  # content-addressed by the Hub cache
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
