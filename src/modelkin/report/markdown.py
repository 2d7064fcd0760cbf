"""The Markdown report: the same findings for a model card or an issue, figures as SVG files beside it.

``write_markdown(doc, "report.md")`` writes ``report.md`` and ``report_figures/<component>-<figure>.svg``; the
Markdown links to them by relative path, so the folder can be moved or committed as a whole.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import ModelkinError
from .templating import as_doc, content, environment, renderer_version

N_TOP = 15  # evidence tensors listed in the Markdown (the HTML and JSON list all)
N_NAMES = 8  # tensor names listed per non-evidence reason
MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|#])")


def figure_dir(path: Path) -> Path:
    return path.with_name(f"{path.stem}_figures")


def render_markdown(result, fig_dir: str) -> tuple[str, dict[str, str]]:
    """The Markdown text and its figures (file name -> SVG), linked as ``fig_dir/<name>``."""
    findings, figures = content(as_doc(result))
    top = sorted((r for r in findings.tensors if r["counted"] == "yes"), key=lambda r: r["k_log10_p"])[:N_TOP]
    env = environment(False).overlay()
    env.filters.update(md=_md, cell=_cell, code=_code, names=_names)
    text = env.get_template("report.md.j2").render(
        f=findings, figures=figures, fig_dir=fig_dir, top=top, renderer_version=renderer_version(),
    )
    text = re.sub(r"\n{3,}", "\n\n", text)
    files = {f"{fig.key}.svg": fig.svg for figs in figures.values() for fig in figs}
    return text, files


def write_markdown(result, path: str | Path) -> list[Path]:
    """Write the report and its figure files; returns every path written."""
    path = Path(path)
    folder = figure_dir(path)
    text, files = render_markdown(result, folder.name)
    written = []
    try:
        if files:
            folder.mkdir(exist_ok=True)
            for name, svg in files.items():
                (folder / name).write_text(svg, encoding="utf-8")
                written.append(folder / name)
        path.write_text(text, encoding="utf-8")
    except OSError as e:
        raise ModelkinError(f"cannot write Markdown report: {e.strerror or e}", e.filename or path) from None
    return [path, *written]


def _md(text) -> str:
    """Plain text that Markdown must not interpret (tensor names hold '_' and '*', paths hold '|')."""
    return MD_SPECIAL.sub(r"\\\1", str(text))


def _cell(text) -> str:
    return _md(text).replace("\n", " ")


def _code(text) -> str:
    text = str(text).replace("`", "'").replace("|", "\\|")
    return f"`{text}`"


def _names(names: list[str]) -> str:
    shown = ", ".join(_code(n) for n in names[:N_NAMES])
    return shown + (f" and {len(names) - N_NAMES} more" if len(names) > N_NAMES else "")
