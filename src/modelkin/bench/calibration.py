"""Calibration of modelkin on independent pairs, stated as strongly as the pairs show and no more.

Zero false positives among N independent pairs does not show a false-positive rate of α = 1e-4: it bounds
the rate by the one-sided 95 % Clopper–Pearson limit, 1 − 0.05^(1/N) ≈ 3/N (the "rule of three"): 4.1 %
for 71 pairs, 1.0 % for 300. That bound is reported for every level of the decision:

* the pair's overall verdict, and every **component** labelled independent (including the independent
  components of related pairs, such as a graft's text tower);
* every **test on its own** — same-index, anchored, realigned: the pair's p-value from that test alone,
  Bonferroni over the tensors it ran on and over the components, as the verdict would use it; and the
  component-level shared-basis and channel tests (one p-value per component, Bonferroni over components).

Beside the counts: the **margin** of each test (its most significant independent pair against the
threshold, in decades of p, and its largest z on any tensor of an independent pair — for the realigned
test, whose p-values sit at 1 there, z is the informative margin), and the **uniformity** of its per-tensor p-values on independent pairs — a
one-sided Kolmogorov–Smirnov statistic D+ (the largest excess of small p-values over the uniform
distribution, the anti-conservative direction), the two-sided D, and a QQ summary (the share of p-values
below 0.01, 0.05 and 0.5). Per-tensor p-values of one pair are not independent, so D is a description,
not a test; a conservative test (the realigned one) shows D+ ≈ 0 and a large D.
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

from ..statistics.pvalues import log10_bonferroni
from . import scoring

TESTS = ("same-index", "anchored", "realigned", "shared-basis", "channels")
QQ_LEVELS = (0.01, 0.05, 0.5)
DEFAULT_ALPHA = 1e-4


def per_test(result) -> dict:
    """From a ComparisonResult: what each test alone says, per component, per pair, and per tensor.

    {"components": {comp: {test: log10 p}}, "pair": {test: log10 p}, "tensors": {test: [log10 p, ...]},
    "z_max": {test: largest z over tensors}}; p-values are the tests' own (before modelkin's ×3).
    """
    by_comp: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    z_max: dict[str, float] = {}
    for t in result.tensors:
        for name, d in (t.tests or {}).items():
            by_comp[t.component][name].append(d["log10_p"])
            z_max[name] = max(z_max.get(name, -math.inf), d["z"])
    for comp, c in result.components.items():  # component-level tests: one p-value (and z) per component
        for t in getattr(c, "invariant_tests", None) or []:
            if t.get("ran"):
                by_comp[comp][t["test"]].append(t["log10_p"])
                z_max[t["test"]] = max(z_max.get(t["test"], -math.inf), t["z"])
    n_comp = max(len(result.components), 1)
    comps = {c: {name: log10_bonferroni(v) for name, v in tests.items()} for c, tests in sorted(by_comp.items())}
    pair = {name: log10_bonferroni([comps[c][name] for c in comps if name in comps[c]], n_comp)
            for name in TESTS if any(name in comps[c] for c in comps)}
    tensors = {name: [lp for c in sorted(by_comp) for lp in by_comp[c].get(name, [])] for name in TESTS}
    return {"components": comps, "pair": pair, "tensors": {k: v for k, v in tensors.items() if v}, "z_max": z_max}


def ks_uniform(log10_ps: list[float]) -> dict:
    """Kolmogorov–Smirnov distances of p-values from Uniform(0, 1): D+ (excess of small p), D, and a QQ summary."""
    if not log10_ps:
        return {"n": 0, "d_plus": None, "d": None, "qq": {}}
    p = np.sort(np.power(10.0, np.asarray(log10_ps, dtype=np.float64)))
    n = p.size
    ecdf_hi = np.arange(1, n + 1) / n  # F_n just after each p
    ecdf_lo = np.arange(0, n) / n  # just before
    d_plus = float(max(0.0, np.max(ecdf_hi - p)))
    d_minus = float(max(0.0, np.max(p - ecdf_lo)))
    qq = {str(q): float(np.mean(p <= q)) for q in QQ_LEVELS}
    return {"n": int(n), "d_plus": d_plus, "d": max(d_plus, d_minus), "qq": qq}


def _row(what: str, unit: str, log10_ps: list[float | None], where: list[str], alphas) -> dict:
    """False positives at each α (a missing p counts), the 95 % bound, and the margin of the most significant."""
    n = len(log10_ps)
    row = {"what": what, "unit": unit, "n": n, "alphas": {}}
    for a in alphas:
        k = sum(1 for lp in log10_ps if scoring.false_positive_at(lp, a))
        row["alphas"][str(a)] = {"false_positives": k, "upper_95": scoring.clopper_pearson_upper(k, n)}
    k = row["alphas"][str(DEFAULT_ALPHA)]["false_positives"]
    row["false_positives"] = k
    row["upper_95"] = scoring.clopper_pearson_upper(k, n)
    row["rule_of_three"] = scoring.rule_of_three(n) if k == 0 else None
    known = [(lp, w) for lp, w in zip(log10_ps, where) if lp is not None]
    if known:
        lp, w = min(known, key=lambda x: x[0])
        row["most_significant"] = {"log10_p": lp, "where": w, "margin_decades": lp - math.log10(DEFAULT_ALPHA)}
    else:
        row["most_significant"] = None
    return row


def calibration_table(records: list[dict], alphas=(DEFAULT_ALPHA, 1e-3, 0.05)) -> list[dict]:
    """Rows: pair verdict, component verdict, then each test alone; over independent pairs/components."""
    alphas = tuple(dict.fromkeys((DEFAULT_ALPHA, *alphas)))
    negatives = [r for r in records if r["label"] == "independent"]
    ok = lambda r: r["modelkin"]["verdict"] != "error"  # noqa: E731
    rows = [_row("pair verdict", "pairs", [r["modelkin"]["log10_p"] if ok(r) else None for r in negatives],
                 [r["id"] for r in negatives], alphas)]
    comp_p, comp_where = [], []
    for r in records:  # every component labelled independent, in related pairs too (a graft's text tower)
        for name, label in r["component_labels"].items():
            if label == "independent":
                got = r["modelkin"].get("components", {}).get(name)
                comp_p.append(got["log10_p"] if got and ok(r) else None)
                comp_where.append(f"{r['id']} [{name}]")
    rows.append(_row("component verdict", "components", comp_p, comp_where, alphas))
    for test in TESTS:
        have = [r for r in negatives if ok(r) and test in r["modelkin"].get("tests", {}).get("pair", {})]
        row = _row(f"{test} test alone", "pairs", [r["modelkin"]["tests"]["pair"][test] for r in have],
                   [r["id"] for r in have], alphas)
        row["uniformity"] = ks_uniform([lp for r in have for lp in r["modelkin"]["tests"]["tensors"].get(test, [])])
        zs = [(r["modelkin"]["tests"]["z_max"][test], r["id"]) for r in have if test in r["modelkin"]["tests"].get("z_max", {})]
        row["largest_z"] = {"z": max(zs)[0], "where": max(zs)[1]} if zs else None
        rows.append(row)
    return rows
