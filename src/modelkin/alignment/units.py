"""Unit signatures: hidden units compared by direction, not magnitude.

Hidden units (FFN neurons, channels, heads, experts) are matched by the cosine between their signatures
(a row of a weight matrix, or the unit's responses to shared anchor inputs). Centring by the grand mean
and scaling each row to length 1 keeps any single large unit from dominating a sum of cosines.
"""

from __future__ import annotations

import numpy as np


def normalise_rows(x: np.ndarray) -> np.ndarray:
    """Rows (last axis) centred by the grand mean of their matrix (the last two axes), scaled to length 1; a
    stack of matrices [..., rows, features] is normalised matrix by matrix."""
    x = x - x.mean(axis=(-2, -1), keepdims=True)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-30)
