"""Command line: ``modelkin compare``, ``modelkin inspect``, ``modelkin zoo build``, ``modelkin bench``.

Every ModelkinError becomes one line on stderr (``modelkin: error: <file>: <problem>``) and exit code 2;
no traceback reaches the user for bad input. Set MODELKIN_DEBUG=1 to see tracebacks of internal errors.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Optional

import typer
from rich.console import Console

from .errors import ModelkinError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Audit the provenance of neural-network models from their weights.")
zoo_app = typer.Typer(no_args_is_help=True, help="Build the ground-truth model zoo (needs the 'zoo' extra: torch).")
app.add_typer(zoo_app, name="zoo")


def _console(stderr: bool = False) -> Console:
    """A terminal keeps its width; piped or captured output gets room for the tables."""
    probe = Console(stderr=stderr)
    return probe if probe.is_terminal else Console(stderr=stderr, width=150)


def _write_json(text: str, dest: str) -> None:
    if dest == "-":
        sys.stdout.write(text + "\n")
    else:
        try:
            with open(dest, "w", encoding="utf-8") as f:
                f.write(text + "\n")
        except OSError as e:
            raise ModelkinError(f"cannot write JSON report: {e.strerror or e}", dest) from None


@app.command()
def compare(
    a: str = typer.Argument(..., help="Model A: a .safetensors file or a model folder."),
    b: str = typer.Argument(..., help="Model B."),
    json_out: Optional[str] = typer.Option(None, "--json", help="Write the JSON report to PATH ('-' for stdout)."),
    component: Optional[list[str]] = typer.Option(None, "--component", help="Only this component (repeatable): text, vision, audio, projector, other."),
    threads: int = typer.Option(2, "--threads", help="Worker threads."),
    alpha: float = typer.Option(1e-4, "--alpha", help="Family-wise false-positive rate for 'related'."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No table or progress bar."),
    no_hash: bool = typer.Option(False, "--no-hash", help="Skip the sha256 of the weights files."),
    rehash: bool = typer.Option(False, "--rehash", help="Hash every weights file again instead of trusting the digest cache."),
) -> None:
    """Compare two models and judge, per component, whether their weights are related."""
    from .api import compare as run_compare
    from .options import CompareOptions

    options = CompareOptions(alpha=alpha, threads=threads, components=tuple(component) if component else None, hash_files=not no_hash, digest_cache=not rehash)
    if json_out and json_out != "-" and not os.path.isdir(os.path.dirname(os.path.abspath(json_out))):
        raise ModelkinError("cannot write JSON report: its folder does not exist", json_out)  # fail before the work
    console = _console(stderr=json_out == "-")
    show = not quiet and json_out != "-"
    if show:
        from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

        with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                      TimeRemainingColumn(), console=console, transient=True) as bar:
            task = bar.add_task("comparing", total=None)
            result = run_compare(a, b, options=options, progress=lambda done, total: bar.update(task, completed=done, total=total))
    else:
        result = run_compare(a, b, options=options)
    if show:
        from .report import render

        render(result, console)
    if json_out:
        _write_json(result.to_json(), json_out)


@app.command()
def inspect(
    a: str = typer.Argument(..., help="A .safetensors file or a model folder."),
    json_out: Optional[str] = typer.Option(None, "--json", help="Write the inventory as JSON to PATH ('-' for stdout)."),
) -> None:
    """List what a model holds: family, parameters per component and role, unassigned tensors."""
    from .inventory import build_inventory
    from .sources import open_model

    with open_model(a) as src:
        inv = build_inventory(src)
        if json_out:
            doc = {
                "location": src.location,
                "family": inv.family,
                "summary": inv.summary(),
                "tensors": [
                    {"name": t.name, "role": t.role, "component": t.component, "layer": t.layer, "expert": t.expert,
                     "shape": list(t.shape), "dtype": t.info.dtype.code, "evidence": t.evidence,
                     "non_evidence_reason": t.non_evidence_reason}
                    for t in inv.tensors
                ],
                "unassigned": list(inv.unassigned),
            }
            _write_json(json.dumps(doc, indent=2), json_out)
        if json_out != "-":
            from .report import render_inventory

            render_inventory(inv.summary(), inv.family, list(inv.unassigned), src.location, _console())


@zoo_app.command("build")
def zoo_build(
    out_dir: str = typer.Argument(..., help="Folder to build the zoo in (resumable)."),
    size: str = typer.Option("smoke", "--size", help="smoke (minutes, used by tests), full (>= 150 pairs), "
                             "hard (long-trained, distilled and shared-embedding hard negatives) or null "
                             "(300 cheap independent pairs)."),
    seed: int = typer.Option(0, "--seed", help="A fresh instance of the zoo: every training seed shifted (0: the default)."),
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
    raise typer.Exit(zoo_build_command(out_dir, size, seed))


@app.command()
def bench(
    zoo_dir: str = typer.Argument(..., help="A zoo built by 'modelkin zoo build'."),
    json_out: Optional[str] = typer.Option(None, "--json", help="Write every pair's scores as JSON."),
    threads: int = typer.Option(2, "--threads"),
) -> None:
    """Score modelkin and the public baselines on every pair of a zoo."""
    from .bench import run_bench

    raise typer.Exit(run_bench(zoo_dir, json_out=json_out, threads=threads))


def main(argv: list[str] | None = None) -> int:
    try:
        app(args=argv, standalone_mode=False)
        return 0
    except ModelkinError as e:
        print(f"modelkin: error: {e.one_line()}", file=sys.stderr)
        return e.exit_code
    except typer.Exit as e:
        return e.exit_code
    except (typer.Abort, KeyboardInterrupt):
        print("modelkin: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # click usage errors and genuine bugs
        import click

        if isinstance(e, click.exceptions.ClickException):
            e.show()
            return 2
        if os.environ.get("MODELKIN_DEBUG"):
            raise
        print(f"modelkin: internal error: {type(e).__name__}: {e} (set MODELKIN_DEBUG=1 for the traceback)", file=sys.stderr)
        return 3


def entry() -> None:
    sys.exit(main())
