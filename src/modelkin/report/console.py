"""Human-readable report of a comparison (rich tables)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from ..results import INDEPENDENT, RELATED, ComparisonResult

STYLE = {RELATED: "bold red", INDEPENDENT: "bold green"}
N_NON_EVIDENCE_SHOWN = 6


def _f(x: float | None, fmt: str = ".3f") -> str:
    return "—" if x is None else format(x, fmt)


def _p(log10_p: float) -> str:
    return "≤ -1e308" if log10_p < -1e307 else f"{log10_p:.1f}"


def _test(test: str | None, evidence_class: str | None) -> str:
    """A test's name, with its class when its null is an assumption rather than a symmetry."""
    if test is None:
        return ""
    return f"{test} [yellow](assumption-based)[/]" if evidence_class == "assumption-based" else test


def render(result: ComparisonResult, console: Console) -> None:
    console.print(f"[bold]A[/] {result.a.location}  ({result.a.family or 'unknown family'}, {result.a.n_tensors} tensors)")
    console.print(f"[bold]B[/] {result.b.location}  ({result.b.family or 'unknown family'}, {result.b.n_tensors} tensors)")
    style = STYLE.get(result.verdict, "bold yellow")
    console.print(f"Verdict: [{style}]{result.verdict}[/]   log10 p = {_p(result.log10_p)}   (α = {result.alpha:g}, family-wise)")

    t = Table(title="Components (medians over evidence tensors)", title_justify="left")
    for col in ("component", "verdict", "log10 p", "tensors", "evidence", "Pearson", "cosine", "unit cos", "decided by"):
        t.add_column(col, justify="left" if col in ("component", "verdict", "decided by") else "right")
    for c in result.components.values():
        t.add_row(
            c.name, f"[{STYLE.get(c.verdict, 'yellow')}]{c.verdict}[/]", _p(c.log10_p), str(c.n_tensors),
            str(c.n_evidence), _f(c.median_pearson), _f(c.median_cosine), _f(c.median_unit_cosine),
            _test(c.test, c.evidence_class) if c.verdict == RELATED else "—",
        )
    console.print(t)
    for c in result.components.values():
        console.print(f"  [bold]{c.name}[/]: {c.reason}")
        lm = c.layer_map
        if lm.get("method") == "similarity":
            pairs = ", ".join(f"{a}→{b}" for a, b in lm["pairs"])
            extra = [f"dropped from A: {lm['dropped_a']}" if lm["dropped_a"] else "",
                     f"duplicated: {lm['duplicated_a']}" if lm["duplicated_a"] else "",
                     f"B layers without origin: {lm['unmatched_b']}" if lm["unmatched_b"] else "",
                     "order changed" if lm["reordered"] else ""]
            console.print(f"    layer map (A→B, by similarity): {pairs}" + "".join(f"; {e}" for e in extra if e))

    ev = sorted((r for r in result.tensors if r.evidence), key=lambda r: r.log10_p)[:8]
    if ev:
        t = Table(title="Strongest evidence", title_justify="left")
        for col in ("tensor (A)", "layers", "Pearson", "cosine", "rel-L2", "unit cos", "z", "log10 p", "test", "same bytes"):
            t.add_column(col, justify="left" if col in ("tensor (A)", "test") else "right", overflow="fold")
        for r in ev:
            layers = "—" if r.layer_a is None else f"{r.layer_a}→{r.layer_b}"
            t.add_row(
                r.a, layers, _f(r.pearson), _f(r.cosine), _f(r.rel_l2), _f(r.unit_cosine),
                _f(r.z, ".1f"), _p(r.log10_p), _test(r.test, r.evidence_class), "yes" if r.identical else "",
            )
        console.print(t)

    non = [r for r in result.tensors if not r.evidence]
    if non:
        console.print(f"[dim]Not evidence ({len(non)} tensors, shown for completeness):[/]")
        for r in non[:N_NON_EVIDENCE_SHOWN]:
            console.print(f"[dim]  {r.a}: cosine {_f(r.cosine)}, Pearson {_f(r.pearson)} — {r.non_evidence_reason}[/]")
        if len(non) > N_NON_EVIDENCE_SHOWN:
            console.print(f"[dim]  … and {len(non) - N_NON_EVIDENCE_SHOWN} more (see --json)[/]")
    if result.unmatched:
        console.print(f"Unmatched tensors: {len(result.unmatched)} (listed in --json)")
        for u in result.unmatched[:5]:
            console.print(f"  {u.side.upper()} {u.name}: {u.reason}")
    for note in result.notes:
        console.print(f"[dim]Note: {note}[/]")
    console.print(f"[dim]{result.seconds:.2f} s[/]")


def render_inventory(
    summary: dict, family: str | None, unassigned: list[str], location: str, console: Console,
    files: dict[str, dict] | None = None, dtypes: dict[str, int] | None = None,
) -> None:
    console.print(f"[bold]{location}[/]  family: {family or 'unknown'}")
    for name, about in (files or {}).items():
        details = ", ".join(f"{k} {v if len(v) <= 60 else v[:57] + '...'}" for k, v in about["metadata"].items())
        console.print(f"  {name}: {about['format']}" + (f" ({details})" if details else ""), markup=False)
    if dtypes:
        console.print("  dtypes: " + ", ".join(f"{code} ({n} tensors)" for code, n in dtypes.items()), markup=False)
    t = Table(title="Parameters per component and role", title_justify="left")
    t.add_column("component")
    t.add_column("role")
    t.add_column("parameters", justify="right")
    for comp, roles in summary.items():
        for role, n in roles.items():
            t.add_row(comp, role, f"{n:,}")
    console.print(t)
    if unassigned:
        console.print(f"Unassigned tensors ({len(unassigned)}):")
        for name in unassigned:
            console.print(f"  {name}")
    else:
        console.print("Every tensor was assigned a role.")
