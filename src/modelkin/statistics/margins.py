"""Sibling margins: is a unit of one model closer to the other model than to its own siblings?

Used where no exact permutation null exists because units must be *matched* first: units of models of
different widths compared in a shared basis (``shared_basis``), and channels recovered layer by layer through
a network (``channel_test``). Every tested unit u of the smaller unit set S is matched twice, on one half of
the features (the fit half) and scored on the other half (held out):

* cross(u): held-out cosine between u and its best fit-half match among k units of the other model;
* sib(u):   held-out cosine between u and its best fit-half match among k *other* units of its own model.

Both searches look at the same number k of candidates, so neither side gains from having more units to pick
from (a wider model would otherwise offer more chances). The margin is cross(u) - sib(u).

The stated assumption (not an exact null): a model trained independently of S is no closer to S's units than
S's own other units are, so margins have mean (and median) <= 0. Independently trained models do share
"universal" features, but S's own siblings live in the same basis and the same training run and are closer
still: on the zoo's independent pairs most margins are strongly negative. A copied unit matches its copy far
better than any sibling (margin around +0.5).

The test on the margins is calibrated as the realigned test is (``realigned``), for exactly that
assumption: under it each unit's margin is positive with probability at most 1/2 and the signs of the
margins are exchangeable, so the p-value is the larger of the exact sign test and Hoeffding's bound on the
sign-flip tail, never below 2^-n. Margins of units of one model are not independent draws; the assumption's
slack on independent pairs (means far below 0) is what keeps the test conservative, and the bench reports
the margins of every independent zoo pair.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..alignment import normalise_rows
from .pvalues import LN10, log10_half_binomial_tails
from .realigned import log10_sign_flip_bound, log10_sign_floor, log10_sign_test

MIN_UNITS = 16  # fewer scored units cannot support a test
POWER_Z = 1.645  # one-sided 95 % power margin
MIN_HALF = 8  # features on each side of the fit / score split


@dataclass(frozen=True, slots=True)
class Margins:
    """Per tested unit of the smaller set: its margin, held-out cross cosine, and where its partner lives."""

    margin: np.ndarray  # cross - sib: what the p-value is computed from
    counterpart: np.ndarray  # bool: the best match among *all* the other model's units beats the best sibling
    group: np.ndarray  # group (layer) of the tested unit
    partner_group: np.ndarray  # group (layer) of its best match among all the other model's units
    partner: np.ndarray  # index of that match
    # Share of the larger model's units that were fingerprinted at all (``total_l``: units of that type the model
    # has): below 1 (units sampled in a large model), a permuted copy's counterpart may not have been looked at.
    coverage: float = 1.0


def split_features(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray] | None:
    """A random half of the feature columns to fit on, the rest to score on (None when too few)."""
    if n < 2 * MIN_HALF:
        return None
    order = rng.permutation(n)
    return np.sort(order[: n // 2]), np.sort(order[n // 2 :])


def sibling_margins(
    fs: np.ndarray, gs: np.ndarray, fl: np.ndarray, gl: np.ndarray,
    fit: np.ndarray, score: np.ndarray, rng: np.random.Generator, max_tested: int = 512,
    total_l: int | None = None,
) -> Margins | None:
    """fs [n_s, f]: fingerprints of the smaller set S (groups gs); fl [n_l, f]: the larger set L (groups gl),
    a sample of the ``total_l`` units L has (default: all of them)."""
    n_s, n_l = fs.shape[0], fl.shape[0]
    k = min(n_s - 1, n_l)
    if k < 1 or n_s < MIN_UNITS:
        return None
    tested = np.sort(rng.choice(n_s, size=min(n_s, max_tested), replace=False))
    cand_l = np.sort(rng.choice(n_l, size=k, replace=False))
    cand_s = np.sort(rng.choice(n_s, size=k + 1, replace=False)) if k + 1 < n_s else np.arange(n_s)
    # Matches are chosen on float32 products (twice as fast; a near-tie may go either way, as it may between any
    # two roundings), the held-out cosines that make the margins computed in float64.
    s_fit = normalise_rows(fs[:, fit]).astype(np.float32)
    s_score = normalise_rows(fs[:, score])
    all_fit, all_score = normalise_rows(fl[:, fit]).astype(np.float32), normalise_rows(fl[:, score])
    g_all = s_fit[tested] @ all_fit.T
    # For the report: the best match among all of L's units (more candidates than the siblings had, so it
    # describes where counterparts are; it does not enter the p-value).
    best_all = np.argmax(g_all, axis=1)
    cross_all = np.sum(s_score[tested] * all_score[best_all], axis=1)

    outside = np.ones(n_l, bool)
    outside[cand_l] = False
    g_all[:, outside] = -np.inf
    best = np.argmax(g_all, axis=1)  # the best of the k candidates
    cross = np.sum(s_score[tested] * all_score[best], axis=1)

    g_sib = s_fit[tested] @ s_fit[cand_s].T
    g_sib[cand_s[None, :] == tested[:, None]] = -np.inf  # a unit is not its own sibling
    not_in = ~np.isin(tested, cand_s)
    g_sib[not_in, -1] = -np.inf  # ... and every unit sees exactly k siblings
    sib_idx = cand_s[np.argmax(g_sib, axis=1)]
    sib = np.sum(s_score[tested] * s_score[sib_idx], axis=1)
    return Margins(cross - sib, cross_all > sib, gs[tested], gl[best_all], best_all, n_l / max(total_l or n_l, n_l))


def sign_flip_test(margin: np.ndarray) -> tuple[float, float, float] | None:
    """(z, log10 p, spread) of the one-sided test that margins exceed 0; spread = sd(margins) / sqrt(n).

    Calibrated as the realigned test is, for exactly the sibling assumption: the larger of the exact sign
    test (positive margins at most Binomial(n, 1/2)) and Hoeffding's bound on the sign-flip tail, never
    below 2^-n. z = sum(d) / sqrt(sum(d^2)) is shown.
    """
    n = margin.size
    ss = float(np.sum(margin * margin))
    if n < MIN_UNITS or ss <= 0 or not math.isfinite(ss):
        return None
    z, flip = log10_sign_flip_bound(margin)
    log10_p = max(flip, log10_sign_test(margin), log10_sign_floor(n))
    return z, log10_p, float(margin.std(ddof=1)) / math.sqrt(n)


def detectable_margin(null_sd_margin: float, n_units: int, log10_needed: float) -> float:
    """Smallest mean margin the test would detect at ``log10_needed`` with 95 % power, for margins of the
    observed spread s shifted to mean d (treated as normal): both of its parts must get there.

    * sign-flip bound: z = sqrt(n) d / sqrt(s^2 + d^2) must reach sqrt(2 ln 10 |log10_needed|) + 1.645;
    * sign test: with P(margin > 0) = Phi(d / s), the count of positive margins must reach its critical
      value with 95 % probability.
    """
    s = null_sd_margin * math.sqrt(n_units)
    if n_units < MIN_UNITS or s <= 0 or log10_needed >= 0:
        return math.inf
    z_h = math.sqrt(2 * LN10 * -log10_needed) + POWER_Z
    if n_units <= z_h * z_h:
        return math.inf
    d_flip = z_h * s / math.sqrt(n_units - z_h * z_h)
    tails = log10_half_binomial_tails(n_units)  # log10 P(K >= k), k = 0..n
    reached = np.flatnonzero(tails <= log10_needed)
    if reached.size == 0:
        return math.inf
    k_crit = int(reached[0])

    def powered(d: float) -> bool:
        p1 = 0.5 * (1.0 + math.erf(d / s / math.sqrt(2.0)))  # normal cdf
        return n_units * p1 - POWER_Z * math.sqrt(n_units * p1 * (1 - p1)) >= k_crit

    lo, hi = 0.0, 10 * s
    if not powered(hi):
        return math.inf
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if powered(mid) else (mid, hi)
    return max(d_flip, hi)


@dataclass(frozen=True, slots=True)
class ComponentTest:
    """A component-level test that is invariant to permutations and rotations of hidden units.

    ``ran`` is False when it could not run; ``reason`` then says why (e.g. no input basis shared).
    ``null_sd_margin`` (sd of the margins / sqrt(n)) sets how small a mean margin the test could have seen
    (``detectable_margin``): the verdict uses it to decide whether the test had the power to see a weak
    relationship.
    """

    name: str  # "shared-basis" or "channels"
    ran: bool
    reason: str
    log10_p: float = 0.0
    z: float | None = None
    n_units: int = 0  # units of the smaller model scored
    n_counterparts: int = 0  # of which matched better by the other model than by their own siblings (report only)
    mean_margin: float | None = None
    null_sd_margin: float | None = None
    details: dict = field(default_factory=dict)  # JSON-ready: which side is smaller, where, channel maps
    # Share of the larger model's units that were fingerprinted, for its least-covered unit type (1 unless
    # units were sampled). A permuted copy shows about this share of a copy's margin (its other counterparts
    # were never looked at), so the power to rule out a relationship is divided by it (verdict/coverage.py).
    partner_coverage: float = 1.0

    def to_dict(self) -> dict:
        return {
            "test": self.name, "ran": self.ran, "reason": self.reason, "log10_p": self.log10_p, "z": self.z,
            "n_units": self.n_units, "n_counterparts": self.n_counterparts, "mean_margin": self.mean_margin,
            "null_sd_margin": self.null_sd_margin, "partner_coverage": self.partner_coverage, **self.details,
        }


def not_run(name: str, reason: str) -> ComponentTest:
    return ComponentTest(name, False, reason)


def from_margins(name: str, margins: list[Margins], describe, details: dict) -> ComponentTest:
    """Pool the margins of every unit type / layer into one sign-flip test."""
    if not margins:
        return not_run(name, "too few units to match (needs at least 16 in the smaller model)")
    d = np.concatenate([m.margin for m in margins])
    res = sign_flip_test(d)
    if res is None:
        return not_run(name, f"too few units to match ({d.size}; needs at least {MIN_UNITS})")
    z, log10_p, sd = res
    n_pos = int(sum(int(m.counterpart.sum()) for m in margins))
    # The least-covered unit type bounds the claim: the pooled test fires only when most margins are positive,
    # so a copy whose counterparts were looked at for a few unit types only could stay below it.
    coverage = float(min(m.coverage for m in margins))
    return ComponentTest(
        name, True, describe(d.size, n_pos, float(d.mean()), z), log10_p, z, int(d.size), n_pos,
        float(d.mean()), sd, details, coverage,
    )
