"""Verdict: per component, related / independent / inconclusive, with the reason.

* **related** — the combined p-value of the component's evidence tests is below α divided by the number of
  components compared (Bonferroni across components keeps the family-wise error at α). Per-tensor p-values
  are combined by Bonferroni too (m × the smallest): tensors of one model are not independent draws, and
  Bonferroni stays valid under any dependence.
* **independent** — not related, *and* a test invariant to permutations and rotations of hidden units (the
  component's shared-basis or channel test, see ``statistics.invariant``) ran with the power to see a weak
  relationship: it would have detected a mean margin of ``min_effect`` at the required level with 95 % power.
  Same-index evidence alone can say "related", never "independent": a permuted copy is invisible to it.
* **inconclusive** — otherwise: nothing informative to compare (only norm gains, buffers, biases), too little
  data to rule out a weak relationship, or no invariant test could run. Never "independent" by default.

Every component present in both models gets a record, even when no tensor pairs by shape. Components that
hold nothing that could be evidence in one of the models (only scalars, fixed buffers, norm gains, biases —
CLIP's ``logit_scale``) are listed with ``counted = False`` and take no part in the overall verdict nor in the
Bonferroni count (``coverage``).
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

from ..alignment import TensorPair
from ..results import INCONCLUSIVE, INDEPENDENT, RELATED, ComponentResult, TensorResult
from ..statistics import UnitTest, log10_bonferroni, z_for_log10_p
from ..statistics.margins import ComponentTest
from .coverage import (
    NOT_COUNTED_REASON, detectable as margin_detectable, invariant_power, invariant_reason, layer_map_from_tests,
)

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
    component_tests: dict[str, list[ComponentTest]] | None = None,
    counted: dict[str, bool] | None = None,
) -> dict[str, ComponentResult]:
    """``counted``: every component present in both models -> whether it counts (see ``coverage``);
    ``component_tests``: the invariant tests per component. Without them, only paired components are judged
    and none can be called independent."""
    component_tests = component_tests or {}
    by_comp: dict[str, list[int]] = defaultdict(list)
    for c in counted or {}:
        by_comp[c] = []
    for i, p in enumerate(pairs):
        by_comp[p.component].append(i)
    counted = {c: (counted or {}).get(c, True) for c in by_comp}
    n_comp = max(sum(counted.values()), 1)
    log10_threshold = math.log10(alpha / n_comp)
    out: dict[str, ComponentResult] = {}
    for comp, idx in sorted(by_comp.items()):
        ev = [i for i in idx if tests[i] is not None]
        ran = [t for t in component_tests.get(comp, []) if t.ran]
        m = len(ev) + len(ran)
        log10_p = log10_bonferroni([tests[i].log10_p for i in ev] + [t.log10_p for t in ran], m) if m else 0.0
        strongest = [pairs[i].a.name for i in sorted(ev, key=lambda i: tests[i].log10_p)[:N_STRONGEST]]
        detectable = None
        z_needed = z_for_log10_p(log10_threshold - math.log10(max(m, 1))) + POWER_Z
        if ev:
            detectable = min(z_needed * tests[i].null_sd_mean_cosine for i in ev)
        log10_needed = log10_threshold - math.log10(max(m, 1))  # one test's share of the component's level
        powered = invariant_power(ran, log10_needed, min_effect)
        best_invariant = min(ran, key=lambda t: t.log10_p, default=None)
        # The invariant test decides when the tensor tests alone would not (they say which tensors match).
        tensors_alone = log10_bonferroni([tests[i].log10_p for i in ev], len(ev)) if ev else 0.0
        by_invariant = best_invariant is not None and tensors_alone > log10_threshold
        if layer_maps and comp in layer_maps:
            layer_map = layer_maps[comp].to_dict()
        elif not idx and (from_tests := layer_map_from_tests(ran)) is not None:
            layer_map = from_tests
        else:
            layered = sorted({(pairs[i].a.layer, pairs[i].b.layer) for i in idx if pairs[i].a.layer is not None and pairs[i].b.layer is not None})
            layer_map = {"method": "name", "pairs": [list(p) for p in layered], "dropped_a": [], "unmatched_b": [], "duplicated_a": [], "reordered": False}
        matching = _matching_roles(pairs, tests, ev, log10_threshold)
        if not counted[comp]:
            verdict, log10_p, reason = INCONCLUSIVE, 0.0, NOT_COUNTED_REASON
        elif m and log10_p <= log10_threshold and by_invariant:
            verdict = RELATED
            reason = (
                f"{best_invariant.name} test: {best_invariant.reason}; combined log10 p = {log10_p:.1f} <= "
                f"{log10_threshold:.1f}; the deciding evidence is assumption-based (valid if independently trained "
                "units are no closer to the smaller model's units than its own sibling units are; docs/method.md)"
            )
        elif m and log10_p <= log10_threshold:
            verdict = RELATED
            best = min((tests[i] for i in ev), key=lambda t: t.log10_p)
            reason = (
                f"{len(ev)} evidence tensors; the strongest ({best.test} test) matches unit for unit with mean cosine "
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

        elif m == 0 and not component_tests.get(comp) and not idx:
            verdict = INCONCLUSIVE
            reason = "no tensor of A pairs with a tensor of B by name, role and shape, and no invariant test applies"
        elif m == 0 and not component_tests.get(comp):
            verdict = INCONCLUSIVE
            reason = "no informative tensors to compare (only norm gains, biases, buffers or tiny tensors)"
        elif powered is not None:
            verdict = INDEPENDENT
            reason = (
                f"{m} test{'s' if m > 1 else ''} show{'' if m > 1 else 's'} no match (combined log10 p = {log10_p:.1f}); "
                f"the {powered.name} test, which permuted or rotated hidden units cannot fool, would have detected "
                f"a mean margin of {margin_detectable(powered, log10_needed):.3f} or more"
            )
        else:
            verdict = INCONCLUSIVE
            reason = invariant_reason(component_tests.get(comp, []), len(ev), log10_needed, min_effect)
        inv_decides = by_invariant and (verdict == RELATED or not ev)  # the test named as the strongest
        if expert_maps and comp in expert_maps:
            layer_map = {**layer_map, "experts": {str(k): v for k, v in sorted(expert_maps[comp].items())}}
        comp_rows = [rows[i] for i in idx]
        out[comp] = ComponentResult(
            name=comp,
            verdict=verdict,
            log10_p=log10_p,
            n_tensors=len(idx),
            n_evidence=len(ev),
            median_pearson=_median(r.pearson for r in comp_rows if r.evidence),
            median_cosine=_median(r.cosine for r in comp_rows if r.evidence),
            median_unit_cosine=_median(tests[i].mean_cosine for i in ev),
            min_detectable_unit_cosine=detectable,
            decided_by=_decided_by(tests, ev, verdict, ran, by_invariant),
            reason=reason,
            strongest=strongest,
            layer_map=layer_map,
            test=best_invariant.name if inv_decides else (_strongest(tests, ev).test if ev else None),
            evidence_class=ASSUMPTION_BASED if inv_decides else (_strongest(tests, ev).evidence_class if ev else None),
            matching_roles=matching if verdict == RELATED else [],
            counted=counted[comp],
            invariant_tests=[t.to_dict() for t in component_tests.get(comp, [])],
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


def _decided_by(tests, ev, verdict, ran=(), by_invariant: bool = False) -> str:
    best_inv = min(ran, key=lambda t: t.log10_p, default=None)
    if by_invariant and verdict == RELATED:
        return (f"{best_inv.name} test ({ASSUMPTION_BASED} null; invariant to permuted or rotated units), "
                f"Bonferroni over {len(ev) + len(ran)} tests")
    if not ev and ran:
        return f"{', '.join(t.name for t in ran)} test (invariant to permuted or rotated units): none significant"
    if not ev:
        return "no evidence test applicable"
    best = _strongest(tests, ev)
    if verdict == RELATED:
        return f"{best.test} test ({best.evidence_class} null) on the strongest tensor, Bonferroni over {len(ev)} tensors"
    names = sorted({name for i in ev for name, _, _ in tests[i].by_test} or {tests[i].test for i in ev})
    names += [t.name for t in ran]
    return f"{', '.join(names)} tests on {len(ev)} tensors and the component, Bonferroni-combined: none significant"


def overall(components: dict[str, ComponentResult]) -> tuple[str, float]:
    """Related if any counted component is; independent if every counted one is; else inconclusive."""
    components = {k: c for k, c in components.items() if c.counted}
    if not components:
        return INCONCLUSIVE, 0.0
    verdicts = {c.verdict for c in components.values()}
    log10_p = log10_bonferroni([c.log10_p for c in components.values()])
    if RELATED in verdicts:
        return RELATED, log10_p
    if verdicts == {INDEPENDENT}:
        return INDEPENDENT, log10_p
    return INCONCLUSIVE, log10_p
