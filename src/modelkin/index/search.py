"""1-vs-N search and the parameter-weighted audit over an index: sketches prune, the calibrated compare decides."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..sampling import FINGERPRINT_SAMPLE
from .store import Index, IndexedModel

DEFAULT_CANDIDATES = 32


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


def prune(index: Index, sketches: dict[str, np.ndarray], n: int) -> dict[str, float]:
    """Candidate name -> best sketch similarity over shared components, the ``n`` best per component."""
    from .sketch import rank

    out: dict[str, float] = {}
    for comp, q in sketches.items():
        names, mat = index.sketches(comp)
        if not names:
            continue
        sim = rank(q, mat)
        for i in np.argsort(-sim, kind="stable")[:n]:
            out[names[i]] = max(out.get(names[i], -1.0), float(sim[i]))
    return out


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


def confirm(qpath: Path, index: Index, rec: IndexedModel, similarity: float, threads: int = 1) -> Hit:
    from ..api import compare
    from ..sources import open_model

    with open_model(qpath) as q, open_model(index.fingerprint_path(rec.sha256)) as c:
        r = compare(q, c, hash_files=False, threads=threads)
        comps = {n: {"verdict": x.verdict, "log10_p": x.log10_p, "median_unit_cosine": x.median_unit_cosine}
                 for n, x in r.components.items()}
        ctx = _context(q.files[0], q.config or {}, rec, c)
    return Hit(rec.name, r.verdict, r.log10_p, comps, similarity, ctx)


def search(index: Index, query: str, top: int = 10, candidates: int = DEFAULT_CANDIDATES, threads: int = 1,
           revision: str | None = None, exclude_self: bool = True, confirm_all: bool = False) -> SearchResult:
    from ..inventory import build_inventory
    from ..sources import open_model
    from .sketch import sketch_model

    with tempfile.TemporaryDirectory(prefix="modelkin-search-") as work:
        qpath = query_fingerprint(index, query, work, revision)
        from .store import sha256_file

        qsha = sha256_file(qpath)
        with open_model(qpath) as q:
            if q.files[0].format_name != "fingerprint":
                from ..errors import UsageError

                raise UsageError(f"{qpath}: not a fingerprint")
            params = {c: int(sum(r.values())) for c, r in build_inventory(q).summary().items()}
            claims = q.files[0].claims()
            n_cand = 1 << 30 if confirm_all else candidates
            cands = prune(index, sketch_model(q), n_cand)
        records = {m.name: m for m in index.models()}
        todo = [(records[n], s) for n, s in cands.items() if n in records and not (exclude_self and records[n].sha256 == qsha)]
        hits = [confirm(qpath, index, rec, s, threads) for rec, s in todo]
    hits.sort(key=lambda h: (h.verdict != "related", h.log10_p, -h.sketch_similarity))
    return SearchResult(str(query), len(records), len(todo), hits[:top], params, claims)


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


def audit(index: Index, query: str, threads: int = 1, revision: str | None = None) -> dict:
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
