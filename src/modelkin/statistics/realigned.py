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
against ≈ 0.3); an independent model's units match A's no better than A's own siblings do.

**The null is an assumption, and the p-value is calibrated for exactly that assumption.** H0: for an
independently trained B, the held-out cosine of A's unit with its B partner is exchangeable with its
held-out cosine with A's own best sibling (and likewise for B's partner and B's best sibling). Then
d = cross − sibling is symmetric about 0 on either side, and the margin m = cross − max(both siblings)
is at most d, so P(m > 0) ≤ 1/2. Two tails follow with no normal approximation and no estimated variance:

* the *sign test*: the number K of positive margins m is at most Binomial(n, 1/2), P(K ≥ k) exactly;
* the *sign-flip test* (the randomisation null that flips the sign of each d): with S = Σd and V = Σd²,
  Hoeffding's inequality bounds P(S ≥ s) ≤ exp(−s² / 2V) for every n, not just asymptotically. It is
  computed for A's siblings and for B's, and the larger bound kept.

The reported p is the largest of these (each is valid under H0, so the largest is too), and it can
never go below 2^-n — the probability of the most extreme of the 2^n sign patterns, the floor that
follows from this null (not the 1/n! of a permutation test, which has no basis here). Units are treated
as independent draws; the test is labelled *assumption-based* wherever it is reported, and
``modelkin bench`` measures the margins of every independently trained pair of the zoo against it.
"""

from __future__ import annotations

import math
import zlib

import numpy as np

from ..alignment import TensorPair, logical_shape, normalise_rows
from ..sampling import sample_indices
from ..sources import ModelSource
from .anchored import Anchor
from .pvalues import LN10, log10_half_binomial_tails
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
    if margin.size < MIN_UNITS:
        return None
    z, log10_p = margin_test(cross, sib_a, sib_b)
    n = margin.size
    return UnitTest(
        axis=0, n_units=n, n_features=len(score), trace=float(cross.sum()), mean_cosine=float(cross.mean()),
        z=z, log10_p=log10_p, null_sd_mean_cosine=float(margin.std(ddof=1)) / math.sqrt(n), test="realigned",
    )


def log10_sign_test(margin: np.ndarray) -> float:
    """log10 P(K >= k) for K ~ Binomial(n, 1/2), k the number of strictly positive margins (exact)."""
    return float(log10_half_binomial_tails(margin.size)[int(np.count_nonzero(margin > 0))])


def log10_sign_flip_bound(d: np.ndarray) -> tuple[float, float]:
    """(z, log10 bound): z = S/√V, and Hoeffding's bound exp(-S²/2V) on the sign-flip tail P(S' >= S)."""
    s, v = float(d.sum()), float(d @ d)
    if v <= 0 or not math.isfinite(v):
        return 0.0, 0.0
    z = s / math.sqrt(v)
    return z, (0.0 if z <= 0 else -(z * z) / 2 / LN10)


def log10_sign_floor(n_units: int) -> float:
    """log10 2^-n: the most extreme of the 2^n sign patterns, the smallest p-value this null supports."""
    return -n_units * math.log10(2.0)


def margin_test(cross: np.ndarray, sib_a: np.ndarray, sib_b: np.ndarray) -> tuple[float, float]:
    """(z, log10 p) of the realigned test from per-unit held-out cosines: the largest of the sign-test tail
    (margins over both siblings) and the two sign-flip bounds, never below 2^-n. z: the smaller S/√V."""
    (z_a, flip_a), (z_b, flip_b) = log10_sign_flip_bound(cross - sib_a), log10_sign_flip_bound(cross - sib_b)
    margin = cross - np.maximum(sib_a, sib_b)
    return min(z_a, z_b), max(flip_a, flip_b, log10_sign_test(margin), log10_sign_floor(margin.size))


def _best_held_out(f: np.ndarray, g_fit_rows: np.ndarray, rows: np.ndarray, score: np.ndarray) -> np.ndarray:
    """For each given row, held-out cosine with its best-fitting *other* row of the same model."""
    best = np.argmax(g_fit_rows, axis=1)
    return np.sum(normalise_rows(f[rows][:, score]) * normalise_rows(f[best][:, score]), axis=1)
