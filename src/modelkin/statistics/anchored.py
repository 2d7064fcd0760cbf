"""The anchored evidence test: unit matching in a basis both models share, immune to residual rotations.

A copier can rotate (or permute, or rescale) the residual stream of a model without changing what it
computes: every matrix that reads the stream is multiplied by the same orthogonal Q. The same-index test
then sees nothing. But some inputs are indexed identically in both models — token ids for a text model,
pixel positions for a vision tower — and an input pushed through the embedding and then a layer gives a
response in which Q cancels: (E Qᵀ)(W Qᵀ)ᵀ = E Wᵀ.

So for each matrix W that reads the residual stream with exchangeable output units (the FFN's gate/up
rows), the fingerprint of unit i is its response to a fixed sample of anchor inputs: column i of
E_S Wᵀ. Those fingerprints are compared unit for unit with the same permutation null (and normal tail) as
``unit_test`` — FFN units are exchangeable between independently trained models, so the null holds; a
rotation, permutation or rescaling of the residual stream leaves it unchanged. If the anchor itself was
copied but the layers were not, the units of W are still independent, so a shared embedding alone does
not create false evidence here.
"""

from __future__ import annotations

import zlib

import numpy as np

from ..alignment import TensorPair, logical_shape
from ..sampling import sample_indices
from ..sources import ModelSource
from .unit_test import MAX_UNITS, UnitTest, unit_permutation_test

ANCHOR_ROLES = ("embedding", "patch_embed")
READER_ROLES = frozenset({"mlp.gate", "mlp.up"})  # rows are FFN units: exchangeable, no RoPE structure
MAX_ANCHOR_INPUTS = 512


class Anchor:
    """A sample of anchor inputs embedded by A and by B: arrays [n_inputs, hidden] in each model's basis."""

    def __init__(self, src_a: ModelSource, src_b: ModelSource, pair: TensorPair):
        self.pair = pair
        shape = pair.shape
        rng = np.random.default_rng(zlib.crc32(pair.a.key.encode()) ^ 0x5EED)
        if pair.a.role == "embedding":  # [vocab, hidden]: rows are token ids (shared tokens if re-mapped)
            n = shape[0]
            rows = sample_indices(n, MAX_ANCHOR_INPUTS, rng)
            rows_a, rows_b = (pair.rows[0][rows], pair.rows[1][rows]) if pair.rows is not None else (rows, rows)
            self.a = src_a.read_rows(pair.a.info, rows_a).astype(np.float64)
            self.b = src_b.read_rows(pair.b.info, rows_b).astype(np.float64)
        else:  # patch embedding [hidden, channels x pixels]: its input axis is the shared basis
            self.a = src_a.read(pair.a.info).reshape(shape[0], -1).T.astype(np.float64)
            self.b = src_b.read(pair.b.info).reshape(shape[0], -1).T.astype(np.float64)
        self.hidden = self.a.shape[1]


def find_anchor(src_a: ModelSource, src_b: ModelSource, pairs: list[TensorPair]) -> Anchor | None:
    for role in ANCHOR_ROLES:
        for p in pairs:
            if p.a.role == role and p.b.role == role and not p.transpose_b and len(p.a.shape) >= 2:
                return Anchor(src_a, src_b, p)
    return None


def anchored_evidence(src_a: ModelSource, src_b: ModelSource, anchor: Anchor, pair: TensorPair) -> UnitTest | None:
    if pair.a.role not in READER_ROLES or pair.a.transposed or pair.b.transposed:
        return None
    shape = logical_shape(pair.a)
    if len(shape) != 2 or shape[1] != anchor.hidden:
        return None
    rng = np.random.default_rng(zlib.crc32(pair.a.key.encode()) ^ 0xA7C)
    units = sample_indices(shape[0], MAX_UNITS, rng)
    wa = src_a.read_rows(pair.a.info, units).astype(np.float64)
    wb = src_b.read_rows(pair.b.info, units).astype(np.float64)
    # Unit fingerprints: responses of each sampled unit to the anchor inputs, [units, inputs].
    return unit_permutation_test(wa @ anchor.a.T, wb @ anchor.b.T, axis=0)
