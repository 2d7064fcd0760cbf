"""Writing a file so that readers see the old one or the whole new one, never a part.

Every cache, index and output file modelkin writes goes through ``atomic_file``: a temporary file in the
destination's folder (same file system), renamed over the destination once complete, removed on failure.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator


@contextmanager
def atomic_file(dest: str | Path, durable: bool = False) -> Iterator[BinaryIO]:
    """A binary file to write; it replaces ``dest`` when the block ends without error.

    ``durable`` flushes it to disk before the rename (index files that must survive a crash).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, dest)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_atomic(dest: str | Path, data: bytes, durable: bool = False) -> None:
    with atomic_file(dest, durable) as fh:
        fh.write(data)
