"""The lineage graph of an index: every pair the sketch keeps, confirmed by the calibrated compare.

Nodes are indexed models; an edge is one component of one pair that the compare calls related, with its
log10 p and effect size (median matched-unit cosine). Direction is given only where the weights show an
asymmetry: a width-pruned child keeps a subset of its parent's units (``kept_unit_fraction`` < 1 on B's
side), a depth-pruned child's layer map drops some of the parent's layers. Otherwise it is "unknown" and
the edge says why: a fine-tune, a permutation or a quantised copy looks the same from both ends.
Families are the connected components of the related edges. The sketch only prunes: a pair it does not keep
is "not compared", never "independent".
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .defaults import DEFAULT_CANDIDATES
from .store import Index

GRAPH_VERSION = 1
NO_ASYMMETRY = "no asymmetry in the weights (a fine-tune, permutation, rescaling or quantised copy looks the same both ways)"


@dataclass(frozen=True)
class Edge:
    a: str
    b: str
    component: str
    log10_p: float
    median_unit_cosine: float | None  # effect size
    direction: str  # "a->b" (a is the parent), "b->a", or "unknown"
    direction_evidence: str


@dataclass(frozen=True)
class Graph:
    nodes: list[dict]  # name, family, parameters, location
    edges: list[Edge]  # related components only
    pairs: list[dict]  # every compared pair: a, b, verdict, components
    families: list[list[str]]  # connected components of the related edges (singletons included)
    n_pairs: int  # all pairs of the index
    candidates: int  # sketch neighbours kept per model and component
    seconds: float
    engine: str  # "local", "process-pool:N" or "ray:ADDRESS"
    notes: list[str] = field(default_factory=list)

    @property
    def n_compared(self) -> int:
        return len(self.pairs)

    def to_dict(self) -> dict:
        return {"modelkin_graph": GRAPH_VERSION, "n_models": len(self.nodes), "n_pairs": self.n_pairs,
                "n_compared": self.n_compared, "n_not_compared": self.n_pairs - self.n_compared,
                "candidates": self.candidates, "engine": self.engine, "seconds": self.seconds, "notes": self.notes,
                "nodes": self.nodes, "edges": [asdict(e) for e in self.edges], "families": self.families,
                "pairs": self.pairs}


# -- direction --------------------------------------------------------------------------------------


def direction_of(result, component: str) -> tuple[str, str]:
    """("a->b" | "b->a" | "unknown", the evidence in one sentence) for one related component."""
    votes: dict[str, str] = {}
    kept = [t.kept_unit_fraction for t in result.tensors
            if t.component == component and t.evidence and t.kept_unit_fraction is not None]
    if kept and all(k < 1 for k in kept):
        votes["a->b"] = f"B keeps a subset of A's units (kept unit fraction {min(kept):.2f} to {max(kept):.2f})"
    elif kept and all(k > 1 for k in kept):
        votes["b->a"] = f"A keeps a subset of B's units (B has {min(kept):.2f} to {max(kept):.2f} times A's units)"
    lm = result.components[component].layer_map or {}
    dropped_a, extra_b = lm.get("dropped_a") or [], lm.get("unmatched_b") or []
    if dropped_a and not extra_b:
        votes.setdefault("a->b", f"B's layer map drops A's layers {dropped_a}")
    elif extra_b and not dropped_a:
        votes.setdefault("b->a", f"A's layer map drops B's layers {extra_b}")
    if len(votes) == 1:
        return next(iter(votes.items()))
    if len(votes) > 1:
        return "unknown", "the units and the layer map point opposite ways"
    return "unknown", NO_ASYMMETRY


def confirm_pair(path_a: str, path_b: str) -> dict:
    """Compare two fingerprints: overall verdict and, per component, verdict, log10 p, effect and direction."""
    from ..api import compare

    r = compare(path_a, path_b, hash_files=False)
    comps = {}
    for name, c in r.components.items():
        d = {"verdict": c.verdict, "log10_p": c.log10_p, "median_unit_cosine": c.median_unit_cosine}
        if c.verdict == "related":
            d["direction"], d["direction_evidence"] = direction_of(r, name)
        comps[name] = d
    return {"verdict": r.verdict, "log10_p": r.log10_p, "components": comps}


def confirm_blobs(data_a: bytes, data_b: bytes) -> dict:
    """``confirm_pair`` on a Ray worker, over fingerprints passed as object references."""
    from .scale import materialise

    return confirm_pair(str(materialise(data_a)), str(materialise(data_b)))


# -- pruning ----------------------------------------------------------------------------------------


def candidate_pairs(index: Index, candidates: int) -> set[tuple[str, str]]:
    """Pairs (sorted names) where one is among the other's ``candidates`` nearest sketches in some component."""
    comps = {c for (c,) in index.db.execute("SELECT DISTINCT component FROM sketches")}
    out: set[tuple[str, str]] = set()
    for comp in sorted(comps):
        names, mat = index.sketches(comp)
        if len(names) < 2:
            continue
        sim = mat.astype(np.float64) @ mat.T.astype(np.float64)
        np.fill_diagonal(sim, -np.inf)
        k = min(candidates, len(names) - 1)
        top = np.argsort(-sim, axis=1, kind="stable")[:, :k]
        for i, row in enumerate(top):
            for j in row:
                out.add(tuple(sorted((names[i], names[int(j)]))))
    return out


def _families(names: list[str], edges: list[Edge]) -> list[list[str]]:
    parent = {n: n for n in names}

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for e in edges:
        parent[find(e.a)] = find(e.b)
    groups: dict[str, list[str]] = {}
    for n in names:
        groups.setdefault(find(n), []).append(n)
    return sorted((sorted(g) for g in groups.values()), key=lambda g: (-len(g), g))


def build_graph(index: Index, *, candidates: int = DEFAULT_CANDIDATES, workers: int = 1,
                ray_address: str | None = None) -> Graph:
    """All pairs of ``index`` kept by the sketch, confirmed by compare (locally, in a process pool, or on Ray)."""
    from .scale import BlobRefs, run_jobs

    t0 = time.perf_counter()
    models = {m.name: m for m in index.models()}
    names = sorted(models)
    pairs = sorted(candidate_pairs(index, candidates))
    path = {n: str(index.fingerprint_path(models[n].sha256)) for n in names}
    jobs = [(path[a], path[b]) for a, b in pairs]
    by_paths = dict(zip(jobs, pairs))
    blobs: list[BlobRefs] = []

    def ray_args(ray, job):
        if not blobs:
            blobs.append(BlobRefs(ray))
        return blobs[0].ref(job[0]), blobs[0].ref(job[1])

    results = {}
    for job, res in run_jobs(confirm_pair, jobs, workers=workers, ray_address=ray_address,
                             ray_fn=confirm_blobs, ray_args=ray_args):
        results[by_paths[job]] = res  # streamed back as each pair finishes
    compared, edges = [], []
    for a, b in pairs:
        r = results[(a, b)]
        compared.append({"a": a, "b": b, "verdict": r["verdict"], "log10_p": r["log10_p"], "components": r["components"]})
        for comp, c in sorted(r["components"].items()):
            if c["verdict"] == "related":
                edges.append(Edge(a, b, comp, c["log10_p"], c["median_unit_cosine"], c["direction"], c["direction_evidence"]))
    nodes = [{"name": n, "family": models[n].family, "parameters": models[n].parameters, "location": models[n].location}
             for n in names]
    engine = f"ray:{ray_address}" if ray_address else (f"process-pool:{workers}" if workers > 1 else "local")
    n_all = len(names) * (len(names) - 1) // 2
    notes = [] if len(pairs) == n_all else [
        f"{n_all - len(pairs)} of {n_all} pairs were not compared: their sketches are not among each other's "
        f"{candidates} nearest (not compared is not evidence of independence)"]
    return Graph(nodes, edges, compared, _families(names, edges), n_all, candidates,
                 round(time.perf_counter() - t0, 3), engine, notes)


# -- a folder of models or fingerprints --------------------------------------------------------------


def folder_members(folder: Path) -> list[Path]:
    """The fingerprints (.mkfp) and models (sub-folders, weight files) directly inside ``folder``."""
    from ..errors import UsageError
    from ..sources.formats import FORMATS

    suffixes = tuple(s for f in FORMATS for s in f.suffixes)
    out = [p for p in sorted(folder.iterdir()) if not p.name.startswith(".")
           and (p.is_dir() or p.suffix == ".mkfp" or p.name.endswith(suffixes))]
    if not out:
        raise UsageError(f"{folder}: no fingerprints (.mkfp) or models in this folder")
    return out


def index_folder(folder: Path, index: Index, *, workers: int = 1, ray_address: str | None = None) -> None:
    """Add every member of ``folder`` to ``index`` (models fingerprinted first, in parallel), named by file."""
    members = folder_members(folder)
    fps = [m for m in members if m.suffix == ".mkfp"]
    models = [m for m in members if m.suffix != ".mkfp"]
    for fp in fps:
        index.add(fp, name=fp.stem)
    add_models(index, [str(m) for m in models], names=[m.name for m in models], workers=workers,
               ray_address=ray_address, workdir=index.path.parent)


def add_models(index: Index, models: list[str], *, names: list[str | None] | None = None, workers: int = 1,
               ray_address: str | None = None, workdir: Path, replace: bool = False, revision: str | None = None,
               on_added=None) -> list:
    """Fingerprint ``models`` (process pool or Ray) and add each to the index as soon as it is ready."""
    import tempfile

    from .scale import fingerprint_job, fingerprint_task, run_jobs

    names = names or [None] * len(models)
    with tempfile.TemporaryDirectory(prefix="modelkin-add-", dir=workdir) as work:
        outs = [str(Path(work) / f"{i}.mkfp") for i in range(len(models))]
        name_of = dict(zip(outs, names))
        jobs = [(m, o, revision) for m, o in zip(models, outs)]
        recs = []
        for (_, out, _), res in run_jobs(fingerprint_job, jobs, workers=workers, ray_address=ray_address,
                                          ray_fn=fingerprint_task):
            if isinstance(res, bytes):  # from a Ray worker
                Path(out).write_bytes(res)
            recs.append(index.add(out, name=name_of[out], replace=replace))
            if on_added:
                on_added(recs[-1])
        return recs
