"""Fused ↔ split tensors: one model stores q, k, v (or gate, up) in one matrix, the other separately.

A fused matrix stacks its parts along the output rows ([q; k; v] or [gate; up]), so each part is a
*view* (``TensorInfo.rows`` / ``columns``): a row range of a matrix stored [out, in], or a window of
columns of one stored [in, out] like GPT-2's Conv1D ``c_attn``. The row counts come from the other model's separate tensors (which also covers grouped-query
attention, where k and v are narrower than q). Each virtual part takes the key of its counterpart, so the
ordinary name alignment pairs them.
"""

from __future__ import annotations

from dataclasses import replace

from ..inventory import Inventory, TensorEntry
from .names import logical_shape

FUSED_PARTS = {"attn.qkv": ("attn.q", "attn.k", "attn.v"), "mlp.gate_up": ("mlp.gate", "mlp.up")}


def _slice(e: TensorEntry, role: str, row0: int, rows: int, like: TensorEntry) -> TensorEntry:
    """Logical rows row0:row0+rows of a fused [out, in] matrix as a tensor of its own."""
    name = f"{e.info.name}[{role}]"
    if e.transposed:  # stored [in, out] (GPT-2's Conv1D): the part is a window of columns
        part = e.info.columns(row0, row0 + rows, name)
    else:  # stored [out, in]: the part is a range of rows
        part = e.info.rows(row0, row0 + rows, name)
    return replace(e, name=part.name, key=like.key, info=part, role=role, template=like.template)


def _split_side(fused_inv: Inventory, split_inv: Inventory) -> Inventory:
    parts_by_slot: dict[tuple, dict[str, TensorEntry]] = {}
    for e in split_inv.tensors:
        parts_by_slot.setdefault((e.component, e.layer, e.expert, e.param), {})[e.role] = e
    out: list[TensorEntry] = []
    changed = False
    for e in fused_inv.tensors:
        roles = FUSED_PARTS.get(e.role)
        parts = parts_by_slot.get((e.component, e.layer, e.expert, e.param), {}) if roles else {}
        if not roles or len(e.shape) != 2 or not all(r in parts for r in roles):
            out.append(e)
            continue
        counterparts = [parts[r] for r in roles]
        fused_rows, fused_cols = logical_shape(e)
        sizes = [logical_shape(c)[0] for c in counterparts]
        if sum(sizes) != fused_rows or any(len(c.shape) != 2 or logical_shape(c)[1] != fused_cols for c in counterparts):
            out.append(e)
            continue
        row0 = 0
        for role, rows, like in zip(roles, sizes, counterparts):
            out.append(_slice(e, role, row0, rows, like))
            row0 += rows
        changed = True
    return Inventory(fused_inv.source, fused_inv.family, tuple(out), fused_inv.unassigned) if changed else fused_inv


def split_fused(inv_a: Inventory, inv_b: Inventory) -> tuple[Inventory, Inventory]:
    """Split fused tensors of either model where the other stores the parts separately."""
    return _split_side(inv_a, inv_b), _split_side(inv_b, inv_a)
