"""Metrics in one streaming pass per tensor pair, with float64 accumulation.

Each pair is read once, in pieces taken from both files at the same time; seven things are kept per pair,
all summed in float64: Σa, Σb, Σa², Σb², Σab, Σ(a−b)² and whether every stored bit was equal. Cosine,
Pearson, relative L2 distance, per-tensor mean/std/norm and the identical-bytes flag follow from them.
‖a−b‖² is summed from the differences themselves, never derived as Σa² + Σb² − 2Σab (which cancels
catastrophically for a cast or lightly fine-tuned copy, the case that matters most).

Two kernels compute the same sums:

* ``numpy`` (the reference, always there): each piece is widened to float64 in blocks of ``SUB_ELEMS``
  elements that stay in the L2 cache, then summed by numpy (pairwise) and BLAS (``ddot``).
* ``numba`` (optional, ``pip install modelkin[fast]``): one compiled loop per stored dtype reads each
  stored byte once, decodes it inline (F32, BF16, F16, F64) and keeps the sums in float64 registers; it
  runs at memory speed. It is used when numba is installed, the pass is large enough to repay its
  start-up (``NUMBA_MIN_BYTES``: importing numba and loading the cached kernels costs ~0.5 s once per
  process, several seconds on a busy machine, and a first compile ~5 s once per machine) and it agrees
  with the numpy reference on a self-check. ``MODELKIN_KERNEL=numpy|numba|auto`` overrides the choice.

Both sum float32 products exactly (a product of two float32 values is exact in float64) and differ only
in the order of float64 additions (relative differences ~1e-15). Tensors whose stored dtypes differ, or
that no kernel reads as stored (F8, integers, block-quantised types), go through the format's decoder
first. Large tensors are split into ranges processed by a thread pool (both kernels release the GIL), so a
compare uses every core it is given; memory stays at a few pieces per thread whatever the model size
(a local file's pieces are memory-mapped and released as soon as they are summed).
"""

from __future__ import annotations

import logging
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np

from ..alignment import TensorPair, logical_shape
from ..pool import one_blas_thread
from ..sources import ModelSource
from ..sources.weightfile import STREAM_PIECE_ELEMS

log = logging.getLogger(__name__)

CHUNK_ELEMS = STREAM_PIECE_ELEMS  # decoded pieces (dtypes no kernel reads as stored) and identity checks
RAW_PIECE_BYTES = 8 << 20  # stored bytes per piece and side: mapping and releasing a piece costs ~nothing
SUB_ELEMS = 1 << 16  # numpy kernel: float64 blocks of 512 KiB per side stay in L2 (L3 at worst)
RANGE_ELEMS = 1 << 23  # a unit of parallel work
TILE = 512  # tile edge for pairs read by blocks (one side transposed, or a strided view)
NUMBA_MIN_BYTES = 2 << 30  # passes over fewer bytes (A+B) use numpy: loading numba (~0.5 s) would not pay
KERNEL_ENV = "MODELKIN_KERNEL"
KERNELS = ("auto", "numpy", "numba")
RAW_CODES = {"F32": np.uint32, "BF16": np.uint16, "F16": np.uint16, "F64": np.uint64}  # read as stored

Sums = tuple[float, float, float, float, float, float, int]  # Σa, Σb, Σa², Σb², Σab, Σ(a−b)², bits differ


@dataclass(frozen=True, slots=True)
class Moments:
    n: int = 0
    sum_a: float = 0.0
    sum_b: float = 0.0
    sum_aa: float = 0.0
    sum_bb: float = 0.0
    sum_ab: float = 0.0
    sum_dd: float = 0.0  # Σ(a−b)², summed from the differences
    same_bits: bool | None = True  # every stored bit equal; None: not compared (decoded or tiled reads)

    def __add__(self, o: "Moments") -> "Moments":
        same = False if False in (self.same_bits, o.same_bits) else None if None in (self.same_bits, o.same_bits) else True
        return Moments(
            self.n + o.n, self.sum_a + o.sum_a, self.sum_b + o.sum_b, self.sum_aa + o.sum_aa,
            self.sum_bb + o.sum_bb, self.sum_ab + o.sum_ab, self.sum_dd + o.sum_dd, same,
        )

    @property
    def derived_dd(self) -> float:
        """‖a−b‖² from the other sums (cancels when a ≈ b): only for moments summed without Σ(a−b)²."""
        return self.sum_aa + self.sum_bb - 2.0 * self.sum_ab

    @classmethod
    def from_sums(cls, n: int, s: Sums, bits_compared: bool) -> "Moments":
        return cls(n, *s[:6], (s[6] == 0) if bits_compared else None)


# -- the numpy kernel (reference) -----------------------------------------------------------------


def _f64_sums(a: np.ndarray, b: np.ndarray, d: np.ndarray) -> tuple[float, ...]:
    """Six sums of two float64 blocks (``d``: scratch for a−b)."""
    np.subtract(a, b, out=d)
    return float(a.sum()), float(b.sum()), float(a @ a), float(b @ b), float(a @ b), float(d @ d)


class NumpyKernel:
    """float64 blocks of SUB_ELEMS elements, widened from the stored bits; one instance per thread."""

    name = "numpy"

    def __init__(self) -> None:
        self.a, self.b, self.d = np.empty(SUB_ELEMS), np.empty(SUB_ELEMS), np.empty(SUB_ELEMS)
        self.wa, self.wb = np.empty(SUB_ELEMS, np.uint32), np.empty(SUB_ELEMS, np.uint32)

    def _widen(self, code: str, x: np.ndarray, out: np.ndarray, work: np.ndarray) -> np.ndarray:
        if code == "F64" or x.dtype == np.float64:
            return x
        if code == "BF16":  # bfloat16 bits are the top half of a float32's
            np.copyto(work, x.view(np.uint16))
            work <<= 16
            x = work.view(np.float32)
        np.copyto(out, x, casting="unsafe")
        return out

    def raw(self, code: str, ra: np.ndarray, rb: np.ndarray) -> Sums:
        """Sums of two pieces of stored elements of dtype ``code`` (one of RAW_CODES)."""
        return self._sums(code, ra, rb, RAW_CODES[code])

    def decoded(self, a: np.ndarray, b: np.ndarray) -> Sums:
        """Sums of two decoded float pieces (bits not compared: the last field is 0)."""
        return self._sums("", a, b, None)

    def _sums(self, code: str, ra: np.ndarray, rb: np.ndarray, bits) -> Sums:
        total = [0.0] * 6
        differ = 0
        for s in range(0, ra.size, SUB_ELEMS):
            x, y = ra[s : s + SUB_ELEMS], rb[s : s + SUB_ELEMS]
            n = x.size
            with np.errstate(all="ignore"):  # infinities and NaN propagate into the sums, as in the numba kernel
                part = _f64_sums(self._widen(code, x, self.a[:n], self.wa[:n]), self._widen(code, y, self.b[:n], self.wb[:n]), self.d[:n])
            for k in range(6):
                total[k] += part[k]
            if bits is not None and not differ:  # equal values (or NaN) may still differ in bits: -0.0, payloads
                differ = 1 if part[5] > 0.0 else int(not np.array_equal(x.view(bits), y.view(bits)))
        return (*total, differ)


# -- the numba kernel (optional accelerator) --------------------------------------------------------


class NumbaKernel:
    name = "numba"

    def __init__(self, module) -> None:
        self.m = module

    def raw(self, code: str, ra: np.ndarray, rb: np.ndarray) -> Sums:
        bits, fn = self.m.RAW[code]
        return fn(ra.view(bits), rb.view(bits))

    def decoded(self, a: np.ndarray, b: np.ndarray) -> Sums:
        if a.dtype != b.dtype or a.dtype not in (np.float32, np.float64):
            a, b = a.astype(np.float64), b.astype(np.float64)
        return self.m.sums_float(np.ascontiguousarray(a), np.ascontiguousarray(b))


_numba_state: dict[str, object] = {}
_numba_lock = threading.Lock()


def _self_check_cases(rng: np.random.Generator) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Stored pieces for every raw dtype (normal values, subnormals, ±0, ±inf, NaN; equal and unequal),
    read-only like a memory map, so that the kernels checked are those the pass will run."""
    import ml_dtypes

    x = rng.standard_normal(3 * SUB_ELEMS // 2) * 0.02 + 0.3
    y = x + rng.standard_normal(x.size) * 1e-3
    store = {"F32": np.float32, "BF16": ml_dtypes.bfloat16, "F16": np.float16, "F64": np.float64}
    cases = []
    for code, dt in store.items():
        a, b = x.astype(dt), y.astype(dt)
        tiny = np.array([ml_dtypes.finfo(dt).smallest_subnormal, -0.0, 0.0, ml_dtypes.finfo(dt).max], dtype=dt)
        a[: tiny.size], b[: tiny.size] = tiny, tiny
        zeros = np.array([0.0, -0.0], dtype=dt)
        special = np.array([np.inf, np.nan], dtype=dt)
        for pa, pb in ((a, b), (a, a.copy()), (zeros, zeros[::-1].copy()), (special, special.copy())):
            pa, pb = pa.copy(), pb.copy()
            pa.flags.writeable = pb.flags.writeable = False
            cases.append((code, pa, pb))
    return cases


def _agree(s: Sums, t: Sums) -> bool:
    close = all((math.isnan(u) and math.isnan(v)) or u == v or abs(u - v) <= 1e-12 * max(abs(u), abs(v)) for u, v in zip(s[:6], t[:6]))
    return close and (s[6] == 0) == (t[6] == 0)


def load_numba() -> NumbaKernel | None:
    """The numba kernel, compiled (or loaded from numba's cache) and checked against numpy; None when numba
    is not installed or the check fails (then the reason is logged once)."""
    with _numba_lock:
        if "kernel" not in _numba_state:
            _numba_state["kernel"] = None
            try:
                from . import _numba

                kernel = NumbaKernel(_numba)
                ref = NumpyKernel()
                with one_blas_thread():
                    for code, a, b in _self_check_cases(np.random.default_rng(0)):
                        if not _agree(kernel.raw(code, a, b), ref.raw(code, a, b)):
                            raise ArithmeticError(f"numba kernel disagrees with numpy on {code}")
                        if code in ("F32", "F64") and not _agree(kernel.decoded(a, b), ref.decoded(a, b)):
                            raise ArithmeticError(f"numba kernel disagrees with numpy on decoded {code}")
                _numba_state["kernel"] = kernel
            except ImportError:
                _numba_state["why"] = "numba is not installed"
            except Exception as e:  # noqa: BLE001 - any failure means: keep to the numpy reference
                _numba_state["why"] = f"{type(e).__name__}: {e}"
                log.warning("modelkin: numba kernel not used (%s); the numpy kernel computes the same sums", _numba_state["why"])
        return _numba_state["kernel"]  # type: ignore[return-value]


def choose_kernel(kernel: str, n_bytes: int) -> str:
    """``numpy`` or ``numba`` for a pass over ``n_bytes`` (A+B); ``kernel`` is 'auto', 'numpy' or 'numba'
    (the MODELKIN_KERNEL environment variable, when set, replaces 'auto')."""
    if kernel == "auto":
        kernel = os.environ.get(KERNEL_ENV, "auto").strip().lower() or "auto"
    if kernel not in KERNELS:
        raise ValueError(f"unknown metric kernel {kernel!r}; choose from {', '.join(KERNELS)}")
    if kernel == "numpy" or (kernel == "auto" and n_bytes < NUMBA_MIN_BYTES):
        return "numpy"
    return "numba" if load_numba() is not None else "numpy"


def kernel_name(kernel: str = "auto", n_bytes: int = NUMBA_MIN_BYTES) -> str:
    """What ``choose_kernel`` picks, with numba's version (for benchmarks and logs)."""
    name = choose_kernel(kernel, n_bytes)
    if name == "numba":
        from . import _numba

        return f"numba {_numba.VERSION}"
    why = _numba_state.get("why")
    return f"numpy ({why})" if why and kernel != "numpy" else "numpy"


def _new_kernel(name: str):
    return load_numba() if name == "numba" else NumpyKernel()


def chunk_moments(a: np.ndarray, b: np.ndarray) -> Moments:
    """Sums of two decoded blocks of any shape (the numpy reference; bits not compared)."""
    a, b = np.ascontiguousarray(a).ravel(), np.ascontiguousarray(b).ravel()
    return Moments.from_sums(a.size, NumpyKernel().decoded(a, b), bits_compared=False)


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
        dd = m.derived_dd if math.isnan(m.sum_dd) else m.sum_dd  # NaN: a caller that did not sum Σ(a−b)²
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



def _range_moments(src_a: ModelSource, src_b: ModelSource, pair: TensorPair, start: int, count: int, kernel) -> Moments:
    """Elements start..start+count of a contiguous pair, streamed piece by piece from both sides (a local
    file through its memory map, each piece released once summed)."""
    ia, ib = pair.a.info, pair.b.info
    code = ia.dtype.code
    raw = code == ib.dtype.code and code in RAW_CODES and src_a.stores_plainly(ia) and src_b.stores_plainly(ib)
    if raw:  # one read of the stored bytes, decoded by the kernel itself
        piece = RAW_PIECE_BYTES // ia.dtype.storage.itemsize
        pieces = zip(src_a.stream_stored(ia, start, count, piece), src_b.stream_stored(ib, start, count, piece))
        step = lambda a, b: kernel.raw(code, a, b)  # noqa: E731
    else:  # different dtypes, dtypes only their format decodes, or samples: decoded pieces
        size = min(count, STREAM_PIECE_ELEMS)
        scratch_a, scratch_b = np.empty(size, np.uint32), np.empty(size, np.uint32)
        pieces = zip(src_a.stream(ia, start, count, scratch_a), src_b.stream(ib, start, count, scratch_b))
        step = kernel.decoded
    total = [0.0] * 6
    differ = 0
    for a, b in pieces:
        s = step(a, b)
        for k in range(6):
            total[k] += s[k]
        differ += s[6]
    return Moments.from_sums(count, (*total, differ), bits_compared=raw)


def _logical_block(src: ModelSource, entry, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
    """Block of the [out, in] (logical) matrix, whatever the stored orientation."""
    if entry.transposed:
        return src.read_block(entry.info, c0, c1, r0, r1).T
    return src.read_block(entry.info, r0, r1, c0, c1)


def _tiled_moments(src_a: ModelSource, src_b: ModelSource, pair: TensorPair, kernel) -> Moments:
    """Pairs whose element orders differ (one stored transposed) or that are strided views: by tiles."""
    rows, cols = logical_shape(pair.a)
    total = Moments()
    for r0 in range(0, rows, TILE):
        r1 = min(rows, r0 + TILE)
        for c0 in range(0, cols, TILE):
            c1 = min(cols, c0 + TILE)
            a = _logical_block(src_a, pair.a, r0, r1, c0, c1)
            b = _logical_block(src_b, pair.b, r0, r1, c0, c1)
            total = total + _block_moments(kernel, a, b)
    return total


def _block_moments(kernel, a: np.ndarray, b: np.ndarray) -> Moments:
    a, b = np.ascontiguousarray(a).ravel(), np.ascontiguousarray(b).ravel()
    return Moments.from_sums(a.size, kernel.decoded(a, b), bits_compared=False)


def _row_mapped_moments(src_a: ModelSource, src_b: ModelSource, pair: TensorPair, start: int, count: int, kernel) -> Moments:
    """Token rows start..start+count of the shared-token list, gathered from each side."""
    rows_a, rows_b = pair.rows
    row_len = pair.a.info.numel // pair.a.info.shape[0]
    step = max(1, CHUNK_ELEMS // max(row_len, 1))
    total = Moments()
    for r in range(start, start + count, step):
        sl = slice(r, min(start + count, r + step))
        a, b = src_a.read_rows(pair.a.info, rows_a[sl]), src_b.read_rows(pair.b.info, rows_b[sl])
        total = total + _block_moments(kernel, a, b)
    return total


def same_bytes(src_a: ModelSource, ia, src_b: ModelSource, ib) -> bool:
    """Whether two stored tensors hold the same bytes (same dtype and shape), compared piece by piece."""
    if ia.dtype.code != ib.dtype.code or ia.shape != ib.shape or ia.strided or ib.strided:
        return False
    if ia.sampled or ib.sampled:  # samples: the sampled rows' values, bit for bit (decoding is exact)
        rows = np.arange(ia.shape[0])
        return src_a.read_rows(ia, rows).tobytes() == src_b.read_rows(ib, rows).tobytes()
    if not (src_a.stores_plainly(ia) and src_b.stores_plainly(ib)):  # through the format's own raw reads
        for s in range(0, ia.numel, CHUNK_ELEMS):
            c = min(CHUNK_ELEMS, ia.numel - s)
            if src_a.read_raw(ia, s, c).tobytes() != src_b.read_raw(ib, s, c).tobytes():
                return False
        return True
    piece = RAW_PIECE_BYTES // ia.dtype.storage.itemsize
    pieces = zip(src_a.stream_stored(ia, 0, ia.numel, piece), src_b.stream_stored(ib, 0, ib.numel, piece))
    return all(np.array_equal(a.view(np.uint8), b.view(np.uint8)) for a, b in pieces)


def stream_metrics(
    src_a: ModelSource,
    src_b: ModelSource,
    pairs: Iterable[TensorPair],
    threads: int = 2,
    on_bytes: Callable[[int], None] | None = None,
    kernel: str = "auto",
) -> list[TensorMetrics]:
    """Metrics for every pair, in order. ``on_bytes`` is told how many bytes (A+B) each unit consumed.
    ``kernel``: 'auto' (numba for large passes when installed), 'numpy' or 'numba' (see the module doc)."""
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
    n_bytes = sum(pairs[i].a.info.n_bytes + pairs[i].b.info.n_bytes for i in {u[0] for u in units})
    kernel_kind = choose_kernel(kernel, n_bytes)
    local = threading.local()  # one kernel (its scratch blocks) per worker thread

    def work(unit: tuple[int, int, int]) -> tuple[int, Moments]:
        i, start, count = unit
        p = pairs[i]
        k = getattr(local, "kernel", None)
        if k is None:
            k = local.kernel = _new_kernel(kernel_kind)
        if p.rows is not None:
            m = _row_mapped_moments(src_a, src_b, p, start, count, k)
            fraction = count / max(len(p.rows[0]), 1)
        elif count < 0:
            m, fraction = _tiled_moments(src_a, src_b, p, k), 1.0
        else:
            m, fraction = _range_moments(src_a, src_b, p, start, count, k), count / max(p.a.info.numel, 1)
        if on_bytes:
            on_bytes(int((p.a.info.n_bytes + p.b.info.n_bytes) * fraction))
        return i, m

    sums = [Moments() for _ in pairs]
    # Largest units first so the pool does not end waiting on one big tensor.
    units.sort(key=lambda u: -(pairs[u[0]].numel if u[2] < 0 or pairs[u[0]].rows is not None else u[2]))
    # The pass parallelises over units itself: BLAS threads on top (the numpy kernel's ddot) only contend.
    with one_blas_thread():
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
    return [TensorMetrics.from_moments(m, _identical(src_a, src_b, p, m)) for p, m in zip(pairs, sums)]


def _identical(src_a: ModelSource, src_b: ModelSource, p: TensorPair, m: Moments) -> bool:
    """Same dtype, shape and stored bytes. The pass compared the bits of pairs it read as stored; others
    (decoded, tiled) whose values all matched are compared byte by byte here."""
    ia, ib = p.a.info, p.b.info
    if m.n == 0 or p.rows is not None or ia.dtype.code != ib.dtype.code or ia.shape != ib.shape or ia.strided or ib.strided:
        return False
    if m.same_bits is not None and not p.transpose_b:
        return m.same_bits
    return m.sum_dd == 0.0 and same_bytes(src_a, ia, src_b, ib)
