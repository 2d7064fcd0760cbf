"""The fingerprint index: SQLite (WAL) for the records, fingerprints stored content-addressed beside it.

Layout: ``<db>`` (SQLite) and ``<db>.d/fingerprints/<sha[:2]>/<sha256>.mkfp``. A fingerprint is copied in
through a temporary file and renamed into place (atomic), before its row is committed, so a process killed
at any point leaves the index readable: at worst an unreferenced fingerprint file. Writers take SQLite's
write lock (``BEGIN IMMEDIATE``) and wait for each other (busy timeout), so concurrent adds lose nothing.
Default path: ``$MODELKIN_INDEX``, else ``~/.cache/modelkin/index.sqlite`` (under ``MODELKIN_CACHE`` when set).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..atomic import atomic_file
from ..errors import ModelkinError, UsageError

SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 60_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS models (
    name TEXT PRIMARY KEY,
    sha256 TEXT NOT NULL,
    location TEXT,
    revision TEXT,
    family TEXT,
    parameters TEXT NOT NULL,
    vocab_sha256 TEXT,
    config_key TEXT,
    claims TEXT NOT NULL,
    added TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sketches (
    name TEXT NOT NULL REFERENCES models(name) ON DELETE CASCADE,
    component TEXT NOT NULL,
    vector BLOB NOT NULL,
    PRIMARY KEY (name, component)
);
"""

CONFIG_KEYS = ("model_type", "hidden_size", "num_hidden_layers", "intermediate_size", "num_attention_heads",
               "num_key_value_heads", "vocab_size")


class IndexError_(ModelkinError, LookupError):
    """The index is unreadable, or a name is not in it."""


@dataclass(frozen=True, slots=True)
class IndexedModel:
    name: str
    sha256: str
    location: str | None
    revision: str | None
    family: str | None
    parameters: dict
    vocab_sha256: str | None
    config_key: dict
    claims: dict
    added: str


def default_path() -> Path:
    env = os.environ.get("MODELKIN_INDEX")
    if env:
        return Path(env)
    root = os.environ.get("MODELKIN_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "modelkin")
    return Path(root) / "index.sqlite"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class Index:
    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path is not None else default_path()
        self.store = Path(str(self.path) + ".d") / "fingerprints"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
            self.db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA foreign_keys=ON")
            self.db.execute("BEGIN IMMEDIATE")
            for stmt in _SCHEMA.split(";"):
                if stmt.strip():
                    self.db.execute(stmt)
            self.db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            self.db.execute("COMMIT")
            (v,) = self.db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        except sqlite3.DatabaseError as e:
            raise IndexError_(f"not a readable modelkin index: {e}", self.path) from None
        if v != str(SCHEMA_VERSION):
            raise IndexError_(f"index schema version {v} is not supported (this modelkin uses {SCHEMA_VERSION})", self.path)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "Index":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- fingerprints on disk ---------------------------------------------------------------------
    def fingerprint_path(self, sha: str) -> Path:
        return self.store / sha[:2] / f"{sha}.mkfp"

    def _store_file(self, fp: Path) -> str:
        sha = sha256_file(fp)
        dest = self.fingerprint_path(sha)
        if not dest.is_file() or sha256_file(dest) != sha:
            with atomic_file(dest, durable=True) as out, open(fp, "rb") as src:
                shutil.copyfileobj(src, out, 1 << 20)
        return sha

    # -- records ----------------------------------------------------------------------------------
    def add(self, fp: str | Path, name: str | None = None, replace: bool = False) -> IndexedModel:
        """Add a fingerprint file (validated by opening it) under ``name``; returns its record."""
        from ..sources import open_model
        from ..inventory import build_inventory
        from .sketch import sketch_model

        fp = Path(fp)
        with open_model(fp) as src:
            f = src.files[0]
            if f.format_name != "fingerprint":
                raise UsageError(f"{fp}: not a fingerprint (make one with 'modelkin fingerprint')")
            header = f.header
            inv = build_inventory(src)
            params = {c: int(sum(r.values())) for c, r in inv.summary().items()}
            sketches = sketch_model(src)
            cfg = src.config or {}
            config_key = {k: cfg.get(k) for k in CONFIG_KEYS if isinstance(cfg.get(k), (str, int))}
            claims = f.claims()
            location = header["source"].get("location")
            record_name = name or _default_name(location, fp)
            sha = self._store_file(fp)
            rec = IndexedModel(record_name, sha, location, f.source_revision, inv.family, params,
                               header.get("vocab_sha256"), config_key, claims,
                               datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            if db.execute("SELECT 1 FROM models WHERE name=?", (rec.name,)).fetchone():
                if not replace:
                    raise UsageError(f"{rec.name!r} is already in the index {self.path} (remove it first, or --replace)")
                db.execute("DELETE FROM models WHERE name=?", (rec.name,))
            db.execute("INSERT INTO models VALUES (?,?,?,?,?,?,?,?,?,?)", (
                rec.name, rec.sha256, rec.location, rec.revision, rec.family, json.dumps(rec.parameters),
                rec.vocab_sha256, json.dumps(rec.config_key), json.dumps(rec.claims), rec.added))
            db.executemany("INSERT INTO sketches VALUES (?,?,?)",
                           [(rec.name, c, v.astype("<f4").tobytes()) for c, v in sketches.items()])
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return rec

    def remove(self, name: str) -> None:
        self.db.execute("BEGIN IMMEDIATE")
        cur = self.db.execute("DELETE FROM models WHERE name=?", (name,))
        self.db.execute("COMMIT")
        if cur.rowcount == 0:
            raise IndexError_(f"{name!r} is not in the index", self.path)
        # The file stays if another record shares it; unreferenced files are removed by ``gc``.
        self.gc()

    def gc(self) -> int:
        used = {r[0] for r in self.db.execute("SELECT sha256 FROM models")}
        n = 0
        if self.store.is_dir():
            for p in self.store.glob("*/*.mkfp"):
                if p.stem not in used:
                    p.unlink(missing_ok=True)
                    n += 1
        return n

    def models(self) -> list[IndexedModel]:
        rows = self.db.execute("SELECT * FROM models ORDER BY name").fetchall()
        return [_record(r) for r in rows]

    def count(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM models").fetchone()[0])

    def records(self, names) -> dict[str, IndexedModel]:
        """The records of those of ``names`` that are indexed (one query per 500 names)."""
        names, out = list(dict.fromkeys(names)), {}
        for i in range(0, len(names), 500):
            chunk = names[i: i + 500]
            rows = self.db.execute(f"SELECT * FROM models WHERE name IN ({','.join('?' * len(chunk))})", chunk).fetchall()
            out.update((r[0], _record(r)) for r in rows)
        return out

    def get(self, name: str) -> IndexedModel:
        r = self.db.execute("SELECT * FROM models WHERE name=?", (name,)).fetchone()
        if r is None:
            raise IndexError_(f"{name!r} is not in the index", self.path)
        return _record(r)

    def sketches(self, component: str) -> tuple[list[str], np.ndarray]:
        """(names, [n, dim] matrix) of every indexed model's sketch stored under ``component`` (a component's
        spectral sketch, or its raw sketch under component + ``:raw``; sketch.py)."""
        from .sketch import dim_of

        dim = dim_of(component)
        rows = self.db.execute("SELECT name, vector FROM sketches WHERE component=? ORDER BY name", (component,)).fetchall()
        rows = [r for r in rows if len(r[1]) == 4 * dim]  # a sketch of another layout (an older index) is skipped
        names = [r[0] for r in rows]
        mat = np.frombuffer(b"".join(r[1] for r in rows), dtype="<f4").reshape(len(rows), dim) if rows else np.empty((0, dim), np.float32)
        return names, mat

    def add_sketch_rows(self, rows: list[tuple[str, dict, dict[str, np.ndarray]]], sha256: list[str] | None = None) -> None:
        """Bulk insert of (name, parameters, component -> sketch) for benchmarks: synthetic entries whose
        fingerprint is ``sha256[i]`` (a fingerprint already in the store) or none."""
        now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        shas = sha256 or ["0" * 64] * len(rows)
        self.db.execute("BEGIN IMMEDIATE")
        self.db.executemany("INSERT INTO models VALUES (?,?,?,?,?,?,?,?,?,?)", [
            (n, sha, None, None, None, json.dumps(p), None, "{}", json.dumps({"base_model": [], "license": None}), now)
            for (n, p, _), sha in zip(rows, shas)])
        self.db.executemany("INSERT INTO sketches VALUES (?,?,?)",
                            [(n, c, v.astype("<f4").tobytes()) for n, _, s in rows for c, v in s.items()])
        self.db.execute("COMMIT")


def _record(r) -> IndexedModel:
    return IndexedModel(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]), r[6], json.loads(r[7]), json.loads(r[8]), r[9])


def _default_name(location: str | None, fp: Path) -> str:
    if location:
        p = Path(location)
        return p.name if p.exists() else location
    return fp.stem
