"""Unit correspondence: which hidden unit of B plays the part of unit i of A.

Hidden units (FFN neurons, channels, experts) can be reordered without changing what a model computes, so
a copier may permute them. Given a signature per unit (a row of a weight matrix, or the unit's response to
shared anchor inputs), the correspondence is the assignment maximising the summed cosine between matched
signatures — a linear assignment problem (scipy's ``linear_sum_assignment``). B may have more units than A
(A pruned) or fewer (B pruned): the assignment is then partial.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment


@dataclass(frozen=True, slots=True)
class UnitMatch:
    a_index: np.ndarray  # matched units of A
    b_index: np.ndarray  # their partners in B
    cosine: np.ndarray  # cosine of each matched pair of signatures

    @property
    def mean_cosine(self) -> float:
        return float(self.cosine.mean()) if self.cosine.size else 0.0

    def is_identity(self) -> bool:
        return bool(np.array_equal(self.a_index, self.b_index))


def normalise_rows(x: np.ndarray) -> np.ndarray:
    x = x - x.mean()
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-30)


def match_units(sig_a: np.ndarray, sig_b: np.ndarray) -> UnitMatch:
    """Best one-to-one matching of rows of sig_a [na, m] to rows of sig_b [nb, m] by cosine."""
    g = normalise_rows(sig_a) @ normalise_rows(sig_b).T
    rows, cols = linear_sum_assignment(g, maximize=True)
    return UnitMatch(rows, cols, g[rows, cols])
