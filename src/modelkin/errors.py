"""One exception hierarchy for modelkin.

Every error names the file it is about and says what is wrong with it, so the CLI can print it as a single
line. Each subclass also inherits the natural built-in, so callers can catch ``FileNotFoundError`` or
``ValueError`` without knowing modelkin's types.
"""

from __future__ import annotations

from pathlib import Path


class ModelkinError(Exception):
    """Base class. ``path`` is the file or folder the problem is in (may be None)."""

    exit_code = 2

    def __init__(self, message: str, path: str | Path | None = None):
        self.path = None if path is None else str(path)
        self.message = message
        super().__init__(self.one_line())

    def one_line(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class SourceNotFoundError(ModelkinError, FileNotFoundError):
    """The path does not exist, or holds no weights modelkin can read."""


class FormatError(ModelkinError, ValueError):
    """A weights file is malformed: bad header, offsets, dtype, sizes."""


class ShardIndexError(FormatError):
    """A shard index names a missing shard, or a path outside the model folder."""


class UnsupportedError(ModelkinError, NotImplementedError):
    """A valid input modelkin does not handle (yet)."""


class UsageError(ModelkinError, ValueError):
    """Bad options given to the API or CLI."""


class RemoteError(ModelkinError, ConnectionError):
    """A remote model or file could not be read as asked: HTTP errors, access, faults that persisted."""
