"""Verdict: per component, related / independent / inconclusive, with the reason.

* **related** — the combined p-value of the component's evidence tests is below α divided by the number of
  components compared (Bonferroni across components keeps the family-wise error at α). Per-tensor p-values
  are combined by Bonferroni too (m × the smallest): tensors of one model are not independent draws, and
  Bonferroni stays valid under any dependence.
* **independent** — not related, *and* the evidence had the power to see a relationship: some evidence
  tensor would have detected a matched-unit cosine of ``min_effect`` at the required level with 95 % power.
* **inconclusive** — otherwise: nothing informative to compare (only norm gains, buffers, biases), or too
  little data to rule out a weak relationship. Never "independent" by default.
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

from ..alignment import TensorPair
from ..results import INCONCLUSIVE, INDEPENDENT, RELATED, ComponentResult, TensorResult
from ..statistics import UnitTest, log10_bonferroni, z_for_log10_p

ASSUMPTION_BASED = "assumption-based"

POWER_Z = 1.645  # one-sided 95 % power margin
N_STRONGEST = 5


def _median(xs):
    xs = [x for x in xs if x is not None]
    return float(np.median(xs)) if xs else None


def judge_components(
    pairs: list[TensorPair],
    tests: list[UnitTest | None],
    rows: list[TensorResult],
    alpha: float,
    min_effect: float,
    layer_maps: dict | None = None,
    expert_maps: dict | None = None,
) -> dict[str, ComponentResult]:
    by_comp: dict[str, list[int]] = defaultdict(list)
    for i, p in enumerate(pairs):
        by_comp[p.component].append(i)
    n_comp = max(len(by_comp), 1)
    log10_threshold = math.log10(alpha / n_comp)
    out: dict[str, ComponentResult] = {}
    for comp, idx in sorted(by_comp.items()):
        ev = [i for i in idx if tests[i] is not None]
        m = len(ev)
        log10_p = log10_bonferroni([tests[i].log10_p for i in ev], m) if m else 0.0
        strongest = [pairs[i].a.name for i in sorted(ev, key=lambda i: tests[i].log10_p)[:N_STRONGEST]]
        detectable = None
        if m:
            z_needed = z_for_log10_p(log10_threshold - math.log10(m)) + POWER_Z
            detectable = min(z_needed * tests[i].null_sd_mean_cosine for i in ev)
        if layer_maps and comp in layer_maps:
            layer_map = layer_maps[comp].to_dict()
        else:
            layered = sorted({(pairs[i].a.layer, pairs[i].b.layer) for i in idx if pairs[i].a.layer is not None and pairs[i].b.layer is not None})
            layer_map = {"method": "name", "pairs": [list(p) for p in layered], "dropped_a": [], "unmatched_b": [], "duplicated_a": [], "reordered": False}
        matching = _matching_roles(pairs, tests, ev, log10_threshold)
        if m and log10_p <= log10_threshold:
            verdict = RELATED
            best = min((tests[i] for i in ev), key=lambda t: t.log10_p)
            reason = (
                f"{m} evidence tensors; the strongest ({best.test} test) matches unit for unit with mean cosine "
                f"{best.mean_cosine:.3f} (z = {best.z:.1f}); combined log10 p = {log10_p:.1f} <= {log10_threshold:.1f}"
            )
            n_realigned = sum(1 for i in ev if tests[i].test == "realigned" and tests[i].log10_p <= log10_threshold)
            n_same = sum(1 for i in ev if tests[i].test == "same-index" and tests[i].log10_p <= log10_threshold)
            if n_realigned and not n_same:
                reason += "; hidden units were permuted: they match only after realignment (a permuted copy)"
            elif best.test == "anchored" and not n_same:
                reason += "; the residual stream was rotated or permuted: units match only in the shared input basis"
            other_roles = {pairs[i].a.role for i in ev} - TOKEN_ROLES
            if matching and set(matching) <= TOKEN_ROLES and other_roles:
                reason += (
                    f"; only the token {' and '.join(matching)} match — the layers show no unit-level match: "
                    "a shared embedding (or its initialisation), not a shared model"
                )
            if best.evidence_class == ASSUMPTION_BASED:
                reason += (
                    "; the deciding evidence is assumption-based (valid if independently trained units are no "
                    "closer to A's units than A's own sibling units are; docs/method.md)"
                )

        elif m == 0:
            verdict = INCONCLUSIVE
            reason = "no informative tensors to compare (only norm gains, biases, buffers or tiny tensors)"
        elif detectable is not None and detectable <= min_effect:
            verdict = INDEPENDENT
            reason = (
                f"{m} evidence tensors show no unit-level match (combined log10 p = {log10_p:.1f}); "
                f"a matched-unit cosine of {detectable:.3f} or more would have been detected"
            )
        else:
            verdict = INCONCLUSIVE
            reason = (
                f"no significant match, but the {m} evidence tensors are too small to rule out a weak relationship "
                f"(could detect matched-unit cosine >= {detectable:.3f}, need <= {min_effect})"
            )
        if expert_maps and comp in expert_maps:
            layer_map = {**layer_map, "experts": {str(k): v for k, v in sorted(expert_maps[comp].items())}}
        comp_rows = [rows[i] for i in idx]
        out[comp] = ComponentResult(
            name=comp,
            verdict=verdict,
            log10_p=log10_p,
            n_tensors=len(idx),
            n_evidence=m,
            median_pearson=_median(r.pearson for r in comp_rows if r.evidence),
            median_cosine=_median(r.cosine for r in comp_rows if r.evidence),
            median_unit_cosine=_median(tests[i].mean_cosine for i in ev),
            min_detectable_unit_cosine=detectable,
            decided_by=_decided_by(tests, ev, verdict),
            reason=reason,
            strongest=strongest,
            layer_map=layer_map,
            test=_strongest(tests, ev).test if ev else None,
            evidence_class=_strongest(tests, ev).evidence_class if ev else None,
            matching_roles=matching if verdict == RELATED else [],
        )
    return out


TOKEN_ROLES = frozenset({"embedding", "lm_head"})


def _matching_roles(pairs, tests, ev, log10_threshold: float) -> list[str]:
    """Roles of the tensors that are significant on their own (each at the component's level, Bonferroni
    over its m evidence tensors): which part of the component matches."""
    m = len(ev)
    if not m:
        return []
    cut = log10_threshold - math.log10(m)
    return sorted({pairs[i].a.role for i in ev if tests[i].log10_p <= cut})


def _strongest(tests, ev) -> UnitTest:
    return min((tests[i] for i in ev), key=lambda t: t.log10_p)


def _decided_by(tests, ev, verdict) -> str:
    if not ev:
        return "no evidence test applicable"
    best = _strongest(tests, ev)
    if verdict == RELATED:
        return f"{best.test} test ({best.evidence_class} null) on the strongest tensor, Bonferroni over {len(ev)} tensors"
    ran = sorted({name for i in ev for name, _, _ in tests[i].by_test} or {tests[i].test for i in ev})
    return f"{', '.join(ran)} tests on {len(ev)} tensors, Bonferroni-combined: none significant"


def overall(components: dict[str, ComponentResult]) -> tuple[str, float]:
    if not components:
        return INCONCLUSIVE, 0.0
    verdicts = {c.verdict for c in components.values()}
    log10_p = log10_bonferroni([c.log10_p for c in components.values()])
    if RELATED in verdicts:
        return RELATED, log10_p
    if verdicts == {INDEPENDENT}:
        return INDEPENDENT, log10_p
    return INCONCLUSIVE, log10_p
