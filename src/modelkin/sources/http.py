"""HTTP ranges as a transport: a remote file read piece by piece, never downloaded whole.

``HttpFile`` answers the ``Transport`` protocol with ``Range: bytes=a-b`` requests made with
huggingface_hub's HTTP library (httpx), as its own session makes them: its headers (token, user agent),
redirects followed (the Hub answers a resolve URL with a redirect to its content store), proxies and
certificates from the environment. Ranges are fetched by one process-wide pool of threads, each with its
own client and kept-alive connection: one client shared by dozens of threads serialises them on its
connection pool's lock (profiled: most samples of a sampled read's request threads waited on it).
Every response is checked before a byte is used: status 206 (or 200 for a whole-file read), a
``Content-Range`` that names exactly the bytes asked for, a body of exactly that
length, and the file's ETag unchanged since the header was read. Transient failures (dropped connections,
timeouts, 429 and 5xx answers, short bodies) are retried a bounded number of times with backoff; anything
else — 401/403/404/416, a mismatched range, a changed file — is one ``RemoteError`` naming the URL.

Fetched ranges are kept in a ``RangeCache`` on disk, keyed by the file's identity (commit + path on the
Hub, URL + ETag otherwise) and the range, and verified by sha256 whenever they are reused.
"""

from __future__ import annotations

import bisect
import hashlib
import os
import re
import threading
import time
from collections import OrderedDict, deque
from contextlib import contextmanager
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from ..atomic import write_atomic
from ..errors import RemoteError

MAX_CONCURRENT_REQUESTS = 64  # ranges fetched at once, all files together (latency, not bandwidth, bounds sampled reads)
MAX_INFLIGHT_BYTES = 256 << 20  # ... and at most this many bytes of them (a full read's 16 MB requests: 16 at once)
MAX_ATTEMPTS = 5  # one request and up to four retries
BACKOFF_SECONDS = 0.25  # doubled at every retry
READ_TIMEOUT_SECONDS = 30.0
COALESCE_GAP_BYTES = 64 << 10  # ranges closer than this are fetched in one request
STREAM_REQUEST_BYTES = 16 << 20  # one request of a full streaming pass
MAX_REQUEST_BYTES = 16 << 20  # coalesced ranges are split into requests of at most this size
BACKGROUND_STREAMS = 2  # requests in flight per file of a prefetch that runs beside the reads, at least ...
BACKGROUND_BYTES = 32 << 20  # ... and as many more as keep this many bytes in flight (small requests: latency)
RECENT_BYTES = 128 << 20  # cache entries also kept in memory (all files together), most recent first
_SHA256 = re.compile(r"[0-9a-f]{64}")
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(-?\d+)/")
RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


def cache_root() -> Path:
    """``$MODELKIN_CACHE/ranges``, else ``<huggingface_hub cache>/modelkin-ranges``."""
    if os.environ.get("MODELKIN_CACHE"):
        return Path(os.environ["MODELKIN_CACHE"]) / "ranges"
    from huggingface_hub import constants

    return Path(os.environ.get("HF_HUB_CACHE") or constants.HF_HUB_CACHE) / "modelkin-ranges"


class _RecentBytes:
    """The most recently fetched or verified cache entries, kept in memory up to a byte budget shared by
    every file of the process, so that the reads which follow a prefetch need not open the files again.
    Entries belong to one open ``RangeCache`` (a file opened again verifies its entries again) and are
    forgotten when its file is closed."""

    def __init__(self, budget: int):
        self.budget = budget
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple, bytes] = OrderedDict()
        self._bytes = 0

    def get(self, key: tuple) -> bytes | None:
        with self._lock:
            data = self._entries.get(key)
            if data is not None:
                self._entries.move_to_end(key)
            return data

    def put(self, key: tuple, data: bytes) -> None:
        if len(data) > self.budget // 4:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            self._bytes += len(data) - (len(old) if old is not None else 0)
            self._entries[key] = data
            while self._bytes > self.budget:
                _, dropped = self._entries.popitem(last=False)
                self._bytes -= len(dropped)

    def forget(self, owner: int) -> None:
        with self._lock:
            for key in [k for k in self._entries if k[0] == owner]:
                self._bytes -= len(self._entries.pop(key))

    def drop(self, key: tuple) -> None:
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= len(old)


_RECENT = _RecentBytes(RECENT_BYTES)


class RangeCache:
    """Byte ranges of one remote file on disk: ``<root>/<key>/<offset>-<length>-<sha256 of the bytes>``.

    A read is served when cached entries cover it. Entries are written atomically, one file each (the
    checksum in the name: one file to create per fetched range); an entry whose bytes no longer match
    their sha256 is deleted and fetched again.
    """

    def __init__(self, identity: str, root: Path | None = None):
        self.folder = (root or cache_root()) / hashlib.sha256(identity.encode()).hexdigest()[:32]
        self._lock = threading.Lock()
        self._extents: list[tuple[int, int]] | None = None
        self._digests: dict[tuple[int, int], str] = {}
        self._verified: set[tuple[int, int]] = set()

    def _scan(self) -> list[tuple[int, int]]:
        if self._extents is None:
            if self.folder.is_dir():
                for p in self.folder.iterdir():
                    parts = p.name.split("-")
                    if len(parts) == 3 and parts[0].isdigit() and parts[1].isdigit() and _SHA256.fullmatch(parts[2]):
                        self._digests[(int(parts[0]), int(parts[1]))] = parts[2]
            self._extents = sorted(self._digests)
        return self._extents

    def _covering(self, pos: int) -> tuple[int, int] | None:
        """The entry holding byte ``pos`` (call with the lock held)."""
        extents = self._scan()
        i = bisect.bisect_right(extents, (pos, float("inf"))) - 1
        while i >= 0 and extents[i][0] + extents[i][1] <= pos and extents[i][0] > pos - MAX_REQUEST_BYTES:
            i -= 1  # an earlier, longer entry may still cover pos
        return extents[i] if i >= 0 and extents[i][0] <= pos < extents[i][0] + extents[i][1] else None

    def missing(self, offset: int, n: int) -> list[tuple[int, int]]:
        """The parts of [offset, offset+n) no entry holds, in order."""
        with self._lock:
            extents = self._scan()
            # An entry is at most MAX_REQUEST_BYTES long: none starting earlier than this reaches ``offset``.
            return _gaps(offset, n, extents, bisect.bisect_left(extents, (offset - MAX_REQUEST_BYTES, 0)))

    def holds(self, offset: int, n: int) -> bool:
        """Whether entries cover bytes [offset, offset+n) (their contents are checked when read)."""
        pos = offset
        with self._lock:
            while pos < offset + n:
                hit = self._covering(pos)
                if hit is None:
                    return False
                pos = hit[0] + hit[1]
        return True

    def get(self, offset: int, n: int) -> bytes | None:
        """Bytes [offset, offset+n) when cached entries cover them (several adjacent entries may)."""
        parts, pos = [], offset
        while pos < offset + n:
            with self._lock:
                hit = self._covering(pos)
                digest = self._digests.get(hit) if hit else None
            if hit is None or digest is None:
                return None
            piece = self._read(hit, digest, pos - hit[0], min(offset + n, hit[0] + hit[1]) - pos)
            if piece is None:
                return None
            parts.append(piece)
            pos = hit[0] + hit[1]
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def close(self) -> None:
        """Forget the entries held in memory (the files on disk stay)."""
        _RECENT.forget(id(self))

    def _path(self, extent: tuple[int, int], digest: str) -> Path:
        return self.folder / f"{extent[0]}-{extent[1]}-{digest}"

    def _read(self, hit: tuple[int, int], digest: str, start: int, n: int) -> bytes | None:
        path = self._path(hit, digest)
        data = _RECENT.get((id(self), hit, digest))
        if data is not None:  # bytes this process fetched or verified
            return data if (start, n) == (0, len(data)) else data[start : start + n]
        try:
            if hit not in self._verified:  # checked once per process, then read by slices
                data = path.read_bytes()
                if len(data) != hit[1] or hashlib.sha256(data).hexdigest() != digest:
                    self._drop(hit, digest)
                    return None
                with self._lock:
                    self._verified.add(hit)
                _RECENT.put((id(self), hit, digest), data)
                return data if (start, n) == (0, len(data)) else data[start : start + n]
            with open(path, "rb") as f:
                f.seek(start)
                data = f.read(n)
        except OSError:
            data = b""
        if len(data) != n:
            self._drop(hit, digest)
            return None
        return data

    def put(self, offset: int, data: bytes) -> None:
        extent, digest = (offset, len(data)), hashlib.sha256(data).hexdigest()
        try:
            write_atomic(self._path(extent, digest), data)
        except OSError:
            return  # a full or read-only cache is no reason to fail a comparison
        _RECENT.put((id(self), extent, digest), data)
        with self._lock:
            extents = self._scan()
            self._verified.add(extent)  # written from bytes just checked against the server
            old = self._digests.get(extent)
            self._digests[extent] = digest
            if old is None:
                bisect.insort(extents, extent)
        if old is not None and old != digest:
            _RECENT.drop((id(self), extent, old))
            self._unlink(self._path(extent, old))

    @staticmethod
    def _unlink(path: Path) -> None:
        try:
            os.unlink(path)
        except OSError:
            pass

    def _drop(self, extent: tuple[int, int], digest: str) -> None:
        _RECENT.drop((id(self), extent, digest))
        self._unlink(self._path(extent, digest))
        with self._lock:
            if self._digests.get(extent) == digest:
                del self._digests[extent]
                if self._extents is not None and extent in self._extents:
                    self._extents.remove(extent)
            self._verified.discard(extent)


class FetchStats:
    """Bytes and requests of a comparison, shared by its files (thread-safe); ``on_bytes`` for a bar."""

    def __init__(self, on_bytes: Callable[[int], None] | None = None):
        self._lock = threading.Lock()
        self.bytes_fetched = 0
        self.bytes_from_cache = 0
        self.requests = 0
        self.planned = 0  # bytes announced by prefetches (the progress bar's total)
        self.opening_bytes = 0  # bytes fetched to open the models (headers), set once they are open
        self.on_bytes = on_bytes

    def add(self, fetched: int = 0, cached: int = 0, requests: int = 0) -> None:
        with self._lock:
            self.bytes_fetched += fetched
            self.bytes_from_cache += cached
            self.requests += requests
        if self.on_bytes and (fetched or cached):
            self.on_bytes(fetched + cached)


_LOCAL = threading.local()  # each thread's HTTP client
_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()
_TLS = None  # the TLS context every client shares


def _new_client():
    """A client for one fetching thread: huggingface_hub's httpx, redirects followed, proxies from the
    environment; the TLS context (certificates, ``SSL_CERT_FILE``) built once and shared, since building
    it is most of a new client's cost (about 20 ms)."""
    from huggingface_hub.utils import httpx

    global _TLS
    with _POOL_LOCK:
        if _TLS is None:
            _TLS = httpx.create_ssl_context()
    return httpx.Client(follow_redirects=True, timeout=None, verify=_TLS)


def _session():
    """This thread's client: its connection stays open for the thread's next request."""
    client = getattr(_LOCAL, "client", None)
    if client is None:
        client = _LOCAL.client = _new_client()
    return client


def _pool() -> ThreadPoolExecutor:
    """The fetching threads, shared by every file (started once, kept: each keeps its connection)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=MAX_CONCURRENT_REQUESTS, thread_name_prefix="modelkin-http")
        return _POOL


def _forget_after_fork() -> None:  # a forked child has none of its parent's threads or connections
    global _POOL, _LOCAL, _POOL_LOCK
    _POOL, _LOCAL, _POOL_LOCK = None, threading.local(), threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)


def _run_bounded(fn, jobs: list[tuple[int, int]], keep: bool) -> list:
    """``fn(offset, n)`` for every job on the shared pool, with at most ``MAX_INFLIGHT_BYTES`` of them in
    flight (at least one); results in job order when ``keep``, else dropped as they complete."""
    if not jobs:
        return []
    pool = _pool()
    out: list = [None] * len(jobs)
    pending: dict = {}
    inflight = 0
    try:
        for i, (offset, n) in enumerate(jobs):
            while pending and (inflight + n > MAX_INFLIGHT_BYTES or len(pending) >= MAX_CONCURRENT_REQUESTS):
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for f in done:
                    j = pending.pop(f)
                    inflight -= jobs[j][1]
                    result = f.result()
                    if keep:
                        out[j] = result
            pending[pool.submit(fn, offset, n)] = i
            inflight += n
        for f, j in list(pending.items()):
            result = f.result()
            if keep:
                out[j] = result
            del pending[f]
    finally:
        for f in pending:
            f.cancel()
    return out


def _transport_errors() -> tuple[type[BaseException], ...]:
    from huggingface_hub.utils import httpx

    return (httpx.TransportError, httpx.DecodingError, OSError)


class _Background:
    """A prefetch that runs while the file is being read: a full read's whole file, or a sampled read's rows.

    Its requests go out in file order, on the shared fetching threads, as many at a time as keep about
    ``BACKGROUND_BYTES`` in flight (``BACKGROUND_STREAMS`` of a full read's 16 MB requests; up to half the pool
    of a sampled read's small ones, whose time is latency); a read needing a queued request makes it itself at
    once, and a read needing one in flight waits for it: the reads get their bytes first while the background
    keeps the link busy with the rest, and no byte is fetched twice. More ranges may be added (``add``).
    """

    def __init__(self, file: "HttpFile", jobs: list[tuple[int, int]]):
        self.file = file
        self.cond = threading.Condition()
        self.jobs: list[tuple[int, int]] = []
        self.starts: list[int] = []
        self.state: dict[tuple[int, int], str] = {}
        self.order: deque = deque()
        self.stopped = False
        self.drivers: list = []  # on the shared pool
        self.threads: list[threading.Thread] = []  # of its own
        self.live = 0  # drivers submitted and not yet finished
        self.add(jobs)

    def add(self, jobs: list[tuple[int, int]]) -> None:
        """Queue the parts of ``jobs`` no queued or fetched request covers (in file order)."""
        with self.cond:
            if self.stopped:
                return
            new = _subtract(sorted(jobs), self.jobs)
            if not new:
                return
            self.jobs = sorted(self.jobs + new)
            self.starts = [o for o, _ in self.jobs]
            self.state.update((j, "queued") for j in new)
            self.order.extend(new)
            mean = sum(n for _, n in new) / len(new)
            streams = max(BACKGROUND_STREAMS, min(MAX_CONCURRENT_REQUESTS // 2, int(BACKGROUND_BYTES // mean)))
            start = max(0, min(streams, len(self.order)) - self.live)
            self.live += start
        # Short requests (a sampled read's rows) run on the shared fetching threads, whose connections are open;
        # a full read's long stream on threads of its own, never holding the shared ones for minutes.
        for _ in range(start):
            if streams > BACKGROUND_STREAMS:
                self.drivers.append(_pool().submit(self._drive))
            else:
                t = threading.Thread(target=self._drive, daemon=True, name="modelkin-http-ahead")
                t.start()
                self.threads.append(t)

    def _next(self) -> tuple[int, int] | None:
        with self.cond:
            while not self.stopped and self.order:
                job = self.order.popleft()
                if self.state[job] == "queued":
                    self.state[job] = "in flight"
                    return job
            self.live -= 1
            return None

    def _drive(self) -> None:
        while (job := self._next()) is not None:
            try:
                self.file._fetch_now(*job, abort=lambda: self.stopped)
            except BaseException:  # noqa: BLE001 -- the reads fetch for themselves, and report what fails
                with self.cond:
                    self.stopped = True
            finally:
                with self.cond:
                    self.state[job] = "done"
                    self.cond.notify_all()

    def wait_for(self, offset: int, n: int) -> bool:
        """Make sure the background's requests overlapping [offset, offset+n) are done: queued ones are
        fetched here and now (the reader needs them first), ones in flight waited for; whether there were any."""
        with self.cond:
            i = max(0, bisect.bisect_right(self.starts, offset) - 1)
            mine, claimed = [], []
            while i < len(self.jobs) and self.jobs[i][0] < offset + n:
                job = self.jobs[i]
                if job[0] + job[1] > offset and self.state[job] != "done":
                    mine.append(job)
                    if self.state[job] == "queued" and not self.stopped:
                        self.state[job] = "in flight"
                        claimed.append(job)
                i += 1
        try:
            for job in claimed:
                self.file._fetch_now(*job)
        finally:
            with self.cond:
                for job in claimed:
                    self.state[job] = "done"
                self.cond.notify_all()
        with self.cond:
            while not self.stopped and any(self.state[j] != "done" for j in mine):
                self.cond.wait()
        return bool(mine)

    def stop(self, wait_s: float = 2.0) -> None:
        """No new requests; the ones in flight are given ``wait_s`` to end (a stalled one ends alone: a
        stopped background makes no further attempt; its own threads are daemons)."""
        with self.cond:
            self.stopped = True
            self.cond.notify_all()
        self.join(wait_s)

    def join(self, wait_s: float) -> None:
        """Wait up to ``wait_s`` for every request of the background to end."""
        deadline = time.monotonic() + wait_s
        wait(self.drivers, timeout=wait_s)
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))


def _gaps(offset: int, n: int, extents: list[tuple[int, int]], i: int = 0) -> list[tuple[int, int]]:
    """The parts of [offset, offset+n) outside ``extents`` (sorted by start), looked at from index ``i`` on."""
    out, pos, end = [], offset, offset + n
    while i < len(extents) and extents[i][0] < end and pos < end:
        o, m = extents[i]
        if o + m > pos:
            if o > pos:
                out.append((pos, o - pos))
            pos = o + m
        i += 1
    if pos < end:
        out.append((pos, end - pos))
    return out


def _subtract(ranges: list[tuple[int, int]], taken: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The parts of sorted ``ranges`` outside the sorted, disjoint ``taken`` ones."""
    out = [g for offset, n in ranges
           for g in _gaps(offset, n, taken, max(0, bisect.bisect_right(taken, (offset, float("inf"))) - 1))]
    merged: list[tuple[int, int]] = []
    for o, m in out:  # ranges may overlap each other: keep each byte once
        if merged and o < merged[-1][0] + merged[-1][1]:
            last = merged[-1]
            merged[-1] = (last[0], max(last[1], o + m - last[0]))
        else:
            merged.append((o, m))
    return merged


class HttpFile:
    """One remote file as a ``Transport``."""

    remote = True

    def __init__(self, url: str, *, size: int | None = None, headers: dict[str, str] | None = None,
                 identity: str | None = None, relative_name: str | None = None, reported_sha256: str | None = None,
                 etag: str | None = None, stats: FetchStats | None = None, cache: bool = True, offline: bool = False):
        self.url = self.name = url
        self.relative_name = relative_name or url.rsplit("/", 1)[-1]
        self.headers = dict(headers or {})
        self.reported_sha256 = reported_sha256
        self.etag = etag
        self.stats = stats or FetchStats()
        self.offline = offline
        self._content_url: str | None = None  # where the first answer was redirected to (the Hub's CDN)
        self._cache = RangeCache(identity or f"{url}#{etag}") if cache else None
        self._ahead: _Background | None = None  # a prefetch running beside the reads
        self._ahead_next = False  # the next prefetch runs in the background (``in_background``)
        self.held_only = False  # reads of bytes not fetched yet fail (MissingRowsError) instead of fetching them
        self.size = size if size is not None else self._head_size()

    # -- one request ----------------------------------------------------------------------------
    def _fail(self, message: str) -> RemoteError:
        return RemoteError(message, self.url)

    def _head_size(self) -> int:
        """Size (and ETag) from a one-byte ranged GET: servers answer ranges more reliably than HEAD."""
        if self.offline:
            raise self._fail("HF_HUB_OFFLINE is set and the file's size is not known from a cached listing")
        response = self._request(0, 1, check_etag=False)
        total = response.headers.get("content-range", "").rpartition("/")[2]
        if not total.isdigit():
            raise self._fail("the server does not report the file's size in Content-Range (ranged reads unsupported?)")
        return int(total)

    def _request(self, offset: int, n: int, check_etag: bool = True, abort: Callable[[], bool] | None = None):
        """One ranged GET, checked; transient failures are retried with backoff."""
        headers = dict(self.headers, Range=f"bytes={offset}-{offset + n - 1}")
        problem = "no attempt made"
        for attempt in range(MAX_ATTEMPTS):
            if attempt:
                time.sleep(BACKOFF_SECONDS * 2 ** (attempt - 1))
            if abort is not None and abort():  # a stopped background request: no more attempts
                raise self._fail("the background prefetch was stopped")
            url = self._content_url or self.url
            try:
                response = _session().get(url, headers=headers, follow_redirects=True, timeout=READ_TIMEOUT_SECONDS)
                self.stats.add(requests=1)
            except _transport_errors() as e:
                self.stats.add(requests=1)
                problem = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
                continue
            status = response.status_code
            if url != self.url and status in (401, 403, 404, 410):  # a signed content URL expired: resolve again
                self._content_url = None
                problem = f"HTTP {status} from the content URL"
                continue
            if status in RETRY_STATUS:
                problem = f"HTTP {status}"
                continue
            self._check_status(status)
            linked = next((_strip_etag(h.headers["x-linked-etag"]) for h in response.history if "x-linked-etag" in h.headers), None)
            if (self.reported_sha256 and linked and _SHA256.fullmatch(linked)
                    and linked != self.reported_sha256.lower()):  # the Hub's content hash differs from the listing's
                raise self._fail(f"the file changed on the server since its listing (sha256 {self.reported_sha256} became {linked}); run again")
            etag = response.headers.get("x-linked-etag") or response.headers.get("etag")
            if check_etag and self.etag and etag and _strip_etag(etag) != _strip_etag(self.etag):
                raise self._fail(f"the file changed on the server while being read (ETag {self.etag} became {etag}); run again")
            if self.etag is None and etag:
                self.etag = etag
            got = response.headers.get("content-range", "")
            if status != 206 or not got.startswith(f"bytes {offset}-{offset + n - 1}/"):
                if status == 200 and offset == 0 and len(response.content) == n:
                    return response  # a server that ignores Range but the whole file was asked for
                served = _CONTENT_RANGE.match(got)
                if status == 206 and served and int(served.group(1)) == offset and int(served.group(2)) < offset + n - 1:
                    problem = f"short response: the server sent {got}"  # honest but short: ask again
                    continue
                raise self._fail(f"asked for bytes {offset}-{offset + n - 1}, the server answered {status} {got or '(no Content-Range)'}")
            if len(response.content) != n:
                problem = f"short response: {len(response.content)} of {n} bytes"
                continue
            if response.history:
                self._content_url = str(response.url)
            return response
        raise self._fail(f"gave up after {MAX_ATTEMPTS} attempts reading bytes {offset}-{offset + n - 1} ({problem})")

    def _check_status(self, status: int) -> None:
        if status in (401, 403):
            raise self._fail(f"HTTP {status}: access denied (a gated or private model needs a token: set HF_TOKEN)")
        if status == 404:
            raise self._fail("HTTP 404: no such file on the server")
        if status == 416:
            raise self._fail("HTTP 416: the server says the bytes asked for lie outside the file (it changed?)")
        if status >= 400:
            raise self._fail(f"HTTP {status}")

    def _fetch(self, offset: int, n: int, keep: bool = True) -> bytes | None:
        """Bytes [offset, offset+n), from the cache when it holds them (``keep=False``: only make sure it
        does; nothing is read back). Bytes a background prefetch is about to fetch are waited for."""
        if n <= 0:
            return b""
        if offset < 0 or offset + n > self.size:
            raise self._fail(f"bytes {offset}..{offset + n} lie past the end of the {self.size}-byte file")
        for attempt in (0, 1):
            if self._cache is not None:
                if not keep and self._cache.holds(offset, n):
                    self.stats.add(cached=n)
                    return None
                data = self._cache.get(offset, n)
                if data is not None:
                    self.stats.add(cached=n)
                    return data
            ahead = self._ahead
            if attempt or ahead is None or not ahead.wait_for(offset, n):
                break
        if self.held_only:
            from .fingerprint_format import MissingRowsError

            raise MissingRowsError(f"bytes {offset}..{offset + n} were not fetched (reads are held to what was)", self.url)
        return self._download(offset, n)

    def _fetch_now(self, offset: int, n: int, abort: Callable[[], bool] | None = None) -> None:
        """A background request: into the cache unless it holds the bytes already."""
        if self._cache is not None and self._cache.holds(offset, n):
            return
        self._download(offset, n, abort)

    def _download(self, offset: int, n: int, abort: Callable[[], bool] | None = None) -> bytes:
        if self.offline:
            raise self._fail(f"HF_HUB_OFFLINE is set and bytes {offset}..{offset + n} were never fetched into the cache")
        data = self._request(offset, n, abort=abort).content
        self.stats.add(fetched=n)
        if self._cache is not None:
            self._cache.put(offset, data)
        return data

    # -- the Transport protocol ------------------------------------------------------------------
    def read_into(self, offset: int, out: np.ndarray) -> None:
        view = out.reshape(-1).view(np.uint8)
        view[:] = np.frombuffer(self._fetch(offset, view.size), dtype=np.uint8)

    def missing_bytes(self, ranges: Sequence[tuple[int, int]]) -> int:
        """How many bytes of ``ranges`` reading them would still fetch (what no cache entry holds)."""
        if self._cache is None:
            return sum(n for _, n in ranges)
        return sum(m for o, n in ranges for _, m in self._cache.missing(o, n))

    def _requests_for(self, ranges: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
        """The requests that fetch ``ranges``: neighbours coalesced, each at most ``MAX_REQUEST_BYTES``."""
        merged: list[list[int]] = []
        for offset, n in sorted(set(ranges)):
            if merged and offset <= merged[-1][0] + merged[-1][1] + COALESCE_GAP_BYTES:
                merged[-1][1] = max(merged[-1][1], offset + n - merged[-1][0])
            else:
                merged.append([offset, n])
        # Bounded requests: a failure retries little, cache entries stay small enough to verify.
        return [(o + s, min(MAX_REQUEST_BYTES, n - s)) for o, n in merged for s in range(0, n, MAX_REQUEST_BYTES)]

    def read_ranges(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        """Several ranges: neighbours coalesced into one request, requests made in parallel."""
        merged = self._requests_for(ranges)
        blocks = list(zip((o for o, _ in merged), _run_bounded(self._fetch, merged, keep=True)))
        starts = [s for s, _ in blocks]
        out = []
        for offset, n in ranges:
            i = bisect.bisect_right(starts, offset) - 1
            s, d = blocks[i]
            if offset + n <= s + len(d):  # within one request: no join
                out.append(d if (offset, n) == (s, len(d)) else d[offset - s : offset - s + n])
                continue
            parts, pos = [], offset
            while pos < offset + n:  # a range may span several bounded requests
                s, d = blocks[i]
                parts.append(d[pos - s : min(offset + n, s + len(d)) - s])
                pos = s + len(d)
                i += 1
            out.append(b"".join(parts))
        return out

    def prefetch(self, ranges: Sequence[tuple[int, int]]) -> None:
        """Fetch these ranges into the cache (coalesced, in parallel) for reads to come, holding none of them
        in memory (a full read's prefetch is the whole file). Without a cache there is nothing to keep."""
        background, self._ahead_next = self._ahead_next, False
        if self._cache is None or self.offline:
            return
        jobs = self._requests_for(ranges)
        if background:  # only what no entry holds yet (a sampled prefetch's rows)
            missing = [m for j in jobs for m in self._cache.missing(*j)]
            if self._ahead is None:
                self._ahead = _Background(self, missing)
            else:
                self._ahead.add(missing)
            return
        _run_bounded(lambda o, n: self._fetch(o, n, keep=False), jobs, keep=False)

    @contextmanager
    def in_background(self):
        """A prefetch made inside this block returns at once and runs beside the reads that follow (a later
        one adds its ranges to it; the reads wait for the bytes it is about to fetch, never fetch them twice)."""
        self._ahead_next = True
        try:
            yield self
        finally:
            self._ahead_next = False

    def stream(self, offset: int, n_bytes: int, piece_bytes: int) -> Iterator[np.ndarray]:
        """Pieces of a long range; the next request is in flight while a piece is used."""
        if n_bytes <= 0:
            return
        step = max(piece_bytes, STREAM_REQUEST_BYTES // piece_bytes * piece_bytes)
        starts = list(range(offset, offset + n_bytes, step))
        with ThreadPoolExecutor(max_workers=2) as pool:
            pending = pool.submit(self._fetch, starts[0], min(step, offset + n_bytes - starts[0]))
            for i, s in enumerate(starts):
                data = pending.result()
                if i + 1 < len(starts):
                    nxt = starts[i + 1]
                    pending = pool.submit(self._fetch, nxt, min(step, offset + n_bytes - nxt))
                block = np.frombuffer(data, dtype=np.uint8)
                for p in range(0, len(block), piece_bytes):
                    yield block[p : p + piece_bytes]

    def get_all(self) -> bytes:
        """The whole (small) file: configs, tokenizers, shard indexes."""
        return self._fetch(0, self.size)

    def close(self) -> None:
        if self._ahead is not None:
            self._ahead.stop()
            self._ahead = None
        if self._cache is not None:
            self._cache.close()


def _strip_etag(tag: str) -> str:
    return tag.removeprefix("W/").strip('"')
