"""Findings: the comparison's JSON record turned into plain words, one structure both reports render.

Everything here reads the documented JSON (``ComparisonResult.to_dict()``, docs/schema.md) — never the live
objects — so a report made right after ``modelkin compare`` and one made later from the saved JSON are the
same. Fields added to the schema later (a revision per model, full or sampled reads, intervals of sampled estimates) are
shown when present.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

from ..results import INCONCLUSIVE, INDEPENDENT, RELATED

# Plain words for each component, as a reader would name it.
COMPONENT_WORDS = {
    "text": "text backbone",
    "vision": "vision encoder",
    "audio": "audio encoder",
    "projector": "projector",
    "other": "other tensors",
}
VERDICT_ORDER = {RELATED: 0, INCONCLUSIVE: 1, INDEPENDENT: 2}
MIN_EFFECT_DEFAULT = 0.1  # CompareOptions.min_effect, for reports saved before the JSON carried it
P_FLOOR = -1e307  # log10 p at or below this was -inf (p = 0) before JSON encoding

CAVEATS = (
    "“Related” means the two components share weights: one was derived from the other (fine-tuned, pruned, "
    "quantised, merged, re-arranged…) or both from a common parent. It does not say which "
    "model came first, and it does not say the copy was unlicensed.",
    "Starting two trainings from the same random initialisation (same code and seed) also leaves shared weights, "
    "and is reported as related.",
    "“Independent” means no trace of shared weights was found although a relationship of the stated strength "
    "would have been seen. It does not rule out a weaker trace (training long enough from A's weights can "
    "erase it), nor learning from A without copying weights: distillation on A's outputs, or training on "
    "A's data, leaves no trace in the weights.",
    "“Inconclusive” is not a soft “independent”: the weights available could not settle the question.",
    "The p-values are family-wise: at α = {alpha}, the chance that two independently trained models get any "
    "component called related is at most {alpha}. They rest on one premise, checked on modelkin's zoo of "
    "trained models: independently trained models order their hidden units at random relative to each other.",
    "Cosine similarity of norm gains, biases and other tensors that start alike in every model is shown, never "
    "counted: it is high for any pair of models.",
)

SAMPLED_CAVEAT = (
    "The tensors were read at sampled rows, not in full: Pearson, cosine and rel-L2 are estimates (95 % intervals "
    "in the tensor table), and “same bytes” speaks of the rows read. The unit tests sample rows in either mode."
)

HOW_TO_READ = (
    "Each component (text backbone, vision encoder, …) is judged on its own, because a model can copy one part "
    "and train another: a copied vision encoder inside an original language model is the finding.",
    "The evidence is the unit-matching test. A layer's hidden units have no natural order, so two independently "
    "trained models end up with their units in unrelated orders; a derived model keeps its parent's order. For "
    "every weight matrix modelkin measures how well unit i of A matches unit i of B against the exact "
    "distribution for randomly ordered units. z is that match in standard deviations of chance; log10 p is "
    "the resulting p-value (−87 means p = 10⁻⁸⁷).",
    "If the units were moved (permuted, rotated or rescaled without changing what the model computes), the "
    "anchored and realigned tests match them through inputs both models share (token or pixel positions) and "
    "report which test decided.",
    "Pearson and cosine are effect sizes: how alike the numbers are. They are shown to help a reader, but the "
    "verdict comes from the p-values.",
    "The layer figures show A's layers against B's: a derived model keeps high similarity on the matched "
    "layers (a strong diagonal, or the recovered layer map when layers were dropped or duplicated).",
)


@dataclass(frozen=True)
class Figure:
    key: str  # file stem in the Markdown report's figure folder
    title: str
    caption: str
    svg: str


@dataclass(frozen=True)
class Card:
    name: str
    words: str
    verdict: str
    sentence: str  # the headline line for this component
    log10_p: str
    threshold: str  # log10 p needed for "related"
    decided_by: str
    deciding_test: str | None
    reason: str
    facts: list[tuple[str, str]]  # (label, value) rows
    layer_map: str | None
    what_would_change: str
    strongest: list[str]


@dataclass(frozen=True)
class Group:
    title: str
    detail: str
    names: list[str]


@dataclass(frozen=True)
class Findings:
    title: str
    verdict: str
    headline: str
    overall: str
    cards: list[Card]
    tensors: list[dict]  # rows for the tensor table, display strings plus sort keys
    components: list[str]
    non_evidence: list[Group]
    unmatched: list[Group]
    provenance: list[tuple[str, str]]
    inputs: list[dict]
    notes: list[str]
    caveats: list[str]
    how_to_read: list[str]


# ---------------------------------------------------------------- formatting


def fmt(x, spec: str = ".3f") -> str:
    return "—" if x is None else format(x, spec)


def fmt_p(log10_p) -> str:
    if log10_p is None:
        return "—"
    return "≤ −1e308" if log10_p <= P_FLOOR else f"{log10_p:.1f}".replace("-", "−")


def fmt_count(n: int | None) -> str:
    """Parameters in the units a reader expects: 0.67 B, 340 M, 12 K."""
    if n is None:
        return "—"
    for unit, size, start in (("B", 1e9, 1e8), ("M", 1e6, 1e6), ("K", 1e3, 1e3)):
        if n >= start:
            return f"{n / size:.3g} {unit}"
    return str(n)


def fmt_share(part: int, whole: int) -> str:
    if not whole:
        return "—"
    s = part / whole
    if s == 0:
        return "0 %"
    if s < 0.001:
        return "< 0.1 %"
    if s < 0.1:
        return f"{100 * s:.1f} %"
    return f"{100 * s:.0f} %"


def fmt_bytes(n: int | None) -> str:
    if n is None:
        return "—"
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n} bytes"


def words(component: str) -> str:
    return COMPONENT_WORDS.get(component, component)


def _join(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _numel(shape) -> int:
    return math.prod(shape) if shape else 1


# ---------------------------------------------------------------- per component


def threshold(doc: dict) -> float:
    """log10 p a component needs for "related": α over the number of components (Bonferroni)."""
    return math.log10(doc["alpha"] / max(len(doc["components"]), 1))


def _evidence(doc: dict, comp: str) -> list[dict]:
    return [t for t in doc["tensors"] if t["component"] == comp and t["evidence"]]


def _deciding(ev: list[dict]) -> dict | None:
    return min(ev, key=lambda t: t["log10_p"]) if ev else None


def _params(ref: dict, comp: str) -> int | None:
    per = ref.get("parameters")
    return None if per is None else per.get(comp, 0)


def _sentence(doc: dict, c: dict, ev: list[dict]) -> str:
    comp, verdict = c["name"], c["verdict"]
    head = f"{words(comp)}:"
    size_b = _params(doc["b"], comp)
    if size_b is not None:
        total_b = sum(doc["b"]["parameters"].values())
        head += f" {fmt_count(size_b)} parameters, {fmt_share(size_b, total_b)} of B,"
    m = c["n_evidence"]
    if verdict == RELATED:
        best = _deciding(ev)
        if best is not None and best["test"] != "same-index" and (c["median_pearson"] or 0) < 0.5:
            how = (f"its units were moved, so the element-wise Pearson is only {fmt(c['median_pearson'], '.2f')}, "
                   f"but they match after alignment ({best['test']} test, median matched-unit cosine "
                   f"{fmt(c['median_unit_cosine'], '.2f')} over {m} evidence tensors)")
        else:
            how = f"median Pearson {fmt(c['median_pearson'], '.2f')} over {m} evidence tensors"
        return f"{head} comes from the same weights as A's {words(comp)} ({how}; log10 p = {fmt_p(c['log10_p'])})."
    if verdict == INDEPENDENT:
        return (f"{head} independent of A's: no unit-level match in {m} evidence tensors "
                f"(a matched-unit cosine of {fmt(c['min_detectable_unit_cosine'], '.2f')} or more would have been detected).")
    if m == 0:
        return f"{head} inconclusive: nothing informative to compare (only norm gains, biases, buffers or tiny tensors)."
    return (f"{head} inconclusive: the evidence is too small to rule out a weak relationship "
            f"(it could see matched-unit cosines of {fmt(c['min_detectable_unit_cosine'], '.2f')} or more).")


def _what_would_change(doc: dict, c: dict, ev: list[dict]) -> str:
    thr = threshold(doc)
    m = c["n_evidence"]
    min_effect = doc.get("min_effect") or MIN_EFFECT_DEFAULT
    if c["verdict"] == RELATED:
        decisive = [t for t in ev if t["log10_p"] + math.log10(m) <= thr]
        margin = "more than 300" if c["log10_p"] <= P_FLOOR else f"{thr - c['log10_p']:.0f}"
        return (
            f"{len(decisive)} of the {m} evidence tensors are each decisive on their own (after the Bonferroni factor "
            f"of {m}); the verdict would change only if all of them were set aside, or if the test's premise failed "
            f"(independently trained models order their hidden units at random relative to each other). The "
            f"combined log10 p is {margin} orders of magnitude below the threshold {fmt_p(thr)}."
        )
    if m == 0:
        return ("Weight matrices of this component present in both models (matched by name, role or layer) would "
                "settle it; only tensors that carry no evidence were paired here.")
    near = f"It would be called related at combined log10 p ≤ {fmt_p(thr)}; it is {fmt_p(c['log10_p'])}. "
    det = c["min_detectable_unit_cosine"]
    if c["verdict"] == INDEPENDENT:
        return near + (f"If B's units matched A's with a mean cosine of {fmt(det, '.3f')} or more, the most sensitive "
                       f"evidence tensor would have detected it (95 % power) and made it related; a weaker trace is "
                       f"not ruled out.")
    return near + (f"To call it independent, the evidence must be able to see a matched-unit cosine of {min_effect:g}; "
                   f"these tensors can only see {fmt(det, '.3f')} or more. More or larger weight matrices of this "
                   f"component (compare the whole model, not one part) would settle it.")


def _layer_map_text(lm: dict) -> str | None:
    pairs = lm.get("pairs") or []
    if not pairs:
        return None
    if lm.get("method") != "similarity":
        text = f"layers paired by index ({len(pairs)} layers: {pairs[0][0]}–{pairs[-1][0]}), as their names say"
        extra = [f"A's layers {lm['dropped_a']} have no layer of that index in B" if lm.get("dropped_a") else "",
                 f"B's layers {lm['unmatched_b']} have none in A" if lm.get("unmatched_b") else ""]
    else:
        text = "recovered by similarity: " + ", ".join(f"{a}→{b}" for a, b in pairs)
        extra = [f"A's layers {lm['dropped_a']} dropped" if lm.get("dropped_a") else "",
                 f"A's layers {lm['duplicated_a']} used more than once" if lm.get("duplicated_a") else "",
                 f"B's layers {lm['unmatched_b']} match no layer of A" if lm.get("unmatched_b") else "",
                 "order changed" if lm.get("reordered") else ""]
    extra = [e for e in extra if e]
    return text + ("; " + "; ".join(extra) if extra else "")


def _card(doc: dict, c: dict) -> Card:
    comp = c["name"]
    ev = _evidence(doc, comp)
    comp_tensors = [t for t in doc["tensors"] if t["component"] == comp]
    covered = sum(_numel(t["shape"]) for t in comp_tensors)
    facts = [("log10 p", f"{fmt_p(c['log10_p'])}  (related at ≤ {fmt_p(threshold(doc))})")]
    best = _deciding(ev)
    facts.append(("test that decided", c["decided_by"]))
    facts.append(("tensor pairs compared", f"{c['n_tensors']} ({c['n_evidence']} counted as evidence)"))
    facts += [
        ("median Pearson", fmt(c["median_pearson"])),
        ("median cosine", fmt(c["median_cosine"])),
        ("median matched-unit cosine", fmt(c["median_unit_cosine"])),
        ("weakest detectable unit cosine", fmt(c["min_detectable_unit_cosine"])),
    ]
    for side in ("a", "b"):
        n = _params(doc[side], comp)
        if n is not None:
            total = sum(doc[side]["parameters"].values())
            facts.append((f"parameters in {side.upper()}", f"{fmt_count(n)} ({fmt_share(n, total)} of {side.upper()})"))
    pa = _params(doc["a"], comp)
    facts.append(("parameters compared", fmt_count(covered) + (f" ({fmt_share(covered, pa)} of A's {words(comp)})" if pa else "")))
    n_unmatched = sum(1 for u in doc["unmatched"] if u["component"] == comp)
    if n_unmatched:
        facts.append(("tensors without a counterpart", str(n_unmatched)))
    return Card(
        name=comp, words=words(comp), verdict=c["verdict"], sentence=_sentence(doc, c, ev),
        log10_p=fmt_p(c["log10_p"]), threshold=fmt_p(threshold(doc)), decided_by=c["decided_by"],
        deciding_test=None if best is None else best["test"], reason=c["reason"], facts=facts,
        layer_map=_layer_map_text(c.get("layer_map") or {}), what_would_change=_what_would_change(doc, c, ev),
        strongest=list(c.get("strongest") or []),
    )


# ---------------------------------------------------------------- whole report


def _headline(doc: dict, cards: list[Card]) -> str:
    by = defaultdict(list)
    for card in cards:
        by[card.verdict].append(card.words)
    parts = []
    if by[RELATED]:
        verb = "comes" if len(by[RELATED]) == 1 else "come"
        parts.append(f"B's {_join(by[RELATED])} {verb} from the same weights as A's.")
    if by[INDEPENDENT]:
        verb = "shows" if len(by[INDEPENDENT]) == 1 else "show"
        parts.append(f"B's {_join(by[INDEPENDENT])} {verb} no sign of derivation from A's (independent).")
    if by[INCONCLUSIVE]:
        parts.append(f"For B's {_join(by[INCONCLUSIVE])}, the weights cannot settle the question (inconclusive).")
    if not cards:
        parts.append("Nothing could be compared: no tensor of A was paired with a tensor of B.")
    return " ".join(parts)


def _tensor_rows(doc: dict) -> list[dict]:
    rows = []
    for t in doc["tensors"]:
        layers = "" if t["layer_a"] is None else f"{t['layer_a']}→{t['layer_b']}"
        rows.append({
            "a": t["a"], "b": t["b"] if t["b"] != t["a"] else "", "component": t["component"], "role": t["role"],
            "layers": layers, "layer_key": -1 if t["layer_a"] is None else t["layer_a"],
            "matched_by": t["matched_by"], "shape": "×".join(map(str, t["shape"])) + _rows_read(t),
            "numel": _numel(t["shape"]),
            "dtype": t["dtype_a"] if t["dtype_a"] == t["dtype_b"] else f"{t['dtype_a']}/{t['dtype_b']}",
            "pearson": _with_ci(t, "pearson"), "cosine": _with_ci(t, "cosine"), "rel_l2": _with_ci(t, "rel_l2"),
            "unit_cosine": fmt(t["unit_cosine"]), "z": fmt(t["z"], ".1f"), "log10_p": fmt_p(t["log10_p"]),
            "test": t["test"] or "",
            "identical": ("yes (sampled rows)" if t.get("identity_basis") == "sampled" else "yes") if t["identical"] else "",
            "counted": "yes" if t["evidence"] else "no", "reason": t["non_evidence_reason"] or "",
            # numeric sort keys (missing numbers sort last)
            "k_pearson": t["pearson"], "k_cosine": t["cosine"], "k_rel_l2": t["rel_l2"],
            "k_unit_cosine": t["unit_cosine"], "k_z": t["z"], "k_log10_p": t["log10_p"],
        })
    return rows


def _with_ci(t: dict, key: str) -> str:
    """An estimate with its 95 % interval when the tensor was read at sampled rows."""
    ci = t.get(f"{key}_ci")
    return fmt(t[key]) + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci and None not in ci else "")


def _rows_read(t: dict) -> str:
    rows = t.get("sampled_rows")
    return f" (rows read {rows[0]}/{rows[1]})" if rows and rows[0] != rows[1] else ""


def _range(xs) -> str:
    xs = [x for x in xs if x is not None]
    if not xs:
        return "—"
    lo, hi = min(xs), max(xs)
    return f"{lo:.2f}" if f"{lo:.2f}" == f"{hi:.2f}" else f"{lo:.2f} to {hi:.2f}"


def _non_evidence(doc: dict) -> list[Group]:
    by = defaultdict(list)
    for t in doc["tensors"]:
        if not t["evidence"]:
            by[t["non_evidence_reason"] or "not counted"].append(t)
    groups = []
    for reason, ts in sorted(by.items(), key=lambda kv: -len(kv[1])):
        detail = (f"{len(ts)} tensor{'s' if len(ts) != 1 else ''}: cosine {_range(t['cosine'] for t in ts)}, "
                  f"Pearson {_range(t['pearson'] for t in ts)} — not counted")
        groups.append(Group(reason, detail, [t["a"] for t in ts]))
    return groups


def _plural(n: int) -> str:
    return f"{n} tensor{'s' if n != 1 else ''}"


def _unmatched(doc: dict) -> list[Group]:
    by = defaultdict(list)
    for u in doc["unmatched"]:
        by[(u["side"], u["reason"])].append(u["name"])
    groups = [Group(f"only in {side.upper()}: {reason}", _plural(len(names)), names)
              for (side, reason), names in sorted(by.items(), key=lambda kv: (kv[0][0], -len(kv[1])))]
    left_out = (doc.get("reads") or {}).get("left_out") if isinstance(doc.get("reads"), dict) else None
    if left_out:
        groups.append(Group("left out by the byte cap (not read, not compared)", _plural(len(left_out)), list(left_out)))
    return groups


DIGEST_SOURCE = {"hashed": "hashed by modelkin", "hub": "as reported by the Hub", "none": "digest not known"}
READ_MODE = {"full": "full: every byte of the compared tensors was read",
             "sampled": "sampled: key-seeded blocks of rows of each compared tensor were read (see the method notes)"}


def _files(files) -> list[tuple[str, str, str]]:
    """(file, sha256, how it is known) per weights file, from a digest or a {size, sha256, sha256_source, etag} record."""
    out = []
    for name, rec in (files or {}).items():
        if rec is None:
            out.append((str(name), "—", "not hashed (--no-hash)"))
        elif isinstance(rec, dict):
            parts = [DIGEST_SOURCE.get(rec.get("sha256_source"), rec.get("sha256_source") or ""),
                     fmt_bytes(rec["size"]) if rec.get("size") is not None else "",
                     f"etag {rec['etag']}" if rec.get("etag") else ""]
            out.append((str(name), rec.get("sha256") or "—", ", ".join(p for p in parts if p)))
        else:
            out.append((str(name), str(rec), ""))
    return out


def _reads(reads) -> str:
    """Full or sampled reads, how many bytes, and what a byte cap left out (``ReadSummary``)."""
    if not isinstance(reads, dict):
        return READ_MODE.get(reads, str(reads))
    text = READ_MODE.get(reads.get("mode"), str(reads.get("mode")))
    planned, full = reads.get("planned_bytes"), reads.get("full_bytes")
    if planned is not None and full:
        text += f"; {fmt_bytes(planned)} of {fmt_bytes(full)} of tensor data ({fmt_share(planned, full)})"
    if reads.get("remote_requests"):
        text += (f"; {reads['remote_requests']} HTTP range requests, {fmt_bytes(reads.get('remote_bytes_fetched'))} "
                 f"fetched, {fmt_bytes(reads.get('remote_bytes_cached'))} from the cache")
    if reads.get("max_bytes"):
        text += f"; byte cap {fmt_bytes(reads['max_bytes'])}"
    if reads.get("left_out"):
        text += f"; {len(reads['left_out'])} tensors left out by the cap (listed under Not compared)"
    return text


def _inputs(doc: dict) -> list[dict]:
    out = []
    for side in ("a", "b"):
        ref = doc[side]
        per = ref.get("parameters")
        out.append({
            "side": side.upper(), "location": ref["location"], "path": ref["path"],
            "family": ref.get("family") or "unknown",
            "revision": ref.get("revision") or "—",
            "tensors": str(ref["n_tensors"]), "size": fmt_bytes(ref["n_bytes"]),
            "parameters": "—" if per is None else fmt_count(sum(per.values())) + " (" + ", ".join(
                f"{words(c)} {fmt_count(n)}" for c, n in sorted(per.items(), key=lambda kv: -kv[1])) + ")",
            "files": _files(ref.get("files")),
        })
    return out


def _provenance(doc: dict) -> list[tuple[str, str]]:
    rows = [("modelkin version", doc["modelkin_version"])]
    if doc.get("created"):
        rows.append(("compared on", doc["created"]))
    if doc.get("command"):
        import shlex

        rows.append(("command line", shlex.join(doc["command"])))
    rows.append(("α (family-wise)", f"{doc['alpha']:g}"))
    rows.append(("weakest effect “independent” must rule out", f"matched-unit cosine {doc.get('min_effect') or MIN_EFFECT_DEFAULT:g}"))
    if doc.get("reads"):
        rows.append(("reads", _reads(doc["reads"])))
    voc = doc.get("vocabulary")
    if voc:
        how = "rows matched by token string" if voc.get("source") == "tokenizer" else "common leading token ids assumed"
        rows.append(("vocabulary", f"{voc.get('n_shared')} shared tokens of {voc.get('n_a')} (A) and {voc.get('n_b')} (B); {how}"))
    rows.append(("time", f"{doc['seconds']:.2f} s"))
    return rows


def _mode(doc: dict) -> str | None:
    reads = doc.get("reads")
    return reads.get("mode") if isinstance(reads, dict) else reads


def build_findings(doc: dict) -> Findings:
    """The report's content from the JSON record (``ComparisonResult.to_dict()`` or a saved report)."""
    cards = sorted((_card(doc, c) for c in doc["components"].values()),
                   key=lambda k: (VERDICT_ORDER.get(k.verdict, 3), -(_params(doc["b"], k.name) or 0), k.name))
    alpha = f"{doc['alpha']:g}"
    overall = (f"Overall: {doc['verdict']} (log10 p = {fmt_p(doc['log10_p'])}, α = {alpha} family-wise, "
               f"{len(cards)} component{'s' if len(cards) != 1 else ''} judged)")
    return Findings(
        title=f"modelkin: {doc['a']['location']} vs {doc['b']['location']}",
        verdict=doc["verdict"],
        headline=_headline(doc, cards),
        overall=overall,
        cards=cards,
        tensors=_tensor_rows(doc),
        components=sorted(doc["components"]),
        non_evidence=_non_evidence(doc),
        unmatched=_unmatched(doc),
        provenance=_provenance(doc),
        inputs=_inputs(doc),
        notes=list(doc.get("notes") or []),
        caveats=[c.format(alpha=alpha) for c in CAVEATS] + ([SAMPLED_CAVEAT] if _mode(doc) == "sampled" else []),
        how_to_read=list(HOW_TO_READ),
    )
