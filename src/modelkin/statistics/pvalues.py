"""p-values kept as log10, so that 1e-300 and far below never underflow to 0."""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from scipy.special import gammaln, log_ndtr

LN10 = math.log(10.0)


def log10_p_two_sided(z: float) -> float:
    """log10 of P(|Z| >= |z|) for a standard normal Z, accurate for any |z|."""
    if not math.isfinite(z):
        return 0.0 if math.isnan(z) else -math.inf
    return min(0.0, (math.log(2.0) + float(log_ndtr(-abs(z)))) / LN10)


def log10_permutation_floor(n_units: int) -> float:
    """log10 of 1/n!: no permutation test over n units can give a smaller p-value, whatever its z."""
    return -math.lgamma(n_units + 1) / LN10


@lru_cache(maxsize=64)
def log10_half_binomial_tails(n: int) -> np.ndarray:
    """log10 P(K >= k) for K ~ Binomial(n, 1/2), k = 0..n (read-only), summed in log space: exact to rounding
    in tails far below 1e-308."""
    j = np.arange(n + 1)
    log_pmf = gammaln(n + 1) - gammaln(j + 1) - gammaln(n - j + 1) - n * math.log(2.0)
    tails = np.minimum(np.logaddexp.accumulate(log_pmf[::-1])[::-1] / LN10, 0.0)
    tails[0] = 0.0  # P(K >= 0) = 1, not its rounding
    tails.setflags(write=False)
    return tails


def log10_bonferroni(log10_ps: list[float], m: int | None = None) -> float:
    """min(1, m * min p): valid whatever the dependence between the tests."""
    if not log10_ps:
        return 0.0
    m = len(log10_ps) if m is None else m
    return min(0.0, min(log10_ps) + math.log10(m))


def z_for_log10_p(log10_p: float) -> float:
    """|z| whose two-sided normal p-value is 10**log10_p (inverse of ``log10_p_two_sided``)."""
    if log10_p >= 0:
        return 0.0
    lo, hi = 0.0, 1.0
    while log10_p_two_sided(hi) > log10_p:
        hi *= 2.0
    for _ in range(100):
        mid = (lo + hi) / 2
        if log10_p_two_sided(mid) > log10_p:
            lo = mid
        else:
            hi = mid
    return hi
