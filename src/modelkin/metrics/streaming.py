"""Metrics in one streaming pass per tensor pair, with float64 accumulation.

Each pair is read in chunks of ``CHUNK_ELEMS`` elements from both files at once; six sums are kept in
float64 (Σa, Σb, Σa², Σb², Σab) from which cosine, Pearson, relative L2 distance and per-tensor
mean/std/norm follow. Within a chunk, values stored in 32 bits or fewer are multiplied in float32 by BLAS
(every such value is exact in float32; BLAS keeps many partial sums, so a 64 Ki-element dot carries a
relative error near 1e-6) and the chunk totals are accumulated in float64; float64 tensors stay in float64.
This keeps the pass memory-bound: a float64 conversion of every chunk costs ten times more.

‖a−b‖² = Σa² + Σb² − 2Σab cancels catastrophically when a ≈ b, exactly the case that matters most
(a cast or lightly fine-tuned copy). So when the derived distance is within reach of that rounding, a
second pass accumulates Σ(a−b)² directly; other pairs skip it. Large tensors are split into ranges processed by a thread pool (numpy releases the GIL while it reads and
computes), so a compare uses every core it is given; memory stays at a few chunks per thread whatever the
model size.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np

from ..alignment import TensorPair, logical_shape
from ..sources import ModelSource
from ..sources.weightfile import STREAM_PIECE_ELEMS

CHUNK_ELEMS = STREAM_PIECE_ELEMS  # a stream's piece: decoded chunks stay in L2 cache; few Python steps per GB
RANGE_ELEMS = 1 << 23  # a unit of parallel work
TILE = 512  # tile edge for pairs read by blocks (one side transposed, or a strided view)


@dataclass(frozen=True, slots=True)
class Moments:
    n: int = 0
    sum_a: float = 0.0
    sum_b: float = 0.0
    sum_aa: float = 0.0
    sum_bb: float = 0.0
    sum_ab: float = 0.0
    sum_dd: float = 0.0  # Σ(a−b)² when accumulated directly; NaN once a chunk skipped it

    def __add__(self, o: "Moments") -> "Moments":
        return Moments(
            self.n + o.n, self.sum_a + o.sum_a, self.sum_b + o.sum_b, self.sum_aa + o.sum_aa,
            self.sum_bb + o.sum_bb, self.sum_ab + o.sum_ab, _add(self.sum_dd, o.sum_dd),
        )

    @property
    def derived_dd(self) -> float:
        return self.sum_aa + self.sum_bb - 2.0 * self.sum_ab

    def needs_exact_distance(self) -> bool:
        """True when ‖a−b‖² derived from the sums is within a float32 rounding margin of zero."""
        return math.isnan(self.sum_dd) and self.derived_dd <= 1e-3 * (self.sum_aa + self.sum_bb)


def _add(x: float, y: float) -> float:
    """NaN means 'not accumulated'; a chunk without it leaves the total unaccumulated too."""
    return x + y


SMALL_TENSOR_ELEMS = 1 << 20  # below this, float64 throughout costs nothing worth saving


def chunk_moments(a: np.ndarray, b: np.ndarray, exact: bool = False) -> Moments:
    """Sums of one chunk. ``exact`` computes in float64: small tensors such as norm gains (values near 1,
    where E[ab] - E[a]E[b] cancels) get full precision; big weight matrices are centred near 0 and do not."""
    a, b = a.ravel(), b.ravel()
    if exact or a.dtype != b.dtype or a.dtype not in (np.float32, np.float64):
        a, b = a.astype(np.float64), b.astype(np.float64)
    # numpy sums pairwise (error ~ log2(n) ulp), so float32 sums of a chunk stay accurate.
    return Moments(a.size, float(a.sum()), float(b.sum()), float(a @ a), float(b @ b), float(a @ b), math.nan)


def chunk_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Σ(a−b)² of one chunk, computed from the differences (exact where a ≈ b)."""
    a, b = a.ravel(), b.ravel()
    if a.dtype != b.dtype or a.dtype not in (np.float32, np.float64):
        a, b = a.astype(np.float64), b.astype(np.float64)
    d = a - b
    return float(d @ d)


@dataclass(frozen=True, slots=True)
class TensorMetrics:
    """Effect sizes for one pair. ``None`` means undefined (a constant tensor has no Pearson)."""

    n: int
    cosine: float | None
    pearson: float | None
    rel_l2: float | None  # ‖a−b‖ / ‖a‖
    identical: bool  # same dtype, shape and bytes
    finite: bool
    mean_a: float
    std_a: float
    norm_a: float
    mean_b: float
    std_b: float
    norm_b: float

    @classmethod
    def from_moments(cls, m: Moments, identical: bool) -> "TensorMetrics":
        n = max(m.n, 1)
        dd = m.derived_dd if math.isnan(m.sum_dd) else m.sum_dd
        finite = all(math.isfinite(x) for x in (m.sum_aa, m.sum_bb, m.sum_ab, dd))
        mean_a, mean_b = m.sum_a / n, m.sum_b / n
        var_a = max(m.sum_aa / n - mean_a**2, 0.0)
        var_b = max(m.sum_bb / n - mean_b**2, 0.0)
        cov = m.sum_ab / n - mean_a * mean_b
        norm_a, norm_b = math.sqrt(max(m.sum_aa, 0.0)), math.sqrt(max(m.sum_bb, 0.0))
        cosine = m.sum_ab / (norm_a * norm_b) if finite and norm_a > 0 and norm_b > 0 else None
        # A variance below float64 resolution of the mean is a constant tensor: Pearson is undefined.
        tiny = 1e-24 + 1e-12 * max(mean_a**2, mean_b**2)
        pearson = cov / math.sqrt(var_a * var_b) if finite and var_a > tiny and var_b > tiny else None
        rel_l2 = math.sqrt(max(dd, 0.0)) / norm_a if finite and norm_a > 0 else None
        clip = lambda x: None if x is None else max(-1.0, min(1.0, x))
        return cls(
            m.n, clip(cosine), clip(pearson), rel_l2, identical, finite,
            mean_a, math.sqrt(var_a), norm_a, mean_b, math.sqrt(var_b), norm_b,
        )


def _paired_pieces(src_a: ModelSource, src_b: ModelSource, pair: TensorPair, start: int, count: int):
    """Decoded pieces of the same elements of A and B (both streams cut pieces of CHUNK_ELEMS elements)."""
    ia, ib = pair.a.info, pair.b.info
    scratch_a, scratch_b = np.empty(CHUNK_ELEMS, np.uint32), np.empty(CHUNK_ELEMS, np.uint32)  # bf16 decoding
    return zip(src_a.stream(ia, start, count, scratch_a), src_b.stream(ib, start, count, scratch_b))


def _range_moments(src_a: ModelSource, src_b: ModelSource, pair: TensorPair, start: int, count: int) -> Moments:
    """One range, streamed piece by piece (a local file through its memory map, released as it goes)."""
    exact = pair.a.info.numel <= SMALL_TENSOR_ELEMS
    total = Moments()
    for a, b in _paired_pieces(src_a, src_b, pair, start, count):
        total = total + chunk_moments(a, b, exact=exact)
    return total


def _with_distance(m: Moments, a: np.ndarray, b: np.ndarray) -> Moments:
    return Moments(m.n, m.sum_a, m.sum_b, m.sum_aa, m.sum_bb, m.sum_ab, chunk_distance(a, b))


def _exact_distance(src_a: ModelSource, src_b: ModelSource, pair: TensorPair) -> float:
    """Second pass for a near-identical contiguous pair: Σ(a−b)² from the differences."""
    n = pair.a.info.numel
    return sum(chunk_distance(a, b) for a, b in _paired_pieces(src_a, src_b, pair, 0, n))


def _logical_block(src: ModelSource, entry, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
    """Block of the [out, in] (logical) matrix, whatever the stored orientation."""
    if entry.transposed:
        return src.read_block(entry.info, c0, c1, r0, r1).T
    return src.read_block(entry.info, r0, r1, c0, c1)


def _tiled_moments(src_a: ModelSource, src_b: ModelSource, pair: TensorPair) -> Moments:
    """Pairs whose element orders differ (one stored transposed) or that are strided views: by tiles."""
    rows, cols = logical_shape(pair.a)
    total = Moments()
    for r0 in range(0, rows, TILE):
        r1 = min(rows, r0 + TILE)
        for c0 in range(0, cols, TILE):
            c1 = min(cols, c0 + TILE)
            a = _logical_block(src_a, pair.a, r0, r1, c0, c1)
            b = _logical_block(src_b, pair.b, r0, r1, c0, c1)
            total = total + _with_distance(chunk_moments(a, b), a, b)
    return total


def _row_mapped_moments(src_a: ModelSource, src_b: ModelSource, pair: TensorPair, start: int, count: int) -> Moments:
    """Token rows start..start+count of the shared-token list, gathered from each side."""
    rows_a, rows_b = pair.rows
    row_len = pair.a.info.numel // pair.a.info.shape[0]
    step = max(1, CHUNK_ELEMS // max(row_len, 1))
    total = Moments()
    for r in range(start, start + count, step):
        sl = slice(r, min(start + count, r + step))
        a, b = src_a.read_rows(pair.a.info, rows_a[sl]), src_b.read_rows(pair.b.info, rows_b[sl])
        total = total + _with_distance(chunk_moments(a, b), a, b)
    return total


def same_bytes(src_a: ModelSource, ia, src_b: ModelSource, ib) -> bool:
    """Whether two stored tensors hold the same bytes (same dtype and shape), compared chunk by chunk."""
    if ia.dtype.code != ib.dtype.code or ia.shape != ib.shape or ia.strided or ib.strided:
        return False
    if ia.sampled or ib.sampled:  # samples: the sampled rows' values, bit for bit (decoding is exact)
        rows = np.arange(ia.shape[0])
        return src_a.read_rows(ia, rows).tobytes() == src_b.read_rows(ib, rows).tobytes()
    for s in range(0, ia.numel, CHUNK_ELEMS):
        c = min(CHUNK_ELEMS, ia.numel - s)
        if src_a.read_raw(ia, s, c).tobytes() != src_b.read_raw(ib, s, c).tobytes():
            return False
    return True


def stream_metrics(
    src_a: ModelSource,
    src_b: ModelSource,
    pairs: Iterable[TensorPair],
    threads: int = 2,
    on_bytes: Callable[[int], None] | None = None,
) -> list[TensorMetrics]:
    """Metrics for every pair, in order. ``on_bytes`` is told how many bytes (A+B) each unit consumed."""
    pairs = list(pairs)
    units: list[tuple[int, int, int]] = []  # (pair index, start, count); count -1 = read by tiles
    for i, p in enumerate(pairs):
        if p.width_differs:  # no element-wise correspondence: effect sizes stay undefined
            continue
        if p.rows is not None:  # start/count in shared token rows
            n_rows = len(p.rows[0])
            per = max(1, RANGE_ELEMS // max(p.numel // max(n_rows, 1), 1))
            units.extend((i, s, min(per, n_rows - s)) for s in range(0, n_rows, per))
        elif (p.transpose_b or p.a.info.strided or p.b.info.strided) and len(p.a.shape) == 2:
            units.append((i, 0, -1))
        else:
            n = p.a.info.numel
            units.extend((i, s, min(RANGE_ELEMS, n - s)) for s in range(0, n, RANGE_ELEMS))
            if n == 0:
                units.append((i, 0, 0))

    def work(unit: tuple[int, int, int]) -> tuple[int, Moments]:
        i, start, count = unit
        p = pairs[i]
        if p.rows is not None:
            m = _row_mapped_moments(src_a, src_b, p, start, count)
            fraction = count / max(len(p.rows[0]), 1)
        elif count < 0:
            m, fraction = _tiled_moments(src_a, src_b, p), 1.0
        else:
            m, fraction = _range_moments(src_a, src_b, p, start, count), count / max(p.a.info.numel, 1)
        if on_bytes:
            on_bytes(int((p.a.info.n_bytes + p.b.info.n_bytes) * fraction))
        return i, m

    sums = [Moments() for _ in pairs]
    # Largest units first so the pool does not end waiting on one big tensor.
    units.sort(key=lambda u: -(pairs[u[0]].numel if u[2] < 0 or pairs[u[0]].rows is not None else u[2]))
    if threads <= 1:
        results = map(work, units)
    else:
        pool = ThreadPoolExecutor(max_workers=threads)
        results = pool.map(work, units)
    try:
        for i, m in results:
            sums[i] = sums[i] + m
    finally:
        if threads > 1:
            pool.shutdown(wait=True, cancel_futures=True)
    # Near-identical pairs get their distance again, exactly (in parallel: there can be many).
    exact = [i for i, m in enumerate(sums) if m.n and m.needs_exact_distance()]
    if exact:
        with ThreadPoolExecutor(max_workers=max(threads, 1)) as pool:
            for i, dd in zip(exact, pool.map(lambda i: _exact_distance(src_a, src_b, pairs[i]), exact)):
                m = sums[i]
                sums[i] = Moments(m.n, m.sum_a, m.sum_b, m.sum_aa, m.sum_bb, m.sum_ab, dd)
    out = []
    for p, m in zip(pairs, sums):
        identical = m.sum_dd == 0.0 and m.n > 0 and p.rows is None and same_bytes(src_a, p.a.info, src_b, p.b.info)
        out.append(TensorMetrics.from_moments(m, identical))
    return out
