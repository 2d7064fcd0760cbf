"""What a tensor *is*: name, dtype, shape, the file holding it — and views cut out of stored tensors.

Where its bytes come from is the business of the file's format and transport (``weightfile``,
``transport``); later stages see only this record and ask ``ModelSource`` for rows, columns or blocks.

A *view* is a 2-D window of a stored 2-D tensor (its ``base``): rows ``row0``… and columns ``col0``…,
as when one part (q, k, v; gate, up) is cut out of a fused matrix; or a *sample*: selected rows of a
stored tensor (``gather``), as the sampled read mode hands to the tests. ``rows(r0, r1)``,
``columns(c0, c1)`` and ``gathered(rows)`` make views; reads of a view are turned into reads of its base
by ``ModelSource``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .dtypes import DType


@dataclass(frozen=True, slots=True)
class TensorInfo:
    """One tensor. ``data_offset`` is private to the format that wrote it (absolute within ``file``)."""

    name: str
    dtype: DType
    shape: tuple[int, ...]
    file: str  # name of the WeightFile holding it (its path or URL)
    data_offset: int
    n_bytes: int
    base: "TensorInfo | None" = None  # set on views: the stored tensor this is a window of
    row0: int = 0
    col0: int = 0
    gather: tuple[int, ...] | None = None  # a sample: these rows of the base, in this order
    numel: int = field(init=False)

    def __post_init__(self) -> None:
        n = 1
        for d in self.shape:
            n *= d
        object.__setattr__(self, "numel", n)

    @property
    def strided(self) -> bool:
        """A view whose rows are not contiguous in its base (a window of columns)."""
        return self.base is not None and self.shape[1:] != self.base.shape[1:]

    @property
    def stored(self) -> "TensorInfo":
        """The stored tensor whose bytes this reads (itself, unless a view)."""
        return self if self.base is None else self.base

    def rows(self, r0: int, r1: int, name: str | None = None) -> "TensorInfo":
        """Rows r0:r1 (first axis) as a tensor of their own."""
        if not 0 <= r0 <= r1 <= self.shape[0]:
            raise IndexError(f"{self.name}: rows [{r0}, {r1}) out of range {self.shape[0]}")
        return self.stored._window(self.row0 + r0, self.col0, (r1 - r0,) + self.shape[1:], name)

    @property
    def sampled(self) -> bool:
        return self.gather is not None

    def gathered(self, rows) -> "TensorInfo":
        """These rows (first axis) as a tensor of their own: a sample of the stored tensor."""
        if self.strided or self.gather is not None:
            raise ValueError(f"{self.name}: a window of columns or a sample cannot be sampled again")
        base = self.stored
        absolute = tuple(int(r) + self.row0 for r in rows)
        if absolute and (min(absolute) < self.row0 or max(absolute) >= self.row0 + self.shape[0]):
            raise IndexError(f"{self.name}: sampled rows out of range {self.shape[0]}")
        shape = (len(absolute),) + self.shape[1:]
        numel = len(absolute) * (self.numel // self.shape[0] if self.shape[0] else 0)
        n_bytes = self.dtype.n_bytes(numel)
        return TensorInfo(self.name, self.dtype, shape, self.file, self.data_offset,
                          n_bytes if n_bytes is not None else 0, base=base, gather=absolute)

    def columns(self, c0: int, c1: int, name: str | None = None) -> "TensorInfo":
        """Columns c0:c1 of a 2-D tensor as a tensor of their own (read row by row)."""
        if len(self.shape) != 2 or not 0 <= c0 <= c1 <= self.shape[1]:
            raise IndexError(f"{self.name}: columns [{c0}, {c1}) out of range {self.shape}")
        return self.stored._window(self.row0, self.col0 + c0, (self.shape[0], c1 - c0), name)

    def _window(self, row0: int, col0: int, shape: tuple[int, ...], name: str | None) -> "TensorInfo":
        numel = 1
        for d in shape:
            numel *= d
        n_bytes = self.dtype.n_bytes(numel)
        return TensorInfo(
            name=name or f"{self.name}[{row0}:{row0 + shape[0]}, {col0}:{col0 + shape[-1] if len(shape) > 1 else ''}]",
            dtype=self.dtype, shape=shape, file=self.file, data_offset=self.data_offset,
            n_bytes=n_bytes if n_bytes is not None else 0, base=self, row0=row0, col0=col0,
        )
