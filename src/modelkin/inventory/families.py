"""Architecture families, loaded from ``_data/architectures/*.json``.

Each file describes one family as data: which ``model_type`` values it covers, which wrapper prefixes
packagings add, and a list of rules mapping a name pattern to a canonical role and a component. A pattern
is a dotted tensor name without its final ``.weight``/``.bias`` segment, with ``{layer}`` and ``{expert}``
(and any other ``{placeholder}``) standing for integers. Loading is strict: an unknown key, role or
component is an error, so a stale or misspelt key cannot linger unnoticed.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources

from ..errors import FormatError
from .roles import ROLES

COMPONENTS = ("text", "vision", "audio", "projector", "other")
FAMILY_KEYS = {"family", "description", "model_types", "includes", "strip_prefixes", "component", "rules"}
RULE_KEYS = {"pattern", "role", "component", "transposed"}
_PLACEHOLDER = re.compile(r"\{(\w+)\}")


@dataclass(frozen=True, slots=True)
class Rule:
    family: str
    pattern: str
    role: str
    component: str
    transposed: bool  # stored as [in, out] (GPT-2 Conv1D) rather than nn.Linear's [out, in]

    @property
    def regex(self) -> re.Pattern:
        """Compiled on first use: a command that never matches names pays nothing for 500 patterns."""
        return _compile(self.pattern)


@dataclass(frozen=True, slots=True)
class Family:
    name: str
    description: str
    model_types: tuple[str, ...]
    includes: tuple[str, ...]
    strip_prefixes: tuple[str, ...]
    rules: tuple[Rule, ...]
    component: str = "other"  # where tensors of this family go when no rule names their component


@cache
def _compile(pattern: str) -> re.Pattern:
    parts = _PLACEHOLDER.split(pattern)
    # split() alternates literal text and placeholder names
    body = "".join(re.escape(p) if i % 2 == 0 else f"(?P<{p}>\\d+)" for i, p in enumerate(parts))
    return re.compile(body + r"(?:\.(?P<param>[A-Za-z_][A-Za-z0-9_]*))?")


def _load_family(name: str, data: object) -> Family:
    where = f"_data/architectures/{name}.json"
    if not isinstance(data, dict):
        raise FormatError("family file must hold a JSON object", where)
    unknown = set(data) - FAMILY_KEYS
    if unknown:
        raise FormatError(f"unknown keys {sorted(unknown)}", where)
    if data.get("family") != name:
        raise FormatError(f"'family' must equal the file name ({name!r})", where)
    default_component = data.get("component", "other")
    rules = []
    for i, raw in enumerate(data.get("rules", [])):
        if not isinstance(raw, dict) or set(raw) - RULE_KEYS or "pattern" not in raw or "role" not in raw:
            raise FormatError(f"rule {i} must have 'pattern' and 'role' and only the keys {sorted(RULE_KEYS)}", where)
        if raw["role"] not in ROLES:
            raise FormatError(f"rule {i}: unknown role {raw['role']!r}", where)
        component = raw.get("component", default_component)
        if component not in COMPONENTS:
            raise FormatError(f"rule {i}: unknown component {component!r}", where)
        if not isinstance(raw["pattern"], str):
            raise FormatError(f"rule {i}: 'pattern' must be a string", where)
        rules.append(Rule(name, raw["pattern"], raw["role"], component, bool(raw.get("transposed", False))))
    if default_component not in COMPONENTS:
        raise FormatError(f"unknown component {default_component!r}", where)
    return Family(
        name,
        data.get("description", ""),
        tuple(data.get("model_types", ())),
        tuple(data.get("includes", ())),
        tuple(sorted(data.get("strip_prefixes", ()), key=len, reverse=True)),
        tuple(rules),
        default_component,
    )


@cache
def families() -> dict[str, Family]:
    """Every family file, validated; cross-references (``includes``) checked."""
    folder = resources.files("modelkin") / "_data" / "architectures"
    found: dict[str, Family] = {}
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        if entry.name.endswith(".json"):
            name = entry.name[: -len(".json")]
            try:
                data = json.loads(entry.read_text(encoding="utf-8"))
            except json.JSONDecodeError as e:
                raise FormatError(f"invalid JSON: {e}", f"_data/architectures/{entry.name}") from None
            found[name] = _load_family(name, data)
    for fam in found.values():
        for inc in fam.includes:
            if inc not in found:
                raise FormatError(f"includes unknown family {inc!r}", f"_data/architectures/{fam.name}.json")
    return found


@cache
def by_model_type() -> dict[str, str]:
    table: dict[str, str] = {}
    for fam in families().values():
        for mt in fam.model_types:
            table[mt] = fam.name
    return table
