"""Unit signatures: hidden units compared by direction, not magnitude.

Hidden units (FFN neurons, channels, heads, experts) are matched by the cosine between their signatures
(a row of a weight matrix, or the unit's responses to shared anchor inputs). Centring by the grand mean
and scaling each row to length 1 keeps any single large unit from dominating a sum of cosines.
"""

from __future__ import annotations

import numpy as np


def normalise_rows(x: np.ndarray) -> np.ndarray:
    x = x - x.mean()
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-30)
