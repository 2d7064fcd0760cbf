"""Results that depend on one open model only, kept while it is open.

A search compares one query with many indexed models: what the statistics compute from the query alone (a
tensor's screening, its units' responses to an input basis) is the same in every one of those compares.
``memo(src, key, compute)`` computes it once per open source; the entries go when the source does (weak
reference), and at most ``MAX_BYTES`` of arrays per source are kept (least recently used first out).
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from typing import Callable, Hashable, TypeVar

T = TypeVar("T")
MAX_BYTES = 64 << 20  # per source: a search's query side fits; a large model's compare keeps only the latest

# Keyed by id(): a source need not be hashable. The entry is dropped when its source is collected, before
# the id can be reused.
_memos: dict[int, OrderedDict] = {}
_sizes: dict[int, int] = {}
_lock = threading.Lock()


def _drop(key: int) -> None:
    with _lock:
        _memos.pop(key, None)
        _sizes.pop(key, None)


def memo(src: object, key: Hashable, compute: Callable[[], T]) -> T:
    """``compute()``, remembered for ``src`` under ``key`` (computed again if two threads race: same value)."""
    sid = id(src)
    with _lock:
        table = _memos.get(sid)
        if table is None:
            table = _memos[sid] = OrderedDict()
            _sizes[sid] = 0
            weakref.finalize(src, _drop, sid)
        if key in table:
            table.move_to_end(key)
            return table[key]
    value = compute()
    if hasattr(value, "setflags"):  # shared between compares: nobody may write into it
        value.setflags(write=False)
    size = _size(value)
    if size > MAX_BYTES:
        return value
    with _lock:
        if key not in table:
            table[key] = value
            _sizes[sid] += size
        while _sizes[sid] > MAX_BYTES:
            _, old = table.popitem(last=False)
            _sizes[sid] -= _size(old)
    return value


def _size(value: object) -> int:
    """What an entry counts against ``MAX_BYTES``: an array's bytes, and a little for any entry."""
    return int(getattr(value, "nbytes", 0)) + 64
