"""Index samples fixed before any value is read: the one rule every sampled test, map and read uses."""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np


def sample_indices(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """All of range(n) when n <= k, else k distinct indices drawn by ``rng``, sorted (reads stay in order)."""
    return np.arange(n) if n <= k else np.sort(rng.choice(n, size=k, replace=False))


@dataclass(frozen=True, slots=True)
class SamplePolicy:
    """How much of each tensor the sampled read mode reads: whole blocks of rows at key-seeded positions.

    Rows are the units the tests match, so a sample of rows is a smaller tensor the tests handle as they
    handle any other; contiguous blocks keep a remote read to one request per block.
    """

    fraction: float = 0.01  # of each tensor's rows
    min_rows: int = 16  # at least this many rows (the unit tests need >= 16 units)
    block_rows: int = 16  # rows per contiguous block
    small_bytes: int = 256 << 10  # tensors up to this size are read whole (a request costs more than it saves)


DEFAULT_SAMPLE = SamplePolicy()


def sample_rows(key: str, n_rows: int, n_bytes: int, policy: SamplePolicy = DEFAULT_SAMPLE) -> np.ndarray | None:
    """Rows of a tensor to read in sampled mode, or None to read it whole.

    Blocks of ``block_rows`` rows at positions drawn from a generator seeded by ``key`` (the tensor's
    canonical name, the same in A and B), so both models are read at the same rows.
    """
    want = max(policy.min_rows, math.ceil(policy.fraction * n_rows))
    if n_bytes <= policy.small_bytes or want >= n_rows:
        return None
    block = policy.block_rows
    n_blocks = -(-n_rows // block)
    rng = np.random.default_rng(zlib.crc32(key.encode()) ^ 0x5A3B1E)
    chosen = np.sort(rng.choice(n_blocks, size=min(n_blocks, -(-want // block)), replace=False))
    rows = np.concatenate([np.arange(c * block, min(n_rows, (c + 1) * block)) for c in chosen])
    return rows
