"""1-vs-N search and the parameter-weighted audit over an index: sketches prune, the calibrated compare decides."""

from __future__ import annotations

import itertools
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..pool import one_blas_thread
from ..sampling import FINGERPRINT_SAMPLE
from .defaults import DEFAULT_CANDIDATES, DEFAULT_WORKERS, SPECTRAL_BATCH
from .store import Index, IndexedModel


@dataclass(frozen=True)
class Hit:
    name: str
    verdict: str  # overall verdict of query vs this model
    log10_p: float
    components: dict  # component -> {"verdict", "log10_p", "median_unit_cosine"}
    sketch_similarity: float
    context: dict  # metadata / tokenizer similarity: shown apart from the weight evidence

    def to_dict(self) -> dict:
        return {"name": self.name, "verdict": self.verdict, "log10_p": self.log10_p, "components": self.components,
                "sketch_similarity": self.sketch_similarity, "context": self.context}


@dataclass(frozen=True)
class SearchResult:
    query: str
    n_indexed: int
    n_confirmed: int  # candidates compared
    hits: list[Hit]
    query_parameters: dict = field(default_factory=dict)
    query_claims: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"query": self.query, "n_indexed": self.n_indexed, "n_confirmed": self.n_confirmed,
                "hits": [h.to_dict() for h in self.hits], "query_parameters": self.query_parameters,
                "query_claims": self.query_claims}


def _policy_of(index: Index):
    from ..sources.fingerprint_format import FingerprintFile
    from ..sources.transport import LocalFile

    for m in index.models():
        p = index.fingerprint_path(m.sha256)
        if p.is_file():
            f = FingerprintFile(LocalFile(p))
            try:
                return f.policy
            finally:
                f.close()
    return FINGERPRINT_SAMPLE


def query_fingerprint(index: Index, query: str, workdir: str, revision: str | None = None) -> Path:
    """The query as a fingerprint (made with the index's sample policy unless it is one already)."""
    if str(query).endswith(".mkfp"):
        return Path(query)
    from .fingerprint import make_fingerprint

    out = Path(workdir) / "query.mkfp"
    make_fingerprint(query, out, revision=revision, policy=_policy_of(index), hash_files=True)
    return out


def raw_floor(n_indexed: int) -> float:
    """Raw-sketch similarity above which fewer than one of ``n_indexed`` unrelated models is expected.

    An unrelated model's raw sketch is independent of the query's, so their cosine is about normal with sd
    ``RAW_NULL_SD`` (sketch.py); the floor is that null's (1 - 1/(n+1)) quantile. Below it, a raw similarity is
    what an unrelated model shows, and ranks nothing."""
    from statistics import NormalDist

    from .sketch import RAW_NULL_SD

    return float(NormalDist().inv_cdf(1.0 - 1.0 / (max(n_indexed, 1) + 1)) * RAW_NULL_SD)


@dataclass(frozen=True)
class Candidates:
    """What the sketches keep for confirmation: ``raw`` (name -> similarity) holds every model whose raw
    sketch is above the null (``raw_floor``), at most ``cap`` per component; ``spectral`` (component -> names,
    best first, the raw candidates left out) is confirmed in batches, a further batch only while the last one
    found a relative (``SPECTRAL_BATCH``)."""

    raw: dict[str, float]
    spectral: dict[str, list[tuple[str, float]]]


def prune(index: Index, sketches: dict[str, np.ndarray], cap: int) -> Candidates:
    """Rank the index by the query's sketches (``sketch.py``) and keep what is worth confirming."""
    from .sketch import RAW_SUFFIX, rank

    raw: dict[str, float] = {}
    spectral: dict[str, list[tuple[str, float]]] = {}
    for key in sorted(sketches, key=lambda k: not k.endswith(RAW_SUFFIX)):  # raw sketches first
        names, mat = index.sketches(key)
        if not names:
            continue
        sim = rank(sketches[key], mat)
        order = np.argsort(-sim, kind="stable")
        if key.endswith(RAW_SUFFIX):
            floor = raw_floor(len(names))
            for i in order[:cap]:
                if sim[i] < floor:
                    break
                raw[names[i]] = max(raw.get(names[i], -1.0), float(sim[i]))
        else:  # the raw candidates (all keys ending in RAW_SUFFIX sort first) are left out of the spectral list
            top = (i for i in order if names[i] not in raw)
            spectral[key] = [(names[i], float(sim[i])) for i in itertools.islice(top, cap)]
    return Candidates(raw, spectral)


def _vocab_overlap(a: dict | None, b: dict | None) -> float | None:
    if not a or not b:
        return None
    return len(a.keys() & b.keys()) / max(len(a), 1)


def _context(qf, q_config: dict, rec: IndexedModel, cand_src) -> dict:
    from .store import CONFIG_KEYS

    qk = {k: q_config.get(k) for k in CONFIG_KEYS if isinstance(q_config.get(k), (str, int))}
    same = sorted(k for k in qk if rec.config_key.get(k) == qk[k])
    return {"same_config_keys": same, "config_keys_compared": sorted(set(qk) | set(rec.config_key)),
            "same_tokenizer": bool(qf.header.get("vocab_sha256")) and qf.header.get("vocab_sha256") == rec.vocab_sha256,
            "vocab_overlap": _vocab_overlap(qf.embedded_vocab(), cand_src.files[0].embedded_vocab()),
            "claimed_as_base": _claimed(qf.claims().get("base_model", []), rec)}


def _claimed(bases: list[str], rec: IndexedModel) -> bool:
    names = {rec.name.lower()} | ({rec.location.lower()} if rec.location else set())
    return any(b.lower() in names or any(n.endswith("/" + b.lower()) or b.lower().endswith("/" + n) for n in names)
               for b in bases)


def confirm(q, index: Index, rec: IndexedModel, similarity: float) -> Hit:
    """The calibrated compare of the open query fingerprint ``q`` with one indexed model."""
    from ..api import compare
    from ..sources import open_model

    with open_model(index.fingerprint_path(rec.sha256)) as c:
        r = compare(q, c, hash_files=False, threads=1, intervals=False)
        comps = {n: {"verdict": x.verdict, "log10_p": x.log10_p, "median_unit_cosine": x.median_unit_cosine}
                 for n, x in r.components.items()}
        ctx = _context(q.files[0], q.config or {}, rec, c)
    return Hit(rec.name, r.verdict, r.log10_p, comps, similarity, ctx)


class _SameFile:
    """Whether an indexed model is the query's own fingerprint: its sha256 against the query file's, hashed
    only when a candidate's stored file is as large as the query file."""

    def __init__(self, path: Path | None, index: Index):
        self.path, self.index, self.sha = path, index, None
        self.size = path.stat().st_size if path is not None else -1

    def __call__(self, rec: IndexedModel) -> bool:
        stored = self.index.fingerprint_path(rec.sha256)
        if self.path is None or not stored.is_file() or stored.stat().st_size != self.size:
            return False
        if self.sha is None:
            from .store import sha256_file

            self.sha = sha256_file(self.path)
        return rec.sha256 == self.sha


def _confirm_all(q, index: Index, cands: Candidates, records: dict[str, IndexedModel], skip,
                 workers: int) -> list[Hit]:
    """Confirm the raw candidates and each spectral list's first batch, then a spectral list's next batch
    while its last one found a relative in that component."""
    done: dict[str, Hit] = {}

    def run(todo: dict[str, float], pool) -> None:
        todo = {n: s for n, s in todo.items() if n in records and n not in done and not skip(records[n])}
        for hit in pool.map(lambda ns: confirm(q, index, records[ns[0]], ns[1]), todo.items()):
            done[hit.name] = hit

    def found(batch: list[tuple[str, float]], comp: str) -> bool:
        return any(done[n].components.get(comp, {}).get("verdict") == "related" for n, _ in batch if n in done)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        starts, todo = dict.fromkeys(cands.spectral, 0), dict(cands.raw)
        while True:
            batches = {c: cands.spectral[c][s: s + SPECTRAL_BATCH] for c, s in starts.items()}
            for batch in batches.values():
                todo.update(batch)
            run(todo, pool)
            starts = {c: s + SPECTRAL_BATCH for c, s in starts.items()
                      if s + SPECTRAL_BATCH < len(cands.spectral[c]) and found(batches[c], c)}
            if not starts:
                return list(done.values())
            todo = {}


def search(index: Index, query: str, top: int = 10, candidates: int = DEFAULT_CANDIDATES, threads: int = DEFAULT_WORKERS,
           revision: str | None = None, exclude_self: bool = True, confirm_all: bool = False) -> SearchResult:
    """The indexed models related to ``query``, strongest first: the sketches keep candidates (``prune``), the
    calibrated compare confirms each (``threads`` at once). ``confirm_all`` compares every indexed model."""
    from ..inventory import build_inventory
    from ..sources import open_model
    from .sketch import sketch_model

    with tempfile.TemporaryDirectory(prefix="modelkin-search-") as work:
        qpath = query_fingerprint(index, query, work, revision)
        same_file = _SameFile(qpath if exclude_self else None, index)
        with open_model(qpath) as q:
            if q.files[0].format_name != "fingerprint":
                from ..errors import UsageError

                raise UsageError(f"{qpath}: not a fingerprint")
            params = {c: int(sum(r.values())) for c, r in build_inventory(q).summary().items()}
            cands = (Candidates({m.name: 0.0 for m in index.models()}, {}) if confirm_all
                     else prune(index, sketch_model(q), candidates))
            records = index.records([*cands.raw, *(n for order in cands.spectral.values() for n, _ in order)])
            with one_blas_thread():  # set here, where it is lifted: the compares on the workers share it
                hits = _confirm_all(q, index, cands, records, same_file, threads)
            claims = q.files[0].claims()
    hits.sort(key=lambda h: (h.verdict != "related", h.log10_p, -h.sketch_similarity, h.name))
    return SearchResult(str(query), index.count(), len(hits), hits[:top], params, claims)


# -- audit ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ComponentAudit:
    component: str
    parameters: int
    share: float  # of the model's parameters
    derived_from: list[dict]  # [{"name", "log10_p", "median_unit_cosine"}] related indexed models, strongest first

    def to_dict(self) -> dict:
        return {"component": self.component, "parameters": self.parameters, "share": self.share,
                "derived_from": self.derived_from}


def audit(index: Index, query: str, threads: int = DEFAULT_WORKERS, revision: str | None = None) -> dict:
    """Per component of ``query``: which indexed models its weights derive from (with p), the share of its
    parameters that has an indexed relative, and the claimed lineage against the evidence."""
    res = search(index, query, top=1 << 30, threads=threads, revision=revision, confirm_all=True)
    total = sum(res.query_parameters.values()) or 1
    comps = []
    for comp, n in sorted(res.query_parameters.items()):
        rel = sorted(({"name": h.name, "log10_p": h.components[comp]["log10_p"],
                       "median_unit_cosine": h.components[comp]["median_unit_cosine"]}
                      for h in res.hits if h.components.get(comp, {}).get("verdict") == "related"), key=lambda d: d["log10_p"])
        comps.append(ComponentAudit(comp, n, n / total, rel))
    derived = sum(c.parameters for c in comps if c.derived_from)
    found = sorted({d["name"] for c in comps for d in c.derived_from})
    claimed = res.query_claims.get("base_model", [])
    matched_claims = {b: [h.name for h in res.hits if _claimed([b], _rec_of(index, h.name))] for b in claimed}
    return {
        "query": res.query, "n_indexed": res.n_indexed, "n_compared": res.n_confirmed,
        "parameters": total, "derived_share": derived / total, "no_relative_share": 1 - derived / total,
        "components": [c.to_dict() for c in comps],
        "claims": {
            "base_model": claimed, "license": res.query_claims.get("license"),
            "claimed_but_not_found": [b for b, names in matched_claims.items() if not any(n in found for n in names)],
            "claimed_not_indexed": [b for b, names in matched_claims.items() if not names],
            "found_but_not_claimed": [n for n in found if not any(n in names for names in matched_claims.values())],
        },
        "hits": [h.to_dict() for h in res.hits],
    }


def _rec_of(index: Index, name: str) -> IndexedModel:
    return index.get(name)
