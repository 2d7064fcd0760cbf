"""Channel alignment through whole networks whose structure no family file describes (CNNs, MLP stacks).

A copier can permute the channels of every layer of a CNN consistently (a conv's output channels, its
BatchNorm, and the next conv's input channels together) without changing what it computes, then prune and
fine-tune. Nothing then lines up index by index. The channels are recovered here layer by layer, in the spirit
of Git Re-Basin's weight matching:

1. **The graph of unit axes is inferred from names and shapes** (``infer_graph``). Every matrix or kernel of
   at least two axes is a node with an output axis and an input axis. The node whose input size no node
   produces reads the network's input. Nodes are then taken in natural name order (``layer2`` after
   ``layer10``'s predecessors: numbers compare as numbers); each reads the most recent output of its input
   size, and a node whose input size has not been produced yet waits (a classifier head named ``fc`` waits
   for the last block). Depthwise kernels ``[C, 1, k, k]`` keep their channels (output axis = input axis). In
   a block (a name prefix ending in an index, holding several nodes), a shortcut (``downsample``,
   ``shortcut``, ``skip``) reads what the block's first node reads and is added to the block's output; a block
   without one whose output width equals its input width adds its input to its output (identity residual).
   Axes added together are one axis: one permutation for all of them.
2. **The first node is matched in the input basis** both models share (image channels x kernel taps,
   or input features): its output units are fingerprinted by their weights and matched by linear assignment.
3. **Each following node is matched given its aligned input axis**: its rows are read with their input
   columns put in matched order, and its output units are matched the same way. Tied axes sum the similarity
   of every node writing them before the assignment (weight matching). Where one model has fewer channels
   (pruning), the assignment is rectangular: every unit of the narrower side gets a partner.

What is returned per node are the aligned fingerprints of both models, for the held-out scoring of
``statistics.channel_test``, and per axis the recovered channel map.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
from scipy.optimize import linear_sum_assignment

from ..inventory import TensorEntry
from ..sources import ModelSource
from .names import logical_shape
from .units import normalise_rows

SHORTCUT_WORDS = frozenset({"downsample", "shortcut", "skip", "residual"})
HEAD_WORDS = frozenset({"fc", "head", "classifier", "logits"})
MAX_NODE_ELEMENTS = 1 << 24  # larger kernels end the chain (read whole, they would cost too much memory)
MAX_CHANNELS = 4096
NON_NODE_ROLES = frozenset({"embedding", "position_embedding", "token_type_embedding", "lm_head", "norm", "buffer", "scalar"})


@dataclass(frozen=True, slots=True)
class ChannelNode:
    key: str  # module name without wrapper prefixes and without its final ".weight"
    entry: TensorEntry
    out_axis: int  # axis id (tied axes share one id)
    in_axis: int | None  # None: the network's input, a basis both models share
    depthwise: bool

    @property
    def out_size(self) -> int:
        return logical_shape(self.entry)[0]

    @property
    def in_size(self) -> int:
        return self.out_size if self.depthwise else logical_shape(self.entry)[1]


@dataclass(frozen=True)
class ChannelGraph:
    nodes: tuple[ChannelNode, ...]  # flow order: every node after the node(s) writing its input axis
    outputs: frozenset[int]  # axes no node reads: the network's outputs (classes), a shared basis
    # False when every input width is also produced inside the network: the first node was then only the
    # first name, and its "input" may be a hidden axis a copier permuted. Not a basis to align from.
    input_found: bool = True

    def describe(self) -> dict:
        """The inferred graph for the report: which modules read the input, and per axis who writes and reads it."""
        axes: dict[int, dict] = {}
        for n in self.nodes:
            axes.setdefault(n.out_axis, {"writers": [], "readers": [], "output": n.out_axis in self.outputs})
            axes[n.out_axis]["writers"].append(n.key)
        for n in self.nodes:
            if n.in_axis is not None and not n.depthwise:
                axes[n.in_axis]["readers"].append(n.key)
        return {"input_readers": [n.key for n in self.nodes if n.in_axis is None], "axes": list(axes.values())}


def _module_key(e: TensorEntry) -> str:
    return e.key[: -len(".weight")] if e.key.endswith(".weight") else e.key


def _natural(key: str) -> tuple:
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", key) if p)


def _blocks(keys: list[str]) -> dict[str, str | None]:
    """Each key's block: the longest prefix ending in a numeric segment that holds at least two nodes."""
    out: dict[str, str | None] = {}
    for k in keys:
        parts = k.split(".")
        out[k] = None
        for i in range(len(parts) - 1, 0, -1):
            if parts[i - 1].isdigit():
                prefix = ".".join(parts[:i]) + "."
                if sum(1 for o in keys if o.startswith(prefix)) >= 2:
                    out[k] = prefix
                    break
    return out


def _is_shortcut(key: str, block: str | None) -> bool:
    rest = key[len(block):] if block else key
    return any(p in SHORTCUT_WORDS for p in rest.split("."))


class _Axes:
    """Union-find over axis ids."""

    def __init__(self) -> None:
        self.parent: list[int] = []

    def new(self) -> int:
        self.parent.append(len(self.parent))
        return len(self.parent) - 1

    def find(self, x: int) -> int:
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, x: int, y: int) -> None:
        self.parent[self.find(x)] = self.find(y)


def infer_graph(entries: list[TensorEntry]) -> ChannelGraph | None:
    """The graph of unit axes of one network, from names and shapes only (see the module docstring)."""
    cands = [e for e in entries if e.role not in NON_NODE_ROLES and len(e.shape) >= 2 and e.evidence]
    if not cands:
        return None
    by_key = {_module_key(e): e for e in cands}
    keys = sorted(by_key, key=_natural)
    out_size = {k: logical_shape(by_key[k])[0] for k in keys}
    raw_in = {k: logical_shape(by_key[k])[1] for k in keys}
    others = {k: {out_size[o] for o in keys if o != k} for k in keys}
    fresh = [k for k in keys if raw_in[k] not in others[k]]
    first = fresh[0] if fresh else keys[0]
    blocks = _blocks(keys)
    axes = _Axes()
    flow: list[tuple[str, int, int | None, bool]] = [(first, axes.new(), None, False)]
    # Heads read the last features: they wait until every other node is placed.
    heads = [k for k in keys if k != first and _is_head(k, by_key[k])]
    pending = [k for k in keys if k != first and k not in heads]
    for group in (pending, heads):
        while group:  # passes in natural order; a node whose input is not produced yet waits for the next pass
            placed_any = False
            for k in list(group):
                placed = _place(k, by_key[k], flow, blocks, out_size, raw_in, axes)
                if placed is not None:
                    flow.append(placed)
                    group.remove(k)
                    placed_any = True
            if not placed_any:
                break
    _tie_blocks(flow, blocks, out_size, raw_in, axes)
    nodes = tuple(ChannelNode(k, by_key[k], axes.find(o), None if i is None else axes.find(i), dw) for k, o, i, dw in flow)
    read = {n.in_axis for n in nodes if n.in_axis is not None}
    return ChannelGraph(nodes, frozenset(n.out_axis for n in nodes if n.out_axis not in read), bool(fresh))


def _is_head(key: str, e: TensorEntry) -> bool:
    return e.role in ("classifier", "head") or key.split(".")[-1] in HEAD_WORDS


def _place(k: str, e: TensorEntry, flow: list, blocks: dict, out_size: dict, raw_in: dict, axes: _Axes):
    """(key, out axis, in axis, depthwise) once the node's input is available, else None (it waits)."""
    block = blocks[k]
    if block is not None and _is_shortcut(k, block):
        firsts = [f for f in flow if f[0].startswith(block) and not _is_shortcut(f[0], block)]
        if not firsts or firsts[0][2] is None or raw_in[firsts[0][0]] != raw_in[k]:
            return None
        return (k, axes.new(), firsts[0][2], False)
    depthwise = len(e.shape) >= 3 and raw_in[k] == 1 and out_size[k] > 1
    want = out_size[k] if depthwise else raw_in[k]
    writer = next((f for f in reversed(flow) if out_size[f[0]] == want), None)
    if writer is None:
        return None
    return (k, writer[1] if depthwise else axes.new(), writer[1], depthwise)


def _tie_blocks(flow: list, blocks: dict, out_size: dict, raw_in: dict, axes: _Axes) -> None:
    """Residual additions: shortcut outputs join the block's output; identity residuals join its input."""
    members: dict[str, list] = defaultdict(list)
    for f in flow:
        if blocks[f[0]] is not None:
            members[blocks[f[0]]].append(f)
    for block, fs in members.items():
        main = [f for f in fs if not _is_shortcut(f[0], block)]
        short = [f for f in fs if _is_shortcut(f[0], block)]
        if len(main) < 2:
            continue
        last, head = main[-1], main[0]
        for s in short:
            if out_size[s[0]] == out_size[last[0]]:
                axes.union(s[1], last[1])
        if not short and head[2] is not None and out_size[last[0]] == raw_in[head[0]]:
            axes.union(last[1], head[2])


# ------------------------------------------------------------------------------ matching two networks


@dataclass(frozen=True, slots=True)
class AlignedNode:
    """One node of both networks with its input columns in matched order: fingerprints of its output units."""

    key: str
    fa: np.ndarray  # [units of A, features]
    fb: np.ndarray  # [units of B, features]
    scored: bool  # False for output layers (classes) and depthwise kernels: aligned, not tested


@dataclass
class ChannelAlignment:
    reason: str | None = None  # why the chain stopped early, if it did
    maps: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # axis of A -> (units of A, units of B)
    writers: dict[int, list[str]] = field(default_factory=lambda: defaultdict(list))
    sizes: dict[int, tuple[int, int]] = field(default_factory=dict)

    def to_list(self) -> list[dict]:
        """The recovered channel maps, one per axis (JSON-ready)."""
        return [
            {"modules": self.writers[ax], "units_a": self.sizes[ax][0], "units_b": self.sizes[ax][1],
             "pairs": [[int(i), int(j)] for i, j in zip(*self.maps[ax])]}
            for ax in sorted(self.maps)
        ]


def graphs_agree(ga: ChannelGraph, gb: ChannelGraph) -> str | None:
    """None when both networks have the same inferred graph (sizes may differ), else the reason."""
    if [n.key for n in ga.nodes] != [n.key for n in gb.nodes]:
        return "the two networks' layers differ (names or order)"
    corr: dict[int, int] = {}
    for na, nb in zip(ga.nodes, gb.nodes):
        if na.depthwise != nb.depthwise or (na.in_axis is None) != (nb.in_axis is None):
            return f"{na.key}: the two networks' channel graphs differ"
        for x, y in ((na.out_axis, nb.out_axis), (na.in_axis, nb.in_axis)):
            if x is not None and corr.setdefault(x, y) != y:
                return f"{na.key}: the two networks' channel graphs differ"
    first_a, first_b = ga.nodes[0], gb.nodes[0]
    if logical_shape(first_a.entry)[1:] != logical_shape(first_b.entry)[1:]:
        return f"{first_a.key}: input shapes differ ({list(logical_shape(first_a.entry)[1:])} vs {list(logical_shape(first_b.entry)[1:])}): no input basis shared"
    return None


def _read(src: ModelSource, e: TensorEntry) -> np.ndarray:
    """The whole kernel in logical [out, in, taps] layout."""
    shape = logical_shape(e)
    w = src.read(e.info).astype(np.float64)
    w = w.reshape(e.shape).T if e.transposed else w.reshape(shape)
    return w.reshape(shape[0], shape[1], -1)


def align_channels(src_a: ModelSource, src_b: ModelSource, ga: ChannelGraph, gb: ChannelGraph,
                   result: ChannelAlignment) -> Iterator[AlignedNode]:
    """Walk both networks in flow order, aligning each node's input axis, matching its output units.

    Yields one ``AlignedNode`` per node (for scoring); fills ``result`` with the channel maps as it goes.
    """
    costs: dict[int, np.ndarray] = {}
    for na, nb in zip(ga.nodes, gb.nodes):
        ea, eb = na.entry, nb.entry
        if max(ea.info.numel, eb.info.numel) > MAX_NODE_ELEMENTS or max(na.out_size, nb.out_size) > MAX_CHANNELS:
            result.reason = f"{na.key}: too large to align channel by channel; the chain stops here"
            return
        if na.in_axis is None:
            cols_a = cols_b = np.arange(logical_shape(ea)[1])
        elif na.in_axis in result.maps:
            cols_a, cols_b = result.maps[na.in_axis]
        else:
            result.reason = f"{na.key}: its input channels could not be aligned; the chain stops here"
            return
        wa, wb = _read(src_a, ea), _read(src_b, eb)
        ax = na.out_axis
        result.writers[ax].append(na.key)
        result.sizes[ax] = (na.out_size, nb.out_size)
        if na.depthwise:  # channels kept: the output map is the input map
            yield AlignedNode(na.key, wa[cols_a].reshape(len(cols_a), -1), wb[cols_b].reshape(len(cols_b), -1), False)
            continue
        fa = wa[:, cols_a, :].reshape(wa.shape[0], -1)
        fb = wb[:, cols_b, :].reshape(wb.shape[0], -1)
        output = ax in ga.outputs
        if not output:
            g = normalise_rows(fa) @ normalise_rows(fb).T
            costs[ax] = costs[ax] + g if ax in costs else g
            rows, cols = linear_sum_assignment(costs[ax], maximize=True)
            result.maps[ax] = (rows, cols)
        yield AlignedNode(na.key, fa, fb, not output)
