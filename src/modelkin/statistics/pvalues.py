"""p-values kept as log10, so that 1e-300 and far below never underflow to 0."""

from __future__ import annotations

import math

from scipy.special import log_ndtr

LN10 = math.log(10.0)


def log10_p_two_sided(z: float) -> float:
    """log10 of P(|Z| >= |z|) for a standard normal Z, accurate for any |z|."""
    if not math.isfinite(z):
        return 0.0 if math.isnan(z) else -math.inf
    return min(0.0, (math.log(2.0) + float(log_ndtr(-abs(z)))) / LN10)


def log10_permutation_floor(n_units: int) -> float:
    """log10 of 1/n!: no permutation test over n units can give a smaller p-value, whatever its z."""
    return -math.lgamma(n_units + 1) / LN10


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
