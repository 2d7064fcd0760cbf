"""Index samples fixed before any value is read: the one rule every sampled test and map uses."""

from __future__ import annotations

import numpy as np


def sample_indices(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """All of range(n) when n <= k, else k distinct indices drawn by ``rng``, sorted (reads stay in order)."""
    return np.arange(n) if n <= k else np.sort(rng.choice(n, size=k, replace=False))
