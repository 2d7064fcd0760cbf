"""Scoring a method over labelled pairs: TPR, FPR, AUC (Mann–Whitney), and calibration of p-values.

Scores follow one convention: higher means "more related". A score of ``None`` (the method could not compute
one for that pair) ranks below every number; two ``None`` tie. ``TOP`` ranks above every number: the harness
gives it to an independent pair whose run failed, so a failure always counts against the method.
"""

from __future__ import annotations

import bisect
import math
from typing import Iterable, Sequence

RELATED = "related"


class _Top:
    """Sentinel score above every real number (a failed run on an independent pair)."""

    def __repr__(self) -> str:
        return "TOP"


TOP = _Top()


def _key(score) -> tuple[int, float]:
    if score is TOP:
        return (2, 0.0)
    if score is None or (isinstance(score, float) and math.isnan(score)):
        return (0, 0.0)
    return (1, float(score))


def auc(positives: Sequence, negatives: Sequence) -> float | None:
    """Mann–Whitney AUC: P(score of a positive > score of a negative), ties counting 1/2.

    ``None`` scores rank lowest (and tie with each other). Returns ``None`` when either side is empty.
    O(n log n) by ranking the pooled keys.
    """
    pos = [_key(s) for s in positives]
    neg = [_key(s) for s in negatives]
    if not pos or not neg:
        return None
    # For each positive: (#negatives strictly below) + 1/2 (#negatives equal).
    neg_sorted = sorted(neg)
    total = 0.0
    for k in pos:
        lo = bisect.bisect_left(neg_sorted, k)
        hi = bisect.bisect_right(neg_sorted, k)
        total += lo + 0.5 * (hi - lo)
    return total / (len(pos) * len(neg))


def rate(calls: Iterable[str | None], wrong_is_related: bool = False) -> float | None:
    """Fraction of calls that are "related" (TPR on related pairs, FPR on independent pairs).

    With ``wrong_is_related`` (use it for FPR), a call of ``"error"`` also counts as "related": a pair whose
    run failed is wrong whichever its label. ``None`` for no calls.
    """
    calls = list(calls)
    if not calls:
        return None
    hits = sum(1 for c in calls if c == RELATED or (wrong_is_related and c == "error"))
    return hits / len(calls)


def tpr(calls: Iterable[str | None]) -> float | None:
    """True-positive rate over the calls made on related pairs (errors and undefined count as misses)."""
    return rate(calls)


def fpr(calls: Iterable[str | None]) -> float | None:
    """False-positive rate over the calls made on independent pairs (errors count as false positives)."""
    return rate(calls, wrong_is_related=True)


def accuracy(outcomes: Iterable[bool]) -> float | None:
    outcomes = list(outcomes)
    return sum(outcomes) / len(outcomes) if outcomes else None


def false_positive_at(log10_p: float | None, alpha: float) -> bool:
    """Whether a pair is a false positive at level α: its overall log10 p ≤ log10 α. A missing p counts."""
    if log10_p is None or (isinstance(log10_p, float) and math.isnan(log10_p)):
        return True
    return log10_p <= math.log10(alpha)


def clopper_pearson_upper(k: int, n: int, level: float = 0.95) -> float | None:
    """One-sided upper confidence bound on a binomial rate (k of n); ``None`` for n = 0."""
    if n == 0:
        return None
    if k >= n:
        return 1.0
    from scipy.stats import beta

    return float(beta.ppf(level, k + 1, n - k))


def rule_of_three(n: int) -> float | None:
    """3/n: the approximate one-sided 95 % upper bound on a rate when none of n trials was a hit."""
    return 3.0 / n if n else None


def calibration(log10_ps: Sequence[float | None], alphas: Sequence[float] = (0.05, 1e-3)) -> list[dict]:
    """Observed false-positive rate of p-values on independent pairs, beside the nominal α."""
    n = len(log10_ps)
    rows = []
    for a in alphas:
        k = sum(1 for lp in log10_ps if false_positive_at(lp, a))
        rows.append({
            "alpha": a,
            "n": n,
            "false_positives": k,
            "observed_fpr": (k / n) if n else None,
            "upper_95": clopper_pearson_upper(k, n),
        })
    return rows
