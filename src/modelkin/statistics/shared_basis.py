"""The shared-basis test: hidden units of models of different widths, depths and vocabularies, compared
through the inputs both models share.

Hidden units of two models of different widths cannot be compared index by index, and a copier may have
permuted or rotated them anyway. But some inputs mean the same thing to both models: the token strings both
vocabularies contain (each model embeds them with its own embedding rows), or the pixels of an image patch
(each model's patch embedding maps them into its own residual stream). Pushing those shared inputs through
each model's embedding and then through a matrix that reads the residual stream gives, for every unit of
that matrix (an FFN unit, a row of Q, K or V, a router row, a projector unit), a *fingerprint*: its response
to each shared input. Fingerprints live in the same space for both models whatever their widths, and they do
not change when a copier permutes, rotates or rescales the residual stream (the transformation cancels) or
reorders the units themselves. The embedding's own dimensions are units too (their fingerprints are the
embedding columns).

Units of the smaller model are then matched to the larger model's units of the same type, pooled over all
layers (so a deeper or shallower model is matched too), and each match is scored on held-out inputs against
the unit's own siblings (``margins``): a copied unit matches its copy far better than any sibling; a unit of
an independently trained model does not. The per-unit outcomes say how many units of the smaller model have a
counterpart and in which layer of the larger model it sits.
"""

from __future__ import annotations

import zlib
from collections import Counter, defaultdict
from dataclasses import dataclass

import numpy as np

from ..alignment import VocabMap, logical_shape
from ..alignment.reads import sample_key
from ..inventory import TensorEntry
from ..sampling import DEFAULT_SAMPLE, MAX_BASIS_INPUTS, SamplePolicy, sample_indices, sample_rows, token_blocks
from ..sources import ModelSource, TensorInfo
from ..sources.memo import memo
from .margins import ComponentTest, Margins, from_margins, not_run, sibling_margins, split_features

NAME = "shared-basis"
MAX_INPUTS = MAX_BASIS_INPUTS  # shared inputs (tokens, pixels) in the basis
MAX_POOL = 1536  # units read per side and unit type
WHOLE_UNITS_ELEMENTS = 1 << 18  # a matrix this small has every unit read (when few enough), in every read mode
MAX_TESTED = 512  # units of the smaller model scored per unit type
MIN_ROWS_PER_TENSOR = 8
MIN_SHARED_INPUTS = 32

# Matrices whose rows read the residual stream: row u is a unit whose fingerprint is its response to the
# shared inputs. gate and up rows of one FFN unit are one unit (their fingerprints are concatenated).
UNIT_TYPE = {
    "mlp.gate": "ffn", "mlp.up": "ffn", "mlp.gate_up": "ffn", "attn.q": "attn.q", "attn.k": "attn.k",
    "attn.v": "attn.v", "attn.qkv": "attn.qkv", "router": "router",
}


Request = tuple[TensorInfo, np.ndarray]  # (tensor, rows): what a test will read, known before reading


@dataclass(frozen=True, slots=True)
class Basis:
    """The same inputs embedded by A and by B: [n_inputs, width] in each model's own basis, centred."""

    kind: str  # "tokens" or "pixels"
    a: np.ndarray
    b: np.ndarray
    # What each side's inputs are (its embedding tensor and the rows or pixels read): equal keys, equal inputs.
    keys: tuple[tuple, tuple] = ((), ())
    # Token inputs: each side's embedding and its rows (a source may hold its units' responses to them).
    tokens: tuple[tuple[TensorInfo, np.ndarray] | None, tuple[TensorInfo, np.ndarray] | None] = (None, None)

    @property
    def n_inputs(self) -> int:
        return self.a.shape[0]


@dataclass(frozen=True)
class BasisPlan:
    """Which inputs form the basis, and the embedding rows each model is read at (nothing read yet)."""

    kind: str  # "tokens" or "pixels"
    emb_a: TensorEntry
    emb_b: TensorEntry
    rows_a: np.ndarray  # tokens: embedding rows of the shared inputs; pixels: every row (hidden unit)
    rows_b: np.ndarray
    pick: np.ndarray | None = None  # pixels: the pixel columns used

    def requests(self) -> tuple[list[Request], list[Request]]:
        return [(self.emb_a.info, self.rows_a)], [(self.emb_b.info, self.rows_b)]

    def read(self, src_a: ModelSource, src_b: ModelSource) -> Basis:
        xa = src_a.read_rows(self.emb_a.info, self.rows_a).astype(np.float64)
        xb = src_b.read_rows(self.emb_b.info, self.rows_b).astype(np.float64)
        if self.kind == "pixels":  # rows are hidden units, columns pixels: each pixel is an input
            xa, xb = xa[:, self.pick].T, xb[:, self.pick].T
        pick = b"" if self.pick is None else np.asarray(self.pick).tobytes()
        keys = ((self.kind, self.emb_a.info, np.asarray(self.rows_a).tobytes(), pick),
                (self.kind, self.emb_b.info, np.asarray(self.rows_b).tobytes(), pick))
        tokens = ((self.emb_a.info, self.rows_a), (self.emb_b.info, self.rows_b)) if self.kind == "tokens" else (None, None)
        return Basis(self.kind, xa - xa.mean(axis=0, keepdims=True), xb - xb.mean(axis=0, keepdims=True), keys, tokens)


def token_plan(emb_a: TensorEntry, emb_b: TensorEntry, vocab: VocabMap | None, sampled: bool = False) -> BasisPlan | None:
    """Shared token strings, embedded by each model's own embedding rows (None: too few shared tokens).

    Full reads take blocks of the shared tokens (in A's id order): every input is shared. Sampled reads (and
    fingerprints, which hold what a sampled read of one model reads) take blocks of each model's *own* ids,
    decided by that model alone, and keep the shared tokens inside both: for one vocabulary that is the same
    set, for two vocabularies fewer inputs. Either way the rows depend on nothing but the models.
    """
    if len(emb_a.shape) != 2 or len(emb_b.shape) != 2 or emb_a.transposed or emb_b.transposed:
        return None
    if vocab is not None:
        rows_a, rows_b = vocab.for_rows(emb_a.shape[0], emb_b.shape[0])
    else:
        rows_a = rows_b = np.arange(min(emb_a.shape[0], emb_b.shape[0]))
    if sampled:
        keep = np.isin(rows_a, token_blocks(emb_a.shape[0])) & np.isin(rows_b, token_blocks(emb_b.shape[0]))
        rows_a, rows_b = rows_a[keep], rows_b[keep]
    else:
        pick = token_blocks(rows_a.size)
        rows_a, rows_b = rows_a[pick], rows_b[pick]
    if rows_a.size < MIN_SHARED_INPUTS:
        return None
    return BasisPlan("tokens", emb_a, emb_b, rows_a, rows_b)


def pixel_plan(pe_a: TensorEntry, pe_b: TensorEntry) -> BasisPlan | None:
    """Unit impulses on each pixel (channel x position) of a patch, through each model's patch embedding."""
    if pe_a.shape[1:] != pe_b.shape[1:] or len(pe_a.shape) < 2:
        return None
    n_pix = int(np.prod(pe_a.shape[1:]))
    if n_pix < MIN_SHARED_INPUTS:
        return None
    pick = sample_indices(n_pix, MAX_INPUTS, np.random.default_rng(zlib.crc32(b"shared-pixels")))
    return BasisPlan("pixels", pe_a, pe_b, np.arange(pe_a.shape[0]), np.arange(pe_b.shape[0]), pick)


@dataclass(frozen=True, slots=True)
class _Group:
    """Rows of one matrix (or of gate and up together: one FFN unit each) of one unit type."""

    kind: str
    layer: int  # -1 when none
    members: tuple[TensorEntry, ...]
    rows: np.ndarray  # logical rows: the units read


@dataclass(frozen=True, slots=True)
class _Head:
    layer: int
    q: TensorEntry
    k: TensorEntry
    q_rows: np.ndarray  # the head's rows of Q
    k_rows: np.ndarray  # its key/value head's rows of K


@dataclass(frozen=True)
class UnitPlan:
    """Every unit one model will be fingerprinted by, as rows to read (nothing read yet)."""

    groups: tuple[_Group, ...]
    heads: tuple[_Head, ...]
    totals: dict[str, int]  # units of each type in the model (before sampling)

    def requests(self) -> list[Request]:
        out = []
        for g in self.groups:
            for m in g.members:
                out.append((m.info, np.arange(m.shape[0]) if m.transposed else g.rows))
        for h in self.heads:
            out += [(h.q.info, h.q_rows), (h.k.info, h.k_rows)]
        return out


def _unit_rows(e: TensorEntry, n_out: int, per: int, policy: SamplePolicy) -> np.ndarray:
    """The units read: every unit when there are no more than ``per`` in at most ``WHOLE_UNITS_ELEMENTS`` (a
    permuted copy's counterparts are then all looked at: ``partner_coverage`` 1), else the key-seeded row
    blocks the sampled read mode fetches anyway (see ``sampling``), or, for tensors it reads whole, a
    key-seeded sample of ``per`` rows. Decided by the tensor alone."""
    if n_out <= per and e.info.numel <= WHOLE_UNITS_ELEMENTS:
        return np.arange(n_out)
    if not e.transposed:
        rows = sample_rows(sample_key(e), n_out, e.info.n_bytes, policy)
        if rows is not None:
            return rows
    return sample_indices(n_out, per, np.random.default_rng(zlib.crc32(sample_key(e).encode())))


def plan_units(entries: list[TensorEntry], heads: tuple[int, int] | None = None,
               policy: SamplePolicy = DEFAULT_SAMPLE) -> UnitPlan:
    """Rows of every matrix reading the stream (sampled to about ``MAX_POOL`` units per type), and of heads."""
    by_type: dict[str, dict[tuple, list[TensorEntry]]] = defaultdict(dict)
    for e in entries:
        kind = UNIT_TYPE.get(e.role)
        if kind is None or not e.evidence or len(e.shape) != 2:
            continue
        key = (e.layer, e.expert, tuple(x for x in e.slot if x[0] != "expert"))
        by_type[kind].setdefault(key, []).append(e)
    groups, totals = [], {}
    for kind, found in sorted(by_type.items()):
        per = max(MIN_ROWS_PER_TENSOR, MAX_POOL // max(len(found), 1))
        for key, members in sorted(found.items(), key=lambda kv: repr(kv[0])):
            members = sorted(members, key=lambda e: e.role)
            n_out = logical_shape(members[0])[0]
            if any(logical_shape(m)[0] != n_out for m in members):
                members = members[:1]
            if kind == "ffn" and len(members) == 1:  # gate or up alone (its partner screened out, or absent)
                kind_here = f"ffn:{members[0].role}"
            else:
                kind_here = kind
            rows = _unit_rows(members[0], n_out, per, policy)
            groups.append(_Group(kind_here, -1 if key[0] is None else key[0], tuple(members), rows))
            totals[kind_here] = totals.get(kind_here, 0) + n_out
    head_plan = _plan_heads(entries, heads) if heads is not None else ()
    if head_plan:
        totals["attn.head"] = heads[0] * len({h.layer for h in head_plan})
    return UnitPlan(tuple(groups), head_plan, totals)


def collect_units(src: ModelSource, plan: UnitPlan, x: np.ndarray, basis: tuple = (),
                  tokens: tuple[TensorInfo, np.ndarray] | None = None) -> dict[str, _Units]:
    """Fingerprints of every planned unit: its responses to the basis inputs x [n_inputs, width]. ``basis``
    names those inputs (``Basis.keys``): a unit's responses to the same inputs are computed once per open
    source (a search compares one query with many models); without it they are computed here. ``tokens``:
    the embedding and rows x was read from, when x is token embeddings (``Basis.tokens``)."""
    out: dict[str, _Units] = {}
    x32 = x.astype(np.float32)
    for g in plan.groups:
        parts = [memo(src, ("units", m.info, m.transposed, g.rows.tobytes(), basis),
                      lambda m=m: _fingerprints(src, m, g.rows, x32, tokens)) if basis
                 else _fingerprints(src, m, g.rows, x32, tokens)
                 for m in g.members]
        if any(p is None for p in parts):
            continue
        units = out.setdefault(g.kind, _Units([], [], plan.totals[g.kind]))
        units.prints.append(np.hstack(parts))
        units.groups.append(np.full(len(g.rows), g.layer))
    if plan.heads:
        out["attn.head"] = _head_units(src, plan, x)
    return out


@dataclass
class _Units:
    groups: list[np.ndarray]
    prints: list[np.ndarray]
    total: int = 0  # units the model has (before sampling)


def _fingerprints(src: ModelSource, entry: TensorEntry, rows: np.ndarray, x: np.ndarray,
                  tokens: tuple[TensorInfo, np.ndarray] | None = None) -> np.ndarray | None:
    """Responses [len(rows), copies * n_inputs] of the given rows to the basis inputs x [n_inputs, width].

    A row as wide as k times the basis width reads k concatenated copies of the stream (a patch merger).
    ``tokens``: the embedding rows x is, centred: a source holding the rows' products with them (a fingerprint)
    answers from those, centred the same way (a response is linear in its input).
    """
    in_dim = logical_shape(entry)[1]
    width = x.shape[1]
    if in_dim % width:
        return None
    if tokens is not None and in_dim == width and not entry.transposed:
        held = src.row_products(entry.info, rows, *tokens)
        if held is not None:
            u = held.astype(np.float64)
            return u - u.mean(axis=1, keepdims=True)
    if entry.transposed:  # stored [in, out]: logical rows are stored columns
        w = src.read_rows(entry.info, np.arange(entry.shape[0]))[:, rows].T
    else:
        w = src.read_rows(entry.info, rows)
    # float32 products: twice the speed of float64, a response exact to about 1e-7 of its size (float64 weights
    # are rounded to float32 here), far below any margin the tests weigh.
    # One [rows x copies, width] product (a stack of [copies, width] products would be a matrix-vector
    # product per row: half the speed), its rows regrouped by unit: [rows, copies * n_inputs], copy-major.
    w = w.astype(np.float32, copy=False).reshape(len(rows) * (in_dim // width), width)
    return (w @ x.T).reshape(len(rows), -1).astype(np.float64)


MAX_HEADS = 32  # query heads read per model (spread over layers): each costs its Q rows and its K group's rows
N_PROBES = 16  # probe inputs: a head's fingerprint is its attention logits from each shared input to each probe


def head_counts(config: dict | None) -> tuple[int, int] | None:
    """(query heads, key/value heads) of the text model, from ``config.json`` (top level or ``text_config``)."""
    for c in (config or {}, (config or {}).get("text_config") or {}):
        heads = c.get("num_attention_heads")
        if isinstance(heads, int) and heads > 0:
            kv = c.get("num_key_value_heads") or heads
            return (heads, kv) if isinstance(kv, int) and kv > 0 and heads % kv == 0 else None
    return None


def _plan_heads(entries: list[TensorEntry], heads: tuple[int, int]) -> tuple[_Head, ...]:
    n_q, n_kv = heads
    usable = lambda e, role: e.role == role and e.evidence and len(e.shape) == 2 and not e.transposed  # noqa: E731
    qs = {e.layer: e for e in entries if usable(e, "attn.q")}
    ks = {e.layer: e for e in entries if usable(e, "attn.k")}
    layers = sorted(layer for layer in qs if layer in ks and layer is not None)
    out = []
    for layer in layers:
        q, k = qs[layer], ks[layer]
        rows_q, rows_k = logical_shape(q)[0], logical_shape(k)[0]
        if rows_q % n_q or rows_k % n_kv or rows_q // n_q != rows_k // n_kv or logical_shape(q)[1] != logical_shape(k)[1]:
            return ()
        d = rows_q // n_q
        rng = np.random.default_rng(zlib.crc32(f"heads:{sample_key(q)}".encode()))
        for h in sample_indices(n_q, max(1, MAX_HEADS // len(layers)), rng):
            g = h // (n_q // n_kv)
            out.append(_Head(layer, q, k, np.arange(h * d, (h + 1) * d), np.arange(g * d, (g + 1) * d)))
    return tuple(out)


def _head_units(src: ModelSource, plan: UnitPlan, x: np.ndarray) -> _Units | None:
    """Attention heads: head h's fingerprint is q_h(t) . k_g(p) for every shared input t and probe p, with g its
    key/value head. A rotation inside the head (or a different head size) leaves it unchanged."""
    if x.shape[0] <= N_PROBES or logical_shape(plan.heads[0].q)[1] != x.shape[1]:
        return None
    probes = np.sort(np.random.default_rng(zlib.crc32(b"probes")).choice(x.shape[0], N_PROBES, replace=False))
    units = _Units([], [], plan.totals["attn.head"])
    for h in plan.heads:
        wq = src.read_rows(h.q.info, h.q_rows).astype(np.float64)
        wk = src.read_rows(h.k.info, h.k_rows).astype(np.float64)
        logits = (x[probes] @ wk.T) @ (x @ wq.T).T  # [probes, inputs]: probe-major, like stream copies
        units.prints.append(logits.reshape(1, -1))
        units.groups.append(np.array([h.layer]))
    return units


def _residual_units(x: np.ndarray) -> _Units:
    """The embedding's own dimensions: the fingerprint of dimension j is column j of the embedded inputs."""
    return _Units([np.full(x.shape[1], -1)], [x.T], x.shape[1])  # a view: the test stacks its prints (a copy)


def shared_basis_test(src_a: ModelSource, src_b: ModelSource, basis: Basis, plan_a: UnitPlan, plan_b: UnitPlan,
                      seed: str, residual: bool = True) -> ComponentTest:
    """Match every unit type present in both models through the basis; pool the margins (see ``margins``)."""
    ua = collect_units(src_a, plan_a, basis.a, basis.keys[0], basis.tokens[0])
    ub = collect_units(src_b, plan_b, basis.b, basis.keys[1], basis.tokens[1])
    ua, ub = {k: v for k, v in ua.items() if v is not None}, {k: v for k, v in ub.items() if v is not None}
    if residual:
        ua["residual"], ub["residual"] = _residual_units(basis.a), _residual_units(basis.b)
    rng = np.random.default_rng(zlib.crc32(f"{NAME}:{seed}".encode()))
    split = split_features(basis.n_inputs, rng)
    if split is None:
        return not_run(NAME, f"only {basis.n_inputs} shared inputs: too few to split into fit and held-out halves")
    fit_in, score_in = split
    found: list[Margins] = []
    types = []
    for kind in sorted(set(ua) & set(ub)):
        a, b = ua[kind], ub[kind]
        if len({p.shape[1] for p in a.prints + b.prints}) != 1:  # stream copies differ between tensors
            continue
        fa, fb = np.vstack(a.prints), np.vstack(b.prints)
        copies = fa.shape[1] // basis.n_inputs
        fit = np.concatenate([c * basis.n_inputs + fit_in for c in range(copies)])
        score = np.concatenate([c * basis.n_inputs + score_in for c in range(copies)])
        small = "a" if a.total <= b.total else "b"
        (fs, gs, ts), (fl, gl, tl) = ((fa, np.concatenate(a.groups), a.total), (fb, np.concatenate(b.groups), b.total))
        if small == "b":
            (fs, gs, ts), (fl, gl, tl) = (fl, gl, tl), (fs, gs, ts)
        m = sibling_margins(fs, gs, fl, gl, fit, score, rng, MAX_TESTED, total_l=tl)
        if m is None:
            continue
        found.append(m)
        types.append(_where(kind, small, ts, tl, m))
    layer_map = _layer_map(types)
    details = {"basis": basis.kind, "n_inputs": basis.n_inputs, "layer_map": layer_map, "unit_types": types}
    where = ", ".join(f"{r['layer_a']}→{r['layer_b']}" for r in layer_map if r["counterparts"] * 2 > r["tested"])
    return from_margins(NAME, found, lambda n, k, mean, z: (
        f"{n} units of the smaller model matched through {basis.n_inputs} shared {basis.kind}: {k} match the "
        f"other model better than their own siblings on held-out inputs (mean margin {mean:+.3f}, z = {z:.1f})"
        + (f"; layers A→B where most units have a counterpart: {where}" if where else "")
    ), details)


def _where(kind: str, small: str, total_small: int, total_large: int, m: Margins) -> dict:
    """Per layer of the smaller model: units tested, units with a counterpart, and the counterpart's layer."""
    layers = []
    for g in np.unique(m.group):
        sel = m.group == g
        pos = sel & m.counterpart
        partner = Counter(int(x) for x in m.partner_group[pos]).most_common(1)
        layers.append({
            "layer_small": None if g < 0 else int(g),
            "layer_large": None if not partner or partner[0][0] < 0 else partner[0][0],
            "tested": int(sel.sum()), "counterparts": int(pos.sum()),
        })
    return {"type": kind, "smaller": small, "units_small": total_small, "units_large": total_large,
            "tested": int(m.margin.size), "counterparts": int(m.counterpart.sum()),
            "mean_margin": float(m.margin.mean()), "layers": layers}


def _layer_map(types: list[dict]) -> list[dict]:
    """Per layer of the smaller model (A's numbering when A is smaller, else B's): the layer of the other model
    holding most of its units' counterparts, over every unit type."""
    votes: dict[tuple[str, int], Counter] = defaultdict(Counter)
    tested: dict[tuple[str, int], list[int]] = defaultdict(lambda: [0, 0])
    for t in types:
        for row in t["layers"]:
            if row["layer_small"] is None:
                continue
            key = (t["smaller"], row["layer_small"])
            tested[key][0] += row["tested"]
            tested[key][1] += row["counterparts"]
            if row["layer_large"] is not None:
                votes[key][row["layer_large"]] += row["counterparts"]
    out = []
    for (small, layer), (n, k) in sorted(tested.items()):
        top = votes[(small, layer)].most_common(1)
        la, lb = (layer, top[0][0] if top else None) if small == "a" else (top[0][0] if top else None, layer)
        out.append({"layer_a": la, "layer_b": lb, "tested": n, "counterparts": k})
    return out
