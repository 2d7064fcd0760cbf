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


# -- the lineage graph ------------------------------------------------------------------------------

# A small force layout over the graph's JSON (embedded as a data block, which CSP does not execute). The one
# script is allowed by its hash; every network request is blocked.
GRAPH_JS = r"""
(function(){
const G=JSON.parse(document.getElementById('graph-data').textContent);
const W=900,H=620,svg=document.getElementById('view'),NS='http://www.w3.org/2000/svg';
const col=['#1f77b4','#d62728','#2ca02c','#9467bd','#ff7f0e','#8c564b','#e377c2','#17becf','#bcbd22','#7f7f7f'];
const fam={};G.families.forEach((f,i)=>f.forEach(n=>fam[n]=i));
const N=G.nodes.map((n,i)=>({n:n,x:W/2+200*Math.cos(i*2.4),y:H/2+200*Math.sin(i*2.4),vx:0,vy:0}));
const at={};N.forEach(d=>at[d.n.name]=d);
const pairs={};G.edges.forEach(e=>{const k=e.a+'\u0000'+e.b;(pairs[k]=pairs[k]||[]).push(e)});
const L=Object.values(pairs).map(es=>({s:at[es[0].a],t:at[es[0].b],es:es}));
for(let it=0;it<400;it++){const a=0.1*(1-it/400);
 for(const p of N)for(const q of N){if(p===q)continue;let dx=p.x-q.x,dy=p.y-q.y,d2=dx*dx+dy*dy+1;p.vx+=a*900*dx/d2;p.vy+=a*900*dy/d2;}
 for(const l of L){let dx=l.t.x-l.s.x,dy=l.t.y-l.s.y,d=Math.sqrt(dx*dx+dy*dy)+1e-6,f=a*(d-90)/d*0.5;
  l.s.vx+=f*dx;l.s.vy+=f*dy;l.t.vx-=f*dx;l.t.vy-=f*dy;}
 for(const p of N){p.vx+=a*(W/2-p.x)*0.08;p.vy+=a*(H/2-p.y)*0.08;p.x=Math.max(30,Math.min(W-220,p.x+p.vx));p.y=Math.max(30,Math.min(H-30,p.y+p.vy));p.vx*=0.5;p.vy*=0.5;}}
function el(t,a){const e=document.createElementNS(NS,t);for(const k in a)e.setAttribute(k,a[k]);return e;}
const info=document.getElementById('info');
function show(html){info.textContent='';info.insertAdjacentHTML('beforeend',html);}
function esc(s){return String(s).replace(/[&<>"']/g,c=>'&#'+c.charCodeAt(0)+';');}
for(const l of L){const dir=l.es.find(e=>e.direction!=='unknown');
 const ln=el('line',{x1:l.s.x,y1:l.s.y,x2:l.t.x,y2:l.t.y,class:'edge'+(dir?' directed':''),'stroke-width':Math.min(8,1+Math.log10(1-Math.min(...l.es.map(e=>e.log10_p)))*1.5)});
 if(dir){ln.setAttribute('marker-end',dir.direction==='a->b'?'url(#arrow)':'');if(dir.direction==='b->a'){ln.setAttribute('x1',l.t.x);ln.setAttribute('y1',l.t.y);ln.setAttribute('x2',l.s.x);ln.setAttribute('y2',l.s.y);ln.setAttribute('marker-end','url(#arrow)');}}
 ln.addEventListener('click',()=>show('<h3>'+esc(l.s.n.name)+' \u2014 '+esc(l.t.n.name)+'</h3><table><tr><th>component</th><th>log10 p</th><th>effect (median unit cosine)</th><th>direction</th></tr>'+
  l.es.map(e=>'<tr><td>'+esc(e.component)+'</td><td>'+e.log10_p.toFixed(1)+'</td><td>'+(e.median_unit_cosine==null?'n/a':e.median_unit_cosine.toFixed(3))+'</td><td>'+esc(e.direction==='a->b'?e.a+' \u2192 '+e.b:e.direction==='b->a'?e.b+' \u2192 '+e.a:'unknown')+': '+esc(e.direction_evidence)+'</td></tr>').join('')+'</table>'));
 svg.appendChild(ln);}
for(const p of N){const g=el('g',{class:'node',transform:'translate('+p.x+','+p.y+')'});
 g.appendChild(el('circle',{r:9,fill:col[fam[p.n.name]%col.length]}));const t=el('text',{x:12,y:4});t.textContent=p.n.name;g.appendChild(t);
 g.addEventListener('click',()=>{const es=G.edges.filter(e=>e.a===p.n.name||e.b===p.n.name);
  show('<h3>'+esc(p.n.name)+'</h3><p>family '+esc(p.n.family||'unknown')+'; parameters '+esc(JSON.stringify(p.n.parameters))+'</p><p>'+es.length+' related components: '+esc([...new Set(es.map(e=>e.a===p.n.name?e.b:e.a))].join(', ')||'none')+'</p>');});
 svg.appendChild(g);}
})();
"""

GRAPH_CSS = (CSS + "svg{border:1px solid #ddd;width:100%;height:auto}.edge{stroke:#999;cursor:pointer}.edge.directed{stroke:#555}"
             ".edge:hover{stroke:#c33}.node{cursor:pointer}.node text{font-size:11px}#info{min-height:4em}")


def write_graph_html(doc: dict, dest: str | Path) -> None:
    """The graph's JSON record as one self-contained interactive page (no request leaves it)."""
    import base64
    import hashlib
    import json

    digest = base64.b64encode(hashlib.sha256(GRAPH_JS.encode("utf-8")).digest()).decode()
    csp = f"default-src 'none'; style-src 'unsafe-inline'; img-src data:; script-src 'sha256-{digest}'"
    data = json.dumps(doc, default=float).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    fams = "".join(f"<li>{_e(', '.join(f))}</li>" for f in doc["families"] if len(f) > 1)
    solo = [f[0] for f in doc["families"] if len(f) == 1]
    edges = "".join(
        f"<tr><td>{_e(e['a'])}</td><td>{_e(e['b'])}</td><td>{_e(e['component'])}</td><td>{e['log10_p']:.1f}</td>"
        f"<td>{'n/a' if e['median_unit_cosine'] is None else format(e['median_unit_cosine'], '.3f')}</td>"
        f"<td>{_e({'a->b': e['a'] + ' → ' + e['b'], 'b->a': e['b'] + ' → ' + e['a']}.get(e['direction'], 'unknown'))}"
        f" <span class=ctx>({_e(e['direction_evidence'])})</span></td></tr>" for e in doc["edges"])
    notes = "".join(f"<p class=ctx>{_e(n)}</p>" for n in doc["notes"])
    page = f"""<!doctype html><html><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{csp}"><title>modelkin lineage graph</title><style>{GRAPH_CSS}</style></head>
<body><h1>Lineage graph</h1>
<p>{doc['n_models']} models; {doc['n_compared']} of {doc['n_pairs']} pairs compared with the calibrated test;
{len(doc['edges'])} related components; {sum(len(f) > 1 for f in doc['families'])} families. Click an edge or a node.
An arrow points to the reduced side (fewer units or layers) where the weights show one; other edges have no direction.</p>{notes}
<svg id="view" viewBox="0 0 900 620" role="img" aria-label="lineage graph"><defs><marker id="arrow" viewBox="0 0 10 10" refX="18" refY="5"
markerUnits="userSpaceOnUse" markerWidth="12" markerHeight="12" orient="auto"><path d="M0,0L10,5L0,10z" fill="#555"/></marker></defs></svg>
<div id="info"></div>
<h2>Families</h2><ul>{fams or '<li>none</li>'}</ul><p>No relative in the set: {_e(', '.join(solo)) or 'none'}</p>
<h2>Related components</h2><table><tr><th>A</th><th>B</th><th>component</th><th>log10 p</th><th>effect (median unit cosine)</th><th>direction</th></tr>{edges}</table>
<script type="application/json" id="graph-data">{data}</script>
<script>{GRAPH_JS}</script></body></html>
"""
    try:
        Path(dest).write_text(page, encoding="utf-8")
    except OSError as e:
        raise ModelkinError(f"cannot write HTML graph: {e.strerror or e}", dest) from None
