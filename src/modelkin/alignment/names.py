"""First alignment: pair tensors of A and B by name, then by role.

Names are compared after the family's wrapper prefixes are stripped (``model.``, ``language_model.``,
``model.language_model.``, ``bert.``…), so the same weights packaged as a bare LM or inside a VLM line up.
Tensors left over are paired by (component, role, parameter, layer, expert) when that key is unique on both
sides, which covers renamings within a known family. Shapes must be equal, or transposed (GPT-2's Conv1D
stores [in, out]). Everything that stays unpaired is listed with the reason, never dropped silently.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from ..inventory import Inventory, TensorEntry
from .vocab import TOKEN_ROW_ROLES, VocabMap

MIN_SHARED_ROWS = 16


@dataclass(frozen=True, slots=True, eq=False)
class TensorPair:
    a: TensorEntry
    b: TensorEntry
    transpose_b: bool  # B's stored matrix is the transpose of A's layout
    matched_by: str  # "name", "role", "layer-map"
    rows: tuple[np.ndarray, np.ndarray] | None = None  # token rows of A and B holding the same tokens
    # Pairs chosen among k candidates by similarity (layer or expert maps) carry k: their p-values are
    # multiplied by it, so picking the best-looking partner cannot manufacture evidence.
    selection_factor: int = 1
    width_differs: bool = False  # unit counts differ (width pruning): only unit-matching tests apply

    @property
    def shape(self) -> tuple[int, ...]:
        """Logical shape of what is compared (shared token rows only, for a re-mapped vocabulary)."""
        s = logical_shape(self.a)
        return (len(self.rows[0]),) + s[1:] if self.rows is not None else s

    @property
    def compared_shape(self) -> tuple[int, ...]:
        """What the report shows as compared: B's logical shape when widths differ, else ``shape``."""
        return logical_shape(self.b) if self.width_differs else self.shape

    @property
    def kept_unit_fraction(self) -> float | None:
        """Width pruning: units of B / units of A on the pruned axis (None when widths agree)."""
        if not self.width_differs:
            return None
        axis = WIDTH_AXIS[self.a.role]
        return logical_shape(self.b)[axis] / logical_shape(self.a)[axis]

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def component(self) -> str:
        return self.a.component

    @property
    def evidence(self) -> bool:
        return self.a.evidence and self.b.evidence

    @property
    def non_evidence_reason(self) -> str | None:
        return self.a.non_evidence_reason or self.b.non_evidence_reason


@dataclass(frozen=True, slots=True)
class Unmatched:
    side: str  # "a" or "b"
    name: str
    component: str
    role: str
    reason: str


@dataclass(frozen=True, slots=True)
class Alignment:
    pairs: tuple[TensorPair, ...]
    unmatched: tuple[Unmatched, ...]


def logical_shape(e: TensorEntry) -> tuple[int, ...]:
    """Shape in nn.Linear's [out, in] convention."""
    return tuple(reversed(e.shape)) if e.transposed and len(e.shape) == 2 else e.shape


def _shape_fit(a: TensorEntry, b: TensorEntry) -> bool | None:
    """None if shapes cannot be compared, else whether B must be transposed."""
    la, lb = logical_shape(a), logical_shape(b)
    if la == lb:
        return a.transposed != b.transposed
    return None


# Roles whose unit axis (logical) may shrink under width pruning; the other axes must agree.
WIDTH_AXIS = {"mlp.gate": 0, "mlp.up": 0, "mlp.down": 1}


def width_differs(a: TensorEntry, b: TensorEntry) -> bool:
    axis = WIDTH_AXIS.get(a.role)
    la, lb = logical_shape(a), logical_shape(b)
    if axis is None or a.role != b.role or len(la) != 2 or len(lb) != 2:
        return False
    other = 1 - axis
    return la[other] == lb[other] and la[axis] != lb[axis]


def _role_key(e: TensorEntry) -> tuple:
    return (e.component, e.role, e.param, e.layer, e.expert)


def _token_rows(ea: TensorEntry, eb: TensorEntry, vocab: VocabMap | None) -> tuple[np.ndarray, np.ndarray] | None:
    """Row maps for a token-row tensor pair whose vocabularies differ; None when rows already agree."""
    if vocab is None or ea.role not in TOKEN_ROW_ROLES or eb.role not in TOKEN_ROW_ROLES:
        return None
    if ea.transposed or eb.transposed or len(ea.shape) != 2 or ea.shape[1:] != eb.shape[1:]:
        return None
    if vocab.identity and ea.shape == eb.shape:
        return None
    rows = vocab.for_rows(ea.shape[0], eb.shape[0])
    return rows if rows[0].size >= MIN_SHARED_ROWS else None


def _pair_experts_with_dense(left_a: list[TensorEntry], left_b: list[TensorEntry], used_b: set[str], pairs: list) -> list[TensorEntry]:
    """MoE upcycling: every expert of one model is compared with the dense MLP of the other."""
    dense_key = lambda e: (e.component, e.role, e.param, e.layer)
    dense_a = {dense_key(e): e for e in left_a if e.expert is None and e.layer is not None}
    dense_b = {dense_key(e): e for e in left_b if e.expert is None and e.layer is not None and e.name not in used_b}
    used_a: set[str] = set()
    for eb in left_b:
        ea = dense_a.get(dense_key(eb)) if eb.expert is not None and eb.name not in used_b else None
        if ea is not None and _shape_fit(ea, eb) is not None:
            pairs.append(TensorPair(ea, eb, ea.transposed != eb.transposed, "expert~dense"))
            used_b.add(eb.name)
            used_a.add(ea.name)
    for ea in left_a:
        eb = dense_b.get(dense_key(ea)) if ea.expert is not None else None
        if eb is not None and _shape_fit(ea, eb) is not None:
            pairs.append(TensorPair(ea, eb, ea.transposed != eb.transposed, "expert~dense"))
            used_a.add(ea.name)
            used_b.add(eb.name)
    return [e for e in left_a if e.name not in used_a]


def align_by_name(inv_a: Inventory, inv_b: Inventory, vocab: VocabMap | None = None) -> Alignment:
    pairs: list[TensorPair] = []
    unmatched: list[Unmatched] = []
    b_by_key = {}
    for e in inv_b.tensors:
        b_by_key.setdefault(e.key, e)
    used_b: set[str] = set()
    left_a: list[TensorEntry] = []
    shape_conflicts: dict[tuple[str, str], str] = {}  # (side, name) -> reason
    for ea in inv_a.tensors:
        eb = b_by_key.get(ea.key)
        if eb is None or eb.name in used_b:
            left_a.append(ea)
            continue
        rows = _token_rows(ea, eb, vocab)
        if rows is not None:
            used_b.add(eb.name)
            pairs.append(TensorPair(ea, eb, False, "name+vocab", rows))
            continue
        fit = _shape_fit(ea, eb)
        if fit is None and width_differs(ea, eb):
            used_b.add(eb.name)
            pairs.append(TensorPair(ea, eb, ea.transposed != eb.transposed, "name (width differs)", width_differs=True))
            continue
        if fit is None:
            shape_conflicts[("a", ea.name)] = f"shape {list(ea.shape)} vs {list(eb.shape)} in B ({eb.name})"
            shape_conflicts[("b", eb.name)] = f"shape {list(eb.shape)} vs {list(ea.shape)} in A ({ea.name})"
            used_b.add(eb.name)
            left_a.append(ea)
            continue
        used_b.add(eb.name)
        pairs.append(TensorPair(ea, eb, fit, "name"))

    # Second pass: unique role keys among the leftovers (renamed tensors of a known family).
    left_b = [e for e in inv_b.tensors if e.name not in used_b]
    count_a = Counter(_role_key(e) for e in left_a if e.family)
    count_b = Counter(_role_key(e) for e in left_b if e.family)
    b_by_role = {_role_key(e): e for e in left_b if e.family and count_b[_role_key(e)] == 1}
    still_a = []
    for ea in left_a:
        k = _role_key(ea)
        eb = b_by_role.get(k) if ea.family and count_a[k] == 1 else None
        fit = None if eb is None else _shape_fit(ea, eb)
        if eb is None or fit is None:
            still_a.append(ea)
            continue
        used_b.add(eb.name)
        pairs.append(TensorPair(ea, eb, fit, "role"))

    still_a = _pair_experts_with_dense(still_a, left_b, used_b, pairs)

    for ea in still_a:
        reason = shape_conflicts.get(("a", ea.name), "no tensor of the same name or role in B")
        unmatched.append(Unmatched("a", ea.name, ea.component, ea.role, reason))
    paired_b = {p.b.name for p in pairs}
    for eb in inv_b.tensors:
        if eb.name not in paired_b:
            reason = shape_conflicts.get(("b", eb.name), "no tensor of the same name or role in A")
            unmatched.append(Unmatched("b", eb.name, eb.component, eb.role, reason))
    return Alignment(tuple(pairs), tuple(unmatched))
