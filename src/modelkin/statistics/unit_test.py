"""The per-tensor evidence test: do A's units line up with B's units more than chance allows?

For an axis whose indices are exchangeable between independently trained models (hidden units, channels —
see ``inventory.roles``), write each tensor as a matrix with one row per unit. Centre it, scale every unit
row to length 1, and let G[i, j] be the cosine between unit i of A and unit j of B. The statistic is the
trace of G: how well unit i of A matches unit i of B, summed over units.

If the models were trained independently, B's units are in an order unrelated to A's, so the observed trace
is one draw from the distribution of Σ_i G[i, π(i)] over random permutations π. That permutation
distribution has an exact mean and variance (Hoeffding's combinatorial central limit theorem):

    E = ΣG / n,   Var = Σ D² / (n − 1),   D = G double-centred (row and column means removed)

so z = (trace − E) / √Var needs no Monte-Carlo. The p-value is the normal tail at z: a **normal
approximation** to the permutation distribution, with its exact first two moments — not an exact test.
Two guards keep the approximation honest in the tail: scaling units to length 1 bounds every term by 1, so
no unit with huge weights (an "outlier dimension") can dominate the sum; and every cosine is clipped to
the median ± 3 robust standard deviations of G's entries (``bounded_scores``), so a few coincident units
cannot either. tests/test_statistics.py checks the tail against the permutation distribution at 4–6 σ by
importance sampling (within a factor of 2). Tensors are sampled (at most ``MAX_ROWS`` × ``MAX_COLS``
entries of the first two axes), with indices chosen by a fixed seed before any value is read, so the
permutation null holds for the sample, and the cost does not grow with the model.
"""

from __future__ import annotations

import math
import zlib
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from ..alignment import TensorPair, normalise_rows
from ..inventory import ROLES
from ..sampling import sample_indices
from ..sources import ModelSource
from .pvalues import log10_p_two_sided, log10_permutation_floor

MAX_ROWS = 128  # sampled rows: each costs a read of a whole stored row
MAX_COLS = 256  # sampled columns: free once a row is read (the unit test costs ~ units² × features)
MAX_UNITS = 384  # units matched by the realigned test (see realigned.py)
MAX_ROW_ELEMS = 1 << 16  # elements per sampled row after column sampling (other axes flattened)
MIN_UNITS = 16  # fewer exchangeable units cannot give a trustworthy normal approximation
MIN_FEATURES = 4
CLIP_ROBUST_SD = 3.0  # cosines beyond this many robust standard deviations count as this many (bounded_scores)
ROBUST_ROWS = 64  # rows of G (A's units) whose entries give bounded_scores its median and MAD
BATCH_ELEMS = 1 << 18  # unit cosines (8 bytes each) per batch of tensor_evidence_many: larger ones leave the cache, slower


@dataclass(frozen=True, slots=True)
class UnitTest:
    axis: int  # the permuted axis (logical [out, in, ...] orientation)
    n_units: int
    n_features: int
    trace: float  # Σ_i cos(a_i, b_i)
    mean_cosine: float  # trace / n_units: the matched-unit similarity
    z: float
    log10_p: float
    null_sd_mean_cosine: float  # standard deviation of mean_cosine under the null (for power)
    test: str = "same-index"  # which test produced it (see statistics.evidence)
    # Every test that ran on the pair: (test, z, log10 p before any correction), in the order they ran.
    by_test: tuple[tuple[str, float, float], ...] = ()

    @property
    def evidence_class(self) -> str:
        return EVIDENCE_CLASS[self.test]


# What each test's null rests on. "permutation": units are exchangeable between independently trained
# models, so the null is the permutation distribution (its tail by a normal approximation with exact
# moments). "assumption-based": the realigned test's null is a stated assumption about trained models,
# calibrated for that assumption (statistics.realigned) and checked by the bench, not guaranteed by symmetry.
EVIDENCE_CLASS = {"same-index": "permutation", "anchored": "permutation", "realigned": "assumption-based"}


def unit_permutation_test(xa: np.ndarray, xb: np.ndarray, axis: int = 0) -> UnitTest | None:
    """xa, xb: (n_units, n_features) with row i of xa and row i of xb the same unit position."""
    return unit_permutation_tests(xa[None], xb[None], axis)[0]


def unit_permutation_tests(xa: np.ndarray, xb: np.ndarray, axis: int = 0) -> list[UnitTest | None]:
    """``unit_permutation_test`` of each of k pairs of one shape, xa and xb [k, n_units, n_features], computed
    together: the same statistics in a few array operations instead of a few per pair."""
    k, n, m = xa.shape
    if n < MIN_UNITS or m < MIN_FEATURES:
        return [None] * k
    g = normalise_rows(xa) @ np.swapaxes(normalise_rows(xb), 1, 2)
    raw_trace = np.einsum("kii->k", g)
    g = bounded_scores(g)
    trace = np.einsum("kii->k", g)
    total = g.sum(axis=(1, 2))
    mean = total / n
    # Σ D² of the double-centred G without forming it: Σ G² − n Σ_i r_i² − n Σ_j c_j² + n² m² (r, c the row and
    # column means, m the grand mean). Its terms are of the size of Σ D² for cosines (nothing cancels).
    rows, cols = g.sum(axis=2) / n, g.sum(axis=1) / n
    ss = (g * g).sum(axis=(1, 2)) - n * (rows * rows).sum(axis=1) - n * (cols * cols).sum(axis=1) + total * total / (n * n)
    var = ss / (n - 1)
    floor = log10_permutation_floor(n)
    out: list[UnitTest | None] = []
    for i in range(k):
        v = float(var[i])
        if v <= 0 or not math.isfinite(v):
            out.append(None)
            continue
        z = (float(trace[i]) - float(mean[i])) / math.sqrt(v)
        # A normal approximation to the permutation tail (exact mean and variance); the exact permutation
        # p-value can never fall below 1/n!.
        log10_p = max(log10_p_two_sided(z), floor)
        out.append(UnitTest(axis, n, m, float(raw_trace[i]), float(raw_trace[i]) / n, z, log10_p, math.sqrt(v) / n))
    return out


def bounded_scores(g: np.ndarray) -> np.ndarray:
    """G with every entry clipped to median ± CLIP_ROBUST_SD robust standard deviations (1.4826 × MAD); a
    stack of matrices [..., n, n] is clipped matrix by matrix.

    The median and MAD are those of G's first ``ROBUST_ROWS`` rows (A's units, all of B's): a row's entries
    are the same multiset whatever the order of B's units, so the permutation null of the clipped statistic
    is as exact as that of the raw one (and 64 rows of entries estimate the spread as well as all of them).
    Clipping keeps a few very large cross-unit cosines — two independent models each holding a unit for the
    same universal feature, at different indices — from dominating the sum: unclipped, one such pair among 48
    units makes the permutation tail at 6 σ hundreds of times heavier than the normal one; clipped, it stays
    within a factor of about 2 (tests/test_statistics.py checks it by importance sampling).
    """
    head = g[..., :ROBUST_ROWS, :].reshape(*g.shape[:-2], -1)
    med = np.median(head, axis=-1)
    scale = 1.4826 * np.median(np.abs(head - med[..., None]), axis=-1)
    if not np.all(scale > 0):  # no spread among the head's entries: G's standard deviation instead
        scale = np.where(scale > 0, scale, g.std(axis=(-2, -1)))
    live = (scale > 0) & np.isfinite(scale)  # no spread to clip by: G as it is
    lo = np.where(live, med - CLIP_ROBUST_SD * scale, -np.inf)[..., None, None]
    hi = np.where(live, med + CLIP_ROBUST_SD * scale, np.inf)[..., None, None]
    return np.clip(g, lo, hi)


def sample_pair(src_a: ModelSource, src_b: ModelSource, pair: TensorPair) -> tuple[np.ndarray, np.ndarray]:
    """The same sub-tensor of A and B in logical orientation: ≤ MAX_ROWS × MAX_COLS of axes 0 and 1.

    For a re-mapped vocabulary, axis 0 indexes the shared tokens, so A and B read different stored rows.
    """
    shape = pair.shape
    rng = np.random.default_rng(zlib.crc32(pair.a.key.encode()))  # fixed before any value is read
    rows = sample_indices(shape[0], MAX_ROWS, rng)
    cols = sample_indices(shape[1], MAX_COLS, rng)
    rest = int(np.prod(shape[2:], dtype=np.int64)) if len(shape) > 2 else 1
    keep_rest = sample_indices(rest, max(1, MAX_ROW_ELEMS // max(len(cols), 1)), rng)
    rows_a, rows_b = (pair.rows[0][rows], pair.rows[1][rows]) if pair.rows is not None else (rows, rows)

    def take(src: ModelSource, entry, stored_rows: np.ndarray) -> np.ndarray:
        info = entry.info
        if entry.transposed:  # stored [in, out] (2-D only): logical rows are stored columns
            return src.read_rows(info, cols)[:, stored_rows].T.astype(np.float64)[:, :, None]
        data = src.read_rows(info, stored_rows).reshape(len(stored_rows), shape[1], rest)
        return data[:, cols][:, :, keep_rest].astype(np.float64)

    return take(src_a, pair.a, rows_a), take(src_b, pair.b, rows_b)


def tensor_evidence(src_a: ModelSource, src_b: ModelSource, pair: TensorPair) -> UnitTest | None:
    """The most conservative unit test over the pair's exchangeable axes (smallest |z|)."""
    return tensor_evidence_many(src_a, src_b, [pair])[0]


def tensor_evidence_many(src_a: ModelSource, src_b: ModelSource, pairs: list[TensorPair]) -> list[UnitTest | None]:
    """``tensor_evidence`` of each pair: every pair sampled, then the unit tests of one axis and shape run
    together (``unit_permutation_tests``, in batches of at most ``BATCH_ELEMS`` unit cosines)."""
    found: list[dict[int, UnitTest]] = [{} for _ in pairs]  # per pair: its axes' tests, by position in its axes
    batches: dict[tuple, list[tuple[int, int, np.ndarray, np.ndarray]]] = defaultdict(list)
    for i, pair in enumerate(pairs):
        axes = _unit_axes(pair)
        if not axes:
            continue
        a, b = sample_pair(src_a, src_b, pair)
        for pos, ax in enumerate(axes):
            xa = np.moveaxis(a, ax, 0).reshape(a.shape[ax], -1)
            xb = np.moveaxis(b, ax, 0).reshape(b.shape[ax], -1)
            batches[(ax, xa.shape, xb.shape)].append((i, pos, xa, xb))
    for (ax, shape_a, _), items in batches.items():
        step = max(1, BATCH_ELEMS // (shape_a[0] * shape_a[0]))
        for s in range(0, len(items), step):
            part = items[s: s + step]
            tests = unit_permutation_tests(np.stack([x[2] for x in part]), np.stack([x[3] for x in part]), ax)
            for (i, pos, _, _), t in zip(part, tests):
                if t is not None:
                    found[i][pos] = t
    # Of equal |z|, the test of the axis listed first is kept.
    return [min((ts[p] for p in sorted(ts)), key=lambda t: abs(t.z)) if ts else None for ts in found]


def _unit_axes(pair: TensorPair) -> tuple[int, ...]:
    """The axes whose indices are exchangeable units in both tensors' roles (A's when none is in both)."""
    if len(pair.a.shape) < 2:
        return ()
    a, b = ROLES[pair.a.role].unit_axes, ROLES[pair.b.role].unit_axes
    return tuple(ax for ax in a if ax in b) or a
