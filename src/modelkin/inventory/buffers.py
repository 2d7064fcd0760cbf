"""Generated tensors recognised by name, in any family (``_data/buffers.json``).

Rotary tables, position ids, masks and the like are computed from a formula or an index when a model is
built: two models that use the same code hold the same values without sharing any learned weight. Family
files name some of them (role ``buffer``); this table catches the rest by their last name segment, so a
``rotary_emb.cos_cached`` left in a checkpoint of a known family, or a ``pos_table`` in an unknown one,
is listed as non-evidence with the reason instead of being tested as a weight.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources

from ..errors import FormatError

WHERE = "_data/buffers.json"
KEYS = {"description", "buffers"}
ENTRY_KEYS = {"what", "names"}


def _load(data: object) -> dict[str, str]:
    if not isinstance(data, dict) or set(data) - KEYS or not isinstance(data.get("buffers"), list):
        raise FormatError(f"must be an object with the keys {sorted(KEYS)}", WHERE)
    table: dict[str, str] = {}
    for i, entry in enumerate(data["buffers"]):
        ok = isinstance(entry, dict) and set(entry) == ENTRY_KEYS and isinstance(entry["what"], str)
        if not ok or not isinstance(entry["names"], list) or not all(isinstance(n, str) and n for n in entry["names"]):
            raise FormatError(f"buffer entry {i} must have exactly 'what' (a string) and 'names' (strings)", WHERE)
        for name in entry["names"]:
            if name in table:
                raise FormatError(f"buffer name {name!r} listed twice", WHERE)
            table[name] = entry["what"]
    return table


@cache
def buffer_names() -> dict[str, str]:
    """Last name segment -> what the generated tensor is."""
    text = (resources.files("modelkin") / "_data" / "buffers.json").read_text(encoding="utf-8")
    try:
        return _load(json.loads(text))
    except json.JSONDecodeError as e:
        raise FormatError(f"invalid JSON: {e}", WHERE) from None


def buffer_reason(name: str) -> str | None:
    """Why a tensor of this name is a generated buffer, or None when its name says nothing of the kind."""
    what = buffer_names().get(name.rsplit(".", 1)[-1])
    return None if what is None else f"{what}: generated from a formula, not learned (equal in any models that use it)"
