"""The bench: modelkin and the public baselines on every pair of a zoo, scored against the manifest's labels.

Labels come only from ``manifest.json`` (``label`` per pair, ``components`` per component) — never from any
score. Rows of the summary: one per derivation kind among pairs labelled related, one for all pairs labelled
independent. A pair whose models cannot be opened is recorded with its error and counted as wrong for
every method (a miss on a related pair, a false positive on an independent one); the bench goes on.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from ..errors import FormatError, SourceNotFoundError
from ..inventory import build_inventory
from ..sampling import SamplePolicy
from ..sources import open_model
from . import calibration, scoring
from .baselines import BASELINES, MEASURED_NULL
from .truth import expected_structure, observed_structure

RELATED, INDEPENDENT = "related", "independent"
METHODS = ("modelkin", *BASELINES)
INDEPENDENT_ROW = "independent"
ALPHAS = (0.05, 1e-3)
KIND_ORDER = (
    "finetune_short", "finetune_long", "continued_pretraining", "lora_merged", "quant_int8", "quant_4bit",
    "cast_fp16", "cast_bf16", "depth_pruning", "depth_upscaling", "width_pruning", "vocab_extension",
    "vocab_pruning", "permutation", "rotation", "rescaling", "merge", "moe_upcycling", "component_graft",
    "shared_init", "shared_embedding_init", "distillation_init", "width_growth", "cnn_permute_prune",
)
# The sampled read mode as the bench measures it: every tensor cut to two blocks of 16 rows (the default
# policy reads the zoo's small tensors whole, which would make agreement trivial).
BENCH_SAMPLE = SamplePolicy(fraction=0.01, min_rows=32, block_rows=16, small_bytes=0)
NO_MANIFEST = "no manifest.json (build one with 'modelkin zoo build')"


# -- manifest ---------------------------------------------------------------------------------------


def load_manifest(zoo_dir: str | Path) -> tuple[Path, dict]:
    root = Path(zoo_dir)
    path = root / "manifest.json"
    if not root.is_dir() or not path.is_file():
        raise SourceNotFoundError(NO_MANIFEST, root)
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FormatError(f"cannot read the zoo manifest: {e}", path) from None
    if not isinstance(manifest, dict) or "modelkin_zoo" not in manifest:
        raise FormatError("not a modelkin zoo manifest (no 'modelkin_zoo' key)", path)
    pairs = manifest.get("pairs")
    if not isinstance(pairs, list):
        raise FormatError("'pairs' must be a list", path)
    for i, p in enumerate(pairs):
        if not isinstance(p, dict) or not all(isinstance(p.get(k), str) for k in ("a", "b")):
            raise FormatError(f"pair {i}: needs string fields 'a' and 'b'", path)
        if p.get("label") not in (RELATED, INDEPENDENT):
            raise FormatError(f"pair {p.get('id', i)}: label must be 'related' or 'independent', got {p.get('label')!r}", path)
        comps = p.get("components", {})
        if not isinstance(comps, dict) or any(v not in (RELATED, INDEPENDENT) for v in comps.values()):
            raise FormatError(f"pair {p.get('id', i)}: 'components' must map names to 'related'/'independent'", path)
    return root, manifest


def _resolve(root: Path, rel: str) -> Path:
    p = Path(rel)
    return p if p.is_absolute() else root / p


def _err(e: BaseException) -> str:
    msg = e.one_line() if hasattr(e, "one_line") else str(e)
    return f"{type(e).__name__}: {msg}"


# -- one pair ---------------------------------------------------------------------------------------


def run_pair(root: Path, pair: dict, index: int, threads: int = 2, manifest: dict | None = None) -> dict:
    from .. import compare  # late: keeps ``modelkin.bench`` importable on its own

    rec = {
        "id": str(pair.get("id", index)),
        "a": pair["a"],
        "b": pair["b"],
        "kind": pair.get("kind", "unknown"),
        "label": pair["label"],
        "strength": pair.get("strength"),
        "family": pair.get("family"),
        "component_labels": dict(pair.get("components", {})),
        "modelkin": None,
        "baselines": {},
        "seconds": 0.0,
    }
    started = time.perf_counter()
    path_a, path_b = _resolve(root, pair["a"]), _resolve(root, pair["b"])
    try:
        src_a = open_model(path_a)
        try:
            src_b = open_model(path_b)
        except BaseException:
            src_a.close()
            raise
    except Exception as e:  # a model that fails to load: record, count as wrong, go on
        rec["error"] = _err(e)
        rec["modelkin"] = {"verdict": "error", "log10_p": None, "components": {}, "seconds": 0.0, "error": rec["error"]}
        rec["baselines"] = {m: {"score": None, "call": "error", "detail": "", "seconds": 0.0, "error": rec["error"]}
                            for m in BASELINES}
        rec["seconds"] = time.perf_counter() - started
        return rec
    try:
        t0 = time.perf_counter()
        try:
            r = compare(path_a, path_b, threads=threads, hash_files=False)
            rec["modelkin"] = {
                "verdict": r.verdict,
                "log10_p": r.log10_p,
                "components": {n: {"verdict": c.verdict, "log10_p": c.log10_p, "test": c.test,
                                   "evidence_class": c.evidence_class} for n, c in r.components.items()},
                "tests": calibration.per_test(r),
                # Components the manifest says both models have but the result does not list: never expected.
                "missing_components": sorted(set(rec["component_labels"]) - set(r.components)),
                "invariant": {n: {k: t.get(k) for k in ("test", "ran", "z", "mean_margin", "log10_p")}
                              for n, c in r.components.items() for t in c.invariant_tests},
            }
            rec["sampled"] = _sampled_agreement(compare(path_a, path_b, threads=threads, hash_files=False,
                                                        read_mode="sampled", sample_policy=BENCH_SAMPLE), r)
            expected = expected_structure(root, manifest or {}, pair)
            if expected is not None:
                rec["structure"] = {"expected": expected, **observed_structure(r, expected)}
        except Exception as e:
            rec["modelkin"] = {"verdict": "error", "log10_p": None, "components": {}, "error": _err(e)}
        rec["modelkin"]["seconds"] = time.perf_counter() - t0
        try:
            inv_a, inv_b = build_inventory(src_a), build_inventory(src_b)
        except Exception as e:
            inv_a = inv_b = None
            inv_error = _err(e)
        for name, fn in BASELINES.items():
            t0 = time.perf_counter()
            try:
                if inv_a is None:
                    raise RuntimeError(inv_error)
                d = fn(inv_a, inv_b).to_dict()
            except Exception as e:
                d = {"score": None, "call": "error", "detail": "", "error": _err(e)}
            d["seconds"] = time.perf_counter() - t0
            rec["baselines"][name] = d
    finally:
        src_a.close()
        src_b.close()
    rec["seconds"] = time.perf_counter() - started
    return rec


def component_verdicts(result) -> dict[str, str]:
    """Component name -> verdict of a ComparisonResult."""
    return {n: c.verdict for n, c in result.components.items()}


def _sampled_agreement(sampled, full) -> dict:
    """Whether the sampled read gives the full read's verdicts, and what share of the bytes it read."""
    return {"agree": sampled.verdict == full.verdict and component_verdicts(sampled) == component_verdicts(full),
            "bytes_fraction": sampled.reads.planned_bytes / max(sampled.reads.full_bytes, 1),
            "verdict": sampled.verdict}


def sampled_summary(records: list[dict]) -> dict | None:
    rows = [r["sampled"] for r in records if r.get("sampled")]
    if not rows:
        return None
    fractions = [x["bytes_fraction"] for x in rows]
    return {"n": len(rows), "agree": sum(x["agree"] for x in rows),
            "mean_bytes_fraction": sum(fractions) / len(fractions), "max_bytes_fraction": max(fractions)}


# -- baselines whose null is measured on the bench's independent pairs -----------------------------

MIN_NULL_PAIRS = 3


def apply_measured_nulls(records: list[dict]) -> None:
    """Turn raw scores into z against the independent pairs (same family when it has enough, else all),
    leaving the pair itself out; the call is related above the baseline's z threshold. In place."""
    for name, threshold in MEASURED_NULL.items():
        live = [r for r in records if r["baselines"].get(name, {}).get("call") not in (None, "error")]
        for r in live:
            d = r["baselines"][name]
            d.setdefault("raw", d["score"])
        negatives = [r for r in live if r["label"] == INDEPENDENT and r["baselines"][name]["raw"] is not None]
        for r in live:
            d = r["baselines"][name]
            pool = [n for n in negatives if n is not r and n.get("family") == r.get("family")]
            scope = f"family {r.get('family')}"
            if len(pool) < MIN_NULL_PAIRS:
                pool, scope = [n for n in negatives if n is not r], "all families"
            values = np.array([n["baselines"][name]["raw"] for n in pool], dtype=np.float64)
            sd = float(values.std(ddof=1)) if values.size >= MIN_NULL_PAIRS else 0.0
            if d["raw"] is None or sd <= 0:
                d["score"], d["call"] = None, "inconclusive"
                d["null"] = {"n": int(values.size), "scope": scope, "mean": None, "sd": None}
                continue
            z = (d["raw"] - float(values.mean())) / sd
            d["score"], d["call"] = z, "related" if z > threshold else "independent"
            d["null"] = {"n": int(values.size), "scope": scope, "mean": float(values.mean()), "sd": sd}


# -- scoring ----------------------------------------------------------------------------------------


def _call(rec: dict, method: str) -> str | None:
    if method == "modelkin":
        return rec["modelkin"]["verdict"]
    return rec["baselines"][method]["call"]


def _score(rec: dict, method: str):
    """Higher = more related. modelkin: -log10 p. A failed run on an independent pair ranks top (wrong)."""
    if method == "modelkin":
        lp = rec["modelkin"].get("log10_p")
        s = None if lp is None else -lp
        failed = rec["modelkin"]["verdict"] == "error"
    else:
        s = rec["baselines"][method]["score"]
        failed = rec["baselines"][method]["call"] == "error"
    if failed and rec["label"] == INDEPENDENT:
        return scoring.TOP
    return s


def _component_outcomes(rec: dict) -> list[bool]:
    got = rec["modelkin"].get("components", {})
    return [got.get(name, {}).get("verdict") == label for name, label in rec["component_labels"].items()]


def _row_key(rec: dict) -> str:
    return INDEPENDENT_ROW if rec["label"] == INDEPENDENT else rec["kind"]


def _kind_sort(kind: str) -> tuple[int, str]:
    return (KIND_ORDER.index(kind), "") if kind in KIND_ORDER else (len(KIND_ORDER), kind)


def _row_summary(recs: list[dict], negatives: list[dict], related: bool) -> dict:
    out = {}
    for m in METHODS:
        calls = [_call(r, m) for r in recs]
        d = {"tpr": scoring.tpr(calls)} if related else {"fpr": scoring.fpr(calls)}
        d["auc"] = scoring.auc([_score(r, m) for r in recs], [_score(r, m) for r in negatives]) if related else None
        d["n"] = len(recs)
        d["seconds"] = sum((r["modelkin"] if m == "modelkin" else r["baselines"][m]).get("seconds", 0.0) for r in recs)
        if m == "modelkin":
            outcomes = [o for r in recs for o in _component_outcomes(r)]
            d["component_accuracy"] = scoring.accuracy(outcomes)
            d["n_components"] = len(outcomes)
        out[m] = d
    return out


def summarize(records: list[dict]) -> dict:
    rows: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        rows[_row_key(r)].append(r)
    negatives = rows.get(INDEPENDENT_ROW, [])
    kinds = sorted((k for k in rows if k != INDEPENDENT_ROW), key=_kind_sort)
    summary = {k: _row_summary(rows[k], negatives, related=True) for k in kinds}
    if negatives:
        summary[INDEPENDENT_ROW] = _row_summary(negatives, negatives, related=False)
    positives = [r for r in records if r["label"] == RELATED]
    overall = {}
    if positives:
        overall[RELATED] = _row_summary(positives, negatives, related=True)
    by_kind: dict[str, list[dict]] = defaultdict(list)
    for r in negatives:
        by_kind[r["kind"]].append(r)
    overall["independent_by_kind"] = {k: _row_summary(v, v, related=False) for k, v in sorted(by_kind.items())}
    timing = {k: {"n": len(rows[k]), "seconds": sum(r["seconds"] for r in rows[k]),
                  "mean_seconds": sum(r["seconds"] for r in rows[k]) / len(rows[k])} for k in summary}
    calibration_rows = scoring.calibration([r["modelkin"].get("log10_p") if r["modelkin"]["verdict"] != "error"
                                            else None for r in negatives], ALPHAS)
    missing = sum(len(r["modelkin"].get("missing_components", [])) for r in records)
    # The costly confident error: a component the manifest labels related, called "independent".
    wrong_independent = sum(
        1 for r in records for c, label in r["component_labels"].items()
        if label == RELATED and r["modelkin"].get("components", {}).get(c, {}).get("verdict") == INDEPENDENT)
    structure: dict[str, dict] = {}
    for r in records:
        if "structure" in r:
            d = structure.setdefault(r["kind"], {"n": 0, "correct": 0})
            d["n"] += 1
            d["correct"] += bool(r["structure"]["ok"])
    return {"summary": summary, "overall": overall, "timing": timing, "calibration": calibration_rows,
            "calibration_by_level": calibration.calibration_table(records), "structure": structure,
            "sampled": sampled_summary(records),
            "missing_components": missing, "independent_on_related": wrong_independent,
            "invariant_margins": _invariant_margins(negatives)}


def _invariant_margins(negatives: list[dict]) -> dict:
    """Per invariant test, on independent pairs: how close its statistic came to firing (the assumption's slack)."""
    out: dict[str, dict] = {}
    for r in negatives:
        for comp, t in r["modelkin"].get("invariant", {}).items():
            if not t.get("ran"):
                continue
            d = out.setdefault(t["test"], {"n": 0, "max_z": None, "max_mean_margin": None, "worst": None})
            d["n"] += 1
            if d["max_z"] is None or t["z"] > d["max_z"]:
                d["max_z"], d["worst"] = t["z"], f"{r['id']}:{comp}"
            d["max_mean_margin"] = t["mean_margin"] if d["max_mean_margin"] is None else max(d["max_mean_margin"], t["mean_margin"])
    return out


# -- output -----------------------------------------------------------------------------------------


def _f(x, fmt=".2f") -> str:
    return "—" if x is None else format(x, fmt)


def render(result: dict, console: Console) -> None:
    summary, timing = result["summary"], result["timing"]
    t = Table(title=f"modelkin bench — {result['zoo']}", title_justify="left")
    t.add_column("kind")
    t.add_column("n", justify="right")
    for m in METHODS:
        t.add_column(f"{m}\nTPR/FPR", justify="right")
        t.add_column("AUC", justify="right")
    t.add_column("component\naccuracy", justify="right")
    t.add_column("seconds", justify="right")
    t.add_column("s / pair", justify="right")

    def add(label: str, row: dict, tm: dict | None, end_section: bool = False) -> None:
        cells = [label, str(row["modelkin"]["n"])]
        for m in METHODS:
            d = row[m]
            rate = _f(d["tpr"]) if "tpr" in d else f"[italic]{_f(d['fpr'])}[/]"
            cells += [rate, _f(d["auc"])]
        mk = row["modelkin"]
        acc = _f(mk["component_accuracy"])
        cells += [f"{acc} ({mk['n_components']})" if mk["n_components"] else "—",
                  _f(tm["seconds"], ".1f") if tm else "", _f(tm["mean_seconds"], ".2f") if tm else ""]
        t.add_row(*cells, end_section=end_section)

    keys = list(summary)
    by_kind = result["overall"].get("independent_by_kind", {})
    for k in keys:
        last = k == keys[-1] and not (k == INDEPENDENT_ROW and len(by_kind) > 1)
        add(f"{k} (FPR)" if k == INDEPENDENT_ROW else k, summary[k], timing.get(k), end_section=last)
        if k == INDEPENDENT_ROW and len(by_kind) > 1:  # the independent row's breakdown, for reading only
            for j, (kind, row) in enumerate(by_kind.items()):
                add(f"[dim]  {kind}[/]", row, None, end_section=j == len(by_kind) - 1)
    if RELATED in result["overall"]:
        add("all related", result["overall"][RELATED], None)
    console.print(t)
    console.print(
        "[dim]TPR: share of derived pairs called related; FPR (italic): share of independent pairs called "
        "related (failures count as wrong). AUC: that kind's pairs vs all independent pairs (modelkin's score is "
        "-log10 p; an undefined score ranks lowest). Component accuracy: component verdicts equal to the "
        "manifest's labels (inconclusive = wrong; number of components in brackets).[/]"
    )

    _render_versus_best(summary, console)
    _render_calibration(result["calibration_by_level"], console)
    if result.get("structure"):
        st = Table(title="Structure recovered by modelkin (truth from the zoo's recipes)", title_justify="left")
        for col in ("kind", "what", "pairs", "correct"):
            st.add_column(col, justify="left" if col in ("kind", "what") else "right")
        for kind, d in result["structure"].items():
            what = {"width_pruning": "kept-unit fraction", "permutation": "expert map",
                    "shared_embedding_init": "shared part (roles)", "cnn_permute_prune": "channel maps"}.get(kind, "layer map")
            st.add_row(kind, what, str(d["n"]), str(d["correct"]))
        console.print(st)
    if result.get("sampled"):
        d = result["sampled"]
        console.print(f"Sampled reads (every tensor cut to {BENCH_SAMPLE.min_rows} rows): same verdicts as full reads on "
                      f"{d['agree']}/{d['n']} pairs, reading {d['mean_bytes_fraction']:.1%} of the bytes on average "
                      f"(at most {d['max_bytes_fraction']:.1%})")
    if result.get("fingerprints"):
        d = result["fingerprints"]
        console.print(f"Fingerprints (mean {d['mean_fingerprint_bytes'] / 1e6:.2f} MB, largest "
                      f"{d['max_fingerprint_bytes'] / 1e6:.2f} MB): same verdicts as the model compare on "
                      f"{d['agree']}/{d['pairs']} pairs; search found {d['found']}/{d['related_pairs']} related pairs' first "
                      f"model ({d['found_in_top']} in the top {d['top']}), {len(d['false_hits'])} related hits on pairs "
                      f"labelled independent"
                      + (f"; disagree: {', '.join(d['disagreements'][:5])}" if d["disagreements"] else "")
                      + (f"; missed: {', '.join(d['missed'][:5])}" if d["missed"] else ""))
    if result.get("invariant_margins"):
        console.print("Invariant tests on independent pairs (the sibling assumption's slack): " + "; ".join(
            f"{name}: {d['n']} components, largest z {d['max_z']:.1f} ({d['worst']}), largest mean margin "
            f"{d['max_mean_margin']:+.3f}" for name, d in result["invariant_margins"].items()))
    n_missing, n_wrong = result.get("missing_components", 0), result.get("independent_on_related", 0)
    console.print(f"Components missing from results (against the manifest): {n_missing}; components labelled "
                  f"related but called independent: {n_wrong}", style="bold red" if n_missing or n_wrong else None)
    errors = [p for p in result["pairs"] if p.get("error") or p["modelkin"].get("error")
              or any(b.get("error") for b in p["baselines"].values())]
    for p in errors:
        msg = p.get("error") or p["modelkin"].get("error") or next(b["error"] for b in p["baselines"].values() if b.get("error"))
        console.print(f"[bold red]failed[/] {p['id']}: {msg}")
    n = len(result["pairs"])
    console.print(f"{n} pairs in {result['total_seconds']:.1f} s ({result['total_seconds'] / max(n, 1):.2f} s / pair)"
                  + (f", [bold red]{len(errors)} failed[/]" if errors else ""))


def versus_best(row: dict, independent: dict | None) -> dict:
    """modelkin against the best other method on one kind of related pair, ranked by balanced accuracy —
    (TPR on the kind + 1 − FPR on the independent pairs) / 2, so calling everything related does not win —
    then by AUC."""
    def key(m: str) -> tuple[float, float]:
        fpr = (independent or {}).get(m, {}).get("fpr")
        return ((row[m]["tpr"] or 0.0) + 1.0 - (1.0 if fpr is None else fpr)) / 2, row[m]["auc"] or 0.0

    best = max(BASELINES, key=key)
    mk, other = key("modelkin"), key(best)
    return {"best": best, "balanced_accuracy": other[0], "modelkin": mk[0],
            "outcome": "ahead" if mk > other else "behind" if mk < other else "tied"}


def _render_versus_best(summary: dict, console: Console) -> None:
    independent = summary.get(INDEPENDENT_ROW)
    t = Table(title="modelkin against the best other method, per kind (balanced accuracy: TPR on the kind, "
              "1 − FPR on the independent pairs)", title_justify="left")
    for col in ("kind", "best other method", "its balanced accuracy", "modelkin", "outcome"):
        t.add_column(col, justify="left" if col in ("kind", "best other method", "outcome") else "right")
    for kind, row in summary.items():
        if kind == INDEPENDENT_ROW:
            continue
        v = versus_best(row, independent)
        t.add_row(kind, v["best"], _f(v["balanced_accuracy"]), _f(v["modelkin"]), v["outcome"])
    console.print(t)


def _render_calibration(rows: list[dict], console: Console) -> None:
    """False positives per level and per test, the bound they support, margins and uniformity."""
    c = Table(title="Calibration of modelkin on independent pairs and components", title_justify="left")
    for col in ("level", "n", "FP at α = 1e-4", "FPR ≤ (95 %)", "FP at 1e-3", "FP at 0.05",
                "most significant: log10 p (margin)", "largest z", "KS D+ / D", "share p ≤ 0.01 / 0.05 / 0.5"):
        c.add_column(col, justify="left" if col == "level" else "right")
    for row in rows:
        ms, u = row["most_significant"], row.get("uniformity")
        qq = " / ".join(_f(u["qq"].get(str(q)), ".3f") for q in calibration.QQ_LEVELS) if u and u["n"] else "—"
        c.add_row(
            row["what"], f"{row['n']} {row['unit']}", str(row["false_positives"]), _f(row["upper_95"], ".3f"),
            str(row["alphas"]["0.001"]["false_positives"]), str(row["alphas"]["0.05"]["false_positives"]),
            f"{ms['log10_p']:.1f} ({ms['margin_decades']:+.1f})" if ms else "—",
            _f((row.get("largest_z") or {}).get("z"), ".1f"),
            f"{_f(u['d_plus'], '.3f')} / {_f(u['d'], '.3f')} ({u['n']})" if u and u["n"] else "—", qq,
        )
    console.print(c)
    console.print(
        "[dim]FPR ≤: one-sided 95 % Clopper–Pearson bound on the false-positive rate from these counts (with none, "
        "about 3/n — the rule of three); it, not α, is what the zoo shows. A test 'alone': the pair's p-value from "
        "that test only, Bonferroni over its tensors and the components. Margin: decades of p between the most "
        "significant independent pair and α (positive = not called). KS / share: per-tensor p-values of the test on "
        "independent pairs against Uniform(0, 1) (D+: excess of small p-values; tensors of a pair are dependent, "
        "so descriptive).[/]"
    )


def _finite(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None if math.isnan(x) else (-1e308 if x < 0 else 1e308)
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x


def _console() -> Console:
    console = Console()
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(width=220)
    return console


def run_bench(zoo_dir: str | Path, json_out: str | Path | None = None, threads: int = 2,
              console: Console | None = None, jobs: int = 1, fingerprints: bool = False) -> int:
    """Run the bench; print the tables; write JSON if asked. Exit code 0, or 1 when any pair failed.

    ``jobs`` > 1 runs pairs in that many processes (``threads`` each); ``fingerprints`` adds the fingerprint
    agreement and search-recall columns (bench/fingerprints.py)."""
    root, manifest = load_manifest(zoo_dir)
    console = console or _console()
    started = time.perf_counter()
    records = run_pairs(root, manifest, threads, jobs)
    apply_measured_nulls(records)
    result = {"zoo": str(root), "size": manifest.get("size"), "zoo_seed": manifest.get("zoo_seed"), "pairs": records}
    result.update(summarize(records))
    if fingerprints:
        from .fingerprints import fingerprint_columns

        log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
        result["fingerprints"] = fingerprint_columns(root, records, jobs=jobs, log=log)
    result["total_seconds"] = time.perf_counter() - started
    render(result, console)
    if json_out is not None:
        Path(json_out).write_text(json.dumps(_finite(result), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    failed = any(r.get("error") or r["modelkin"].get("error") or any(b.get("error") for b in r["baselines"].values())
                 for r in records)
    return 1 if failed else 0


def run_pairs(root: Path, manifest: dict, threads: int = 2, jobs: int = 1) -> list[dict]:
    """Every pair of the manifest through ``run_pair``, in manifest order (``jobs`` processes)."""
    from ..pool import run_local

    pairs = manifest["pairs"]
    records: list[dict | None] = [None] * len(pairs)
    work = [(root, pair, i, threads, manifest) for i, pair in enumerate(pairs)]
    for n, ((_, _, i, _, _), rec) in enumerate(run_local(run_pair, work, jobs), 1):
        records[i] = rec
        status = rec.get("error") or rec["modelkin"]["verdict"]
        print(f"[{n}/{len(pairs)}] {rec['id']} ({rec['kind']}, {rec['label']}): modelkin {status}, "
              f"{rec['seconds']:.1f} s", file=sys.stderr, flush=True)
    return records
