"""Which bytes a comparison reads: every byte of the compared tensors (full), or a key-seeded sample of
rows of each (sampled), optionally capped by a byte budget.

A sampled pair is the same pair with both tensors replaced by *samples* (``TensorInfo.gathered``): the
same rows of A and of B, so every later stage handles it like any other pair of smaller tensors. Pairs
whose rows do not correspond index by index (a re-mapped vocabulary, a matrix stored transposed on one
side, a window of columns) are read whole; so are small tensors.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..sampling import DEFAULT_SAMPLE, SamplePolicy, sample_rows
from .names import TensorPair

FULL, SAMPLED = "full", "sampled"


@dataclass(frozen=True)
class ReadPlan:
    mode: str  # "full" or "sampled"
    pairs: tuple[TensorPair, ...]  # what is compared (sampled pairs hold samples)
    left_out: tuple[TensorPair, ...]  # dropped by the byte cap
    planned_bytes: int  # bytes of A and B the compared pairs read
    full_bytes: int  # bytes of A and B the same pairs hold in full

    @property
    def fraction(self) -> float:
        return self.planned_bytes / self.full_bytes if self.full_bytes else 1.0


def _sampled(p: TensorPair, policy: SamplePolicy) -> TensorPair:
    ia, ib = p.a.info, p.b.info
    if p.rows is not None or p.transpose_b or p.a.transposed or p.b.transposed or ia.strided or ib.strided:
        return p
    if not ia.shape or not ib.shape:
        return p
    key = sample_key(p.a)
    rows_a = sample_rows(key, ia.shape[0], ia.n_bytes, policy)
    rows_b = sample_rows(key, ib.shape[0], ib.n_bytes, policy)
    if rows_a is None or rows_b is None:
        return p
    return replace(p, a=replace(p.a, info=ia.gathered(rows_a)), b=replace(p.b, info=ib.gathered(rows_b)))


def sample_key(entry) -> str:
    """Sample positions follow the tensor's template (the same rows in every layer), else its name."""
    return entry.template or entry.key


def _bytes(p: TensorPair) -> int:
    return p.a.info.n_bytes + p.b.info.n_bytes


def _spread(pairs: list[TensorPair]) -> list[TensorPair]:
    """Evidence first, then round-robin over layers, so a cap keeps a little of every depth."""
    by_layer: dict[object, list[TensorPair]] = {}
    for p in pairs:
        by_layer.setdefault((not p.evidence, p.a.layer if p.a.layer is not None else -1), []).append(p)
    out: list[TensorPair] = []
    for evidence_first in (False, True):
        groups = [g for (late, _), g in sorted(by_layer.items(), key=lambda kv: str(kv[0])) if late == evidence_first]
        for i in range(max((len(g) for g in groups), default=0)):
            out.extend(g[i] for g in groups if i < len(g))
    return out


def plan_reads(pairs: list[TensorPair], mode: str, max_bytes: int | None = None,
               policy: SamplePolicy = DEFAULT_SAMPLE) -> ReadPlan:
    planned = [_sampled(p, policy) for p in pairs] if mode == SAMPLED else list(pairs)
    full_bytes = sum(_bytes(p) for p in pairs)
    if max_bytes is None or sum(_bytes(p) for p in planned) <= max_bytes:
        return ReadPlan(mode, tuple(planned), (), sum(_bytes(p) for p in planned), full_bytes)
    kept_ids, total = set(), 0
    for p in _spread(planned):
        if total + _bytes(p) <= max_bytes:
            kept_ids.add(id(p))
            total += _bytes(p)
    kept = tuple(p for p in planned if id(p) in kept_ids)
    left = tuple(p for p in planned if id(p) not in kept_ids)
    return ReadPlan(mode, kept, left, total, sum(_bytes(p) for p, q in zip(pairs, planned) if id(q) in kept_ids))


def prefetch_requests(entries, components: set[str] | None, mode: str,
                      policy: SamplePolicy = DEFAULT_SAMPLE) -> list[tuple]:
    """(tensor, rows) a remote model will be asked for, known from its inventory before any alignment:
    every row of small tensors and, in sampled mode, the sample of large ones (full mode: everything)."""
    import numpy as np

    out = []
    for e in entries:
        info = e.info
        if not info.shape or not info.n_bytes or (components and e.component not in components):
            continue
        rows = sample_rows(sample_key(e), info.shape[0], info.n_bytes, policy) if mode == SAMPLED else None
        out.append((info, np.arange(info.shape[0]) if rows is None else rows))
    return out
