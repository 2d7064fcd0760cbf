"""Which components are judged, which count in the overall verdict, and when "independent" is allowed.

* Every component present in both models is judged, even when no tensor of one pairs with a tensor of the
  other by name, role and shape (models of different widths): it then rests on its invariant test.
* A component counts in the overall verdict (and in the Bonferroni split of α) only when both models hold
  in it at least one tensor that could be evidence. A component of scalars, fixed buffers, norm gains or
  biases (CLIP's ``logit_scale``) is listed, inconclusive, and not counted: it cannot make two independent
  models "inconclusive" overall.
* "independent" needs an invariant test (shared-basis or channels) that ran with power: it would have seen a
  mean margin of ``min_effect`` with 95 % power at the component's threshold, for a permuted copy too: when only a
  share c of the larger model's units were fingerprinted (units sampled in a large model), a permuted copy's
  counterparts were looked at for about that share of units, so the detectable margin is divided by c.
"""

from __future__ import annotations

from ..inventory import Inventory
from ..statistics.margins import ComponentTest, detectable_margin

NOT_COUNTED_REASON = (
    "no informative tensors to compare (in at least one model it holds only scalars, fixed buffers, norm gains "
    "or biases); not counted in the overall verdict"
)


def counted_components(inv_a: Inventory, inv_b: Inventory, only: tuple[str, ...] | None = None) -> dict[str, bool]:
    """Every component present in both models -> whether it counts in the overall verdict."""
    shared = sorted(set(inv_a.components()) & set(inv_b.components()))
    if only:
        shared = [c for c in shared if c in only]
    informative = lambda inv, c: any(e.evidence for e in inv.tensors if e.component == c)  # noqa: E731
    return {c: informative(inv_a, c) and informative(inv_b, c) for c in shared}


def invariant_power(ran: list[ComponentTest], log10_needed: float, min_effect: float) -> ComponentTest | None:
    """The invariant test that had the power to see a mean margin of ``min_effect``, if any."""
    powered = [t for t in ran if detectable(t, log10_needed) <= min_effect]
    return min(powered, key=lambda t: detectable(t, log10_needed), default=None)


def detectable(t: ComponentTest, log10_needed: float) -> float:
    """Smallest mean margin ``t`` would have detected at the level ``log10_needed`` with 95 % power."""
    if t.null_sd_margin is None or t.partner_coverage <= 0:
        return float("inf")
    return detectable_margin(t.null_sd_margin, t.n_units, log10_needed) / t.partner_coverage


def invariant_reason(tests: list[ComponentTest], n_tensor_tests: int, log10_needed: float, min_effect: float) -> str:
    """Why a component that is not related is not called independent either (one sentence)."""
    ran = [t for t in tests if t.ran]
    if not ran:
        why = "; ".join(t.reason for t in tests) or "no invariant test applies"
        seen = f"{n_tensor_tests} same-index tests show no match, but " if n_tensor_tests else ""
        return f"{seen}a permuted or rotated copy would go unseen: {why}"
    t = min(ran, key=lambda t: detectable(t, log10_needed))
    could = detectable(t, log10_needed)
    if t.partner_coverage < 1 and could * t.partner_coverage <= min_effect:
        return (
            f"no significant match, but the {t.name} test fingerprinted only {t.partner_coverage:.1%} of the larger "
            f"model's units (sampled), so a permuted copy's counterparts were mostly never looked at (it could detect a "
            f"mean margin >= {could:.3f} over all units, need <= {min_effect})"
        )
    return (
        f"no significant match, but the {t.name} test had too few units to rule out a weak relationship "
        f"(could detect a mean margin >= {could:.3f}, need <= {min_effect})"
    )


def layer_map_from_tests(tests: list[ComponentTest]) -> dict | None:
    """A component with no tensor pairs takes its layer map from the shared-basis test, when one ran."""
    for t in tests:
        rows = t.details.get("layer_map") if t.ran else None
        if rows:
            pairs = [[r["layer_a"], r["layer_b"]] for r in rows
                     if r["layer_a"] is not None and r["layer_b"] is not None and r["counterparts"] * 2 > r["tested"]]
            return {"method": "shared-basis", "pairs": pairs, "dropped_a": [], "unmatched_b": [], "duplicated_a": [],
                    "reordered": any(x[1] > y[1] for x, y in zip(pairs, pairs[1:]))}
    return None
