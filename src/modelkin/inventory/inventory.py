"""Inventory: give every tensor of a model a role, a component, a layer and an expert index.

Knowledge comes from the family files (see ``families``); this module only applies it. The family is taken
from ``config.json``'s ``model_type`` when there is one, otherwise from whichever family's rules match the
most tensor names. Tensors no rule matches keep role ``other`` in component ``other`` and are listed as
unassigned — they still take part in the comparison, under the most conservative null.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from ..sources import ModelSource, TensorInfo
from ..sources.dtypes import FLOAT_CODES
from .buffers import buffer_reason
from .families import Family, Rule, by_model_type, families
from .roles import PARAM_NON_EVIDENCE, ROLES

MIN_EVIDENCE_ELEMENTS = 64  # fewer values than this cannot support a per-tensor test
INTEGER_BUFFER = "an integer or boolean buffer (indices, counters, masks), not learned weights"


def _dtype_reason(info: TensorInfo) -> str | None:
    """Integer and boolean tensors wider than a byte (position ids, step counters, masks) are never
    evidence; 8-bit integers may be quantised weights and are judged like floats."""
    dtype = info.dtype
    if dtype.code in FLOAT_CODES or dtype.is_block:
        return None
    return INTEGER_BUFFER if dtype.code == "BOOL" or dtype.bits > 8 else None


@dataclass(frozen=True, slots=True)
class TensorEntry:
    name: str  # as stored
    key: str  # name without wrapper prefixes: what same-name alignment compares
    info: TensorInfo
    role: str
    component: str
    layer: int | None
    expert: int | None
    param: str  # last name segment after the rule's pattern ("weight", "bias", "running_var", ...)
    family: str | None  # family whose rule matched; None when unassigned
    template: str | None  # the rule's pattern + param: the same tensor in every layer shares it
    slot: tuple  # values of placeholders other than {layer} (expert, block, ...)
    transposed: bool
    evidence: bool
    non_evidence_reason: str | None

    @property
    def shape(self) -> tuple[int, ...]:
        return self.info.shape


@dataclass(frozen=True)
class Inventory:
    source: ModelSource
    family: str | None
    tensors: tuple[TensorEntry, ...]
    unassigned: tuple[str, ...]
    by_name: dict[str, TensorEntry] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_name", {t.name: t for t in self.tensors})

    def components(self) -> list[str]:
        return sorted({t.component for t in self.tensors})

    def summary(self) -> dict:
        """Parameter counts per component and role (what ``modelkin inspect`` prints)."""
        per: dict[str, Counter] = {}
        for t in self.tensors:
            per.setdefault(t.component, Counter())[t.role] += t.info.numel
        return {c: dict(sorted(r.items())) for c, r in sorted(per.items())}


def detect_family(source: ModelSource) -> str | None:
    config = source.config or {}
    table = by_model_type()
    for key in ("model_type",):
        mt = config.get(key)
        if isinstance(mt, str) and mt in table:
            return table[mt]
    # Score each family with the rules it includes; ties go to the family with fewer rules (the most
    # specific explanation), then to the name, so the choice never depends on file order.
    fams = families()
    best: tuple | None = None
    for fam in fams.values():
        members = [fam] + [fams[i] for i in fam.includes]
        hits = sum(1 for name in source.tensors if any(_match(m, name) is not None for m in members))
        n_rules = sum(len(m.rules) for m in members)
        key = (-hits, n_rules, fam.name)
        if hits and (best is None or key < best):
            best = key
    return None if best is None else best[2]


def _search_order(primary: str | None) -> list[Family]:
    fams = families()
    order: list[str] = []
    if primary:
        order.append(primary)
        order.extend(fams[primary].includes)
    order.extend(sorted(fams))  # any family's rules may still name a tensor (grafts, unusual packagings)
    return [fams[n] for n in dict.fromkeys(order)]


def _match(fam: Family, name: str) -> tuple[Rule, str, dict] | None:
    for prefix in fam.strip_prefixes + ("",):
        if prefix and not name.startswith(prefix):
            continue
        key = name[len(prefix) :]
        for rule in fam.rules:
            m = rule.regex.fullmatch(key)
            if m:
                return rule, key, m.groupdict()
    return None


def _entry(info: TensorInfo, order: list[Family], home: str = "other") -> TensorEntry:
    generated = buffer_reason(info.name)  # a generated tensor's name outranks the rule that matched it
    for fam in order:
        hit = _match(fam, info.name)
        if hit is None:
            continue
        rule, key, groups = hit
        param = groups.get("param") or ""
        role = ROLES["buffer" if generated else rule.role]
        reason = generated or role.non_evidence_reason or PARAM_NON_EVIDENCE.get(param) or _dtype_reason(info)
        if reason is None and info.numel < MIN_EVIDENCE_ELEMENTS:
            reason = f"only {info.numel} values: too few to discriminate"
        if reason is None and len(info.shape) < 2:
            reason = "a 1-D vector has no unit axis to test against"
        layer = groups.get("layer")
        expert = groups.get("expert")
        return TensorEntry(
            info.name, key, info, role.name, rule.component,
            None if layer is None else int(layer), None if expert is None else int(expert),
            param, fam.name, f"{rule.pattern}.{param}",
            tuple(sorted((k, v) for k, v in groups.items() if k not in ("layer", "param"))),
            rule.transposed, reason is None, reason,
        )
    if generated:  # no rule knows it, its name does: a buffer of the model's main component
        why = _dtype_reason(info) or generated  # an integer or boolean buffer says so first, as elsewhere
        return TensorEntry(info.name, info.name, info, "buffer", home, None, None, "", None, None, (), False, False, why)
    reason = _dtype_reason(info)
    if reason is None and len(info.shape) < 2:
        reason = "scalar or 1-D tensor of unknown role (bias, gain or buffer?)"
    elif reason is None and info.numel < MIN_EVIDENCE_ELEMENTS:
        reason = f"only {info.numel} values: too few to discriminate"
    return TensorEntry(info.name, info.name, info, "other", "other", None, None, "", None, None, (), False, reason is None, reason)


def build_inventory(source: ModelSource) -> Inventory:
    family = detect_family(source)
    order = _search_order(family)
    home = families()[family].component if family else "other"
    entries = tuple(_entry(info, order, home) for info in source.tensors.values())
    unassigned = tuple(e.name for e in entries if e.family is None and e.role != "buffer")
    return Inventory(source, family, entries, unassigned)
