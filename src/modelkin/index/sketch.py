"""Cheap sketches that prune 1-vs-N search before the calibrated compare confirms.

Two float32 vectors per (model, component), each a candidate list of its own (search takes the best of
both):

* the *spectral* sketch (key: the component): for every canonical role, the normalised leading singular
  values of that role's held rows, averaged over layers. Singular values do not change when a copier
  permutes or rotates units or the residual stream, and move little under fine-tuning or quantisation;
* the *raw* sketch (key: component + ``:raw``): for every canonical role, the weights themselves at fixed
  positions — the first rows a fingerprint holds of that role's lowest held layer, first columns —
  standardised per role, then projected to 256 numbers by a fixed random matrix (1 KB per component, so
  10,000 models' sketches load in one read). Low-rank updates (LoRA), continued pre-training, merges and
  widening (the old units keep their places) move a spectrum more than they move these values, which stay
  correlated with the parent's; a permuted copy is the spectral sketch's to find.

Neither is evidence: independently trained models of one architecture have close spectra. The sketches only
order candidates; every reported relation comes from ``modelkin.compare``.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from ..inventory import build_inventory
from ..inventory.roles import ROLES
from ..sources import ModelSource

N_SPECTRUM = 8  # leading singular values kept per role
MAX_ROWS = 64  # held rows used per tensor
MAX_COLS = 512
ROLE_ORDER: tuple[str, ...] = tuple(sorted(ROLES))
DIM = len(ROLE_ORDER) * N_SPECTRUM
RAW_ROWS, RAW_COLS = 8, 32  # raw sketch: values per role
RAW_SUFFIX = ":raw"
RAW_VALUES = len(ROLE_ORDER) * RAW_ROWS * RAW_COLS
RAW_DIM = 256  # stored length: the raw values through a fixed random projection (cosines kept to about ±0.06)
# sd of the raw-sketch cosine of two unrelated models: the projection's noise, 1/sqrt(RAW_DIM), dominates (the
# raw values themselves add about 1/sqrt(RAW_VALUES)); 198 independent full-zoo pairs (seed 1) measured 0.062.
RAW_NULL_SD = 1 / math.sqrt(RAW_DIM)


@functools.cache
def _projection() -> np.ndarray:
    """One fixed Gaussian matrix [RAW_VALUES, RAW_DIM], the same in every process and version."""
    return np.random.default_rng(0x5CE7C4).standard_normal((RAW_VALUES, RAW_DIM)) / np.sqrt(RAW_DIM)


def dim_of(key: str) -> int:
    """Length of the sketch stored under ``key`` (a component, or a component + ``RAW_SUFFIX``)."""
    return RAW_DIM if key.endswith(RAW_SUFFIX) else DIM


def _raw(m: np.ndarray) -> np.ndarray:
    """First ``RAW_ROWS`` x ``RAW_COLS`` values of ``m`` (zero-padded), standardised."""
    out = np.zeros((RAW_ROWS, RAW_COLS), np.float64)
    out[: min(RAW_ROWS, m.shape[0]), : min(RAW_COLS, m.shape[1])] = m[:RAW_ROWS, :RAW_COLS]
    sd = out.std()
    return ((out - out.mean()) / sd).ravel() if sd > 0 else np.zeros(RAW_ROWS * RAW_COLS)


def _spectrum(m: np.ndarray) -> np.ndarray:
    m = m - m.mean()
    s = np.linalg.svd(m, compute_uv=False)[:N_SPECTRUM]
    out = np.zeros(N_SPECTRUM, np.float64)
    if s.size and s[0] > 0:
        out[: s.size] = s / s[0]
    return out


def sketch_model(src: ModelSource) -> dict[str, np.ndarray]:
    """component (spectral) and component + ``RAW_SUFFIX`` (raw) -> unit-length float32 sketch vector."""
    inv = build_inventory(src)
    held = {}
    for f in src.files:
        if hasattr(f, "stored_rows"):
            held.update({n: f.stored_rows(n) for n in f.tensors})
    acc: dict[str, np.ndarray] = {}
    counts: dict[str, np.ndarray] = {}
    raw_from: dict[tuple[str, str], tuple] = {}  # (component, role) -> (layer, name, entry, first rows), lowest held layer
    for e in inv.tensors:
        if not e.evidence or len(e.shape) != 2 or e.role not in ROLES or min(e.shape) < 2:
            continue
        rows = held.get(e.info.name)
        rows = np.arange(e.shape[0]) if rows is None else rows
        if len(rows) == 0:  # a layer a budgeted fingerprint does not hold
            continue
        key = (e.component, e.role)
        layer = -1 if e.layer is None else e.layer
        if key not in raw_from or (layer, e.info.name) < raw_from[key][:2]:
            raw_from[key] = (layer, e.info.name, e, np.sort(rows)[:RAW_ROWS])
        rows = rows[np.linspace(0, len(rows) - 1, min(MAX_ROWS, len(rows))).astype(int)]
        m = src.read_rows(e.info, rows)[:, :MAX_COLS].astype(np.float64)
        i = ROLE_ORDER.index(e.role)
        v = acc.setdefault(e.component, np.zeros(DIM))
        c = counts.setdefault(e.component, np.zeros(len(ROLE_ORDER)))
        v[i * N_SPECTRUM: (i + 1) * N_SPECTRUM] += _spectrum(m)
        c[i] += 1
    out = {}
    for comp, v in acc.items():
        v = v / np.repeat(np.maximum(counts[comp], 1), N_SPECTRUM)
        out[comp] = _unit(v)
    raws: dict[str, np.ndarray] = {}
    block = RAW_ROWS * RAW_COLS
    for (comp, role), (_, _, e, rows) in raw_from.items():
        v = raws.setdefault(comp + RAW_SUFFIX, np.zeros(RAW_VALUES))
        i = ROLE_ORDER.index(role)
        v[i * block: (i + 1) * block] = _raw(src.read_rows(e.info, rows).astype(np.float64))
    out.update({k: _unit(v @ _projection()) for k, v in raws.items()})
    return out


def _unit(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v)
    return (v / n if n > 0 else v).astype(np.float32)


def rank(query: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Cosine similarity of one sketch to each row of ``matrix`` (rows unit length)."""
    return matrix @ query if len(matrix) else np.empty(0, np.float32)
