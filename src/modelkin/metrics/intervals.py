"""Confidence intervals for effect sizes estimated from a sample of rows (the sampled read mode).

A sampled pair's Pearson, cosine and relative L2 come from the rows read, not from every element. Their
uncertainty is estimated by the jackknife over the sample's blocks of rows (delete one block, recompute):
rows of a weight matrix are units, roughly exchangeable, and blocks keep whatever correlation neighbouring
rows have inside one deleted group. The interval is estimate ± 1.96 jackknife standard errors, clipped to
the statistic's range.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..alignment import TensorPair
from ..sampling import DEFAULT_SAMPLE
from ..sources import ModelSource
from .streaming import Moments, TensorMetrics, chunk_moments

Z95 = 1.959963984540054


@dataclass(frozen=True, slots=True)
class Interval:
    low: float
    high: float


@dataclass(frozen=True, slots=True)
class SampleIntervals:
    rows_a: int  # rows of A read (of ``rows_total_a``)
    rows_total_a: int
    pearson: Interval | None
    cosine: Interval | None
    rel_l2: Interval | None


def _jackknife(values: list[float | None], full: float | None, clip: tuple[float, float] | None) -> Interval | None:
    vals = [v for v in values if v is not None]
    if full is None or len(vals) < 2 or len(vals) != len(values):
        return None
    g = len(vals)
    mean = sum(vals) / g
    se = math.sqrt((g - 1) / g * sum((v - mean) ** 2 for v in vals))
    lo, hi = full - Z95 * se, full + Z95 * se
    if clip is not None:
        lo, hi = max(clip[0], lo), min(clip[1], hi)
    return Interval(lo, max(lo, hi))


def _without(total: Moments, part: Moments) -> Moments:
    return Moments(total.n - part.n, total.sum_a - part.sum_a, total.sum_b - part.sum_b, total.sum_aa - part.sum_aa,
                   total.sum_bb - part.sum_bb, total.sum_ab - part.sum_ab, total.sum_dd - part.sum_dd)


def sample_intervals(src_a: ModelSource, src_b: ModelSource, pair: TensorPair, metrics: TensorMetrics,
                     block_rows: int = DEFAULT_SAMPLE.block_rows) -> SampleIntervals | None:
    """Jackknife intervals for a sampled pair (None for a pair read whole)."""
    ia, ib = pair.a.info, pair.b.info
    if not ia.sampled or pair.width_differs:
        return None
    n = ia.shape[0]
    blocks = []
    for r in range(0, n, block_rows):
        rows = np.arange(r, min(n, r + block_rows))
        blocks.append(chunk_moments(src_a.read_rows(ia, rows), src_b.read_rows(ib, rows)))
    total = sum(blocks, Moments())
    leave_out = [TensorMetrics.from_moments(_without(total, b), False) for b in blocks]
    return SampleIntervals(
        n, ia.base.shape[0] if ia.base is not None else n,
        _jackknife([m.pearson for m in leave_out], metrics.pearson, (-1.0, 1.0)),
        _jackknife([m.cosine for m in leave_out], metrics.cosine, (-1.0, 1.0)),
        _jackknife([m.rel_l2 for m in leave_out], metrics.rel_l2, (0.0, math.inf)),
    )
