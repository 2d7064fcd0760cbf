import math

import numpy as np
import pytest

from modelkin.statistics import log10_bonferroni, log10_p_two_sided, unit_permutation_test, z_for_log10_p


def test_log10_p_does_not_underflow():
    assert log10_p_two_sided(0.0) == 0.0
    assert log10_p_two_sided(1.959963985) == pytest.approx(math.log10(0.05), abs=1e-6)
    far = log10_p_two_sided(100.0)  # p ~ 1e-2174, far below float64's smallest number
    assert -2180 < far < -2170
    assert log10_p_two_sided(1e6) < -1e11
    assert z_for_log10_p(log10_p_two_sided(7.5)) == pytest.approx(7.5, rel=1e-9)


def test_bonferroni_in_log_space():
    assert log10_bonferroni([-400.0, -2.0, -1.0]) == pytest.approx(-400 + math.log10(3))
    assert log10_bonferroni([-0.1, -0.2]) == 0.0  # capped at p = 1
    assert log10_bonferroni([]) == 0.0


def test_permutation_moments_are_exact():
    # Enumerate all 6! permutations of a small G and compare mean and variance with the closed form.
    from itertools import permutations

    r = np.random.default_rng(0)
    n = 6
    g = r.normal(size=(n, n))
    vals = np.array([sum(g[i, p[i]] for i in range(n)) for p in permutations(range(n))])
    d = g - g.mean(1, keepdims=True) - g.mean(0, keepdims=True) + g.mean()
    assert vals.mean() == pytest.approx(g.sum() / n)
    assert vals.var() == pytest.approx((d * d).sum() / (n - 1))


def test_null_is_calibrated_for_independent_units_with_shared_structure():
    # Independent "models" that share structure along the feature axis (as position or token embeddings
    # do): a naive elementwise null would fire; the unit-permutation null must not.
    r = np.random.default_rng(1)
    n_units, n_feat, trials = 64, 200, 600
    shared = np.cumsum(r.normal(size=n_feat))  # smooth profile every model learns
    zs = []
    for _ in range(trials):
        a = r.normal(size=(n_units, 1)) * shared + r.normal(size=(n_units, n_feat))
        b = r.normal(size=(n_units, 1)) * shared + r.normal(size=(n_units, n_feat))
        zs.append(unit_permutation_test(a, b).z)
    zs = np.array(zs)
    assert abs(zs.mean()) < 0.15
    assert 0.85 < zs.std() < 1.15
    assert np.mean(np.abs(zs) > 1.96) < 0.09  # nominal 0.05 (binomial sd ~0.009)


def test_outlier_unit_cannot_dominate():
    # A unit with huge weights at the same index in both models, whose directions happen to agree a little
    # (cosine ~0.3). Scaling the whole row changes nothing after row normalisation, so that alone could never
    # fail; what can fail is letting the unit's magnitude into the statistic. Unnormalised, unit 5 alone would
    # be a 30-sigma match; normalised, it is one unit of 64 agreeing at cosine 0.3.
    r = np.random.default_rng(2)
    a = r.normal(size=(64, 100))
    b = r.normal(size=(64, 100))
    b[5] = 0.3 * a[5] + math.sqrt(1 - 0.09) * b[5]
    a[5] *= 1000.0
    b[5] *= 1000.0
    raw = a @ b.T  # the same statistic without unit normalisation
    d = raw - raw.mean(1, keepdims=True) - raw.mean(0, keepdims=True) + raw.mean()
    z_raw = (np.trace(raw) - raw.sum() / 64) / math.sqrt((d * d).sum() / 63)
    assert z_raw > 5  # what the guard prevents
    t = unit_permutation_test(a, b)
    assert abs(t.z) < 4 and t.log10_p > -3


def test_related_units_are_detected_and_permuted_ones_are_not_by_this_test():
    r = np.random.default_rng(3)
    a = r.normal(size=(128, 128))
    b = a + 3.0 * r.normal(size=a.shape)  # weak relation: unit cosine ~0.3
    t = unit_permutation_test(a, b)
    assert t.z > 20 and t.log10_p < -80
    assert 0.25 < t.mean_cosine < 0.4
    # Units shuffled: the same-index test sees nothing (realignment is a separate step).
    t2 = unit_permutation_test(a, b[r.permutation(128)])
    assert abs(t2.z) < 4


def test_too_few_units_gives_no_test():
    r = np.random.default_rng(4)
    assert unit_permutation_test(r.normal(size=(8, 50)), r.normal(size=(8, 50))) is None


def test_p_value_never_claims_more_than_the_permutations_allow():
    # 16 identical units: z is large, but a permutation test over 16 units cannot go below 1/16!.
    r = np.random.default_rng(6)
    a = r.normal(size=(16, 400))
    t = unit_permutation_test(a, a.copy())
    assert t.z > 8 and log10_p_two_sided(t.z) < t.log10_p  # the normal tail would claim more
    assert t.log10_p == pytest.approx(-math.log10(math.factorial(16)))


def _importance_sampled_tail(g: np.ndarray, z: float, samples: int, rng: np.random.Generator) -> tuple[float, float]:
    """P(Σ_i G[i, π(i)] >= E + z·sd) over uniform random permutations π, by sequential importance sampling.

    π is drawn row by row, each row picking a free column with probability ∝ exp(θ·G[i, j]) (θ = z / sd
    tilts the draws towards the tail); each draw is weighted by (1/n!) / q(π), which makes the estimate
    unbiased for the uniform permutation distribution whatever θ is. Returns (estimate, standard error).
    """
    from scipy.special import logsumexp

    n = g.shape[0]
    d = g - g.mean(1, keepdims=True) - g.mean(0, keepdims=True) + g.mean()
    sd = math.sqrt((d * d).sum() / (n - 1))
    threshold, theta = g.sum() / n + z * sd, z / sd
    free = np.ones((samples, n), bool)
    log_w, total = np.zeros(samples), np.zeros(samples)
    for i in range(n):
        logits = np.where(free, theta * g[i][None, :], -np.inf)
        j = np.argmax(logits + rng.gumbel(size=logits.shape), axis=1)  # Gumbel-max: a draw ∝ exp(logits)
        log_w += logsumexp(logits, axis=1) - math.log(n - i)
        free[np.arange(samples), j] = False
        total += g[i, j]
    w = np.where(total >= threshold, np.exp(log_w - theta * total), 0.0)
    return float(w.mean()), float(w.std() / math.sqrt(samples))


def _unit_cosines(structure: str, r: np.random.Generator, n: int = 48, m: int = 256) -> np.ndarray:
    """G = cos(unit i of A, unit j of B) for two independent 'models' of n units."""
    from modelkin.alignment import normalise_rows

    a, b = r.normal(size=(n, m)), r.normal(size=(n, m))
    if structure == "one universal unit":  # both learned the same feature, at different indices
        b[7] = a[2] + 0.3 * r.normal(size=m)
    elif structure == "shared feature profile":  # every unit carries a smooth profile both models learn
        shared = np.cumsum(r.normal(size=m))
        a, b = a + r.normal(size=(n, 1)) * shared / 8, b + r.normal(size=(n, 1)) * shared / 8
    return normalise_rows(a) @ normalise_rows(b).T


@pytest.mark.parametrize("structure", ["independent units", "one universal unit", "shared feature profile"])
def test_same_index_normal_tail_holds_at_4_to_6_sigma(structure):
    # The same-index p-value is a normal tail with the exact permutation mean and variance of the (clipped)
    # cosines: an approximation. Checked against the permutation distribution itself, 4 to 6 standard
    # deviations out, by importance sampling. Tolerance: the true tail lies within a factor of 2 of the normal
    # one (seen: 0.75-1.1). Where units share a profile the permutation tail is lighter than normal (down to
    # 0 at 6 sigma: the statistic is bounded), so there only the safe side is required: never 2x heavier.
    from scipy.special import log_ndtr

    from modelkin.statistics.unit_test import bounded_scores

    r = np.random.default_rng(21)
    g = bounded_scores(_unit_cosines(structure, r))
    for z, tail in ((4.0, 1), (5.0, 1), (6.0, 1), (6.0, -1)):  # tail -1: the lower tail, via -G
        p, se = _importance_sampled_tail(tail * g, z, 3000, r)
        ratio = p / math.exp(float(log_ndtr(-z)))
        if structure == "shared feature profile":
            assert ratio + 3 * se / math.exp(float(log_ndtr(-z))) < 2.0, (z, tail, ratio)
        else:
            assert se < 0.35 * p and 0.5 < ratio < 2.0, (structure, z, tail, ratio, se / p)


def test_one_universal_unit_breaks_the_unclipped_tail():
    # Without clipping, a single coincident pair of units among 48 makes the 6 sigma tail hundreds of times
    # heavier than the normal one: why the statistic bounds every cosine (unit_test.bounded_scores).
    from scipy.special import log_ndtr

    r = np.random.default_rng(21)
    g = _unit_cosines("one universal unit", r)
    p, _ = _importance_sampled_tail(g, 6.0, 3000, r)
    assert p / math.exp(float(log_ndtr(-6.0))) > 50


def test_importance_sampler_agrees_with_plain_permutations():
    # At 2 sigma plain Monte Carlo is feasible: the importance-sampled tail must agree with it.
    from modelkin.alignment import normalise_rows

    r = np.random.default_rng(22)
    g = normalise_rows(r.normal(size=(32, 64))) @ normalise_rows(r.normal(size=(32, 64))).T
    p_is, se = _importance_sampled_tail(g, 2.0, 4000, r)
    d = g - g.mean(1, keepdims=True) - g.mean(0, keepdims=True) + g.mean()
    threshold = g.sum() / 32 + 2.0 * math.sqrt((d * d).sum() / 31)
    perms = np.argsort(r.random((40000, 32)), axis=1)
    p_mc = float(np.mean(g[np.arange(32), perms].sum(axis=1) >= threshold))
    assert abs(p_is - p_mc) < 4 * math.hypot(se, math.sqrt(p_mc * (1 - p_mc) / 40000))


def test_unit_tests_computed_together_equal_one_at_a_time():
    """A batch of unit tests gives each pair exactly its own test, whatever else is in the batch."""
    from modelkin.statistics.unit_test import unit_permutation_tests

    r = np.random.default_rng(5)
    for n, m in [(16, 256), (256, 16), (40, 7), (8, 50)]:
        a = r.normal(size=(6, n, m))
        b = a * r.uniform(0, 1, size=(6, 1, 1)) + r.normal(size=(6, n, m))
        together = unit_permutation_tests(a, b, axis=1)
        assert together == [unit_permutation_test(a[i], b[i], 1) for i in range(6)]
        assert together[2:4] == unit_permutation_tests(a[2:4], b[2:4], axis=1)


def test_half_binomial_tails_are_exact_and_reach_the_far_tail():
    from math import comb, log10

    from modelkin.statistics.pvalues import log10_half_binomial_tails

    for n in (1, 7, 16, 40):
        tails = log10_half_binomial_tails(n)
        exact = [log10(sum(comb(n, j) for j in range(k, n + 1)) / 2**n) for k in range(n + 1)]
        assert np.allclose(tails, exact, rtol=1e-12, atol=1e-12)
    far = log10_half_binomial_tails(3000)  # 2^-3000: far below what a float holds, as a log it is exact
    assert far[-1] == pytest.approx(-3000 * log10(2), rel=1e-12) and np.all(np.diff(far) <= 0) and far[0] == 0.0
