"""The bench's fingerprint columns: do fingerprints give the model compare's verdicts, and does search find
every related model?

* **agreement**: every model of the zoo is fingerprinted once (``modelkin fingerprint``'s defaults) into a
  fresh index; each pair is compared fingerprint to fingerprint and its overall and per-component verdicts
  are checked against the full compare of the models that the bench already ran;
* **recall**: for each pair labelled related, ``search`` with the second model's fingerprint (sketch-pruned
  candidates, each confirmed by the calibrated tests) must return the first model as "related" — found at
  all, and found within the top 10 (a model of a large family has more than 10 relatives, its siblings
  included, so the top 10 can miss its parent without any error); false hits are related verdicts on pairs
  the manifest labels independent.

Both run on the local process pool (``jobs``).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from ..pool import run_local
from .harness import component_verdicts

SEARCH_TOP = 10


def _compare(i: int, fp_a: str, fp_b: str) -> dict:
    """Fingerprint against fingerprint, for live pair ``i`` (the index places the result)."""
    from ..api import compare

    t0 = time.perf_counter()
    r = compare(fp_a, fp_b, hash_files=False, threads=1)
    return {"verdict": r.verdict, "components": component_verdicts(r), "log10_p": r.log10_p,
            "seconds": time.perf_counter() - t0}


def _search(name: str, db: str, query: str) -> dict:
    """Search the index for the fingerprint ``query`` of the zoo model ``name``."""
    from ..index.search import search
    from ..index.store import Index

    t0 = time.perf_counter()
    with Index(db) as index:
        res = search(index, query, top=1 << 30, threads=1)  # every confirmed candidate, ranked
    return {"hits": [{"name": h.name, "verdict": h.verdict, "log10_p": h.log10_p} for h in res.hits],
            "confirmed": res.n_confirmed, "seconds": time.perf_counter() - t0}


def fingerprint_columns(root: Path, records: list[dict], jobs: int = 1, log=print) -> dict:
    """Fill ``rec["fingerprint"]`` (agreement) and ``rec["search"]`` (recall) in place; return the summary."""
    from ..index.graph import add_models
    from ..index.store import Index

    live = [r for r in records if r["modelkin"]["verdict"] != "error"]
    models = sorted({m for r in live for m in (r["a"], r["b"])})
    with tempfile.TemporaryDirectory(prefix="modelkin-bench-fp-") as work:
        db = str(Path(work) / "index.sqlite")
        t0 = time.perf_counter()
        with Index(db) as index:
            add_models(index, [str(root / m) for m in models], names=models, workers=jobs, workdir=Path(work))
            paths = {m: str(index.fingerprint_path(index.get(m).sha256)) for m in models}
        fp_seconds = time.perf_counter() - t0
        log(f"[bench] {len(models)} fingerprints in {fp_seconds:.0f} s")
        jobs_cmp = [(i, paths[r["a"]], paths[r["b"]]) for i, r in enumerate(live)]
        for (i, _, _), out in run_local(_compare, jobs_cmp, jobs):
            live[i]["fingerprint"] = _agreement(out, live[i]["modelkin"])
        queries = sorted({r["b"] for r in live if r["label"] == "related"})
        found = {q: out for (q, _, _), out in run_local(_search, [(q, db, paths[q]) for q in queries], jobs)}
        sizes = [Path(p).stat().st_size for p in paths.values()]
    labels = {frozenset((r["a"], r["b"])): r["label"] for r in records}
    for r in live:
        if r["label"] == "related":
            r["search"] = _recall(found[r["b"]], r["a"])
    false_hits = sorted({(q, h["name"]) for q, out in found.items() for h in out["hits"]
                         if h["verdict"] == "related" and labels.get(frozenset((q, h["name"]))) == "independent"})
    return summarize_fingerprints(live, fp_seconds, sizes, false_hits)


def _agreement(out: dict, full: dict) -> dict:
    full_comps = {n: c["verdict"] for n, c in full["components"].items()}
    return {**out, "agree": out["verdict"] == full["verdict"] and out["components"] == full_comps}


def _recall(found: dict, target: str) -> dict:
    hits = found["hits"]
    rank = next((k + 1 for k, h in enumerate(hits) if h["name"] == target and h["verdict"] == "related"), None)
    return {"found": rank is not None, "in_top": rank is not None and rank <= SEARCH_TOP, "rank": rank,
            "related_hits": sum(h["verdict"] == "related" for h in hits), "seconds": found["seconds"]}


def summarize_fingerprints(live: list[dict], fp_seconds: float, sizes: list[int], false_hits: list) -> dict:
    agree = [r["fingerprint"]["agree"] for r in live if "fingerprint" in r]
    recall = [r["search"]["found"] for r in live if "search" in r]
    return {
        "pairs": len(agree), "agree": sum(agree),
        "disagreements": [r["id"] for r in live if "fingerprint" in r and not r["fingerprint"]["agree"]],
        "related_pairs": len(recall), "found": sum(recall),
        "found_in_top": sum(r["search"]["in_top"] for r in live if "search" in r),
        "missed": [r["id"] for r in live if "search" in r and not r["search"]["found"]],
        "false_hits": [list(x) for x in false_hits], "top": SEARCH_TOP,
        "fingerprint_seconds": fp_seconds, "max_fingerprint_bytes": max(sizes, default=0),
        "mean_fingerprint_bytes": sum(sizes) / max(len(sizes), 1),
    }
