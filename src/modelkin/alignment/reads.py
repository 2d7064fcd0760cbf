"""Which bytes a comparison reads: every byte of the compared tensors (full), or a key-seeded sample of
rows of each (sampled), optionally capped by a byte budget.

A sampled pair is the same pair with both tensors replaced by *samples* (``TensorInfo.gathered``): the
same rows of A and of B, so every later stage handles it like any other pair of smaller tensors. Pairs
whose rows do not correspond index by index (a re-mapped vocabulary, a matrix stored transposed on one
side, a window of columns) are read whole; so are small tensors.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Iterable

from ..sampling import DEFAULT_SAMPLE, SamplePolicy, sample_rows
from .names import TensorPair

FULL, SAMPLED = "full", "sampled"
# Roles whose rows are sampled at another role's positions in the same layer: an FFN unit is row u of gate and
# row u of up together (the shared-basis test reads both at the gate's sample), so up's sample is the gate's.
SAME_ROWS_AS = {"mlp.up": "mlp.gate"}


@dataclass(frozen=True)
class ReadPlan:
    mode: str  # "full" or "sampled"
    pairs: tuple[TensorPair, ...]  # what is compared (sampled pairs hold samples)
    left_out: tuple[TensorPair, ...]  # dropped by the byte cap
    planned_bytes: int  # bytes of A and B the compared pairs read
    full_bytes: int  # bytes of A and B the same pairs hold in full
    not_held: tuple[TensorPair, ...] = ()  # rows a fingerprint does not hold: not compared
    left_bytes: int | None = None  # under a byte cap: what the cap leaves for the reads after the plan's

    @property
    def fraction(self) -> float:
        return self.planned_bytes / self.full_bytes if self.full_bytes else 1.0


def _sampled(p: TensorPair, policy: SamplePolicy, keys: dict[str, str]) -> TensorPair:
    ia, ib = p.a.info, p.b.info
    if p.rows is not None or p.transpose_b or p.a.transposed or p.b.transposed or ia.strided or ib.strided:
        return p
    if not ia.shape or not ib.shape:
        return p
    key = row_key(keys, p.a)
    rows_a = sample_rows(key, ia.shape[0], ia.n_bytes, policy)
    rows_b = sample_rows(key, ib.shape[0], ib.n_bytes, policy)
    if rows_a is None or rows_b is None:
        return p
    return replace(p, a=replace(p.a, info=ia.gathered(rows_a)), b=replace(p.b, info=ib.gathered(rows_b)))


def sample_key(entry) -> str:
    """Sample positions follow the tensor's template (the same rows in every layer), else its name."""
    return entry.template or entry.key


def _unit_slot(e) -> tuple:
    return (e.component, e.layer, e.expert, tuple(x for x in e.slot if x[0] != "expert"), e.param)


def row_keys(entries: Iterable) -> dict[str, str]:
    """Tensor name -> the key its sampled rows are drawn with, for the tensors sampled at a partner's positions
    (``SAME_ROWS_AS``: an FFN unit's up rows at its gate's, when both have as many rows); others use
    ``sample_key``. Decided by one model's inventory alone."""
    entries = list(entries)
    partners = {(e.role, _unit_slot(e)): e for e in entries if e.role in SAME_ROWS_AS.values()}
    out = {}
    for e in entries:
        other = partners.get((SAME_ROWS_AS.get(e.role), _unit_slot(e)))
        if other is not None and other.shape[:1] == e.shape[:1] and not other.transposed and not e.transposed:
            out[e.name] = sample_key(other)
    return out


def row_key(keys: dict[str, str], entry) -> str:
    """The key ``entry``'s sampled rows are drawn with: its partner's (``row_keys``) or its own."""
    return keys.get(entry.name) or sample_key(entry)


def pair_bytes(p: TensorPair) -> int:
    return p.a.info.n_bytes + p.b.info.n_bytes


def _spread(items: list, place: Callable) -> list:
    """Evidence first, then round-robin over layers, so a cap keeps a little of every depth. ``place``: an item's
    (evidence, layer)."""
    by_layer: dict[object, list] = {}
    for item in items:
        evidence, layer = place(item)
        by_layer.setdefault((not evidence, layer if layer is not None else -1), []).append(item)
    out: list = []
    for evidence_first in (False, True):
        groups = [g for (late, _), g in sorted(by_layer.items(), key=lambda kv: str(kv[0])) if late == evidence_first]
        for i in range(max((len(g) for g in groups), default=0)):
            out.extend(g[i] for g in groups if i < len(g))
    return out


def _fit(items: list, cost: Callable, cap: int, place: Callable = lambda p: (p.evidence, p.a.layer)) -> tuple[set[int], int]:
    """(ids of the items kept, what they cost): in ``_spread`` order, each item that still fits under ``cap``."""
    kept, spent = set(), 0
    for item in _spread(items, place):
        if spent + (c := cost(item)) <= cap:
            kept.add(id(item))
            spent += c
    return kept, spent


def plan_reads(pairs: list[TensorPair], mode: str, max_bytes: int | None = None,
               policy: SamplePolicy = DEFAULT_SAMPLE, cost: Callable[[TensorPair], int] = pair_bytes) -> ReadPlan:
    """``max_bytes``: what the pairs' reads may cost in all, each pair's by ``cost`` (its bytes, or what of them
    is still to fetch: bytes fetched already cost nothing); ``left_bytes`` is what the cap then leaves."""
    keys = row_keys(p.a for p in pairs)
    planned = [_sampled(p, policy, keys) for p in pairs] if mode == SAMPLED else list(pairs)
    full_bytes = sum(pair_bytes(p) for p in pairs)
    if max_bytes is None:
        return ReadPlan(mode, tuple(planned), (), sum(pair_bytes(p) for p in planned), full_bytes)
    kept_ids, spent = _fit(planned, cost, max_bytes)
    kept = tuple(p for p in planned if id(p) in kept_ids)
    left = tuple(p for p in planned if id(p) not in kept_ids)
    return ReadPlan(mode, kept, left, sum(pair_bytes(p) for p in kept),
                    sum(pair_bytes(p) for p, q in zip(pairs, planned) if id(q) in kept_ids), left_bytes=max_bytes - spent)


def prefetch_requests(entries, components: set[str] | None, mode: str,
                      policy: SamplePolicy = DEFAULT_SAMPLE, max_bytes: int | None = None) -> list[tuple]:
    """(tensor, rows) a remote model will be asked for, known from its inventory before any alignment:
    every row of small tensors and, in sampled mode, the sample of large ones (full mode: everything).
    ``max_bytes``: at most this many bytes, chosen as a capped plan chooses pairs (evidence first, a little of
    every depth), so that what a capped compare fetches before its plan is mostly what the plan then reads."""
    import numpy as np

    entries = list(entries)
    keys = row_keys(entries) if mode == SAMPLED else {}
    out = []
    for e in entries:
        info = e.info
        if not info.shape or not info.n_bytes or (components and e.component not in components):
            continue
        rows = sample_rows(row_key(keys, e), info.shape[0], info.n_bytes, policy) if mode == SAMPLED else None
        out.append((e, np.arange(info.shape[0]) if rows is None else rows))
    if max_bytes is not None:
        kept, _ = _fit(out, lambda r: len(r[1]) * (r[0].info.n_bytes // r[0].info.shape[0]), max_bytes,
                       lambda r: (r[0].evidence, r[0].layer))
        out = [r for r in out if id(r) in kept]
    return [(e.info, rows) for e, rows in out]
