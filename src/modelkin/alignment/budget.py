"""A budgeted sample (fingerprints): which layers of each component a sampled compare reads, from shapes alone.

A plain sampled read takes a fraction of the rows of every tensor, so what it reads grows with the model. A
budgeted policy (``SamplePolicy.budget_bytes`` / ``max_layers``) reads one block of rows per tensor in the
same number K of layers of every component, K as large as the byte budget allows once the tensors outside
layers (embeddings, heads, final norms) and the shared-basis rows are paid for. The layers are chosen by
``sampling.choose_layers`` (a key-seeded order of layer indices, not of the model's depth), so the choice
depends on the model alone and two models of different depths choose mostly the same layers. Tensors of the
other layers are not read: the compare sees an inventory without them (``restrict``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..inventory import Inventory, TensorEntry
from ..sampling import SamplePolicy, choose_layers, sample_rows, token_blocks
from .reads import sample_key


@dataclass(frozen=True, slots=True)
class LayerSample:
    """Per component: its layer indices and the ones read (``chosen`` None: every layer)."""

    layers: dict[str, tuple[int, ...]]
    chosen: dict[str, tuple[int, ...] | None]
    k: int  # layers read per component (the budget's K)
    whole: frozenset[str] = frozenset()  # components kept whole (they fit: ``whole_bytes``, or the whole model)

    def keeps(self, e: TensorEntry) -> bool:
        chosen = self.chosen.get(e.component)
        return e.layer is None or chosen is None or e.layer in chosen

    def left_out(self) -> dict[str, int]:
        """Per component, how many of its layers are not read."""
        return {c: len(ls) - len(self.chosen[c]) for c, ls in self.layers.items()
                if self.chosen.get(c) is not None and len(self.chosen[c]) < len(ls)}


def sampled_row_count(e: TensorEntry, policy: SamplePolicy) -> int:
    """Rows of ``e`` a sampled read takes (all of them when it reads the tensor whole)."""
    if not e.shape:
        return 1
    if e.transposed or e.info.strided:
        return e.shape[0]
    rows = sample_rows(sample_key(e), e.shape[0], e.info.n_bytes, policy)
    return e.shape[0] if rows is None else len(rows)


def held_bytes(e: TensorEntry, policy: SamplePolicy) -> int:
    """Bytes of ``e`` a sampled read takes."""
    if not e.shape or not e.shape[0]:
        return e.info.n_bytes
    return e.info.n_bytes // e.shape[0] * sampled_row_count(e, policy)


def basis_rows_bytes(e: TensorEntry, policy: SamplePolicy) -> int:
    """Bytes the shared-basis test reads of an embedding beyond its sample: its blocks of token ids."""
    if e.role != "embedding" or len(e.shape) != 2 or e.transposed or not e.shape[0]:
        return 0
    rows = sample_rows(sample_key(e), e.shape[0], e.info.n_bytes, policy)
    if rows is None:
        return 0
    extra = len(set(token_blocks(e.shape[0]).tolist()) - set(rows.tolist()))
    return extra * (e.info.n_bytes // e.shape[0])


def plan_layers(entries: tuple[TensorEntry, ...] | list[TensorEntry], policy: SamplePolicy) -> LayerSample | None:
    """The layers a budgeted policy reads, per component (None: the policy is not budgeted)."""
    if not policy.budgeted:
        return None
    by_comp: dict[str, list[TensorEntry]] = {}
    for e in entries:
        by_comp.setdefault(e.component, []).append(e)
    layers = {c: tuple(sorted({e.layer for e in es if e.layer is not None})) for c, es in by_comp.items()}
    total = sum(e.info.n_bytes for e in entries)
    whole = {c for c, es in by_comp.items() if sum(e.info.n_bytes for e in es) <= policy.whole_bytes
             or (policy.budget_bytes is not None and total <= policy.budget_bytes)}  # what fits is kept whole
    fixed, per_layer = 0, 0.0
    for c, es in by_comp.items():
        if c in whole:
            fixed += sum(e.info.n_bytes for e in es)
            continue
        fixed += sum(held_bytes(e, policy) + basis_rows_bytes(e, policy) for e in es if e.layer is None)
        if layers[c]:
            # An FFN unit is a gate row and an up row read at the gate's sample: up holds a second block.
            gated = any(e.role == "mlp.gate" for e in es)
            per_layer += sum(held_bytes(e, policy) * (2 if gated and e.role == "mlp.up" else 1)
                             for e in es if e.layer is not None) / len(layers[c])
    k = max((len(v) for v in layers.values()), default=0)
    if policy.budget_bytes is not None and per_layer > 0:
        k = min(k, max(1, int((policy.budget_bytes - fixed) // per_layer)))
    if policy.max_layers is not None:
        k = min(k, max(1, policy.max_layers))
    chosen = {c: None if c in whole or not ls else tuple(choose_layers(c, list(ls), k)) for c, ls in layers.items()}
    return LayerSample(layers, chosen, k, frozenset(whole))


def restrict(inv: Inventory, plan: LayerSample | None) -> Inventory:
    """The inventory a budgeted compare sees: the tensors of the layers it reads (all of them without a plan)."""
    if plan is None:
        return inv
    return replace(inv, tensors=tuple(e for e in inv.tensors if plan.keeps(e)))
