"""Options for a comparison, in one frozen record (the CLI and the API fill the same one)."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import UsageError
from .sampling import DEFAULT_SAMPLE, SamplePolicy


@dataclass(frozen=True, slots=True)
class CompareOptions:
    # Family-wise error rate: the chance, for two independently trained models, that any component is
    # called "related". Small by default because a false "related" is the costly mistake.
    alpha: float = 1e-4
    # The weakest relationship "independent" must be able to rule out: a matched-unit cosine of this size
    # would have been detected (with 95 % power) by the evidence available, or the verdict is inconclusive.
    min_effect: float = 0.1
    threads: int = 2
    components: tuple[str, ...] | None = None  # restrict to these components
    hash_files: bool = True  # sha256 of every weights file in the report
    digest_cache: bool = True  # remember digests per (path, size, mtime, inode); False re-hashes every file
    # "full" reads every byte of the compared tensors; "sampled" reads key-seeded blocks of rows of each
    # (docs/method.md); None: sampled when either model is remote, full for local models.
    read_mode: str | None = None
    sample_policy: SamplePolicy = DEFAULT_SAMPLE  # how much of each tensor a sampled read takes
    max_bytes: int | None = None  # cap on the tensor bytes (A + B) read; pairs beyond it are left out, said so
    # Jackknife intervals of a sampled pair's Pearson, cosine and rel-L2 (a second pass over its rows); False
    # leaves them out of the tensor rows (an index search, which shows verdicts and p only).
    intervals: bool = True
    revision_a: str | None = None  # Hub revision (branch, tag or commit) of A
    revision_b: str | None = None

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1:
            raise UsageError(f"alpha must lie strictly between 0 and 1, got {self.alpha}")
        if not 0 < self.min_effect < 1:
            raise UsageError(f"min_effect must lie strictly between 0 and 1, got {self.min_effect}")
        if self.read_mode not in (None, "full", "sampled"):
            raise UsageError(f"read_mode must be 'full' or 'sampled', got {self.read_mode!r}")
        if self.max_bytes is not None and self.max_bytes <= 0:
            raise UsageError(f"max_bytes must be positive, got {self.max_bytes}")
        if self.threads < 1:
            raise UsageError(f"threads must be at least 1, got {self.threads}")
