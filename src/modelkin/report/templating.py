"""The template environment and the content both reports share (findings and figures)."""

from __future__ import annotations

import functools
from pathlib import Path

from .findings import Figure, Findings, build_findings

TEMPLATES = Path(__file__).parent / "templates"


@functools.cache
def environment(autoescape: bool):
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=autoescape, undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )


def as_doc(result) -> dict:
    """The JSON record of a result: a dict as given, or a ComparisonResult through its JSON (one code path)."""
    if isinstance(result, dict):
        return result
    import json

    return json.loads(result.to_json())


def content(doc: dict) -> tuple[Findings, dict[str, list[Figure]]]:
    """What a report shows: the findings, and per component its figures."""
    from .figures import component_figures

    findings = build_findings(doc)
    return findings, {c.name: component_figures(doc, c.name) for c in findings.cards}


def asset(name: str) -> str:
    return (TEMPLATES / name).read_text(encoding="utf-8")


def renderer_version() -> str:
    from .. import __version__

    return __version__
