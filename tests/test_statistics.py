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
    r = np.random.default_rng(2)
    a = r.normal(size=(64, 100))
    b = r.normal(size=(64, 100))
    a[5] *= 1000.0  # a massive dimension at the same index in both models, by chance
    b[5] *= 1000.0
    t = unit_permutation_test(a, b)
    assert abs(t.z) < 4


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
    assert t.z > 10
    assert t.log10_p == pytest.approx(-math.log10(math.factorial(16)))
