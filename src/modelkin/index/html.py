"""The audit as one self-contained HTML page: inline CSS, no script, a Content-Security-Policy that blocks
every network request. A view of the audit's JSON record only."""

from __future__ import annotations

import html
from pathlib import Path

from ..errors import ModelkinError

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
CSS = ("body{font:14px/1.45 system-ui,sans-serif;max-width:60em;margin:2em auto;color:#222}"
       "table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #ddd;padding:.3em .5em;text-align:left}"
       ".bar{background:#c33;height:.8em}.none{background:#4a7;height:.8em}.ctx{color:#666}")


def _e(x) -> str:
    return html.escape(str(x))


def write_audit_html(doc: dict, dest: str | Path) -> None:
    rows = []
    for c in doc["components"]:
        d = c["derived_from"]
        what = (f"derived from <b>{_e(d[0]['name'])}</b>, log10 p {d[0]['log10_p']:.1f}"
                + (f" (and {len(d) - 1} more: {', '.join(_e(x['name']) for x in d[1:])})" if len(d) > 1 else "")
                if d else f"no relative among {doc['n_indexed']} indexed models")
        bar = f'<div class="{"bar" if d else "none"}" style="width:{100 * c["share"]:.1f}%"></div>'
        rows.append(f"<tr><td>{_e(c['component'])}</td><td>{c['parameters']:,}</td><td>{c['share']:.1%}{bar}</td><td>{what}</td></tr>")
    cl = doc["claims"]
    claims = "".join(f"<li>{k.replace('_', ' ')}: {_e(', '.join(v)) or 'none'}</li>" for k, v in cl.items() if isinstance(v, list))
    hits = "".join(
        f"<tr><td>{_e(h['name'])}</td><td>{_e(h['verdict'])}</td><td>{h['log10_p']:.1f}</td>"
        f"<td class=ctx>same config keys {len(h['context']['same_config_keys'])}/{len(h['context']['config_keys_compared'])}; "
        f"tokenizer {'same' if h['context']['same_tokenizer'] else 'differs'}</td></tr>" for h in doc["hits"])
    page = f"""<!doctype html><html><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}"><title>modelkin audit: {_e(doc['query'])}</title><style>{CSS}</style></head>
<body><h1>Audit of {_e(doc['query'])}</h1>
<p>{doc['parameters']:,} parameters; {doc['derived_share']:.1%} derive from an indexed model, {doc['no_relative_share']:.1%} have no
indexed relative ({doc['n_compared']} of {doc['n_indexed']} indexed models compared with the calibrated test).</p>
<table><tr><th>component</th><th>parameters</th><th>share</th><th>weight evidence</th></tr>{''.join(rows)}</table>
<h2>Claimed lineage</h2><p>license: {_e(cl.get('license') or 'not stated')}</p><ul>{claims}</ul>
<h2>Models compared</h2><p class=ctx>Config and tokenizer similarity is context, not evidence.</p>
<table><tr><th>model</th><th>verdict</th><th>log10 p</th><th>context</th></tr>{hits}</table></body></html>
"""
    try:
        Path(dest).write_text(page, encoding="utf-8")
    except OSError as e:
        raise ModelkinError(f"cannot write HTML audit: {e.strerror or e}", dest) from None
