"""Screening after the metric pass: tensors that look informative by role but are not.

* tensors holding NaN or infinite values cannot be compared at all;
* near-constant tensors (a gain stored as a matrix, a zero-initialised adapter never trained) have no
  variation to match;
* tied duplicates: the same bytes stored twice in one model (tied input/output embeddings, shared layers)
  would count one piece of evidence twice. The first copy is kept, the rest are labelled.
"""

from __future__ import annotations

from collections import defaultdict

from ..alignment import TensorPair
from ..metrics import TensorMetrics, same_bytes
from ..sources import ModelSource

NEAR_CONSTANT_REL_STD = 1e-6


def screen(src_a: ModelSource, pairs: list[TensorPair], metrics: list[TensorMetrics]) -> dict[int, str]:
    """Index of pair -> reason it is not evidence after all."""
    reasons: dict[int, str] = {}
    for i, (p, m) in enumerate(zip(pairs, metrics)):
        if not p.evidence or p.width_differs:  # width-pruned pairs have no element-wise statistics
            continue
        if not m.finite:
            reasons[i] = "contains NaN or infinite values: not comparable"
            continue
        for side, std, mean in (("A", m.std_a, m.mean_a), ("B", m.std_b, m.mean_b)):
            if std <= NEAR_CONSTANT_REL_STD * max(abs(mean), 1e-30) or std == 0.0:
                reasons[i] = f"near-constant in {side} (std {std:.3g}): nothing to match"
    groups: dict[tuple, list[int]] = defaultdict(list)
    for i, (p, m) in enumerate(zip(pairs, metrics)):
        if p.evidence and not p.width_differs and i not in reasons:
            groups[(p.a.info.shape, p.a.info.dtype.code, m.mean_a, m.std_a)].append(i)
    for idx in groups.values():
        for j in idx[1:]:
            first = pairs[idx[0]]
            if same_bytes(src_a, first.a.info, src_a, pairs[j].a.info):
                reasons[j] = f"tied duplicate of {first.a.name} (same bytes in A): counted once"
    return reasons

