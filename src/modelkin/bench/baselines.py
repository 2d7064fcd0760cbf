"""The public analyses modelkin is measured against, re-implemented as published (numpy only).

Each baseline takes two open ``ModelSource``s and returns a ``BaselineScore``: a score (higher = more
related; ``None`` when it cannot be computed) and the call the published analysis would make from it with
its published threshold. They are deliberately *not* improved: the point of the bench is to show where
they fail.

* ``layernorm_cosine`` — cosine of the concatenated norm gains (the Solar-vs-GLM claim); related if > 0.9.
* ``std_profile`` — per-layer standard deviation of attention Q/K/V/O, each profile z-scored across layers,
  concatenated, Pearson between the models (the Pangu-vs-Qwen analysis); related if > 0.9.
* ``raw_pearson`` — mean element-wise Pearson over same-name, same-shape 2-D matrices; related if > 0.1.

Tensors are read one at a time through the source, and found by the inventory's roles, so any family
modelkin knows works.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..inventory import Inventory, TensorEntry, build_inventory
from ..sources import ModelSource

RELATED, INDEPENDENT, UNDEFINED = "related", "independent", "inconclusive"

LAYERNORM_COSINE_THRESHOLD = 0.9
STD_PROFILE_THRESHOLD = 0.9
RAW_PEARSON_THRESHOLD = 0.1

ATTN_ROLES = ("attn.q", "attn.k", "attn.v", "attn.o")


@dataclass(frozen=True, slots=True)
class BaselineScore:
    score: float | None
    call: str  # "related" / "independent", or "inconclusive" when the score is undefined
    detail: str = ""  # what the score was computed over (for the JSON)

    def to_dict(self) -> dict:
        return {"score": self.score, "call": self.call, "detail": self.detail}


def _call(score: float | None, threshold: float) -> str:
    if score is None:
        return UNDEFINED
    return RELATED if score > threshold else INDEPENDENT


def _read(src: ModelSource, e: TensorEntry) -> np.ndarray:
    return np.asarray(src.read(e.info), dtype=np.float64).reshape(e.info.shape)


def _pearson(x: np.ndarray, y: np.ndarray) -> float | None:
    x = x.ravel() - x.mean()
    y = y.ravel() - y.mean()
    den = math.sqrt(float(x @ x) * float(y @ y))
    if den == 0.0 or not math.isfinite(den):
        return None
    return float(x @ y) / den


def _inventories(a: ModelSource | Inventory, b: ModelSource | Inventory) -> tuple[Inventory, Inventory]:
    ia = a if isinstance(a, Inventory) else build_inventory(a)
    ib = b if isinstance(b, Inventory) else build_inventory(b)
    return ia, ib


# -- (a) LayerNorm-gain cosine ----------------------------------------------------------------------


def layernorm_cosine(a: ModelSource | Inventory, b: ModelSource | Inventory) -> BaselineScore:
    ia, ib = _inventories(a, b)
    by_b = {e.name: e for e in ib.tensors if e.role == "norm" and e.param == "weight"}
    xs, ys = [], []
    for ea in sorted((e for e in ia.tensors if e.role == "norm" and e.param == "weight"), key=lambda e: e.name):
        eb = by_b.get(ea.name)
        if eb is None or eb.info.shape != ea.info.shape:
            continue
        xs.append(_read(ia.source, ea).ravel())
        ys.append(_read(ib.source, eb).ravel())
    if not xs:
        return BaselineScore(None, UNDEFINED, "no norm gain of the same name and shape in both models")
    x, y = np.concatenate(xs), np.concatenate(ys)
    den = float(np.linalg.norm(x) * np.linalg.norm(y))
    score = float(x @ y) / den if den > 0 and math.isfinite(den) else None
    return BaselineScore(score, _call(score, LAYERNORM_COSINE_THRESHOLD), f"{len(xs)} norm gains, {x.size} values")


# -- (b) per-layer attention std profile ------------------------------------------------------------


def _attn_stds(inv: Inventory) -> dict[tuple[str, int], dict[str, float]]:
    """(component, layer) -> {attn.q/k/v/o: std of the matrix}. Fused QKV is split in three along its
    output axis (rows of an [out, in] matrix; columns when the family stores it transposed)."""
    out: dict[tuple[str, int], dict[str, float]] = defaultdict(dict)
    for e in inv.tensors:
        if e.layer is None or e.param != "weight" or e.expert is not None or len(e.info.shape) != 2:
            continue
        if e.role in ATTN_ROLES:
            out[(e.component, e.layer)][e.role] = float(np.std(_read(inv.source, e)))
        elif e.role == "attn.qkv":
            w = _read(inv.source, e)
            axis = 1 if e.transposed else 0
            sizes = _qkv_sizes(inv.source.config or {}, w.shape[axis])
            if sizes is None:
                continue
            for role, part in zip(ATTN_ROLES[:3], np.split(w, np.cumsum(sizes)[:2], axis=axis)):
                out[(e.component, e.layer)][role] = float(np.std(part))
    return out


def _qkv_sizes(config: dict, rows: int) -> tuple[int, int, int] | None:
    """Rows of q, k and v in a fused projection: grouped-query attention gives k and v fewer heads."""
    heads, kv_heads = config.get("num_attention_heads"), config.get("num_key_value_heads")
    hidden = config.get("hidden_size")
    if isinstance(heads, int) and isinstance(kv_heads, int) and isinstance(hidden, int) and heads and kv_heads != heads:
        head_dim = config.get("head_dim") or hidden // heads
        sizes = (heads * head_dim, kv_heads * head_dim, kv_heads * head_dim)
        if sum(sizes) == rows:
            return sizes
    return (rows // 3,) * 3 if rows % 3 == 0 else None


def _zscore(v: np.ndarray) -> np.ndarray:
    sd = v.std()
    return (v - v.mean()) / sd if sd > 0 else np.zeros_like(v)


def std_profile(a: ModelSource | Inventory, b: ModelSource | Inventory) -> BaselineScore:
    ia, ib = _inventories(a, b)
    sa, sb = _attn_stds(ia), _attn_stds(ib)
    complete = lambda d, k: all(r in d[k] for r in ATTN_ROLES)  # noqa: E731
    common = sorted(k for k in sa.keys() & sb.keys() if complete(sa, k) and complete(sb, k))
    by_comp: dict[str, list[int]] = defaultdict(list)
    for comp, layer in common:
        by_comp[comp].append(layer)
    pa, pb, used = [], [], []
    for comp, layers in sorted(by_comp.items()):
        if len(layers) < 2:
            continue
        used.append(f"{comp}: {len(layers)} layers")
        for role in ATTN_ROLES:
            pa.append(_zscore(np.array([sa[(comp, i)][role] for i in layers])))
            pb.append(_zscore(np.array([sb[(comp, i)][role] for i in layers])))
    if not pa:
        return BaselineScore(None, UNDEFINED, "fewer than 2 layers with Q/K/V/O in common")
    score = _pearson(np.concatenate(pa), np.concatenate(pb))
    return BaselineScore(score, _call(score, STD_PROFILE_THRESHOLD), "; ".join(used))


# -- (c) raw element-wise Pearson -------------------------------------------------------------------


def raw_pearson(a: ModelSource | Inventory, b: ModelSource | Inventory) -> BaselineScore:
    ia, ib = _inventories(a, b)
    by_b = {e.name: e for e in ib.tensors if len(e.info.shape) == 2}
    values = []
    for ea in sorted((e for e in ia.tensors if len(e.info.shape) == 2), key=lambda e: e.name):
        eb = by_b.get(ea.name)
        if eb is None or eb.info.shape != ea.info.shape:
            continue
        r = _pearson(_read(ia.source, ea), _read(ib.source, eb))
        if r is not None:
            values.append(r)
    if not values:
        return BaselineScore(None, UNDEFINED, "no 2-D matrix of the same name and shape in both models")
    score = float(np.mean(values))
    return BaselineScore(score, _call(score, RAW_PEARSON_THRESHOLD), f"{len(values)} matrices")


BASELINES: dict[str, Callable[[ModelSource | Inventory, ModelSource | Inventory], BaselineScore]] = {
    "layernorm_cosine": layernorm_cosine,
    "std_profile": std_profile,
    "raw_pearson": raw_pearson,
}
