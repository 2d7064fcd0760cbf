"""The realigned evidence test: a copy whose hidden units were permuted (and then fine-tuned).

Permuting FFN units (and the residual stream, and heads) keeps what a model computes and defeats every
same-index comparison. Units can be matched back by linear assignment on their anchored fingerprints
(responses to shared anchor inputs, see ``anchored``). But a matching statistic is permutation-invariant,
so it has *no* exact permutation null: independently trained models also have units that respond alike
("universal" features), and the matched similarity of two unrelated models is well above zero.

The test therefore compares every matched A↔B pair with a baseline taken from the models themselves:
how well the same unit of A is matched by the *other* units of A (and B's partner by the other units of
B). Matching is fitted on one half of the anchor inputs and scored on the other half, so chance matches
do not score. A copy's units match their own copies far better than any sibling (held-out cosine ≈ 1
against ≈ 0.3); an independent model's units match A's no better than A's own siblings do. The p-value
is a one-sided test that the per-unit margin is positive; its validity rests on that stated assumption —
an independently trained model is no closer to A's units than A's own other units are — which the
benchmark checks on independently trained pairs (`modelkin bench`).
"""

from __future__ import annotations

import math
import zlib

import numpy as np
from scipy.special import log_ndtr

from ..alignment import TensorPair, logical_shape, normalise_rows
from ..sampling import sample_indices
from ..sources import ModelSource
from .anchored import Anchor
from .pvalues import LN10, log10_permutation_floor
from .unit_test import MAX_UNITS, MIN_UNITS, UnitTest

# Matrices that read the residual stream, whose output rows are units a copier may reorder: FFN units,
# attention rows (heads and their dimensions), experts (router rows). The sibling baseline, not an exact
# permutation null, carries this test, so rows with shared structure (RoPE frequencies) are admissible.
REALIGN_ROLES = frozenset({"mlp.gate", "mlp.up", "attn.q", "attn.k", "attn.v", "router"})
MAX_CANDIDATES = 2048  # units of B searched for each sampled unit of A
MIN_HELD_OUT = 16  # anchor inputs on each side of the split


def _held_out_match(fa: np.ndarray, fb: np.ndarray, fit: np.ndarray, score: np.ndarray):
    """Match rows of fa to rows of fb on columns ``fit``: (matched rows of fa, their partners, held-out cosine)."""
    g = normalise_rows(fa[:, fit]) @ normalise_rows(fb[:, fit]).T
    from scipy.optimize import linear_sum_assignment  # heavy: imported where used

    rows, cols = linear_sum_assignment(g, maximize=True)  # sorted by row; partial if B has fewer units
    held = np.sum(normalise_rows(fa[rows][:, score]) * normalise_rows(fb[cols][:, score]), axis=1)
    return rows, cols, held


def _rows(src: ModelSource, info, idx: np.ndarray) -> np.ndarray:
    return src.read_rows(info, idx).astype(np.float64)


def realigned_evidence(src_a: ModelSource, src_b: ModelSource, anchor: Anchor, pair: TensorPair) -> UnitTest | None:
    if pair.a.role not in REALIGN_ROLES or pair.a.transposed or pair.b.transposed:
        return None
    sa, sb = logical_shape(pair.a), logical_shape(pair.b)
    if len(sa) != 2 or len(sb) != 2 or sa[1] != anchor.hidden or sb[1] != anchor.hidden:
        return None
    n_inputs = anchor.a.shape[0]
    if min(sa[0], sb[0]) < MIN_UNITS + 1 or n_inputs < 2 * MIN_HELD_OUT:
        return None
    rng = np.random.default_rng(zlib.crc32(pair.a.key.encode()) ^ 0x4EA1)
    order = rng.permutation(n_inputs)
    fit, score = order[: n_inputs // 2], order[n_inputs // 2 :]

    cand_a, cand_b = sample_indices(sa[0], MAX_CANDIDATES, rng), sample_indices(sb[0], MAX_CANDIDATES, rng)
    fa = _rows(src_a, pair.a.info, cand_a) @ anchor.a.T  # [units, anchor inputs]
    fb = _rows(src_b, pair.b.info, cand_b) @ anchor.b.T
    sample = sample_indices(len(cand_a), MAX_UNITS, rng)  # the A units scored
    matched, partner, cross = _held_out_match(fa[sample], fb, fit, score)
    sample = sample[matched]
    # Sibling baselines: each sampled A unit against A's other units; each partner against B's other units.
    g_a = normalise_rows(fa[:, fit]) @ normalise_rows(fa[:, fit]).T
    np.fill_diagonal(g_a, -np.inf)
    sib_a = _best_held_out(fa, g_a[sample], sample, score)
    g_b = normalise_rows(fb[:, fit]) @ normalise_rows(fb[:, fit]).T
    np.fill_diagonal(g_b, -np.inf)
    sib_b = _best_held_out(fb, g_b[partner], partner, score)
    margin = cross - np.maximum(sib_a, sib_b)
    n = margin.size
    sd = float(margin.std(ddof=1)) if n > 1 else 0.0
    if n < MIN_UNITS or not math.isfinite(sd):
        return None
    z = float(margin.mean()) / max(sd / math.sqrt(n), 1e-12)
    # One-sided (copies match better than siblings), never below what n units could possibly support.
    log10_p = max(min(0.0, float(log_ndtr(-z)) / LN10), log10_permutation_floor(n))
    return UnitTest(
        axis=0, n_units=n, n_features=len(score), trace=float(cross.sum()), mean_cosine=float(cross.mean()),
        z=z, log10_p=log10_p, null_sd_mean_cosine=sd / math.sqrt(n), test="realigned",
    )


def _best_held_out(f: np.ndarray, g_fit_rows: np.ndarray, rows: np.ndarray, score: np.ndarray) -> np.ndarray:
    """For each given row, held-out cosine with its best-fitting *other* row of the same model."""
    best = np.argmax(g_fit_rows, axis=1)
    return np.sum(normalise_rows(f[rows][:, score]) * normalise_rows(f[best][:, score]), axis=1)
