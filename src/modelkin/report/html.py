"""The HTML report: one self-contained file (inline CSS, script and SVG figures) that makes no network request.

A Content-Security-Policy in the page blocks every fetch (scripts only by the hash of the one inline script),
so even a hostile tensor name — escaped anyway — could not make the browser load anything.
"""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

from ..errors import ModelkinError
from .templating import as_doc, asset, content, environment, renderer_version


def render_html(result) -> str:
    """The report of a comparison: its JSON record (a saved report, loaded) or a ComparisonResult."""
    from markupsafe import Markup

    findings, figures = content(as_doc(result))
    env = environment(True).overlay()
    env.filters["wbr"] = _wbr
    script = asset("report.js")
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode()
    return env.get_template("report.html.j2").render(
        f=findings, figures=figures, css=Markup(asset("report.css")), script=Markup(script),
        script_hash=f"sha256-{digest}", method=Markup(_method_notes()), renderer_version=renderer_version(),
        num=_num,
    )


def write_html(result, path: str | Path) -> None:
    text = render_html(result)
    try:
        Path(path).write_text(text, encoding="utf-8")
    except OSError as e:
        raise ModelkinError(f"cannot write HTML report: {e.strerror or e}", path) from None


def _wbr(name):
    """A tensor name, escaped, that may wrap after each dot rather than mid-word."""
    from markupsafe import Markup, escape

    return escape(name).replace(".", Markup(".<wbr>"))


def _num(x) -> str:
    """A sort key for a data attribute: the number as JSON wrote it, or empty when missing."""
    return "" if x is None else repr(float(x))


def _method_notes() -> str:
    """docs/method.md (shipped with the templates) as HTML, its title dropped and headings moved down one level."""
    from markdown_it import MarkdownIt

    text = asset("method.md")
    if text.startswith("# "):
        text = text.split("\n", 1)[1]
    html = MarkdownIt("commonmark", {"html": False}).enable("table").render(text)
    return html.replace("<h2>", "<h3>").replace("</h2>", "</h3>")
