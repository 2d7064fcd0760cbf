"""Index samples fixed before any value is read: the one rule every sampled test, map and read uses."""

from __future__ import annotations

import functools
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
    # A *budgeted* policy (fingerprints) also caps how many layers are read, so that what it reads is flat in
    # the model's size: per component, the same number K of layers (chosen by ``choose_layers``), K as large as
    # ``budget_bytes`` allows after the tensors outside layers and the shared-basis rows (``alignment.budget``),
    # at most ``max_layers``. Everything a budgeted compare reads, unit rows of the invariant tests included,
    # lies inside this sample. A component of at most ``whole_bytes`` is read whole, every layer.
    budget_bytes: int | None = None
    max_layers: int | None = None
    whole_bytes: int = 0

    @property
    def budgeted(self) -> bool:
        return self.budget_bytes is not None or self.max_layers is not None


DEFAULT_SAMPLE = SamplePolicy()
MAX_STABLE_BLOCKS = 1 << 16  # block indices a budgeted sample orders (taller tensors order their own count)
# What ``modelkin fingerprint`` keeps (docs/method.md, "Fingerprints"): one block of 16 rows per tensor, in as
# many layers as 14 MiB of rows allow (all the basis rows first), so a 7B model's fingerprint is about 15 MB and
# a 70B model's no larger. Components of at most 4 MiB (CNNs, small towers) are kept whole.
FINGERPRINT_SAMPLE = SamplePolicy(fraction=0.0, min_rows=16, block_rows=16, small_bytes=256 << 10,
                                  budget_bytes=14 << 20, max_layers=None, whole_bytes=4 << 20)


@functools.lru_cache(maxsize=4096)
def sample_rows(key: str, n_rows: int, n_bytes: int, policy: SamplePolicy = DEFAULT_SAMPLE) -> np.ndarray | None:
    """Rows of a tensor to read in sampled mode, or None to read it whole (read-only: the answer is cached, as
    the stages ask for it again and again, and a search asks it again for every candidate).

    Blocks of ``block_rows`` rows at positions drawn from a generator seeded by ``key`` (the tensor's
    canonical name, the same in A and B), so both models are read at the same rows.
    """
    want = max(policy.min_rows, math.ceil(policy.fraction * n_rows))
    if n_bytes <= policy.small_bytes or want >= n_rows:
        return None
    block = policy.block_rows
    n_blocks = -(-n_rows // block)
    rng = np.random.default_rng(zlib.crc32(key.encode()) ^ 0x5A3B1E)
    if policy.budgeted:  # blocks by a key-seeded order of block indices, not of the tensor's height: a wider
        # model (units appended) keeps most of the narrower one's blocks, so their sampled units overlap
        order = rng.permutation(max(n_blocks, MAX_STABLE_BLOCKS))
        chosen = np.sort(order[order < n_blocks][: -(-want // block)])
    else:
        chosen = np.sort(rng.choice(n_blocks, size=min(n_blocks, -(-want // block)), replace=False))
    rows = np.concatenate([np.arange(c * block, min(n_rows, (c + 1) * block)) for c in chosen])
    rows.setflags(write=False)
    return rows


MAX_LAYER_INDEX = 4096  # layer indices a budgeted sample orders (deeper layers come after all of these)


def choose_layers(component: str, layers: list[int], k: int) -> list[int]:
    """``k`` of a component's ``layers``, sorted, by a key-seeded order of layer indices that does not depend on
    the model's depth: two models of different depths (a pruned child) choose mostly the same indices."""
    if k >= len(layers):
        return sorted(layers)
    order = np.random.default_rng(zlib.crc32(f"layers:{component}".encode())).permutation(MAX_LAYER_INDEX)
    rank = {int(v): i for i, v in enumerate(order)}
    return sorted(sorted(layers, key=lambda x: (rank.get(x, MAX_LAYER_INDEX + x), x))[:k])


TOKEN_BLOCK = 16  # shared-basis tokens are taken in blocks of consecutive ids
MAX_BASIS_INPUTS = 256  # shared inputs (tokens, pixels) in the basis


@functools.lru_cache(maxsize=64)
def token_blocks(n: int) -> np.ndarray:
    """Key-seeded blocks of ``TOKEN_BLOCK`` consecutive positions out of n, about ``MAX_BASIS_INPUTS`` in all: a
    remote read is then a few short ranges, not hundreds of scattered rows (which a coalescing reader would turn
    into the whole embedding). Sorted; read-only (cached)."""
    n_blocks = -(-n // TOKEN_BLOCK)
    chosen = sample_indices(n_blocks, -(-MAX_BASIS_INPUTS // TOKEN_BLOCK), np.random.default_rng(zlib.crc32(b"shared-tokens")))
    out = np.concatenate([np.arange(b * TOKEN_BLOCK, min(n, (b + 1) * TOKEN_BLOCK)) for b in chosen])
    out.setflags(write=False)
    return out
