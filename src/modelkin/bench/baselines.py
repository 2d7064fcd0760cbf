"""The public analyses modelkin is measured against, re-implemented as published (numpy only).

Each baseline takes two open ``ModelSource``s and returns a ``BaselineScore``: a score (higher = more
related; ``None`` when it cannot be computed) and the call the published analysis would make from it with
its published threshold. They are deliberately *not* improved: the point of the bench is to show where
they fail.

* ``layernorm_cosine`` — cosine of the concatenated norm gains (the Solar-vs-GLM claim); related if > 0.9.
* ``std_profile`` — per-layer standard deviation of attention Q/K/V/O, each profile z-scored across layers,
  concatenated, Pearson between the models (the Pangu-vs-Qwen analysis); related if > 0.9.
* ``raw_pearson`` — mean element-wise Pearson over same-name, same-shape 2-D matrices; related if > 0.1.

And the two strongest published methods, re-implemented from their descriptions:

* ``model_tracing`` — the independence test of Zhu et al. (ICML 2025, "Independence tests for language
  models"), weight version: per layer, MLP up-projection units of A and B matched by linear assignment on
  their cosines, Spearman correlation of the matching with the identity (normal tail of ρ√(n−1)), Fisher's
  combination over layers; related if the combined p < 1e-4 (the paper reports p-values without a fixed
  threshold; we use modelkin's default α so the two are judged alike).
* ``aligned_cka`` — the aligned-weight method: hidden dimensions of B aligned to A's by linear assignment
  on the correlations of the embedding columns over shared tokens, with sign flips; then unbiased linear
  CKA between A's and the aligned B's Q and K matrices, averaged over layers. The published version
  compares with a null mean and deviation fixed in code; here the null is *measured* on the bench's own
  independent pairs (``harness.apply_measured_nulls``), and the call is related when
  z = (CKA − mean) / sd > 3.72 (one-sided p < 1e-4 under a normal null).

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


# -- (d) model tracing: matched MLP units vs the identity ---------------------------------------------

MODEL_TRACING_ALPHA = 1e-4


def _cosines(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-30)
    y = y / np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-30)
    return x @ y.T


def _ln_p_spearman_identity(perm: np.ndarray) -> float:
    """ln two-sided p of Spearman's ρ between a matching and the identity (ρ√(n−1) ~ N(0, 1) under the null)."""
    from scipy.special import log_ndtr

    n = perm.size
    idx = np.arange(n, dtype=np.float64)
    rho = _pearson(idx, perm.astype(np.float64))  # both are ranks: Pearson of ranks is Spearman's ρ
    if rho is None or n < 3:
        return 0.0
    return min(0.0, math.log(2.0) + float(log_ndtr(-abs(rho) * math.sqrt(n - 1))))


def _ln_fisher(ln_ps: list[float]) -> float:
    """ln p of Fisher's combination: X = −2 Σ ln p ~ χ²(2k); log-space tail (no underflow)."""
    from scipy.special import gammaincc, gammaln

    k, y = len(ln_ps), -sum(ln_ps)  # X/2 = y; P(χ²(2k) ≥ 2y) = Q(k, y)
    if y <= 0:
        return 0.0
    q = float(gammaincc(k, y))
    if q > 0:
        return math.log(q)
    return (k - 1) * math.log(y) - y - float(gammaln(k)) + math.log1p((k - 1) / y)  # large-y expansion


def model_tracing(a: ModelSource | Inventory, b: ModelSource | Inventory) -> BaselineScore:
    from scipy.optimize import linear_sum_assignment

    ia, ib = _inventories(a, b)
    ups_b = {(e.component, e.layer): e for e in ib.tensors if e.role == "mlp.up" and e.expert is None and e.param == "weight"}
    ln_ps = []
    for ea in sorted((e for e in ia.tensors if e.role == "mlp.up" and e.expert is None and e.param == "weight"),
                     key=lambda e: (e.component, e.layer if e.layer is not None else -1)):
        eb = ups_b.get((ea.component, ea.layer))
        if eb is None or eb.info.shape != ea.info.shape or len(ea.info.shape) != 2 or ea.transposed != eb.transposed:
            continue
        wa, wb = _read(ia.source, ea), _read(ib.source, eb)
        if ea.transposed:
            wa, wb = wa.T, wb.T
        _, perm = linear_sum_assignment(_cosines(wa, wb), maximize=True)
        ln_ps.append(_ln_p_spearman_identity(perm))
    if not ln_ps:
        return BaselineScore(None, UNDEFINED, "no MLP up-projection of the same shape in both models")
    log10_p = _ln_fisher(ln_ps) / math.log(10.0)
    call = RELATED if log10_p < math.log10(MODEL_TRACING_ALPHA) else INDEPENDENT
    return BaselineScore(-log10_p, call, f"{len(ln_ps)} MLP layers, Fisher log10 p = {log10_p:.1f}")


# -- (e) aligned weights: embedding-aligned hidden dims, unbiased CKA on Q/K ------------------------

MAX_ALIGN_TOKENS = 4096
ALIGNED_CKA_Z = 3.719  # one-sided normal tail 1e-4


def _unbiased_hsic(k: np.ndarray, l: np.ndarray) -> float:
    """Song et al.'s unbiased HSIC estimator for Gram matrices with their diagonals zeroed."""
    n = k.shape[0]
    k, l = k.copy(), l.copy()
    np.fill_diagonal(k, 0.0)
    np.fill_diagonal(l, 0.0)
    ones_k, ones_l = k.sum(axis=0), l.sum(axis=0)
    return float((k * l).sum() + ones_k.sum() * ones_l.sum() / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * (ones_k @ ones_l)) / (n * (n - 3))


def unbiased_linear_cka(x: np.ndarray, y: np.ndarray) -> float | None:
    """Linear CKA of two representations [samples, features] with the unbiased HSIC estimator."""
    if x.shape[0] < 4:
        return None
    k, l = x @ x.T, y @ y.T
    kk, ll = _unbiased_hsic(k, k), _unbiased_hsic(l, l)
    if kk <= 0 or ll <= 0:
        return None
    return _unbiased_hsic(k, l) / math.sqrt(kk * ll)


def _hidden_alignment(inv_a: Inventory, inv_b: Inventory) -> tuple[np.ndarray, np.ndarray, str] | None:
    """B's hidden dimension for each of A's, and its sign, from the embedding columns over shared tokens."""
    from scipy.optimize import linear_sum_assignment

    from ..alignment import map_vocab

    emb = lambda inv: next((e for e in inv.tensors if e.role == "embedding" and len(e.info.shape) == 2), None)  # noqa: E731
    ea, eb = emb(inv_a), emb(inv_b)
    if ea is None or eb is None or ea.info.shape[1] != eb.info.shape[1]:
        return None
    vocab = map_vocab(inv_a.source, inv_b.source, ea.info.shape[0], eb.info.shape[0])
    rows_a, rows_b = vocab.for_rows(ea.info.shape[0], eb.info.shape[0])
    if rows_a.size < 16:
        return None
    pick = np.linspace(0, rows_a.size - 1, min(rows_a.size, MAX_ALIGN_TOKENS)).astype(np.int64)
    xa = inv_a.source.read_rows(ea.info, rows_a[pick]).astype(np.float64)
    xb = inv_b.source.read_rows(eb.info, rows_b[pick]).astype(np.float64)
    za = (xa - xa.mean(0)) / np.maximum(xa.std(0), 1e-30)
    zb = (xb - xb.mean(0)) / np.maximum(xb.std(0), 1e-30)
    corr = za.T @ zb / za.shape[0]  # [hidden of A, hidden of B]
    rows, cols = linear_sum_assignment(np.abs(corr), maximize=True)
    return cols, np.sign(corr[rows, cols]) + (corr[rows, cols] == 0), f"{rows_a.size} shared tokens"


def aligned_cka(a: ModelSource | Inventory, b: ModelSource | Inventory) -> BaselineScore:
    """Raw score (mean CKA); the call needs the null measured on independent pairs (harness)."""
    ia, ib = _inventories(a, b)
    aligned = _hidden_alignment(ia, ib)
    if aligned is None:
        return BaselineScore(None, UNDEFINED, "no token embedding of the same width with shared tokens in both models")
    perm, signs, what = aligned
    by_b = {(e.component, e.layer, e.role): e for e in ib.tensors if e.role in ("attn.q", "attn.k") and e.param == "weight"}
    values = []
    for ea in sorted((e for e in ia.tensors if e.role in ("attn.q", "attn.k") and e.param == "weight" and e.layer is not None),
                     key=lambda e: (e.component, e.layer, e.role)):
        eb = by_b.get((ea.component, ea.layer, ea.role))
        if eb is None or ea.transposed or eb.transposed or len(ea.info.shape) != 2 or ea.info.shape[1] != perm.size:
            continue
        if eb.info.shape[1] != perm.size:
            continue
        wa, wb = _read(ia.source, ea), _read(ib.source, eb)[:, perm] * signs
        cka = unbiased_linear_cka(wa.T, wb.T)  # samples: hidden dimensions (aligned); features: output rows
        if cka is not None:
            values.append(cka)
    if not values:
        return BaselineScore(None, UNDEFINED, "no Q/K matrices reading the aligned hidden dimensions")
    return BaselineScore(float(np.mean(values)), UNDEFINED, f"{len(values)} Q/K matrices, {what}; call needs a measured null")


BASELINES: dict[str, Callable[[ModelSource | Inventory, ModelSource | Inventory], BaselineScore]] = {
    "layernorm_cosine": layernorm_cosine,
    "std_profile": std_profile,
    "raw_pearson": raw_pearson,
    "model_tracing": model_tracing,
    "aligned_cka": aligned_cka,
}
# Baselines whose call compares the raw score with a null measured on the bench's independent pairs:
# name -> z threshold (see harness.apply_measured_nulls).
MEASURED_NULL = {"aligned_cka": ALIGNED_CKA_Z}
