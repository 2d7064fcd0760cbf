"""Expert alignment: which expert of B is which expert of A, when a copier reordered them.

Experts of an MoE layer are exchangeable: reordering them (and the router's rows) changes nothing the
model computes. Each expert is summarised by a signature that survives the other reorderings a copier can
apply — its units' responses to a fixed sample of shared tokens, reduced to the token×token kernel FᵀF,
which does not depend on the order of the expert's own units nor on rotations of the residual stream.
Experts are then matched by linear assignment on the correlation of their kernels. Tensors re-paired this
way carry the number of experts as their selection factor (see ``TensorPair``).
"""

from __future__ import annotations

import zlib
from collections import defaultdict

import numpy as np

from ..inventory import Inventory, TensorEntry
from ..sampling import sample_indices
from ..sources import ModelSource
from .names import Alignment, TensorPair, logical_shape
from .vocab import VocabMap

N_TOKENS = 64
MAX_EXPERT_UNITS = 256


def _embedding(inv: Inventory) -> TensorEntry | None:
    return next((e for e in inv.tensors if e.role == "embedding" and len(e.shape) == 2), None)


def _kernel(src: ModelSource, e: TensorEntry, tokens: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(zlib.crc32(e.template.encode()) if e.template else 0)
    n = e.shape[0]
    units = sample_indices(n, MAX_EXPERT_UNITS, rng)
    f = src.read_rows(e.info, units).astype(np.float64) @ tokens.T  # [units, tokens]
    k = f.T @ f
    v = k[np.triu_indices_from(k, 1)]
    v = v - v.mean()
    return v / max(np.linalg.norm(v), 1e-30)


def map_experts(src_a: ModelSource, src_b: ModelSource, inv_a: Inventory, inv_b: Inventory,
                alignment: Alignment, vocab: VocabMap | None) -> tuple[Alignment, dict[str, dict[int, list]]]:
    """Re-pair expert tensors whose experts were reordered; returns the new alignment and the maps."""
    emb_a, emb_b = _embedding(inv_a), _embedding(inv_b)
    if emb_a is None or emb_b is None:
        return alignment, {}
    # Expert gate (or up) rows of each layer, by expert index.
    def gates(inv: Inventory) -> dict[tuple[str, int], dict[int, TensorEntry]]:
        out: dict[tuple[str, int], dict[int, TensorEntry]] = defaultdict(dict)
        for e in inv.tensors:
            if e.expert is not None and e.layer is not None and e.role == "mlp.gate" and e.param == "weight":
                out[(e.component, e.layer)][e.expert] = e
        return out

    ga, gb = gates(inv_a), gates(inv_b)
    shared = [k for k in ga if k in gb and len(ga[k]) == len(gb[k]) >= 2]
    if not shared:
        return alignment, {}
    rows_a, rows_b = vocab.for_rows(emb_a.shape[0], emb_b.shape[0]) if vocab is not None else (np.arange(min(emb_a.shape[0], emb_b.shape[0])),) * 2
    if rows_a.size < 8:
        return alignment, {}
    pick = np.random.default_rng(0x3E7).choice(rows_a.size, min(N_TOKENS, rows_a.size), replace=False)
    tok_a = src_a.read_rows(emb_a.info, rows_a[np.sort(pick)]).astype(np.float64)
    tok_b = src_b.read_rows(emb_b.info, rows_b[np.sort(pick)]).astype(np.float64)

    maps: dict[str, dict[int, list]] = defaultdict(dict)
    remap: dict[tuple[str, int], dict[int, int]] = {}
    for comp, layer in shared:
        ea, eb = ga[(comp, layer)], gb[(comp, layer)]
        ids_a, ids_b = sorted(ea), sorted(eb)
        if any(logical_shape(ea[i])[1] != tok_a.shape[1] for i in ids_a) or any(logical_shape(eb[j])[1] != tok_b.shape[1] for j in ids_b):
            continue
        ka = np.array([_kernel(src_a, ea[i], tok_a) for i in ids_a])
        kb = np.array([_kernel(src_b, eb[j], tok_b) for j in ids_b])
        from scipy.optimize import linear_sum_assignment  # heavy: imported where used

        rows, cols = linear_sum_assignment(ka @ kb.T, maximize=True)
        mapping = {ids_a[r]: ids_b[c] for r, c in zip(rows, cols)}
        if any(i != j for i, j in mapping.items()):
            remap[(comp, layer)] = mapping
            maps[comp][layer] = [[i, j] for i, j in sorted(mapping.items())]
    if not remap:
        return alignment, {}

    by_key = {(e.component, e.layer, e.expert, e.template, tuple(x for x in e.slot if x[0] != "expert")): e
              for e in inv_b.tensors if e.expert is not None}
    pairs = []
    for p in alignment.pairs:
        mapping = remap.get((p.a.component, p.a.layer)) if p.a.expert is not None and p.b.expert is not None else None
        if mapping is None:
            pairs.append(p)
            continue
        slot = tuple(x for x in p.b.slot if x[0] != "expert")
        eb = by_key.get((p.b.component, p.b.layer, mapping[p.a.expert], p.b.template, slot))
        if eb is None:
            pairs.append(p)
            continue
        pairs.append(TensorPair(p.a, eb, p.transpose_b, "expert-map", p.rows, len(mapping), p.width_differs))
    return Alignment(tuple(pairs), alignment.unmatched), dict(maps)
