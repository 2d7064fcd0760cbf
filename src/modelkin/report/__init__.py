"""Report: a ComparisonResult for people and machines.

* ``console`` — rich tables in the terminal;
* ``html`` — one self-contained HTML file with figures (``write_html``), ``markdown`` — the same findings as
  Markdown with SVG figures beside it (``write_markdown``); both are views of the JSON record
  (``ComparisonResult.to_json()``), so a saved JSON (``load.load_result``) renders the same report;
* ``findings`` — the plain-word content both share, ``figures`` — the matplotlib figures.

Only ``console`` is imported here: jinja2 and matplotlib load when a report is written.
"""

from .console import render, render_inventory

__all__ = ["render", "render_inventory"]
