"""Read a saved JSON report (``modelkin compare --json``) back, checking it is one before rendering it."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import FormatError, SourceNotFoundError

# Keys the reports read (docs/schema.md); later additions are optional.
REQUIRED = {"modelkin_version": str, "a": dict, "b": dict, "verdict": str, "log10_p": (int, float),
            "alpha": (int, float), "components": dict, "tensors": list, "unmatched": list, "seconds": (int, float)}
MODEL_KEYS = ("location", "path", "n_tensors", "n_bytes", "files")
COMPONENT_KEYS = ("name", "verdict", "log10_p", "n_tensors", "n_evidence", "median_pearson", "median_cosine",
                  "median_unit_cosine", "min_detectable_unit_cosine", "decided_by", "reason", "layer_map")
TENSOR_KEYS = ("a", "b", "role", "component", "layer_a", "layer_b", "shape", "dtype_a", "dtype_b", "matched_by",
               "cosine", "pearson", "rel_l2", "identical", "evidence", "non_evidence_reason", "unit_cosine", "z",
               "log10_p", "test")
UNMATCHED_KEYS = ("side", "name", "component", "reason")


def load_result(path: str | Path) -> dict:
    """The JSON record of a comparison, as ``ComparisonResult.to_dict()`` made it."""
    p = Path(path)
    if not p.is_file():
        raise SourceNotFoundError("no such JSON report", p)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FormatError(f"not a readable JSON report: {e}", p) from None
    check_result(doc, p)
    return doc


def check_result(doc, path: str | Path | None = None) -> None:
    """Raise FormatError naming the first missing or mistyped key a report needs."""
    if not isinstance(doc, dict):
        raise FormatError("not a modelkin comparison report (the JSON is not an object)", path)
    for key, kind in REQUIRED.items():
        if not isinstance(doc.get(key), kind) or isinstance(doc.get(key), bool):
            raise FormatError(f"not a modelkin comparison report: '{key}' missing or of the wrong type", path)
    for side in ("a", "b"):
        _keys(doc[side], MODEL_KEYS, f"'{side}'", path)
    for name, comp in doc["components"].items():
        _keys(comp, COMPONENT_KEYS, f"component '{name}'", path)
    for i, t in enumerate(doc["tensors"]):
        _keys(t, TENSOR_KEYS, f"tensor record {i}", path)
        if t["component"] not in doc["components"]:
            raise FormatError(f"tensor record {i} names component '{t['component']}', which has no record", path)
    for i, u in enumerate(doc["unmatched"]):
        _keys(u, UNMATCHED_KEYS, f"unmatched record {i}", path)


def _keys(rec, keys, what: str, path) -> None:
    if not isinstance(rec, dict):
        raise FormatError(f"{what} is not an object", path)
    missing = [k for k in keys if k not in rec]
    if missing:
        raise FormatError(f"{what} lacks {', '.join(missing)}", path)
