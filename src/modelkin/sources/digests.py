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
import queue
import threading
from dataclasses import dataclass
from pathlib import Path

from ..atomic import write_atomic

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
        write_atomic(cache, json.dumps(data).encode("utf-8"))
    except OSError:
        pass  # a read-only home is no reason to fail a comparison


_cache_lock = threading.Lock()  # threads of one process update the cache file one at a time


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
        with _cache_lock:
            data = _load(cache)  # re-read: another process or thread may have added entries meanwhile
            data[real] = {"stamp": stamp, "sha256": digest}
            _save(cache, data)
    return digest


class DigestJobs:
    """The identity records of several models' files, computed on background threads while the caller
    works: ``workers`` threads from the start, more after ``widen`` (when the caller's own work is done and
    the cores are free). One file is hashed by one thread (SHA-256 is sequential), largest files first;
    hashlib releases the GIL, so the threads run beside numpy and compiled kernels.

    ``models`` are ``ModelSource``s: every file their weights are read from is hashed (``data_transports``
    of each weights file), keyed as ``file_records`` keys it (``file_names``).
    """

    def __init__(self, models, use_cache: bool = True, workers: int = 1):
        self._models = list(models)
        self._use_cache = use_cache
        jobs = {}
        for i, m in enumerate(self._models):
            transports = [t for f in m.files for t in f.data_transports()]
            for name, t in zip(m.file_names(), transports, strict=True):
                jobs.setdefault((i, name), t)  # a data file shared by several weights files: hashed once
        jobs = [(i, name, t) for (i, name), t in jobs.items()]
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        for job in sorted(jobs, key=lambda j: -j[2].size):
            self._jobs.put(job)
        self._done: dict[tuple[int, str], FileDigest] = {}
        self._errors: list[BaseException] = []
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self.widen(workers)

    def _work(self) -> None:
        while True:
            try:
                i, name, transport = self._jobs.get_nowait()
            except queue.Empty:
                return
            try:
                record = file_digest(transport, self._use_cache)
            except BaseException as e:  # noqa: BLE001 - handed to the caller by result()
                with self._lock:
                    self._errors.append(e)
                return
            with self._lock:
                self._done[(i, name)] = record

    def widen(self, workers: int) -> None:
        """Run ``workers`` hashing threads in all (more are started only while files are left)."""
        with self._lock:
            while len([t for t in self._threads if t.is_alive()]) < workers and not self._jobs.empty():
                t = threading.Thread(target=self._work, name="modelkin-sha256", daemon=True)
                t.start()
                self._threads.append(t)

    def result(self) -> list[dict[str, FileDigest]]:
        """Per model, in the order given: relative file name -> record (waits for the hashing)."""
        self.widen(1)  # nobody left working (a failed thread) but files remain
        for t in self._threads:
            t.join()
        if self._errors:
            raise self._errors[0]
        return [{name: self._done[(i, name)] for name in m.file_names()} for i, m in enumerate(self._models)]

    def cancel(self) -> None:
        """Hash nothing more (files being hashed finish on their daemon threads)."""
        while True:
            try:
                self._jobs.get_nowait()
            except queue.Empty:
                return
