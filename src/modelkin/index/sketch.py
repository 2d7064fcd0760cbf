"""Cheap sketches that prune 1-vs-N search before the calibrated compare confirms.

A sketch is one float32 vector per (model, component): for every canonical role, the normalised leading
singular values of that role's held rows, averaged over layers. Singular values do not change when a
copier permutes or rotates units or the residual stream, and move little under fine-tuning or
quantisation, so a derived model's sketch stays close to its parent's. They are NOT evidence: independently
trained models of one architecture have close sketches too. The sketch only orders candidates; every
reported relation comes from ``modelkin.compare``.
"""

from __future__ import annotations

import numpy as np

from ..inventory import build_inventory
from ..inventory.roles import ROLES
from ..sources import ModelSource

N_SPECTRUM = 8  # leading singular values kept per role
MAX_ROWS = 64  # held rows used per tensor
MAX_COLS = 512
ROLE_ORDER: tuple[str, ...] = tuple(sorted(ROLES))
DIM = len(ROLE_ORDER) * N_SPECTRUM


def _spectrum(m: np.ndarray) -> np.ndarray:
    m = m - m.mean()
    s = np.linalg.svd(m, compute_uv=False)[:N_SPECTRUM]
    out = np.zeros(N_SPECTRUM, np.float64)
    if s.size and s[0] > 0:
        out[: s.size] = s / s[0]
    return out


def sketch_model(src: ModelSource) -> dict[str, np.ndarray]:
    """component -> unit-length sketch vector (float32, length ``DIM``)."""
    inv = build_inventory(src)
    held = {}
    for f in src.files:
        if hasattr(f, "stored_rows"):
            held.update({n: f.stored_rows(n) for n in f.tensors})
    acc: dict[str, np.ndarray] = {}
    counts: dict[str, np.ndarray] = {}
    for e in inv.tensors:
        if not e.evidence or len(e.shape) != 2 or e.role not in ROLES or min(e.shape) < 2:
            continue
        rows = held.get(e.info.name)
        rows = np.arange(e.shape[0]) if rows is None else rows
        if len(rows) == 0:  # a layer a budgeted fingerprint does not hold
            continue
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
        n = np.linalg.norm(v)
        out[comp] = (v / n if n > 0 else v).astype(np.float32)
    return out


def rank(query: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Cosine similarity of one sketch to each row of ``matrix`` (rows unit length)."""
    return matrix @ query if len(matrix) else np.empty(0, np.float32)
