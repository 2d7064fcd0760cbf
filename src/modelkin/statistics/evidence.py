"""Per-tensor evidence: the stronger of the same-index and anchored unit tests, corrected for the choice."""

from __future__ import annotations

import math
from dataclasses import replace

from ..alignment import TensorPair
from ..sources import ModelSource
from .anchored import Anchor, anchored_evidence
from .realigned import REALIGN_ROLES, realigned_evidence
from .unit_test import UnitTest, tensor_evidence_many


# Once a test has found this much, the costlier tests after it cannot change the verdict: they are skipped.
DECISIVE_LOG10_P = -30.0
N_TESTS = 3  # same-index, anchored, realigned: the Bonferroni factor is fixed, whichever ran


# The realigned test is the costly one (a linear assignment over up to 2048 units per tensor). A copier
# who permutes units does so in every layer, so a handful of tensors spread over the depth suffices.
MAX_REALIGNED_PER_COMPONENT = 8
CHUNK = 16  # pairs whose same-index tests one run of ``evidence_of`` computes together


def realign_candidates(pairs: list[TensorPair]) -> set[int]:
    """Indices of the pairs that may run the realigned test: ≤ MAX per component, spread over layers."""
    chosen: set[int] = set()
    by_comp: dict[str, list[int]] = {}
    for i, p in enumerate(pairs):
        if p.a.role in REALIGN_ROLES and p.evidence:
            by_comp.setdefault(p.component, []).append(i)
    for idx in by_comp.values():
        # Width-pruned pairs have no other test: when a component has them, they are the ones to run.
        narrowed = [i for i in idx if pairs[i].width_differs]
        idx = narrowed or idx
        idx.sort(key=lambda i: (pairs[i].a.layer if pairs[i].a.layer is not None else -1, pairs[i].a.name))
        if len(idx) <= MAX_REALIGNED_PER_COMPONENT:
            chosen.update(idx)
        else:
            step = len(idx) / MAX_REALIGNED_PER_COMPONENT
            chosen.update(idx[int(k * step)] for k in range(MAX_REALIGNED_PER_COMPONENT))
    return chosen


def pair_evidence(src_a: ModelSource, src_b: ModelSource, pair: TensorPair, anchor: Anchor | None,
                  realign: bool = True) -> UnitTest | None:
    """The most significant of the applicable tests, its p multiplied by the number of tests (Bonferroni).

    Tests run cheapest first; a decisive result stops the sequence. The correction factor is always
    ``N_TESTS``, so skipping never makes a p-value smaller than running everything would.
    """
    return evidence_of(src_a, src_b, [pair], {pair.component: anchor}, [realign])[0]


def evidence_of(src_a: ModelSource, src_b: ModelSource, pairs: list[TensorPair], anchors: dict[str, Anchor | None],
                realign: list[bool]) -> list[UnitTest | None]:
    """``pair_evidence`` of each pair (``anchors`` by component, ``realign`` per pair): the same-index tests of
    all of them first, computed together (``tensor_evidence_many``), then each pair's costlier tests."""
    same = iter(tensor_evidence_many(src_a, src_b, [p for p in pairs if not p.width_differs]))
    return [_strongest(src_a, src_b, p, anchors[p.component], r, None if p.width_differs else next(same))
            for p, r in zip(pairs, realign)]


def evidence_chunks(indices: list[int]) -> list[list[int]]:
    """``indices`` cut into runs of ``CHUNK`` pairs: a pool of workers stays balanced, a run's samples in memory
    stay bounded, and the runs are the same whatever the number of workers."""
    return [indices[k: k + CHUNK] for k in range(0, len(indices), CHUNK)]


def _strongest(src_a: ModelSource, src_b: ModelSource, pair: TensorPair, anchor: Anchor | None, realign: bool,
               same_index: UnitTest | None) -> UnitTest | None:
    runners = []
    if not pair.width_differs:  # same-index tests need equal shapes
        runners.append(lambda: same_index)
        if anchor is not None:
            runners.append(lambda: replace_test(anchored_evidence(src_a, src_b, anchor, pair), "anchored"))
    if anchor is not None and realign:
        runners.append(lambda: realigned_evidence(src_a, src_b, anchor, pair))
    best, ran = None, []
    for run in runners:
        t = run()
        if t is not None:
            ran.append((t.test, t.z, t.log10_p))
            if best is None or t.log10_p < best.log10_p:
                best = t
        if best is not None and best.log10_p <= DECISIVE_LOG10_P:
            break
    if best is None:
        return None
    corrected = min(0.0, best.log10_p + math.log10(N_TESTS * pair.selection_factor))
    return replace(best, log10_p=corrected, by_test=tuple(ran))


def replace_test(t: UnitTest | None, name: str) -> UnitTest | None:
    return None if t is None else replace(t, test=name)
