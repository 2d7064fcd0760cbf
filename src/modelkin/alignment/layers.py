"""Depth alignment: which layer of B came from which layer of A.

Depth pruning drops layers, depth up-scaling duplicates them (Solar-style: layers 0-23 then 8-31), and
either shifts every later layer's index, so same-name pairing compares the wrong layers. Here each layer
gets a signature — fixed samples of every per-layer matrix the two models share, each standardised — and a
layer×layer correlation matrix S is built per component. Each layer of B is mapped to the layer of A it
correlates with best, when that correlation is clearly above chance (τ = max(0.1, 6/√n) for n sampled
values). From the map follow the dropped layers (of A, used by no layer of B), the duplicated ones (used by
several) and whether the order was changed.

The map is a same-index comparison: if hidden units were permuted or rotated, S shows nothing and the
name-based pairing is kept.
"""

from __future__ import annotations

import math
import zlib
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from ..inventory import Inventory, TensorEntry
from ..sampling import DEFAULT_SAMPLE, SamplePolicy, sample_indices, sample_rows
from ..sources import ModelSource
from ..sources.memo import memo
from .names import Alignment, TensorPair, Unmatched, logical_shape, width_differs
from .reads import row_keys

SAMPLE_ROWS = 16
SAMPLE_COLS = 256
MIN_CORRELATION = 0.1


@dataclass(frozen=True)
class LayerMap:
    component: str
    method: str  # "name" (indices kept) or "similarity" (layers re-paired)
    pairs: list[tuple[int, int]]  # (layer of A, layer of B)
    dropped_a: list[int]  # layers of A no layer of B came from
    unmatched_b: list[int]  # layers of B that match no layer of A
    duplicated_a: list[int]  # layers of A that several layers of B came from
    reordered: bool
    similarity: list[list[float]] = field(repr=False)  # S[i][j]: layer layers_a[i] of A vs layers_b[j] of B
    layers_a: list[int] = field(default_factory=list, repr=False)  # rows of S
    layers_b: list[int] = field(default_factory=list, repr=False)  # columns of S

    def to_dict(self) -> dict:
        return {
            "method": self.method, "pairs": [list(p) for p in self.pairs], "dropped_a": self.dropped_a,
            "unmatched_b": self.unmatched_b, "duplicated_a": self.duplicated_a, "reordered": self.reordered,
            "layers_a": list(self.layers_a), "layers_b": list(self.layers_b), "similarity": self.similarity,
        }


def _by_layer(inv: Inventory, component: str) -> dict[int, dict[tuple, TensorEntry]]:
    out: dict[int, dict[tuple, TensorEntry]] = defaultdict(dict)
    for e in inv.tensors:
        if e.component == component and e.layer is not None and e.template and e.evidence:
            out[e.layer][(e.template, e.slot)] = e
    return out


def _sample(src: ModelSource, e: TensorEntry, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    if e.transposed:
        block = src.read_rows(e.info, cols)[:, rows].T
    else:
        block = src.read_rows(e.info, rows)[:, cols]
    v = block.astype(np.float64).ravel()
    v -= v.mean()
    sd = v.std()
    return v / sd if sd > 0 else v


def _signatures(src: ModelSource, layers: dict[int, dict[tuple, TensorEntry]], slots: list[tuple], shapes: dict) -> tuple[list[int], np.ndarray]:
    order = sorted(layers)
    sigs = []
    for layer in order:
        parts = []
        for slot in slots:
            rows, cols = shapes[slot]
            e = layers[layer][slot]
            # One model's own sample: the same in every compare of a search's query.
            parts.append(memo(src, ("layer-sample", e.info, e.transposed, rows.tobytes(), cols.tobytes()),
                              lambda e=e, rows=rows, cols=cols: _sample(src, e, rows, cols)))
        sigs.append(np.concatenate(parts))
    return order, np.array(sigs)


def map_layers(src_a: ModelSource, src_b: ModelSource, inv_a: Inventory, inv_b: Inventory, component: str,
               policy: SamplePolicy = DEFAULT_SAMPLE) -> LayerMap | None:
    """``policy``: the sample whose row blocks the signatures are taken from (the default one's, except under a
    budgeted policy, see ``api._unit_policy``)."""
    la, lb = _by_layer(inv_a, component), _by_layer(inv_b, component)
    if not la or not lb:
        return None
    # Slots present in every layer of both models with one shape: the comparable per-layer matrices.
    common = set.intersection(*(set(d) for d in la.values()), *(set(d) for d in lb.values()))
    shapes = {}
    keys = row_keys(inv_a.tensors)
    for slot in sorted(common):
        sa = {logical_shape(d[slot]) for d in la.values()} | {logical_shape(d[slot]) for d in lb.values()}
        if len(sa) == 1 and len(next(iter(sa))) >= 2:
            shape = next(iter(sa))
            rng = np.random.default_rng(zlib.crc32(repr(slot).encode()))
            rows = sample_indices(shape[0], SAMPLE_ROWS, rng)
            one = next(iter(la.values()))[slot]
            # Large tensors: rows inside the blocks a sampled (remote) read fetches anyway, one request each.
            planned = None if one.transposed else sample_rows(keys.get(one.name, slot[0]), shape[0], one.info.n_bytes, policy)
            if planned is not None:
                rows = np.unique(planned[np.linspace(0, len(planned) - 1, min(SAMPLE_ROWS, len(planned))).astype(int)])
            shapes[slot] = (rows, sample_indices(int(np.prod(shape[1:])), SAMPLE_COLS, rng))
    if not shapes:
        return None
    slots = sorted(shapes)
    order_a, sig_a = _signatures(src_a, la, slots, shapes)
    order_b, sig_b = _signatures(src_b, lb, slots, shapes)
    n = sig_a.shape[1]
    s = (sig_a @ sig_b.T) / n  # each part is standardised, so this is a Pearson correlation
    threshold = max(MIN_CORRELATION, 6.0 / math.sqrt(n))
    pairs = []
    unmatched_b = []
    for j, layer_b in enumerate(order_b):
        i = int(np.argmax(s[:, j]))
        if s[i, j] >= threshold:
            pairs.append((order_a[i], layer_b))
        else:
            unmatched_b.append(layer_b)
    used = defaultdict(int)
    for a, _ in pairs:
        used[a] += 1
    seq = [a for a, _ in pairs]
    identity = order_a == order_b and pairs == [(x, x) for x in order_b]
    method = "name" if identity or not pairs else "similarity"
    if method == "name":
        common_layers = sorted(set(order_a) & set(order_b))
        pairs = [(x, x) for x in common_layers]
    return LayerMap(
        component=component,
        method=method,
        pairs=pairs,
        dropped_a=[a for a in order_a if used[a] == 0] if method == "similarity" else sorted(set(order_a) - set(order_b)),
        unmatched_b=unmatched_b if method == "similarity" else sorted(set(order_b) - set(order_a)),
        duplicated_a=sorted(a for a, k in used.items() if k > 1) if method == "similarity" else [],
        reordered=any(x > y for x, y in zip(seq, seq[1:])) if method == "similarity" else False,
        similarity=np.round(s, 4).tolist(),
        layers_a=list(order_a),
        layers_b=list(order_b),
    )


def repair_by_layers(alignment: Alignment, inv_a: Inventory, inv_b: Inventory, maps: dict[str, LayerMap]) -> Alignment:
    """Re-pair per-layer tensors of components whose layers were mapped by similarity."""
    remapped = {c for c, m in maps.items() if m.method == "similarity"}
    if not remapped:
        return alignment
    keep = [p for p in alignment.pairs if p.component not in remapped or p.a.layer is None or p.b.layer is None]
    kept_names_a = {p.a.name for p in keep}
    kept_names_b = {p.b.name for p in keep}
    pairs = list(keep)
    unmatched = [u for u in alignment.unmatched if u.component not in remapped]
    for comp in sorted(remapped):
        m = maps[comp]
        la, lb = _all_by_layer(inv_a, comp), _all_by_layer(inv_b, comp)
        used_a: set[str] = set()
        used_b: set[str] = set()
        for layer_a, layer_b in m.pairs:
            for slot, eb in lb.get(layer_b, {}).items():
                ea = la.get(layer_a, {}).get(slot)
                if ea is None:
                    continue
                narrower = logical_shape(ea) != logical_shape(eb)
                if narrower and not width_differs(ea, eb):
                    continue
                pairs.append(TensorPair(ea, eb, ea.transposed != eb.transposed, "layer-map",
                                        selection_factor=len(m.similarity), width_differs=narrower))
                used_a.add(ea.name)
                used_b.add(eb.name)
        for e in inv_a.tensors:
            if e.component == comp and e.name not in used_a and e.name not in kept_names_a:
                why = "layer dropped in B (no layer of B matches it)" if e.layer in m.dropped_a else "no counterpart in B"
                unmatched.append(Unmatched("a", e.name, comp, e.role, why))
        for e in inv_b.tensors:
            if e.component == comp and e.name not in used_b and e.name not in kept_names_b:
                why = "layer of B matches no layer of A" if e.layer in m.unmatched_b else "no counterpart in A"
                unmatched.append(Unmatched("b", e.name, comp, e.role, why))
    return Alignment(tuple(pairs), tuple(unmatched))


def _all_by_layer(inv: Inventory, component: str) -> dict[int, dict[tuple, TensorEntry]]:
    out: dict[int, dict[tuple, TensorEntry]] = defaultdict(dict)
    for e in inv.tensors:
        if e.component == component and e.layer is not None and e.template:
            out[e.layer][(e.template, e.slot)] = e
    return out
