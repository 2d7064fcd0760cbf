"""Per-tensor evidence: the stronger of the same-index and anchored unit tests, corrected for the choice."""

from __future__ import annotations

import math
from dataclasses import replace

from ..alignment import TensorPair
from ..sources import ModelSource
from .anchored import Anchor, anchored_evidence
from .realigned import realigned_evidence
from .unit_test import UnitTest, tensor_evidence


def pair_evidence(src_a: ModelSource, src_b: ModelSource, pair: TensorPair, anchor: Anchor | None) -> UnitTest | None:
    """Run every applicable test; keep the most significant, its p multiplied by the number run (Bonferroni)."""
    tests = [t for t in (
        tensor_evidence(src_a, src_b, pair),
        None if anchor is None else replace_test(anchored_evidence(src_a, src_b, anchor, pair), "anchored"),
        None if anchor is None else realigned_evidence(src_a, src_b, anchor, pair),
    ) if t is not None]
    if not tests:
        return None
    best = min(tests, key=lambda t: t.log10_p)
    return replace(best, log10_p=min(0.0, best.log10_p + math.log10(len(tests))))


def replace_test(t: UnitTest | None, name: str) -> UnitTest | None:
    return None if t is None else replace(t, test=name)
