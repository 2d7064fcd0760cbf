"""Command line: ``modelkin compare``, ``modelkin report``, ``modelkin inspect``, ``modelkin zoo build``, ``modelkin bench``.

Every ModelkinError becomes one line on stderr (``modelkin: error: <file>: <problem>``) and exit code 2;
no traceback reaches the user for bad input. Set MODELKIN_DEBUG=1 to see tracebacks of internal errors.

Exit codes (one table, also in the README):

    0    done (for compare/report: the verdict did not match --fail-on)
    1    modelkin bench: a detection or calibration check failed
    2    bad input or usage: unreadable model or JSON report, unknown option, missing argument
    3    internal error (a bug; MODELKIN_DEBUG=1 shows the traceback)
    4    --fail-on: the verdict matched one of the verdicts given
    130  interrupted

4 is a code of its own so a pipeline can tell "the verdict I gate on" from a failure: 1 is also what Python
itself exits with when it crashes before modelkin starts.
"""

from __future__ import annotations

import json
import os
import sys
from enum import Enum
from typing import Optional

import typer
from rich.console import Console

from .errors import ModelkinError, UsageError

EXIT_OK, EXIT_CHECK_FAILED, EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_FAIL_ON, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 130


class Verdict(str, Enum):
    related = "related"
    independent = "independent"
    inconclusive = "inconclusive"


FAIL_ON_HELP = (f"Exit with code {EXIT_FAIL_ON} when the overall verdict is VERDICT: related, independent or "
                "inconclusive (repeatable), e.g. to gate a CI job or a model hub upload.")

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Audit the provenance of neural-network models from their weights.")
zoo_app = typer.Typer(no_args_is_help=True, help="Build the ground-truth model zoo (needs the 'zoo' extra: torch).")
app.add_typer(zoo_app, name="zoo")


def _register_index_commands() -> None:
    from .index.cli import register

    register(app)


_register_index_commands()


def _console(stderr: bool = False) -> Console:
    """A terminal keeps its width; piped or captured output gets room for the tables."""
    probe = Console(stderr=stderr)
    return probe if probe.is_terminal else Console(stderr=stderr, width=150)


_SIZE_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def parse_size(text: str) -> int:
    """'500MB', '2GiB', '1e9' -> bytes."""
    import re

    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][0-9]+)?)\s*([A-Za-z]*)\s*", text)
    if not m or m.group(2).upper() not in _SIZE_UNITS:
        raise ModelkinError(f"--max-bytes: cannot read {text!r} as a size (e.g. 500MB, 2GiB)")
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2).upper()])


def _write_json(text: str, dest: str) -> None:
    if dest == "-":
        sys.stdout.write(text + "\n")
    else:
        try:
            with open(dest, "w", encoding="utf-8") as f:
                f.write(text + "\n")
        except OSError as e:
            raise ModelkinError(f"cannot write JSON report: {e.strerror or e}", dest) from None


def _check_dest(dest: str | None, what: str) -> None:
    """Fail before the work when an output's folder does not exist."""
    if dest and dest != "-" and not os.path.isdir(os.path.dirname(os.path.abspath(dest))):
        raise ModelkinError(f"cannot write {what}: its folder does not exist", dest)


def _write_reports(doc: dict, html_out: str | None, md_out: str | None, quiet: bool) -> None:
    """The HTML and Markdown views of a comparison's JSON record (the one source of both)."""
    if html_out:
        from .report.html import write_html

        write_html(doc, html_out)
        if not quiet:
            print(f"modelkin: wrote HTML report {html_out}", file=sys.stderr)
    if md_out:
        from .report.markdown import write_markdown

        written = write_markdown(doc, md_out)
        if not quiet:
            extra = f" and {len(written) - 1} figure files in {written[1].parent}" if len(written) > 1 else ""
            print(f"modelkin: wrote Markdown report {md_out}{extra}", file=sys.stderr)


def _gate(verdict: str, fail_on: list[Verdict] | None, quiet: bool) -> None:
    if fail_on and verdict in {v.value for v in fail_on}:
        if not quiet:
            print(f"modelkin: verdict is {verdict} (--fail-on {verdict}): exit code {EXIT_FAIL_ON}", file=sys.stderr)
        raise typer.Exit(EXIT_FAIL_ON)


@app.command()
def compare(
    ctx: typer.Context,
    a: str = typer.Argument(..., metavar="A", help="Model A: a weights file (.safetensors, .gguf, .bin, .pt, .pth, .onnx), a model folder, a Hub id (org/name; org/name:Q4_K_M or org/name/path/in/repo.gguf picks one file) or an https:// URL."),
    b: str = typer.Argument(..., metavar="B", help="Model B."),
    json_out: Optional[str] = typer.Option(None, "--json", metavar="PATH", help="Write the JSON report to PATH ('-' for stdout)."),
    html_out: Optional[str] = typer.Option(None, "--html", metavar="PATH", help="Write the self-contained HTML report to PATH."),
    md_out: Optional[str] = typer.Option(None, "--md", metavar="PATH", help="Write the Markdown report to PATH, its SVG figures in NAME_figures/ beside it."),
    fail_on: Optional[list[Verdict]] = typer.Option(None, "--fail-on", metavar="VERDICT", help=FAIL_ON_HELP),
    component: Optional[list[str]] = typer.Option(None, "--component", help="Only this component (repeatable): text, vision, audio, projector, other."),
    threads: int = typer.Option(2, "--threads", help="Worker threads."),
    alpha: float = typer.Option(1e-4, "--alpha", help="Family-wise false-positive rate for 'related'."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No table, progress bar or messages; errors and the exit code only."),
    no_hash: bool = typer.Option(False, "--no-hash", help="Skip the sha256 of the weights files."),
    rehash: bool = typer.Option(False, "--rehash", help="Hash every weights file again instead of trusting the digest cache."),
    revision_a: Optional[str] = typer.Option(None, "--revision-a", help="Hub revision of A (branch, tag or commit)."),
    revision_b: Optional[str] = typer.Option(None, "--revision-b", help="Hub revision of B."),
    sample: Optional[bool] = typer.Option(None, "--sample/--full", help="Read key-seeded row blocks of each tensor (default for remote models) or every byte (default for local ones)."),
    max_bytes: Optional[str] = typer.Option(None, "--max-bytes", help="Cap the tensor bytes read (A + B), e.g. 500MB; what is left out is reported."),
) -> None:
    """Compare two models and judge, per component, whether their weights are related."""
    from dataclasses import replace

    from .api import compare as run_compare
    from .options import CompareOptions

    options = CompareOptions(
        alpha=alpha, threads=threads, components=tuple(component) if component else None, hash_files=not no_hash,
        digest_cache=not rehash, read_mode=None if sample is None else ("sampled" if sample else "full"),
        max_bytes=None if max_bytes is None else parse_size(max_bytes), revision_a=revision_a, revision_b=revision_b,
    )
    _check_dest(json_out, "JSON report")
    _check_dest(html_out, "HTML report")
    _check_dest(md_out, "Markdown report")
    console = _console(stderr=json_out == "-")
    show = not quiet and json_out != "-"
    if show:
        from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

        with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                      TimeRemainingColumn(), console=console, transient=True) as bar:
            task = bar.add_task("reading", total=None)
            result = run_compare(a, b, options=options, progress=lambda done, total: bar.update(task, completed=done, total=total))
    else:
        result = run_compare(a, b, options=options)
    result = replace(result, command=(ctx.obj or {}).get("argv"))
    if show:
        from .report import render

        render(result, console)
    text = result.to_json()
    if json_out:
        _write_json(text, json_out)
    if html_out or md_out:
        _write_reports(json.loads(text), html_out, md_out, quiet or json_out == "-")
    _gate(result.verdict, fail_on, quiet)


@app.command()
def report(
    result_json: str = typer.Argument(..., metavar="RESULT.json", help="A JSON report written by 'modelkin compare --json'."),
    html_out: Optional[str] = typer.Option(None, "--html", metavar="PATH", help="Write the self-contained HTML report to PATH."),
    md_out: Optional[str] = typer.Option(None, "--md", metavar="PATH", help="Write the Markdown report to PATH, its SVG figures in NAME_figures/ beside it."),
    fail_on: Optional[list[Verdict]] = typer.Option(None, "--fail-on", metavar="VERDICT", help=FAIL_ON_HELP),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No messages; errors and the exit code only."),
) -> None:
    """Render a saved JSON report as HTML and/or Markdown (the same report compare --html/--md writes)."""
    from .report.load import load_result

    _check_dest(html_out, "HTML report")
    _check_dest(md_out, "Markdown report")
    doc = load_result(result_json)
    if not html_out and not md_out and not fail_on:
        raise UsageError("give --html PATH and/or --md PATH (or --fail-on to gate on the saved verdict)")
    _write_reports(doc, html_out, md_out, quiet)
    _gate(doc["verdict"], fail_on, quiet)


@app.command()
def inspect(
    a: str = typer.Argument(..., help="A weights file, a model folder, a Hub id (org/name, org/name:QUANT, org/name/path/in/repo) or an https:// URL."),
    json_out: Optional[str] = typer.Option(None, "--json", metavar="PATH", help="Write the inventory as JSON to PATH ('-' for stdout)."),
    revision: Optional[str] = typer.Option(None, "--revision", help="Hub revision (branch, tag or commit)."),
    tensors: bool = typer.Option(False, "--tensors", help="Also list every tensor with its stored type and shape."),
) -> None:
    """List what a model holds (from headers alone): family, parameters per component and role, unassigned tensors,
    and per file its format, stored types (quantisations) and the metadata read from it."""
    from collections import Counter

    from .inventory import build_inventory
    from .sources import open_model

    with open_model(a, revision) as src:
        inv = build_inventory(src)
        dtypes = dict(Counter(t.info.dtype.code for t in inv.tensors).most_common())
        if json_out:
            doc = {
                "location": src.location,
                "revision": src.revision,
                "family": inv.family,
                "dtypes": dtypes,
                "summary": inv.summary(),
                "tensors": [
                    {"name": t.name, "role": t.role, "component": t.component, "layer": t.layer, "expert": t.expert,
                     "shape": list(t.shape), "dtype": t.info.dtype.code, "evidence": t.evidence,
                     "non_evidence_reason": t.non_evidence_reason}
                    for t in inv.tensors
                ],
                "unassigned": list(inv.unassigned),
                "files": [{"name": src.relative_name(f), "format": f.format_name, "metadata_used": f.metadata_used()} for f in src.files],
            }
            _write_json(json.dumps(doc, indent=2), json_out)
        if json_out != "-":
            from .report import render_inventory

            console = _console()
            render_inventory(inv.summary(), inv.family, list(inv.unassigned), src.location, console)
            _print_files(src, inv if tensors else None, console)


def _print_files(src, inv, console: Console) -> None:
    """Per weights file: format, stored types with tensor counts, metadata used; optionally every tensor."""
    from collections import Counter

    for f in src.files:
        types = Counter(t.dtype.code for t in f.tensors.values())
        used = f.metadata_used()
        about = "" if used else ", ".join(f"{k} {v}" for k, v in f.metadata.items() if isinstance(v, (str, int, float)) and len(str(v)) <= 80)
        console.print(f"{src.relative_name(f)}: format {f.format_name}" + (f" ({about})" if about else "") + "; stored types: "
                      + ", ".join(f"{code} ({n})" for code, n in types.most_common()), markup=False, highlight=False)
        for key, value in used.items():
            console.print(f"  metadata {key} = {value}", markup=False, highlight=False)
    for t in inv.tensors if inv is not None else ():
        console.print(f"  {t.name}  {t.info.dtype.code}  {list(t.shape)}  {t.role}", markup=False, highlight=False)


@zoo_app.command("build")
def zoo_build(
    out_dir: str = typer.Argument(..., help="Folder to build the zoo in (resumable)."),
    size: str = typer.Option("smoke", "--size", help="smoke (minutes, used by tests), full (>= 150 pairs), "
                             "hard (long-trained, distilled and shared-embedding hard negatives) or null "
                             "(300 cheap independent pairs)."),
    seed: int = typer.Option(0, "--seed", help="A fresh instance of the zoo: every training seed shifted (0: the default)."),
    jobs: int = typer.Option(1, "--jobs", "-j", help="Build models in this many processes (each once its parents exist)."),
) -> None:
    """Train the zoo of related and independent model pairs (needs torch)."""
    try:
        from .zoo.build import BUILD_SIZES, zoo_build_command
    except ImportError as e:
        raise ModelkinError(f"the zoo needs the 'zoo' extra (pip install 'modelkin[zoo]'): {e}") from None
    if size not in BUILD_SIZES:
        raise ModelkinError(f"--size must be one of {', '.join(BUILD_SIZES)}, not {size!r}")
    if seed < 0:
        raise ModelkinError(f"--seed must be 0 or more, not {seed}")
    if jobs < 1:
        raise ModelkinError(f"--jobs must be 1 or more, not {jobs}")
    raise typer.Exit(zoo_build_command(out_dir, size, seed, jobs))


@app.command()
def bench(
    zoo_dir: str = typer.Argument(..., help="A zoo built by 'modelkin zoo build'."),
    json_out: Optional[str] = typer.Option(None, "--json", metavar="PATH", help="Write every pair's scores as JSON."),
    threads: int = typer.Option(2, "--threads", help="Threads per pair."),
    jobs: int = typer.Option(1, "--jobs", "-j", help="Pairs run at once, each in its own process."),
    fingerprints: bool = typer.Option(False, "--fingerprints", help="Also fingerprint every model: agreement of "
                                      "fingerprint compares with model compares, and search recall."),
) -> None:
    """Score modelkin and the public baselines on every pair of a zoo."""
    from .bench import run_bench

    if jobs < 1:
        raise ModelkinError(f"--jobs must be 1 or more, not {jobs}")
    raise typer.Exit(run_bench(zoo_dir, json_out=json_out, threads=threads, jobs=jobs, fingerprints=fingerprints))


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        # Without standalone mode the parser returns a command's typer.Exit code instead of raising it.
        code = app(args=args, prog_name="modelkin", standalone_mode=False, obj={"argv": ["modelkin", *args]})
        return code if isinstance(code, int) else EXIT_OK
    except ModelkinError as e:
        print(f"modelkin: error: {e.one_line()}", file=sys.stderr)
        return e.exit_code
    except typer.Exit as e:
        return e.exit_code
    except (typer.Abort, KeyboardInterrupt):
        print("modelkin: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:  # usage errors from the command-line parser, and genuine bugs
        if isinstance(e, _parser_errors()):
            if hasattr(e, "show"):
                e.show()  # the usage line and the problem, as the parser words them
            else:
                print(f"modelkin: error: {e}", file=sys.stderr)
            return EXIT_BAD_INPUT
        if os.environ.get("MODELKIN_DEBUG"):
            raise
        print(f"modelkin: internal error: {type(e).__name__}: {e} (set MODELKIN_DEBUG=1 for the traceback)", file=sys.stderr)
        return EXIT_INTERNAL


def _parser_errors() -> tuple[type, ...]:
    """The parser's exception types: recent typer raises its own (typer.TyperException, from its vendored
    click); older typer raises click's ClickException."""
    kinds: list[type] = []
    if isinstance(getattr(typer, "TyperException", None), type):
        kinds.append(typer.TyperException)
    try:
        import click

        kinds.append(click.exceptions.ClickException)
    except ImportError:
        pass
    return tuple(kinds)


def entry() -> None:
    sys.exit(main())
