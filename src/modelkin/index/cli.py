"""Command-line commands of the index package: ``fingerprint``, ``index add|remove|list|search``, ``audit``,
``graph``. Registered on modelkin's app by ``register``; every heavy import stays inside a command."""

from __future__ import annotations

import json
import sys
from typing import Optional

import typer

from .defaults import DEFAULT_CANDIDATES, DEFAULT_WORKERS

index_app = typer.Typer(no_args_is_help=True, help="A local index of model fingerprints: add, remove, list, search.")

DB_HELP = "Index database (default: $MODELKIN_INDEX, else ~/.cache/modelkin/index.sqlite)."


def _open(db: Optional[str]):
    from .store import Index

    return Index(db)


def fingerprint(
    model: str = typer.Argument(..., metavar="MODEL", help="A local model, a Hub id (org/name) or an https:// URL."),
    out: str = typer.Option(..., "-o", "--output", metavar="PATH.mkfp", help="Where to write the fingerprint."),
    revision: Optional[str] = typer.Option(None, "--revision", help="Hub revision (branch, tag or commit)."),
    threads: int = typer.Option(2, "--threads", help="Worker threads."),
    no_hash: bool = typer.Option(False, "--no-hash", help="Do not record the sha256 of the weights files."),
) -> None:
    """Write a model's fingerprint: the rows the sampled read mode reads, with config, vocabulary and digests."""
    from ..errors import UsageError
    from .fingerprint import make_fingerprint

    if not out.endswith(".mkfp"):
        raise UsageError(f"{out}: a fingerprint file name ends in .mkfp")
    s = make_fingerprint(model, out, revision=revision, threads=threads, hash_files=not no_hash)
    print(f"{s.path}: {s.n_bytes:,} bytes for {s.n_parameters:,} parameters "
          f"({s.n_bytes / max(s.model_bytes, 1):.2%} of the model's {s.model_bytes:,} tensor bytes; "
          f"{s.n_whole} of {s.n_tensors} tensors whole) in {s.seconds:.1f} s")


@index_app.command("add")
def index_add(
    models: list[str] = typer.Argument(..., metavar="MODEL_OR_MKFP...", help="Fingerprints (.mkfp) or models (fingerprinted first)."),
    name: Optional[str] = typer.Option(None, "--name", help="Name in the index (one model only; default: the model's location)."),
    db: Optional[str] = typer.Option(None, "--db", help=DB_HELP),
    replace: bool = typer.Option(False, "--replace", help="Replace a model of the same name."),
    revision: Optional[str] = typer.Option(None, "--revision", help="Hub revision of the models given."),
    workers: int = typer.Option(1, "--workers", help="Local processes fingerprinting models at once."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", metavar="auto|HOST:PORT",
                                              help="Fingerprint on a Ray cluster (pip install 'modelkin[scale]')."),
) -> None:
    """Add models to the index (models are fingerprinted first: in parallel with --workers or --ray-address)."""
    from ..errors import UsageError
    from .graph import add_models

    if name and len(models) > 1:
        raise UsageError("--name applies to one model at a time")
    with _open(db) as index:
        for m in (m for m in models if m.endswith(".mkfp")):
            _added(index.add(m, name=name, replace=replace))
        todo = [m for m in models if not m.endswith(".mkfp")]
        if todo:
            add_models(index, todo, names=[name] * len(todo), workers=workers, ray_address=ray_address,
                       workdir=index.path.parent, replace=replace, revision=revision, on_added=_added)


def _added(rec) -> None:
    print(f"added {rec.name} ({rec.family or 'unknown family'}, {sum(rec.parameters.values()):,} parameters)")


@index_app.command("remove")
def index_remove(name: str = typer.Argument(...), db: Optional[str] = typer.Option(None, "--db", help=DB_HELP)) -> None:
    """Remove a model from the index."""
    with _open(db) as index:
        index.remove(name)
        print(f"removed {name}")


@index_app.command("list")
def index_list(db: Optional[str] = typer.Option(None, "--db", help=DB_HELP),
               json_out: bool = typer.Option(False, "--json", help="JSON on stdout.")) -> None:
    """List the indexed models."""
    from dataclasses import asdict

    with _open(db) as index:
        models = index.models()
    if json_out:
        print(json.dumps([asdict(m) for m in models], indent=1))
        return
    for m in models:
        print(f"{m.name}\t{m.family or '-'}\t{sum(m.parameters.values()):,} params\t{m.sha256[:12]}\t{m.location or ''}")


@index_app.command("pull")
def index_pull(
    repo_id: str = typer.Argument(..., metavar="ORG/NAME", help="A published index: a Hub dataset repo (HF_ENDPOINT applies)."),
    revision: Optional[str] = typer.Option(None, "--revision", help="Branch, tag or commit of the dataset repo."),
    db: Optional[str] = typer.Option(None, "--db", help=DB_HELP),
    replace: bool = typer.Option(False, "--replace", help="Replace indexed models of the same names."),
) -> None:
    """Add a published index's fingerprints to the index (each verified against the manifest's sha256 first)."""
    from .publish import pull

    with _open(db) as index:
        recs = pull(index, repo_id, revision=revision, replace=replace)
    print(f"pulled {len(recs)} verified fingerprints from {repo_id}")


@index_app.command("push")
def index_push(
    repo_id: str = typer.Argument(..., metavar="ORG/NAME", help="The dataset repo to publish to (created if missing)."),
    db: Optional[str] = typer.Option(None, "--db", help=DB_HELP),
    private: bool = typer.Option(False, "--private", help="Create the dataset repo private."),
    to_folder: Optional[str] = typer.Option(None, "--to-folder", metavar="DIR",
                                            help="Write the published layout into DIR instead of uploading."),
) -> None:
    """Publish the index as a Hub dataset repo: fingerprints and a manifest with the sha256 of each file."""
    from pathlib import Path

    from .publish import push

    with _open(db) as index:
        where = push(index, repo_id, private=private, to_folder=Path(to_folder) if to_folder else None)
    print(f"published {repo_id}: {where}")


@index_app.command("search")
def index_search(
    model: str = typer.Argument(..., metavar="MODEL_OR_MKFP"),
    top: int = typer.Option(10, "--top", help="Show this many models."),
    candidates: int = typer.Option(DEFAULT_CANDIDATES, "--candidates",
                                   help="At most this many candidates per sketch and component, confirmed by compare."),
    db: Optional[str] = typer.Option(None, "--db", help=DB_HELP),
    json_out: Optional[str] = typer.Option(None, "--json", metavar="PATH", help="Write the result as JSON ('-': stdout)."),
    threads: int = typer.Option(DEFAULT_WORKERS, "--threads", help="Candidates confirmed at once."),
    revision: Optional[str] = typer.Option(None, "--revision"),
) -> None:
    """Which indexed models is this model derived from (or the source of)? Ranked by log10 p."""
    from .search import search

    with _open(db) as index:
        res = search(index, model, top=top, candidates=candidates, threads=threads, revision=revision)
    if json_out:
        _emit(res.to_dict(), json_out)
        if json_out == "-":
            return
    _print_hits(res)


def _emit(doc: dict, dest: str) -> None:
    text = json.dumps(doc, indent=1, default=float)
    if dest == "-":
        sys.stdout.write(text + "\n")
    else:
        with open(dest, "w", encoding="utf-8") as f:
            f.write(text + "\n")


def _print_hits(res) -> None:
    from rich.table import Table

    from ..cli import _console

    t = Table(title=f"{res.query}: {res.n_confirmed} of {res.n_indexed} indexed models compared")
    for col in ("model", "verdict", "log10 p", "components (weight evidence)", "context: config / tokenizer (not evidence)"):
        t.add_column(col)
    for h in res.hits:
        comps = ", ".join(f"{c} {x['verdict']} {x['log10_p']:.1f}" for c, x in sorted(h.components.items()))
        ctx = h.context
        vo = ctx.get("vocab_overlap")
        t.add_row(h.name, h.verdict, f"{h.log10_p:.1f}", comps,
                  f"same {len(ctx['same_config_keys'])}/{len(ctx['config_keys_compared'])} config keys; "
                  f"tokenizer {'same' if ctx['same_tokenizer'] else 'differs'}"
                  + (f", vocab overlap {vo:.0%}" if vo is not None else "")
                  + ("; claimed as base" if ctx.get("claimed_as_base") else ""))
    _console().print(t)


def audit(
    model: str = typer.Argument(..., metavar="MODEL_OR_MKFP"),
    index_db: Optional[str] = typer.Option(None, "--index", help=DB_HELP),
    json_out: Optional[str] = typer.Option(None, "--json", metavar="PATH", help="Write the audit as JSON ('-': stdout)."),
    html_out: Optional[str] = typer.Option(None, "--html", metavar="PATH", help="Write a self-contained HTML audit."),
    threads: int = typer.Option(DEFAULT_WORKERS, "--threads", help="Indexed models compared at once."),
    revision: Optional[str] = typer.Option(None, "--revision"),
) -> None:
    """Which share of the model's parameters derives from which indexed model; claimed lineage vs evidence."""
    from .search import audit as run_audit

    with _open(index_db) as index:
        doc = run_audit(index, model, threads=threads, revision=revision)
    if json_out:
        _emit(doc, json_out)
    if html_out:
        from .html import write_audit_html

        write_audit_html(doc, html_out)
    if json_out != "-":
        for line in audit_lines(doc):
            print(line)


def audit_lines(doc: dict) -> list[str]:
    out = [f"{doc['query']}: {doc['parameters']:,} parameters, compared with {doc['n_compared']} of {doc['n_indexed']} indexed models"]
    for c in doc["components"]:
        head = f"  {c['component']}: {c['parameters']:,} params ({c['share']:.0%})"
        if c["derived_from"]:
            d = c["derived_from"][0]
            more = f" (and {len(c['derived_from']) - 1} more)" if len(c["derived_from"]) > 1 else ""
            out.append(f"{head}: derived from {d['name']}, log10 p {d['log10_p']:.1f}{more}")
        else:
            out.append(f"{head}: no relative among {doc['n_indexed']} indexed models")
    cl = doc["claims"]
    out.append(f"  claimed base_model: {', '.join(cl['base_model']) or 'none'}; license: {cl['license'] or 'not stated'}")
    if cl["claimed_but_not_found"]:
        out.append(f"  claimed but not found in the weights: {', '.join(cl['claimed_but_not_found'])}")
    if cl["claimed_not_indexed"]:
        out.append(f"  claimed parents not in the index (cannot be checked): {', '.join(cl['claimed_not_indexed'])}")
    if cl["found_but_not_claimed"]:
        out.append(f"  found in the weights but not claimed: {', '.join(cl['found_but_not_claimed'])}")
    return out


def graph(
    source: str = typer.Argument(..., metavar="DB|DIR", help="An index database, or a folder of fingerprints (.mkfp) and models."),
    out: list[str] = typer.Option(..., "-o", "--output", metavar="graph.html|graph.json", help="Where to write the graph (repeatable)."),
    candidates: int = typer.Option(32, "--candidates", help="Nearest sketches per model and component whose pairs are confirmed."),
    workers: int = typer.Option(1, "--workers", help="Local processes confirming pairs (and fingerprinting a folder's models)."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", metavar="auto|HOST:PORT",
                                              help="Run on a Ray cluster (pip install 'modelkin[scale]')."),
) -> None:
    """The lineage graph: all pairs kept by the sketch, confirmed by compare; related components as edges, families."""
    import tempfile
    from pathlib import Path

    from ..errors import UsageError
    from .graph import build_graph, index_folder
    from .html import write_graph_html

    for o in out:
        if not o.endswith((".html", ".json")):
            raise UsageError(f"{o}: the graph is written as .html or .json")
    src = Path(source)
    if not src.exists():
        raise UsageError(f"{source}: no such index or folder")
    with tempfile.TemporaryDirectory(prefix="modelkin-graph-") as work:
        if src.is_dir():
            from .store import Index

            index = Index(Path(work) / "index.sqlite")
            index_folder(src, index, workers=workers, ray_address=ray_address)
        else:
            index = _open(str(src))
        with index:
            g = build_graph(index, candidates=candidates, workers=workers, ray_address=ray_address)
    doc = g.to_dict()
    for o in out:
        if o.endswith(".json"):
            _emit(doc, o)
        else:
            write_graph_html(doc, o)
    print(f"{len(g.nodes)} models, {g.n_compared} of {g.n_pairs} pairs compared, {len(g.edges)} related components, "
          f"{sum(len(f) > 1 for f in g.families)} families ({g.seconds:.1f} s, {g.engine})")
    for f in g.families:
        if len(f) > 1:
            print("  family: " + ", ".join(f))


def register(app: typer.Typer) -> None:
    app.command("graph")(graph)
    app.command("fingerprint")(fingerprint)
    app.command("audit")(audit)
    app.add_typer(index_app, name="index")
