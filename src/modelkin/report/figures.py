"""Figures of a report, drawn with matplotlib from the JSON record and returned as SVG text.

* per-layer curves: median Pearson / cosine / matched-unit cosine of each of A's layers against the layer of
  B it was paired with (the norm-gain cosine that public analyses plotted is drawn too, marked as not
  evidence);
* the layer×layer correlation heatmap behind the layer map, with the recovered map drawn on it;
* the unit-matching scores (z) of the evidence tensors against the null for independent models;
* for mixtures of experts whose experts were reordered, the expert map.

matplotlib is imported here only (it takes a second), and output is deterministic: fixed SVG ids, no date.
"""

from __future__ import annotations

import io
import math
import re
from collections import defaultdict
from statistics import median

from ..results import INCONCLUSIVE, INDEPENDENT, RELATED
from .findings import Figure, threshold

COLOURS = {"pearson": "#1f5fa8", "cosine": "#e08a1e", "unit": "#7b3fa0", "norm": "#9a9a9a",
           RELATED: "#b3261e", INDEPENDENT: "#1b7a3d", INCONCLUSIVE: "#a86b00", "chance": "#d9d9d9"}
RC = {
    "svg.fonttype": "path",  # glyphs as paths: renders as measured, whatever fonts the reader has
    "svg.hashsalt": "modelkin",  # deterministic ids
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans", "Helvetica", "Arial"],
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#e6e6e6",
    "grid.linewidth": 0.6,
    "legend.frameon": False,
    "legend.fontsize": 8,
}
MAX_ANNOTATED = 10  # annotate heatmap cells with their values up to this many layers / experts
TESTS = ("same-index", "anchored", "realigned")
Z_SHOWN = 1e4  # |z| drawn at most this far out


def component_figures(doc: dict, comp: str) -> list[Figure]:
    """Every figure the component's data supports, in reading order."""
    import matplotlib

    out = []
    with matplotlib.rc_context(RC):
        for make in (_layer_curves, _layer_heatmap, _unit_scores, _expert_map):
            fig = make(doc, comp)
            if fig is not None:
                out.append(fig)
    return out


# ---------------------------------------------------------------- helpers


def _new_figure(width: float, height: float):
    from matplotlib.figure import Figure as MplFigure

    return MplFigure(figsize=(width, height), layout="constrained")


def _svg(fig, prefix: str) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    text = buf.getvalue()
    text = text[text.index("<svg"):]  # no XML prolog or DOCTYPE: the SVG is embedded in HTML
    # Several figures share one page: make their ids unique.
    text = re.sub(r'id="([^"]+)"', lambda m: f'id="{prefix}-{m.group(1)}"', text)
    text = re.sub(r"url\(#([^)]+)\)", lambda m: f"url(#{prefix}-{m.group(1)})", text)
    return re.sub(r'href="#([^"]+)"', lambda m: f'href="#{prefix}-{m.group(1)}"', text)


def _med(xs):
    xs = [x for x in xs if x is not None]
    return median(xs) if xs else None


# ---------------------------------------------------------------- figures


def _layer_curves(doc: dict, comp: str) -> Figure | None:
    tensors = [t for t in doc["tensors"] if t["component"] == comp and t["layer_a"] is not None]
    by_layer = defaultdict(list)
    for t in tensors:
        by_layer[t["layer_a"]].append(t)
    lm = doc["components"][comp].get("layer_map") or {}
    dropped = [x for x in lm.get("dropped_a") or [] if x not in by_layer]
    if len(by_layer) + len(dropped) < 2:
        return None
    layers = sorted(by_layer)
    series = {
        "pearson": ("Pearson", "o-", lambda ts: _med(t["pearson"] for t in ts if t["evidence"])),
        "cosine": ("cosine", "s-", lambda ts: _med(t["cosine"] for t in ts if t["evidence"])),
        "unit": ("matched-unit cosine", "^-", lambda ts: _med(t["unit_cosine"] for t in ts if t["evidence"])),
        "norm": ("norm-gain cosine (not evidence)", "x--",
                 lambda ts: _med(t["cosine"] for t in ts if not t["evidence"] and t["role"].startswith("norm"))),
    }
    fig = _new_figure(5.0, 3.3)
    ax = fig.add_subplot()
    lows = [0.0]
    xs = sorted(layers + dropped)
    for key, (label, style, fn) in series.items():
        ys = [fn(by_layer[x]) if x in by_layer else None for x in xs]
        if all(y is None for y in ys):
            continue
        lows += [y for y in ys if y is not None]
        # NaN breaks the line at a dropped layer or a layer without such tensors
        ax.plot(xs, [math.nan if y is None else y for y in ys], style, color=COLOURS[key], label=label,
                markersize=4, linewidth=1.4 if key != "norm" else 1.0)
    for x in dropped:
        ax.axvspan(x - 0.4, x + 0.4, color=COLOURS["chance"], alpha=0.6, linewidth=0)
        ax.text(x, 0.5, "dropped\nin B", ha="center", va="center", fontsize=7, color="#555555")
    ticks = xs
    targets = defaultdict(set)
    for t in tensors:
        targets[t["layer_a"]].add(t["layer_b"])
    labels = [f"{x}→{','.join(str(b) for b in sorted(targets[x]))}" if x in targets and targets[x] != {x} else str(x) for x in ticks]
    if len(ticks) > 24:  # label every k-th layer of a deep model
        k = math.ceil(len(ticks) / 24)
        labels = [lab if i % k == 0 else "" for i, lab in enumerate(labels)]
    ax.set_xticks(ticks, labels, rotation=0 if len(ticks) <= 12 else 90)
    ax.set_ylim(min(-0.1, min(lows) - 0.05), 1.05)
    ax.axhline(0, color="#888888", linewidth=0.6)
    ax.set_xlabel("layer of A → layer of B it was paired with")
    ax.set_ylabel("similarity")
    fig.legend(loc="outside upper center", ncol=2)
    return Figure(
        key=f"{comp}-layers", title="Similarity per layer",
        caption=("For each layer of A, the median similarity between its weight matrices and those of the paired layer "
                 "of B. "
                 "Derived layers stay near 1; independent ones stay near 0. The norm-gain cosine (grey, dashed) is "
                 "high for any pair of models and is not evidence."),
        svg=_svg(fig, f"{comp}-layers"),
    )


def _layer_heatmap(doc: dict, comp: str) -> Figure | None:
    lm = doc["components"][comp].get("layer_map") or {}
    s, la, lb = lm.get("similarity"), lm.get("layers_a"), lm.get("layers_b")
    if not s or not la or not lb or (len(la) < 2 and len(lb) < 2):
        return None
    import numpy as np
    from matplotlib.patches import Rectangle

    m = np.array(s, dtype=float)
    fig = _new_figure(4.4 if len(lb) <= 12 else 5.6, 3.3 if len(la) <= 12 else 4.8)
    ax = fig.add_subplot()
    ax.grid(False)
    im = ax.imshow(m, cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto", interpolation="nearest")
    fig.colorbar(im, ax=ax, label="correlation of layer signatures", shrink=0.9)
    ia, ib = {x: i for i, x in enumerate(la)}, {x: j for j, x in enumerate(lb)}
    pts = [(ib[b], ia[a]) for a, b in lm.get("pairs") or [] if a in ia and b in ib]
    for j, i in pts:
        ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="black", linewidth=1.6))
    if pts:
        fig.legend(handles=[Rectangle((0, 0), 1, 1, fill=False, edgecolor="black", linewidth=1.6, label="layer pairs compared")],
                   loc="outside upper center")
    if len(la) <= MAX_ANNOTATED and len(lb) <= MAX_ANNOTATED:
        for i in range(len(la)):
            for j in range(len(lb)):
                ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if abs(m[i, j]) > 0.6 else "#222222")
    step_a, step_b = max(1, math.ceil(len(la) / 24)), max(1, math.ceil(len(lb) / 24))
    ax.set_yticks(range(0, len(la), step_a), [str(x) for x in la[::step_a]])
    ax.set_xticks(range(0, len(lb), step_b), [str(x) for x in lb[::step_b]])
    ax.set_xlabel("layer of B")
    ax.set_ylabel("layer of A")
    how = ("re-paired by this similarity" if lm.get("method") == "similarity"
           else "kept their indices (the map by similarity agreed, or showed nothing)")
    return Figure(
        key=f"{comp}-layer-map", title="Layer × layer similarity and the layer map",
        caption=(f"Correlation between sampled weights of every layer of A and every layer of B; boxes mark the "
                 f"layer pairs compared. Here the layers {how}. A same-index measure: units that were permuted or "
                 "rotated show no structure here, which the unit tests handle."),
        svg=_svg(fig, f"{comp}-layer-map"),
    )


def _unit_scores(doc: dict, comp: str) -> Figure | None:
    ev = [t for t in doc["tensors"] if t["component"] == comp and t["evidence"] and t["z"] is not None]
    if not ev:
        return None
    import numpy as np

    m = len(ev)
    thr = threshold(doc)
    rows = [k for k in TESTS if any(t["test"] == k for t in ev)] + sorted({t["test"] for t in ev} - set(TESTS))
    fig = _new_figure(5.0, 1.7 + 0.45 * len(rows))
    null_ax, ax = fig.subplots(2, 1, sharex=True, height_ratios=[1.0, 0.45 * len(rows) + 0.3])
    z_of = {id(t): max(-Z_SHOWN, min(Z_SHOWN, t["z"])) for t in ev}  # JSON writes an infinite z as ±1e308
    zmax = max(6.0, max(abs(z) for z in z_of.values()) * 1.2)
    for a in (null_ax, ax):
        a.set_xscale("symlog", linthresh=3, linscale=1.0)
        a.set_xlim(-zmax, zmax)
    x = np.concatenate([-np.geomspace(zmax, 3, 60), np.linspace(-3, 3, 121), np.geomspace(3, zmax, 60)])
    null_ax.fill_between(x, np.exp(-x * x / 2) / math.sqrt(2 * math.pi), color=COLOURS["chance"], linewidth=0,
                         label="chance: independently trained models")
    null_ax.set_yticks([])
    null_ax.set_ylim(0, 0.45)
    null_ax.grid(False)
    rng = np.random.default_rng(0)
    for r, name in enumerate(rows):
        ts = [t for t in ev if t["test"] == name]
        zs = np.array([z_of[id(t)] for t in ts])
        decisive = np.array([t["log10_p"] + math.log10(m) <= thr for t in ts])
        jitter = r + rng.uniform(-0.18, 0.18, size=len(ts))
        for mask, colour, label in ((decisive, COLOURS[RELATED], "decisive on its own"),
                                    (~decisive, "#5b5b5b", "not decisive")):
            if mask.any():
                ax.scatter(zs[mask], jitter[mask], s=18, color=colour, alpha=0.85, linewidths=0, label=label)
    ax.set_yticks(range(len(rows)), [f"{k} test" for k in rows])
    ax.set_ylim(-0.6, len(rows) - 0.4)
    ax.invert_yaxis()
    ax.axvline(0, color="#888888", linewidth=0.6)
    ticks = [t for t in (-300, -100, -30, -10, -3, 0, 3, 10, 30, 100, 300) if abs(t) <= zmax]
    ax.set_xticks(ticks, [str(t).replace("-", "−") for t in ticks])
    ax.set_xlabel("z: unit match in standard deviations of chance (symlog scale)")
    handles, labels = [], []
    for a in (null_ax, ax):
        h, lab = a.get_legend_handles_labels()
        handles += h
        labels += lab
    uniq = dict(zip(labels, handles))
    fig.legend(uniq.values(), uniq.keys(), loc="outside upper center", ncol=2)
    return Figure(
        key=f"{comp}-unit-scores", title="Unit-matching scores against chance",
        caption=(f"Each dot is one of the {m} evidence tensors: how well unit i of A matches unit i of B, in standard "
                 "deviations of what independently trained models give (grey). Red dots are decisive on their own "
                 "(after the Bonferroni factor). The realigned test's null is the models' own sibling units "
                 "(docs/method.md): independent pairs give strongly negative z there."),
        svg=_svg(fig, f"{comp}-unit-scores"),
    )


def _expert_map(doc: dict, comp: str) -> Figure | None:
    experts = (doc["components"][comp].get("layer_map") or {}).get("experts")
    if not experts:
        return None
    import numpy as np

    layers = sorted(experts, key=int)
    n = 1 + max(max(a, b) for pairs in experts.values() for a, b in pairs)
    grid = np.full((len(layers), n), np.nan)
    for i, layer in enumerate(layers):
        for a, b in experts[layer]:
            grid[i, a] = b
    fig = _new_figure(min(9.0, 2.4 + 0.35 * n), min(8.0, 1.2 + 0.32 * len(layers)))
    ax = fig.add_subplot()
    ax.grid(False)
    moved = np.where(np.isnan(grid), np.nan, (grid != np.arange(n)[None, :]).astype(float))
    ax.imshow(moved, cmap="Purples", vmin=0, vmax=1.6, aspect="auto", interpolation="nearest")
    if n <= 32:
        for i in range(len(layers)):
            for j in range(n):
                if not np.isnan(grid[i, j]):
                    ax.text(j, i, str(int(grid[i, j])), ha="center", va="center", fontsize=7)
    ax.set_yticks(range(len(layers)), layers)
    step = max(1, math.ceil(n / 32))
    ax.set_xticks(range(0, n, step), [str(j) for j in range(0, n, step)])
    ax.set_xlabel("expert of A")
    ax.set_ylabel("layer")
    return Figure(
        key=f"{comp}-experts", title="Expert map",
        caption=("For each layer with reordered experts: the expert of B each expert of A was matched to (shaded "
                 "when it moved), by linear assignment on token kernels that do not depend on unit order."),
        svg=_svg(fig, f"{comp}-experts"),
    )
