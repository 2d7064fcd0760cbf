"""A local stand-in for the Hugging Face Hub, for tests and benchmarks (stdlib only, 127.0.0.1 only).

``HubServer`` serves folders of files in the Hub's URL layout, closely enough that huggingface_hub
(2.4.0, whose HTTP client is httpx2) works unmodified with ``endpoint=server.url``, and it injects the
network faults a remote reader must survive.  No test touches the internet.

Usage::

    from hub_server import HubServer
    with HubServer() as hub:                      # or the ``hub_server`` pytest fixture below
        sha = hub.add_repo("org/name", folder)    # -> 40-hex commit, deterministic from the files
        HfApi(endpoint=hub.url).model_info("org/name", files_metadata=True)
        hub.inject("latency", seconds=0.05)       # every request 50 ms slower, until cleared
        hub.inject("status", code=503, kind="content", times=3)   # a 5xx storm on 3 data reads
        hub.counters().count(kind="content")      # requests that reached the content host

Benchmarks use ``HubProcess()`` instead: the same server in a child process, driven through pipes
(``add_repo``, ``inject``, ``counters``, ``reset_counters``... forwarded), so that the stand-in's Python
does not share the measured client's GIL and cores as if it were part of the client.

Two listening sockets, both on 127.0.0.1 (listen backlog 1024, as a real server's):
  ``hub.url``      the Hub endpoint: ``/api/...`` and ``/{repo}/resolve/{rev}/{path}``;
  ``hub.cdn_url``  the content host: ``/cdn/{repo}/{sha256}/{path}?sig=...`` (a signed URL, no token).
The content host is another origin (another port), as cas-bridge.xethub.hf.co / cdn-lfs.hf.co are on the
real Hub.  That matters: huggingface_hub follows same-origin redirects when it HEADs ``/resolve`` and
would then read the metadata from the CDN's answer, and httpx2 strips ``Authorization`` on a cross-origin
redirect, so content URLs must work without a token (they carry an HMAC signature instead).

Routes (``{repo}`` is ``org/name`` or a bare ``name``; ``{rev}`` a branch or a full commit sha, URL-quoted):
  (a dataset repo, ``add_repo(..., repo_type="dataset")``: the same under /api/datasets/ and /datasets/{repo}/resolve/)
  GET  /api/models/{repo}                           ModelInfo JSON of ``main`` (``?blobs=True`` adds size,
  GET  /api/models/{repo}/revision/{rev}              blobId and lfs{sha256,size,pointerSize}; ``?expand=``
                                                      keeps only the listed fields)
  GET  /api/models/{repo}/tree/{rev}[/{path}]       tree listing (``?recursive=True``), one page
  POST /api/models/{repo}/paths-info/{rev}          entries for the form's ``paths`` (get_paths_info)
  GET  /api/models/{repo}/refs                      branches
  GET  /api/models/{repo}/safetensors-metadata/{f}  ``{"index": ..., "headers": {shard: header}}`` (main)
  POST /api/repos/create                            create_repo (JSON name, organization, type, visibility);
                                                      409 when it exists
  POST /api/models/{repo}/preupload/{rev}           every file "regular" (its bytes travel in the commit)
  POST /api/models/{repo}/commit/{rev}              create_commit's NDJSON (header, base64 ``file`` entries,
                                                      ``deletedFile``): a new commit of the branch; writes need
                                                      ``hub.token``
  HEAD/GET /{repo}/resolve/{rev}/{path}             LFS-like files (LFS_SUFFIXES, or > LFS_MIN_BYTES):
        302 to the signed content URL with X-Repo-Commit, X-Linked-Etag "<sha256>", X-Linked-Size, ETag;
        other files: 200 (or 206 with Range) with ETag "<git blob sha1>", X-Repo-Commit, Accept-Ranges.
  HEAD/GET /cdn/...  (content host)                 200, or 206 + Content-Range for ``Range: bytes=a-b``,
        ``a-`` and ``-n``; 416 + ``Content-Range: bytes */size`` when unsatisfiable; a multi-range request
        is answered with the whole file (S3 does the same); ``If-Match`` mismatch -> 412; ``If-Range``
        mismatch -> 200 full.  ETag "<sha256>", Accept-Ranges, Content-Length, Content-Disposition.

Errors, as the Hub sends them (header ``X-Error-Code`` picks huggingface_hub's exception type):
  missing repo           401 (anonymous) / 404 (with a token)  X-Error-Code: RepoNotFound
  private repo, no access  same as a missing repo                RepositoryNotFoundError
  missing revision       404 RevisionNotFound                    RevisionNotFoundError
  missing file           404 EntryNotFound (+ X-Repo-Commit)     RemoteEntryNotFoundError
  gated repo, file read  401 GatedRepo (no token) / 403 GatedRepo (``token_without_access``)  GatedRepoError
  unknown token          401, X-Error-Message "Invalid credentials in Authorization header" (HfHubHTTPError)
A gated repo's metadata (model_info, tree) stays readable without a token, as on the Hub; only the
files' bytes are gated.  ``Authorization: Bearer <hub.token>`` opens everything.

Faults: ``hub.inject(name, *, path="*", kind=None, method=None, skip=0, times=None, **params) -> Fault``.
A rule watches the requests whose URL path (unquoted, without query) matches the fnmatch pattern ``path``
and whose ``kind`` ("api" | "resolve" | "content") and ``method`` match when given; it lets the first
``skip`` of them through and acts on the next ``times`` (None: all).  ``fault.seen`` / ``fault.fired``
count them; ``fault.remove()``, ``hub.clear_faults()``.  Names and parameters (FAULT_PARAMS):
  latency      seconds              sleep before answering
  bandwidth    bytes_per_s          one pipe shared by every request the rule matches (a link's capacity)
  stall        seconds=30, after_bytes=None   sleep before the headers (None) or after N body bytes;
                                    ``hub.close()`` ends a stall at once
  status       code, error_code=None, message=None, retry_after=None   answer this status instead
               (X-Error-Code/X-Error-Message headers, JSON {"error": message}, Retry-After)
  drop         after_bytes=0        send the full headers, N body bytes, then close the connection
  short_body   missing_bytes=1, declare="full"   "full": headers promise the whole body, k bytes are
               missing, then the connection closes; "short": Content-Length/Content-Range honestly
               describe a body k bytes shorter than asked
  bad_content_range  shift=1        answer a range shifted by ``shift`` bytes, with a Content-Range that
                                    says so (consistent with the body, not with the request)
  ignore_range (none)               answer 200 with the whole file to a Range request
  mutate       from_byte=0          the file's bytes from ``from_byte`` on change (XOR 0x5A) and its ETag
                                    (and X-Linked-Etag) becomes a different opaque value, on resolve and
                                    content alike; ``skip=1`` lets the header read see the old version
Several rules of different names may act on one request (latency + bandwidth + a fault); of two rules
with the same name, the earlier one acts.  A ranged read through ``/resolve`` is two requests (the 302,
then the content host), so "latency" without ``kind`` costs it twice, like a Hub round trip plus a CDN
one; scope data faults with ``kind="content"`` (``drop`` and ``stall`` also act on a 302's or a JSON body).

Counters: ``hub.counters()`` -> ``Counters`` snapshot: ``requests`` {(method, kind): n}; ``bytes_served``
/ ``bytes_by_kind`` body bytes written (302 notes and JSON included: ``bytes_by_kind["content"]`` is what
the content host sent); ``ranges_served`` (206 answers); ``count(kind=None, method=None)``.  ``hub.log()``
-> tuple of ``Served`` records (method, kind, path, repo, filename, status, range asked, byte range
served, body bytes) in arrival order.  A request is logged when it arrives and its bytes are counted just
before they are written, so once a client holds a response the counters already include it.
``hub.reset_counters()`` clears both; ``hub.reset()`` also clears the faults.

Pointing huggingface_hub 2.4.0 at the server (checked by tests/test_hub_server.py):
* Pass ``endpoint=hub.url`` explicitly: ``HfApi(endpoint=...)``, ``hf_hub_url(..., endpoint=)``,
  ``hf_hub_download(..., endpoint=)``, ``snapshot_download(..., endpoint=)``.  Always works.
* ``HF_ENDPOINT`` is read ONCE, when huggingface_hub is first imported, into ``constants.ENDPOINT`` and
  ``constants.HUGGINGFACE_CO_URL_TEMPLATE``; the module-level helpers (``huggingface_hub.model_info``,
  ``list_repo_files``, ``get_safetensors_metadata``...) are methods of a default ``HfApi`` built at that
  import, so setting the variable later changes nothing.  What works: set ``HF_ENDPOINT`` in the
  environment of a subprocess (CLI tests), or, in-process, ``patch_hf_endpoint(monkeypatch, hub.url)``
  below, which patches both constants and the default api (and sets the variable for code that reads it
  itself).  Trap: ``hf_hub_url(endpoint=X)`` swaps the prefix only when the template starts with
  ``constants.ENDPOINT``, so patching ``ENDPOINT`` without the template yields https://huggingface.co
  URLs even for calls that pass ``endpoint=`` explicitly.
* ``HF_HUB_CACHE`` and ``HF_HUB_OFFLINE`` are read at import too (``constants.HF_HUB_CACHE`` is used as
  ``cache_dir`` at call time, ``constants.is_offline_mode()`` returns the import-time value): pass
  ``cache_dir=`` or patch ``constants.HF_HUB_CACHE`` / ``constants.HF_HUB_OFFLINE``.  ``HF_TOKEN`` is read
  at call time (``token=None``); pass ``token=False`` to be sure no token is sent.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import hmac
import http.server
import json
import os
import re
import secrets
import socket
import struct
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_NAMES = ("base", "finetuned", "independent", "vlm-donor", "vlm-graft")
EXAMPLE_ORG = "modelkin-examples"

LFS_SUFFIXES = (".safetensors", ".gguf", ".bin", ".onnx", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".npy", ".npz")
LFS_MIN_BYTES = 1_000_000  # files larger than this are LFS-like whatever their name
CHUNK_BYTES = 256 * 1024
LAST_MODIFIED = "2025-01-01T00:00:00.000Z"
KINDS = ("api", "resolve", "content")
_PACE_CREDIT_S = 0.005
_MUTATE_TABLE = bytes(b ^ 0x5A for b in range(256))
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_RANGE_RE = re.compile(r"bytes=(\d*)-(\d*)")

# fault name -> {parameter: default}; a default of ... means the parameter is required
FAULT_PARAMS: dict[str, dict[str, object]] = {
    "latency": {"seconds": ...},
    "bandwidth": {"bytes_per_s": ...},
    "stall": {"seconds": 30.0, "after_bytes": None},
    "status": {"code": ..., "error_code": None, "message": None, "retry_after": None},
    "drop": {"after_bytes": 0},
    "short_body": {"missing_bytes": 1, "declare": "full"},
    "bad_content_range": {"shift": 1},
    "ignore_range": {},
    "mutate": {"from_byte": 0},
}


# ----------------------------------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class HubFile:
    """One file of a revision: where its bytes are on disk and the ids the Hub reports for it."""

    path: str  # inside the repo, "/"-separated
    source: Path
    n_bytes: int
    sha256: str
    blob_id: str  # git blob sha1 (of the LFS pointer for LFS files)
    lfs: bool
    pointer_n_bytes: int | None

    @property
    def etag(self) -> str:
        return self.sha256 if self.lfs else self.blob_id


@dataclass(eq=False)
class Fault:
    """An injected fault; see the module docstring.  ``seen``: matching requests, ``fired``: acted on."""

    name: str
    params: dict
    path: str = "*"
    kind: str | None = None
    method: str | None = None
    skip: int = 0
    times: int | None = None
    seen: int = 0
    fired: int = 0
    _hub: HubServer | None = field(default=None, repr=False)
    _next_free_s: float = field(default=0.0, repr=False)  # bandwidth: when the shared pipe is free

    def remove(self) -> None:
        if self._hub is not None:
            self._hub.remove_fault(self)

    def __getattr__(self, name: str):  # fault.seconds, fault.code, ...
        params = self.__dict__.get("params", {})
        if name in params:
            return params[name]
        raise AttributeError(name)


@dataclass(frozen=True, slots=True)
class Served:
    """One request, as the server saw and answered it."""

    method: str
    kind: str  # api | resolve | content | other
    path: str
    repo: str | None
    filename: str | None
    status: int
    range_asked: str | None  # the Range header as sent
    byte_range: tuple[int, int] | None  # inclusive bytes of the file in a 206 answer
    body_bytes: int  # bytes of body actually written


@dataclass(frozen=True)
class Counters:
    requests: dict  # {(method, kind): n}, counted on arrival
    bytes_served: int
    bytes_by_kind: dict  # {kind: body bytes written}
    ranges_served: int  # 206 answers

    def count(self, kind: str | None = None, method: str | None = None) -> int:
        return sum(n for (m, k), n in self.requests.items() if kind in (None, k) and method in (None, m))


@dataclass
class _Repo:
    repo_id: str
    private: bool
    gated: str | bool  # False, "auto" or "manual"
    branches: dict[str, str] = field(default_factory=dict)  # name -> commit
    commits: dict[str, dict[str, HubFile]] = field(default_factory=dict)  # commit -> path -> file

    def resolve(self, revision: str) -> str | None:
        if revision in self.branches:
            return self.branches[revision]
        return revision if revision in self.commits else None


@dataclass
class _Reply:
    status: int
    headers: dict[str, str]
    body: _Body
    byte_range: tuple[int, int] | None = None  # inclusive range of the file (206)
    file: HubFile | None = None
    mutate_from: int | None = None  # absolute file offset from which the bytes are mutated


class _Body:
    """What a GET sends: ``n_bytes`` bytes read by ``read(offset, n)``."""

    def __init__(self, data: bytes = b"", *, file: HubFile | None = None, start: int = 0, n_bytes: int | None = None):
        self.data, self.file, self.start = data, file, start
        self.n_bytes = len(data) if file is None else int(n_bytes)
        self._fd: int | None = None

    def read(self, offset: int, n: int, mutate_from: int | None = None) -> bytes:
        if self.file is None:
            return self.data[offset : offset + n]
        if self._fd is None:
            self._fd = os.open(self.file.source, os.O_RDONLY)
        at = self.start + offset
        chunk = os.pread(self._fd, n, at)
        if mutate_from is not None and at + len(chunk) > mutate_from:
            cut = max(0, mutate_from - at)
            chunk = chunk[:cut] + chunk[cut:].translate(_MUTATE_TABLE)
        return chunk

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _json_body(obj) -> _Body:
    return _Body(json.dumps(obj).encode())


# -------------------------------------------------------------------------------------------- file hashing

_HASH_CACHE: dict[tuple[str, int, int], str] = {}
_HASH_LOCK = threading.Lock()


def _sha256_of(path: Path) -> str:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    with _HASH_LOCK:
        if key in _HASH_CACHE:
            return _HASH_CACHE[key]
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 22):
            digest.update(block)
    with _HASH_LOCK:
        _HASH_CACHE[key] = digest.hexdigest()
    return _HASH_CACHE[key]


def _git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _is_lfs(path: str, n_bytes: int) -> bool:
    return path.lower().endswith(LFS_SUFFIXES) or n_bytes > LFS_MIN_BYTES


def _hub_file(rel: str, source: Path) -> HubFile:
    n_bytes = source.stat().st_size
    sha256 = _sha256_of(source)
    if _is_lfs(rel, n_bytes):
        pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {n_bytes}\n".encode()
        return HubFile(rel, source, n_bytes, sha256, _git_blob_id(pointer), True, len(pointer))
    return HubFile(rel, source, n_bytes, sha256, _git_blob_id(source.read_bytes()), False, None)


def _safetensors_header(f: HubFile) -> dict | None:
    """The JSON header of a safetensors file, or None when it is not one."""
    try:
        with open(f.source, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            if n > 100_000_000 or n + 8 > f.n_bytes:
                return None
            header = json.loads(fh.read(n))
        return header if isinstance(header, dict) else None
    except (OSError, ValueError, struct.error):
        return None


# ------------------------------------------------------------------------------------------------- server


class HubServer:
    """Hub stand-in on 127.0.0.1; see the module docstring.  A context manager; ``close()`` stops it."""

    def __init__(self) -> None:
        self.token = "hf_modelkin_test_token_" + secrets.token_hex(8)  # reads everything
        self.token_without_access = "hf_modelkin_no_access_" + secrets.token_hex(8)  # a user not let into gated
        self._secret = secrets.token_bytes(16)
        self._repos: dict[str, _Repo] = {}
        self._blobs: dict[str, HubFile] = {}  # sha256 -> a file with those bytes
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._conns: set[socket.socket] = set()
        self._requests: Counter = Counter()
        self._log: list[dict] = []  # Served fields, filled in while the answer goes out
        self._store = Path(tempfile.mkdtemp(prefix="modelkin-hub-store-"))  # files committed through the API
        self._servers = [self._listen(), self._listen()]
        self.url = "http://127.0.0.1:%d" % self._servers[0].server_address[1]
        self.cdn_url = "http://127.0.0.1:%d" % self._servers[1].server_address[1]
        self._threads = [
            threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True, name="hub-server")
            for s in self._servers
        ]
        for t in self._threads:
            t.start()

    def _listen(self) -> http.server.ThreadingHTTPServer:
        srv = _Listener(("127.0.0.1", 0), _Handler)
        srv.hub = self  # type: ignore[attr-defined]
        return srv

    # ---- lifecycle
    def __enter__(self) -> HubServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._closing.is_set():
            return
        self._closing.set()  # ends stalls and throttled sleeps at once
        for srv in self._servers:
            srv.shutdown()
            srv.server_close()
        import shutil

        shutil.rmtree(self._store, ignore_errors=True)
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    # ---- repos
    def add_repo(
        self, repo_id: str, folder: str | os.PathLike, revision: str = "main", *, private: bool = False,
        gated: bool | str = False, repo_type: str = "model",
    ) -> str:
        """Serve every file under ``folder`` as ``repo_id`` at branch ``revision``; return the commit sha.

        The commit is the sha1 of the repo id and the files' paths and git blob ids, so the same folder
        gives the same sha.  Calling again with another revision adds a branch; with the same one, moves it.
        ``private``/``gated`` ("auto", "manual" or True = "manual") apply to the whole repo, last call wins.
        ``repo_type="dataset"`` serves it under ``/datasets/{repo}/resolve/...`` and ``/api/datasets/{repo}``.
        """
        if repo_type not in ("model", "dataset"):
            raise ValueError(f"repo_type must be 'model' or 'dataset', not {repo_type!r}")
        repo_id = f"datasets/{repo_id}" if repo_type == "dataset" else repo_id
        root = Path(folder)
        if not root.is_dir():
            raise NotADirectoryError(f"{root}: not a folder")
        files = {}
        for source in sorted(p for p in root.rglob("*") if p.is_file()):
            rel = source.relative_to(root).as_posix()
            if not rel.startswith(".git/"):
                files[rel] = _hub_file(rel, source)
        listing = "\n".join(f"{f.path} {f.blob_id}" for f in files.values())
        commit = hashlib.sha1(f"{repo_id}\n{listing}".encode()).hexdigest()
        with self._lock:
            repo = self._repos.get(repo_id) or _Repo(repo_id, private, False)
            repo.private = private
            repo.gated = "manual" if gated is True else gated
            repo.commits[commit] = files
            repo.branches[revision] = commit
            self._repos[repo_id] = repo
            for f in files.values():
                self._blobs.setdefault(f.sha256, f)
        return commit

    def add_example_repos(self, names=EXAMPLE_NAMES, *, org: str = EXAMPLE_ORG, **flags) -> dict[str, str]:
        """Register ``examples/<name>`` as ``<org>/<name>``; return {repo_id: commit}."""
        return {f"{org}/{n}": self.add_repo(f"{org}/{n}", REPO_ROOT / "examples" / n, **flags) for n in names}

    def commit_of(self, repo_id: str, revision: str = "main") -> str:
        return self._repos[repo_id].resolve(revision)

    def file(self, repo_id: str, path: str, revision: str = "main") -> HubFile:
        repo = self._repos[repo_id]
        return repo.commits[repo.resolve(revision)][path]

    def resolve_url(self, repo_id: str, path: str, revision: str = "main") -> str:
        return f"{self.url}/{repo_id}/resolve/{quote(revision, safe='')}/{quote(path)}"

    def content_url(self, repo_id: str, path: str, revision: str = "main") -> str:
        """The signed content URL that ``/resolve`` redirects to (for any file, LFS-like or not)."""
        f = self.file(repo_id, path, revision)
        cdn_path = f"/cdn/{repo_id}/{f.sha256}/{quote(path)}"
        return f"{self.cdn_url}{cdn_path}?sig={self._sign(cdn_path)}"

    def _sign(self, cdn_path: str) -> str:
        return hmac.new(self._secret, unquote(cdn_path).encode(), hashlib.sha256).hexdigest()[:32]

    # ---- faults
    def inject(
        self, name: str, *, path: str = "*", kind: str | None = None, method: str | None = None, skip: int = 0,
        times: int | None = None, **params,
    ) -> Fault:
        if name not in FAULT_PARAMS:
            raise ValueError(f"unknown fault {name!r}; known: {', '.join(FAULT_PARAMS)}")
        if kind is not None and kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
        spec = FAULT_PARAMS[name]
        if unknown := set(params) - set(spec):
            raise TypeError(f"fault {name!r} takes {sorted(spec)}, not {sorted(unknown)}")
        values = {**spec, **params}
        if missing := [k for k, v in values.items() if v is ...]:
            raise TypeError(f"fault {name!r} needs {missing}")
        if name == "short_body" and values["declare"] not in ("full", "short"):
            raise ValueError("short_body: declare must be 'full' or 'short'")
        fault = Fault(name, values, path, kind, method and method.upper(), skip, times, _hub=self)
        with self._lock:
            self._faults.append(fault)
        return fault

    def remove_fault(self, fault: Fault) -> None:
        with self._lock:
            if fault in self._faults:
                self._faults.remove(fault)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    @property
    def faults(self) -> tuple[Fault, ...]:
        with self._lock:
            return tuple(self._faults)

    def _firing(self, method: str, kind: str, path: str) -> dict[str, Fault]:
        """The faults acting on this request, by name (the earliest injected wins per name)."""
        out: dict[str, Fault] = {}
        with self._lock:
            for f in self._faults:
                if (f.kind not in (None, kind) or f.method not in (None, method)
                        or not fnmatch.fnmatchcase(path, f.path)):
                    continue
                f.seen += 1
                if f.name not in out and f.seen > f.skip and (f.times is None or f.fired < f.times):
                    f.fired += 1
                    out.setdefault(f.name, f)
        return out

    def _pace(self, fault: Fault, n_bytes: int) -> None:
        """Hold ``n_bytes`` until the shared pipe of a bandwidth fault has carried them."""
        with self._lock:
            now = time.monotonic()
            # a few ms of credit absorb the time spent writing, so the long-run rate is the cap itself
            start = max(now - _PACE_CREDIT_S, fault._next_free_s)
            fault._next_free_s = start + n_bytes / float(fault.params["bytes_per_s"])
            wait = fault._next_free_s - now
        self._closing.wait(wait)

    # ---- counters
    def counters(self) -> Counters:
        with self._lock:
            by_kind: Counter = Counter()
            for r in self._log:
                by_kind[r["kind"]] += r["body_bytes"]
            return Counters(
                requests=dict(self._requests),
                bytes_served=sum(by_kind.values()),
                bytes_by_kind=dict(by_kind),
                ranges_served=sum(1 for r in self._log if r["status"] == 206),
            )

    def log(self) -> tuple[Served, ...]:
        with self._lock:
            return tuple(Served(**r) for r in self._log)

    def reset_counters(self) -> None:
        with self._lock:
            self._requests.clear()
            self._log.clear()

    def reset(self) -> None:
        self.clear_faults()
        self.reset_counters()


class _Listener(http.server.ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's default backlog (5) drops the SYNs of a client opening dozens of connections at once,
    # which then wait a 1 s SYN retransmission: a stall no CDN causes. Listen as a real server does.
    request_queue_size = 1024


class HubProcess:
    """A ``HubServer`` in a child process, driven through pipes (benchmarks).

    In-process, the stand-in's Python (parsing requests, pacing bodies) holds the client's GIL, so its
    cost would be charged to the client; a CDN costs the client nothing but the wire. The methods the
    benchmarks use are forwarded (``add_repo``, ``inject`` (returns None), ``clear_faults``,
    ``reset_counters``, ``reset``, ``counters``, ``log``, ``commit_of``); ``url``/``cdn_url``/``token`` are
    copied. The child is this file run as a script (no ``__main__`` guard needed in the caller).
    """

    _FORWARDED = frozenset({"add_repo", "add_example_repos", "inject", "clear_faults", "reset_counters", "reset",
                            "counters", "log", "commit_of"})

    def __init__(self) -> None:
        import subprocess
        import sys

        self._proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--serve"],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.url, self.cdn_url, self.token = self._receive()

    def _receive(self):
        import pickle

        try:
            ok, value = pickle.load(self._proc.stdout)
        except EOFError:
            raise RuntimeError("the Hub stand-in's process ended") from None
        if not ok:
            raise value
        return value

    def __getattr__(self, name: str):
        if name not in HubProcess._FORWARDED:
            raise AttributeError(name)

        def call(*args, **kwargs):
            import pickle

            pickle.dump((name, args, kwargs), self._proc.stdin)
            self._proc.stdin.flush()
            return self._receive()

        return call

    def __enter__(self) -> HubProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._proc.poll() is None:
            try:
                self._proc.stdin.close()  # the child stops at end of input
                self._proc.wait(10)
            except Exception:
                self._proc.kill()
                self._proc.wait()


def _serve_over_pipes() -> None:
    """The child of ``HubProcess``: (name, args, kwargs) pickles in on stdin, (ok, value) pickles out."""
    import pickle
    import sys

    out = sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing else may write to the protocol's pipe

    def send(ok: bool, value) -> None:
        pickle.dump((ok, value), out)
        out.flush()

    with HubServer() as hub:
        send(True, (hub.url, hub.cdn_url, hub.token))
        while True:
            try:
                name, args, kwargs = pickle.load(sys.stdin.buffer)
            except EOFError:
                return
            try:
                if name not in HubProcess._FORWARDED:
                    raise AttributeError(name)
                value = getattr(hub, name)(*args, **kwargs)
                send(True, None if isinstance(value, Fault) else value)
            except Exception as e:  # handed back to the caller
                send(False, e)


# ------------------------------------------------------------------------------------------------ handler


class _Aborted(Exception):
    """The connection was closed on purpose (drop / short body) or by the client."""


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "modelkin-hub-stand-in/1"
    timeout = 120  # an idle keep-alive connection is closed after this
    # Headers and body go out in separate writes: with Nagle's algorithm on, a short body waits for the client's
    # delayed ACK of the headers (40 ms on Linux), a stall of this server's own that no real Hub adds.
    disable_nagle_algorithm = True

    @property
    def hub(self) -> HubServer:
        return self.server.hub  # type: ignore[attr-defined]

    def log_message(self, *args) -> None:  # quiet
        pass

    def setup(self) -> None:
        super().setup()
        with self.hub._lock:
            self.hub._conns.add(self.connection)

    def finish(self) -> None:
        with self.hub._lock:
            self.hub._conns.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    def do_GET(self) -> None:
        self._handle("GET")

    def do_HEAD(self) -> None:
        self._handle("HEAD")

    def do_POST(self) -> None:  # paths-info (a form), create / preupload (JSON), commit (NDJSON)
        self._body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        form = "application/x-www-form-urlencoded" in (self.headers.get("Content-Type") or "")
        self._form = parse_qs(self._body.decode(errors="replace")) if form else {}
        self._handle("POST")

    # ---- one request
    def _handle(self, method: str) -> None:
        hub = self.hub
        split = urlsplit(self.path)
        path = unquote(split.path)
        query = parse_qs(split.query)
        is_cdn = self.server is hub._servers[1]
        kind = "content" if is_cdn else "api" if path.startswith("/api/") else "resolve" if "/resolve/" in path else "other"
        # logged on arrival, filled in as the answer goes out (bytes counted just before they are written)
        record = {"method": method, "kind": kind, "path": path, "repo": None, "filename": None, "status": 0,
                  "range_asked": self.headers.get("Range"), "byte_range": None, "body_bytes": 0}
        with hub._lock:
            hub._requests[(method, kind)] += 1
            hub._log.append(record)
        faults = self._faults_now = hub._firing(method, kind, path)
        try:
            if "latency" in faults:
                hub._closing.wait(float(faults["latency"].params["seconds"]))
            stall = faults.get("stall")
            if stall is not None and stall.params["after_bytes"] is None:
                hub._closing.wait(float(stall.params["seconds"]))
            if method == "POST" and kind != "api":
                reply = _error(405, None, "Method not allowed")
            elif is_cdn:
                reply = self._content(split.path, path, query, record)
            elif kind == "api":
                reply = self._api(split.path, query, record)
            elif kind == "resolve":
                reply = self._resolve(split.path, record)
            else:
                reply = _error(404, None, "Not found")
            if "status" in faults:
                reply = _status_fault(faults["status"], reply)
            try:
                self._send(method, reply, faults, record)
            finally:
                reply.body.close()
        except (_Aborted, ConnectionError, TimeoutError, OSError):
            self.close_connection = True

    # ---- access
    def _token_state(self) -> str:
        """'full', 'no_access', 'anonymous' or 'invalid'."""
        auth = self.headers.get("Authorization")
        if not auth:
            return "anonymous"
        token = auth[7:] if auth.lower().startswith("bearer ") else ""
        if token == self.hub.token:
            return "full"
        return "no_access" if token == self.hub.token_without_access else "invalid"

    def _repo_or_error(self, repo_id: str, *, reading_file: bool) -> _Repo | _Reply:
        state = self._token_state()
        if state == "invalid":
            return _error(401, None, "Invalid credentials in Authorization header")
        repo = self.hub._repos.get(repo_id)
        if repo is None or (repo.private and state != "full"):
            return _error(401 if state == "anonymous" else 404, "RepoNotFound", "Repository not found")
        if reading_file and repo.gated and state != "full":
            if state == "anonymous":
                msg = (f"Access to model {repo_id} is restricted. You must have access to it and be authenticated"
                       " to access it. Please log in.")
                return _error(401, "GatedRepo", msg)
            msg = (f"Access to model {repo_id} is restricted and you are not in the authorized list. "
                   f"Visit {self.hub.url}/{repo_id} to ask for access.")
            return _error(403, "GatedRepo", msg)
        return repo

    # ---- /api/models/...
    def _api(self, raw_path: str, query: dict, record: dict) -> _Reply:
        parts = [unquote(p) for p in raw_path.split("/")[1:]]  # api, models|datasets, ...
        if parts[1:] == ["repos", "create"] and self.command == "POST":
            return self._create_repo()
        if len(parts) < 3 or parts[1] not in ("models", "datasets") or not parts[2]:
            return _error(404, None, "Not found")
        pre = "datasets/" if parts[1] == "datasets" else ""
        rest = parts[2:]
        two = "/".join(rest[:2])  # "org/name"; a bare "name" only when that is what is registered
        n_repo = 2 if pre + two in self.hub._repos or len(rest) == 1 or pre + rest[0] not in self.hub._repos else 1
        repo_id, rest = pre + "/".join(rest[:n_repo]), rest[n_repo:]
        record["repo"] = repo_id
        repo = self._repo_or_error(repo_id, reading_file=False)
        if isinstance(repo, _Reply):
            return repo
        action = rest[0] if rest else "revision"
        revision = rest[1] if len(rest) > 1 and action in ("revision", "tree", "paths-info", "preupload", "commit") else "main"
        if action in ("preupload", "commit") and self.command == "POST":
            return self._write(repo, action, revision)
        commit = repo.resolve(revision)
        if commit is None:
            return _error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        files = repo.commits[commit]
        if action == "paths-info" and self.command == "POST":
            return self._paths_info(files, self._form.get("paths", []))
        if self.command != "GET":
            return _error(405, None, "Method not allowed")
        if action == "revision" and len(rest) <= 2:
            return _Reply(200, _JSON, _json_body(_model_info(repo, commit, query)))
        if action == "tree":
            return self._tree(files, "/".join(rest[2:]), query)
        if action == "refs" and len(rest) == 1:
            branches = [{"name": b, "ref": f"refs/heads/{b}", "targetCommit": c} for b, c in repo.branches.items()]
            return _Reply(200, _JSON, _json_body({"branches": branches, "tags": [], "converts": [], "pullRequests": []}))
        if action == "safetensors-metadata":
            return self._safetensors_metadata(files, "/".join(rest[1:]))
        return _error(404, None, "Not found")

    # ---- writes (create_repo, create_commit)
    def _create_repo(self) -> _Reply:
        if self._token_state() != "full":
            return _error(401, None, "Invalid credentials in Authorization header")
        try:
            req = json.loads(self._body)
            repo_id = f"{req['organization']}/{req['name']}" if req.get("organization") else req["name"]
        except (ValueError, KeyError, TypeError):
            return _error(400, None, "Bad request")
        dataset = req.get("type") == "dataset"
        key = f"datasets/{repo_id}" if dataset else repo_id
        url = f"{self.hub.url}/{key}"
        if key in self.hub._repos:
            return _Reply(409, {**_JSON, "X-Error-Message": "You already created this repo"},
                          _json_body({"error": "You already created this repo", "url": url}))
        empty = self.hub._store / uuid.uuid4().hex
        empty.mkdir()
        self.hub.add_repo(repo_id, empty, private=req.get("visibility") == "private",
                          repo_type="dataset" if dataset else "model")
        return _Reply(200, _JSON, _json_body({"url": url, "name": repo_id}))

    def _write(self, repo: _Repo, action: str, revision: str) -> _Reply:
        if self._token_state() != "full":
            return _error(401, None, "Invalid credentials in Authorization header")
        if action == "preupload":
            try:
                paths = [f["path"] for f in json.loads(self._body)["files"]]
            except (ValueError, KeyError, TypeError):
                return _error(400, None, "Bad request")
            return _Reply(200, _JSON, _json_body({"files": [
                {"path": p, "uploadMode": "regular", "shouldIgnore": False, "oid": None} for p in paths]}))
        try:
            items = [json.loads(line) for line in self._body.splitlines() if line.strip()]
        except ValueError:
            return _error(400, None, "Bad request: not NDJSON")
        old = repo.commits.get(repo.resolve(revision) or "", {})
        folder = self.hub._store / uuid.uuid4().hex
        for rel, f in old.items():  # the branch's files, then the commit's changes
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            (folder / rel).write_bytes(f.source.read_bytes())
        for item in items:
            value = item.get("value", {})
            rel = str(value.get("path", ""))
            if item.get("key") == "header":
                continue
            if not rel or rel.startswith("/") or ".." in rel.split("/"):
                return _error(400, None, f"Bad path: {rel!r}")
            if item["key"] == "file":
                (folder / rel).parent.mkdir(parents=True, exist_ok=True)
                (folder / rel).write_bytes(base64.b64decode(value["content"]))
            elif item["key"] == "deletedFile":
                (folder / rel).unlink(missing_ok=True)
            else:
                return _error(400, None, f"Unsupported commit entry {item['key']!r} (this stand-in takes regular files)")
        folder.mkdir(parents=True, exist_ok=True)
        dataset = repo.repo_id.startswith("datasets/")
        commit = self.hub.add_repo(repo.repo_id.removeprefix("datasets/"), folder, revision, private=repo.private,
                                   repo_type="dataset" if dataset else "model")
        prefix = f"{self.hub.url}/{'datasets/' if dataset else ''}{repo.repo_id.removeprefix('datasets/')}"
        return _Reply(200, _JSON, _json_body({"commitUrl": f"{prefix}/commit/{commit}", "commitOid": commit,
                                              "success": True}))

    def _tree(self, files: dict[str, HubFile], folder: str, query: dict) -> _Reply:
        recursive = query.get("recursive", ["False"])[0].lower() in ("true", "1")
        prefix = folder.strip("/") + "/" if folder.strip("/") else ""
        entries: dict[str, dict] = {}
        for f in files.values():
            if not f.path.startswith(prefix):
                continue
            parts = f.path[len(prefix):].split("/")
            depth = len(parts) if recursive else 1
            for i in range(1, min(depth, len(parts) - 1) + 1):  # folders on the way
                sub = prefix + "/".join(parts[:i])
                entries[sub] = _folder_entry(sub)
            if recursive or len(parts) == 1:
                entries[f.path] = _tree_entry(f)
        if prefix and not entries:
            return _error(404, "EntryNotFound", f"{folder} does not exist on this revision")
        return _Reply(200, _JSON, _json_body([entries[k] for k in sorted(entries)]))

    def _paths_info(self, files: dict[str, HubFile], paths: list[str]) -> _Reply:
        out = []
        for p in dict.fromkeys(q.strip("/") for q in paths):
            if p in files:
                out.append(_tree_entry(files[p]))
            elif any(f.startswith(p + "/") for f in files):
                out.append(_folder_entry(p))
        return _Reply(200, _JSON, _json_body(out))

    def _safetensors_metadata(self, files: dict[str, HubFile], index_name: str) -> _Reply:
        index_file = files.get(index_name)
        if index_file is None:
            return _error(404, "EntryNotFound", "Entry not found")
        index = json.loads(index_file.source.read_bytes())
        shards = sorted(set(index.get("weight_map", {}).values()))
        headers = {s: _safetensors_header(files[s]) for s in shards if s in files}
        return _Reply(200, _JSON, _json_body({"index": {k: v for k, v in index.items() if k != "weight_map"},
                                              "headers": headers}))

    # ---- /{repo}/resolve/{rev}/{path}
    def _resolve(self, raw_path: str, record: dict) -> _Reply:
        parts = [unquote(p) for p in raw_path.split("/")[1:]]
        at = parts.index("resolve") if "resolve" in parts else -1
        if at not in ((2, 3) if parts[0] == "datasets" else (1, 2)) or len(parts) < at + 3:
            return _error(404, None, "Not found")
        repo_id, revision, filename = "/".join(parts[:at]), parts[at + 1], "/".join(parts[at + 2:])
        record["repo"], record["filename"] = repo_id, filename
        repo = self._repo_or_error(repo_id, reading_file=True)
        if isinstance(repo, _Reply):
            return repo
        commit = repo.resolve(revision)
        if commit is None:
            return _error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        f = repo.commits[commit].get(filename)
        if f is None:
            reply = _error(404, "EntryNotFound", "Entry not found")
            reply.headers["X-Repo-Commit"] = commit
            return reply
        mutate = self._mutation()
        etag = _mutated_etag(f.etag) if mutate is not None else f.etag
        headers = {"X-Repo-Commit": commit, "ETag": f'"{etag}"', "Accept-Ranges": "bytes"}
        if not f.lfs:
            return self._file_reply(f, headers, mutate)
        location = self.hub.content_url(repo_id, filename, commit)
        note = f"Found. Redirecting to {location}".encode()
        headers.update({"Location": location, "X-Linked-Etag": f'"{etag}"', "X-Linked-Size": str(f.n_bytes),
                        "Content-Type": "text/plain; charset=utf-8"})
        return _Reply(302, headers, _Body(note), file=f)

    def _mutation(self) -> int | None:
        """``from_byte`` of the mutate fault acting on this request, if one does."""
        fault = self._faults_now.get("mutate")
        return None if fault is None else int(fault.params["from_byte"])

    # ---- /cdn/{repo}/{sha256}/{path}?sig=
    def _content(self, raw_path: str, path: str, query: dict, record: dict) -> _Reply:
        parts = path.split("/")[2:]
        at = next((i for i, p in enumerate(parts) if _SHA256_RE.fullmatch(p)), None)
        if not path.startswith("/cdn/") or at is None or at + 1 >= len(parts):
            return _error(404, None, "NoSuchKey")
        record["repo"], record["filename"] = "/".join(parts[:at]), "/".join(parts[at + 1:])
        if not hmac.compare_digest(query.get("sig", [""])[0], self.hub._sign(raw_path)):
            return _error(403, None, "AccessDenied: bad or missing signature")
        f = self.hub._blobs.get(parts[at])
        if f is None:
            return _error(404, None, "NoSuchKey")
        name = record["filename"].rsplit("/", 1)[-1]
        headers = {"Accept-Ranges": "bytes", "Last-Modified": "Wed, 01 Jan 2025 00:00:00 GMT",
                   "Content-Disposition": f"inline; filename*=UTF-8''{quote(name)}; filename=\"{name}\";"}
        return self._file_reply(f, headers, self._mutation())

    # ---- a file's bytes, whole or a range
    def _file_reply(self, f: HubFile, headers: dict, mutate_from: int | None) -> _Reply:
        etag = _mutated_etag(f.etag) if mutate_from is not None else f.etag
        headers = {**headers, "ETag": f'"{etag}"', "Content-Type": "application/octet-stream"}
        if_match = self.headers.get("If-Match")
        if if_match and if_match.strip() != "*" and etag not in _etags(if_match):
            return _Reply(412, {**headers, "Content-Type": "text/plain"}, _Body(b"Precondition Failed"), file=f)
        asked = self.headers.get("Range")
        if_range = self.headers.get("If-Range")
        if asked is None or "," in asked or (if_range and etag not in _etags(if_range)):
            return _Reply(200, headers, _Body(file=f, n_bytes=f.n_bytes), file=f, mutate_from=mutate_from)
        span = _parse_range(asked, f.n_bytes)
        if span is None:  # malformed: ignored, as RFC 9110 says
            return _Reply(200, headers, _Body(file=f, n_bytes=f.n_bytes), file=f, mutate_from=mutate_from)
        if span == "unsatisfiable":
            headers.update({"Content-Range": f"bytes */{f.n_bytes}", "Content-Type": "text/plain"})
            return _Reply(416, headers, _Body(b"Requested Range Not Satisfiable"), file=f)
        a, b = span
        headers["Content-Range"] = f"bytes {a}-{b}/{f.n_bytes}"
        return _Reply(206, headers, _Body(file=f, start=a, n_bytes=b - a + 1), (a, b), f, mutate_from)

    # ---- writing the answer, with the body faults
    def _send(self, method: str, reply: _Reply, faults: dict[str, Fault], record: dict) -> None:
        reply = _range_faults(reply, faults)
        body, n_body = reply.body, reply.body.n_bytes
        n_send = n_body  # bytes we will really write
        cut_after = None  # close the connection after this many body bytes
        short = faults.get("short_body")
        if short is not None and reply.file is not None and reply.status in (200, 206) and n_body > 0:
            k = min(int(short.params["missing_bytes"]), n_body)
            if short.params["declare"] == "short":
                n_body = n_send = n_body - k
                if reply.byte_range is not None:
                    a, b = reply.byte_range
                    reply.byte_range = (a, b - k)
                    reply.headers["Content-Range"] = f"bytes {a}-{b - k}/{reply.file.n_bytes}"
            else:
                n_send, cut_after = n_body - k, n_body - k
        drop = faults.get("drop")
        if drop is not None and method == "GET":
            cut_after = min(n_send, int(drop.params["after_bytes"]))
            n_send = cut_after
        record["status"], record["byte_range"] = reply.status, reply.byte_range
        self.send_response(reply.status)
        for k, v in reply.headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(n_body))
        self.send_header("X-Request-Id", self.headers.get("X-Amzn-Trace-Id") or str(uuid.uuid4()))
        self.end_headers()
        if method == "HEAD":
            self.wfile.flush()
            return
        stall = faults.get("stall")
        pause_at = None if stall is None or stall.params["after_bytes"] is None else int(stall.params["after_bytes"])
        pipe = faults.get("bandwidth")
        sent = 0
        while True:
            if pause_at is not None and sent >= min(pause_at, n_send):
                self.wfile.flush()
                self.hub._closing.wait(float(stall.params["seconds"]))
                pause_at = None
            if sent >= n_send:
                break
            end = n_send if pause_at is None else min(n_send, pause_at)
            chunk = body.read(sent, min(CHUNK_BYTES, end - sent), reply.mutate_from)
            if pipe is not None:
                self.hub._pace(pipe, len(chunk))
            record["body_bytes"] = sent + len(chunk)  # before the write: the client never sees more than this
            try:
                self.wfile.write(chunk)
            except OSError:
                record["body_bytes"] = sent
                raise
            sent += len(chunk)
        self.wfile.flush()
        if cut_after is not None:
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            raise _Aborted


_JSON = {"Content-Type": "application/json; charset=utf-8"}


def _error(status: int, error_code: str | None, message: str) -> _Reply:
    headers = {**_JSON, "X-Error-Message": message}
    if error_code is not None:
        headers["X-Error-Code"] = error_code
    return _Reply(status, headers, _json_body({"error": message}))


def _status_fault(fault: Fault, reply: _Reply) -> _Reply:
    p = fault.params
    code = int(p["code"])
    out = _error(code, p["error_code"], p["message"] or f"injected fault: HTTP {code}")
    if p["retry_after"] is not None:
        out.headers["Retry-After"] = str(p["retry_after"])
    if code == 416 and reply.file is not None:
        out.headers["Content-Range"] = f"bytes */{reply.file.n_bytes}"
    return out


def _range_faults(reply: _Reply, faults: dict[str, Fault]) -> _Reply:
    """ignore_range / bad_content_range on a 206 answer."""
    if reply.status != 206 or reply.file is None:
        return reply
    f = reply.file
    if "ignore_range" in faults:
        headers = {k: v for k, v in reply.headers.items() if k != "Content-Range"}
        return _Reply(200, headers, _Body(file=f, n_bytes=f.n_bytes), None, f, reply.mutate_from)
    if "bad_content_range" in faults:
        shift = int(faults["bad_content_range"].params["shift"])
        a, b = reply.byte_range
        if b + shift < f.n_bytes and a + shift >= 0:
            a, b = a + shift, b + shift
        elif a - shift >= 0:
            a, b = a - shift, b - shift
        else:  # no room to shift: one byte fewer
            b = max(a, b - 1)
        headers = {**reply.headers, "Content-Range": f"bytes {a}-{b}/{f.n_bytes}"}
        return _Reply(206, headers, _Body(file=f, start=a, n_bytes=b - a + 1), (a, b), f, reply.mutate_from)
    return reply


def _parse_range(header: str, n_bytes: int):
    """(first, last) inclusive, "unsatisfiable", or None when the header is malformed."""
    m = _RANGE_RE.fullmatch(header.strip().replace(" ", ""))
    if m is None or m.groups() == ("", ""):
        return None
    first, last = m.groups()
    if first == "":  # suffix: the last n bytes
        n = int(last)
        return "unsatisfiable" if n == 0 or n_bytes == 0 else (max(0, n_bytes - n), n_bytes - 1)
    a = int(first)
    b = n_bytes - 1 if last == "" else min(int(last), n_bytes - 1)
    if last != "" and int(last) < a:
        return None
    return "unsatisfiable" if a >= n_bytes else (a, b)


def _etags(header: str) -> set[str]:
    return {t.strip().removeprefix("W/").strip('"') for t in header.split(",")}


def _mutated_etag(etag: str) -> str:
    return hashlib.sha256(f"{etag}:mutated".encode()).hexdigest()[: len(etag)]


def _tree_entry(f: HubFile) -> dict:
    entry = {"type": "file", "oid": f.blob_id, "size": f.n_bytes, "path": f.path}
    if f.lfs:
        entry["lfs"] = {"oid": f.sha256, "size": f.n_bytes, "pointerSize": f.pointer_n_bytes}
    return entry


def _folder_entry(path: str) -> dict:
    return {"type": "directory", "oid": hashlib.sha1(path.encode()).hexdigest(), "size": 0, "path": path}


def _model_info(repo: _Repo, commit: str, query: dict) -> dict:
    files = repo.commits[commit]
    blobs = query.get("blobs", ["False"])[0].lower() in ("true", "1")
    siblings = []
    for f in files.values():
        s = {"rfilename": f.path}
        if blobs:
            s.update({"size": f.n_bytes, "blobId": f.blob_id})
            if f.lfs:
                s["lfs"] = {"sha256": f.sha256, "size": f.n_bytes, "pointerSize": f.pointer_n_bytes}
        siblings.append(s)
    org = repo.repo_id.split("/")[0] if "/" in repo.repo_id else None
    info = {
        "_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24],
        "id": repo.repo_id,
        "modelId": repo.repo_id,
        "author": org,
        "sha": commit,
        "lastModified": LAST_MODIFIED,
        "createdAt": LAST_MODIFIED,
        "private": repo.private,
        "gated": repo.gated,
        "disabled": False,
        "downloads": 0,
        "likes": 0,
        "tags": [],
        "siblings": siblings,
        "spaces": [],
        "usedStorage": sum(f.n_bytes for f in files.values()),
    }
    parameters: Counter = Counter()
    for f in files.values():
        header = _safetensors_header(f) if f.path.endswith(".safetensors") else None
        for name, t in (header or {}).items():
            if name != "__metadata__" and isinstance(t, dict):
                n = 1
                for d in t.get("shape", []):
                    n *= int(d)
                parameters[t.get("dtype", "?")] += n
    if parameters:
        info["safetensors"] = {"parameters": dict(parameters), "total": sum(parameters.values())}
        info["tags"].append("safetensors")
    if "config.json" in files:
        try:
            config = json.loads(files["config.json"].source.read_bytes())
            info["config"] = {k: config[k] for k in ("architectures", "model_type") if k in config}
            info["library_name"] = "transformers"
            info["tags"].append("transformers")
        except ValueError:
            pass
    expand = query.get("expand") or query.get("expand[]")
    if expand:
        info = {k: v for k, v in info.items() if k in {"_id", "id", *expand}}
    return info


def patch_hf_endpoint(monkeypatch, url: str) -> None:
    """Point an already-imported huggingface_hub at ``url`` for one test (see the module docstring)."""
    from huggingface_hub import constants, hf_api

    monkeypatch.setenv("HF_ENDPOINT", url)
    monkeypatch.setattr(constants, "ENDPOINT", url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(hf_api.api, "endpoint", url)


try:
    import pytest
except ImportError:  # benchmarks may run without pytest
    pytest = None

if pytest is not None:

    @pytest.fixture
    def hub_server():
        """A running ``HubServer`` (no repos; ``add_repo`` / ``add_example_repos``), closed after the test."""
        with HubServer() as hub:
            yield hub


if __name__ == "__main__" and sys.argv[1:] == ["--serve"]:
    import hub_server  # this file again, as a module: what it pickles must unpickle as hub_server.*

    hub_server._serve_over_pipes()
