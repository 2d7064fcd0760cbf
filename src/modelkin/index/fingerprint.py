"""Making a fingerprint: the rows of a model that a budgeted sampled compare reads, in one small file.

Which rows? Those ``FINGERPRINT_SAMPLE`` (a budgeted ``SamplePolicy``) reads, planned from the model's shapes
alone (``plan_fingerprint``): per tensor of the layers the budget chooses (``alignment.budget``), one key-seeded
block of rows (small tensors whole); the embedding's blocks of token ids for the shared-basis test; the screening
windows of tensors of unknown role; components small enough, whole. Nothing depends on the values, so the size of
a fingerprint is known from the model's header (``planned_size``), and is flat in the model's size: the budget
fixes the bytes, not a fraction. Reads that depend on the partner and fall outside the plan (a re-mapped
vocabulary's token rows, a fused matrix split to meet separate q/k/v, an MoE's expert map) are not held; a
comparison against the fingerprint leaves them out and says so.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import struct
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .. import __version__
from ..atomic import atomic_file
from ..sampling import FINGERPRINT_SAMPLE, SamplePolicy, sample_rows, token_blocks
from ..sources import ModelSource, open_model
from ..sources.fingerprint_format import FORMAT_NAME, MAGIC_KEY, VERSION, policy_to_dict
from ..sources.tensors import TensorInfo


@dataclass(frozen=True, slots=True)
class FingerprintSummary:
    path: str
    n_bytes: int  # size of the fingerprint file
    n_parameters: int  # parameters of the model
    model_bytes: int  # bytes of the model's tensors
    kept_bytes: int  # payload bytes (rows kept)
    n_tensors: int
    n_whole: int  # tensors kept whole
    seconds: float


@dataclass(frozen=True)
class ShapeSource:
    """A model known by its header only (tensor shapes and dtypes, config): enough to plan a fingerprint."""

    tensors: dict[str, TensorInfo]
    config: dict | None = None


@dataclass(frozen=True)
class FingerprintPlan:
    rows: dict[str, np.ndarray | None]  # stored tensor name -> sorted rows kept (None: whole; empty: none)
    layers: dict[str, tuple[int, ...] | None]  # component -> layers kept (None: all)
    k: int  # layers kept per component
    payload_bytes: int  # bytes of the kept rows and products, as stored in the fingerprint
    by_role: dict[str, int]  # payload bytes per role ("basis" for the shared-basis rows beyond samples,
    # "products" for the unit responses)
    products: dict[str, str]  # matrix -> the embedding whose token blocks its kept rows' products are held with


def stored_dtype(info: TensorInfo) -> str:
    """The dtype a fingerprint stores a tensor in: plain types as stored (BF16 stays BF16); block-quantised and
    packed types decoded to F16 (2 bytes per element, not F32)."""
    return info.dtype.code if not info.dtype.is_block and not info.dtype.packed else "F16"


def _stored_row_bytes(info: TensorInfo) -> int:
    from ..sources.dtypes import lookup

    n_rows = info.shape[0] if info.shape and info.shape[0] else 1
    code = stored_dtype(info)
    return (lookup(code).n_bytes(info.numel) if code != info.dtype.code else info.n_bytes) // n_rows


def _rows_of_spans(info: TensorInfo, spans) -> set[int]:
    row_len = info.numel // info.shape[0] if info.shape and info.shape[0] else 0
    out: set[int] = set()
    for start, count in spans:
        if row_len and count > 0:
            out.update(range(start // row_len, (start + count - 1) // row_len + 1))
    return out


def plan_fingerprint(src, policy: SamplePolicy = FINGERPRINT_SAMPLE) -> FingerprintPlan:
    """What a fingerprint of ``src`` (a ModelSource or a ``ShapeSource``) keeps, from shapes alone."""
    from ..alignment.budget import plan_layers, restrict
    from ..alignment.reads import sample_key
    from ..inventory import build_inventory
    from ..statistics.screening import window_spans

    from ..statistics.shared_basis import plan_units

    inv = build_inventory(src)
    layers = plan_layers(inv.tensors, policy)
    kept = {e.name: e for e in restrict(inv, layers).tensors}
    # Rows the shared-basis test reads as units (an FFN unit's gate and up rows are read at the gate's sample).
    unit_rows: dict[str, set[int]] = {}
    for comp in {e.component for e in kept.values()}:
        for info, r in plan_units([e for e in kept.values() if e.component == comp], None, policy).requests():
            unit_rows.setdefault(info.name, set()).update(np.asarray(r).tolist())
    whole_comps = layers.whole if layers else frozenset()
    rows: dict[str, np.ndarray | None] = {}
    by_role: dict[str, int] = {}
    total = 0
    for name, info in src.tensors.items():
        e = kept.get(name)
        n = info.shape[0] if info.shape else 1
        if e is None:  # a tensor of a layer the budget does not read (scalars are kept: a row-less tensor)
            rows[name] = None if not info.shape else np.empty(0, np.int64)
            total += 0 if info.shape else info.n_bytes
            continue
        basis = 0
        if (not info.shape or e.transposed or info.strided or e.component in whole_comps or e.role == "patch_embed"
                or (own := sample_rows(sample_key(e), n, info.n_bytes, policy)) is None):
            rows[name] = None
            held = n
        else:
            marks = set(own.tolist()) | unit_rows.get(name, set())
            if e.role == "embedding" and len(info.shape) == 2:
                extra = set(token_blocks(n).tolist()) - marks
                basis = len(extra)
                marks |= extra
            if e.role == "other" and e.evidence:
                marks |= _rows_of_spans(info, window_spans(info))
            held = len(marks)
            rows[name] = None if held >= n else np.array(sorted(marks), np.int64)
        row_bytes = _stored_row_bytes(info)
        total += held * row_bytes
        by_role[e.role] = by_role.get(e.role, 0) + (held - basis) * row_bytes
        if basis:
            by_role["basis"] = by_role.get("basis", 0) + basis * row_bytes
    products = _product_plan(kept, rows) if policy.budgeted else {}  # a fingerprint's policy is budgeted
    for name, emb in products.items():
        nb = len(rows[name]) * len(token_blocks(src.tensors[emb].shape[0])) * 4
        total += nb
        by_role["products"] = by_role.get("products", 0) + nb
    chosen = dict(layers.chosen) if layers else {}
    return FingerprintPlan(rows, chosen, layers.k if layers else 0, total, dict(sorted(by_role.items())), products)


MAX_PRODUCT_ROWS = 64  # kept rows of a matrix beyond which its products are not held (computed in the compare)


def _product_plan(kept: dict, rows: dict[str, np.ndarray | None]) -> dict[str, str]:
    """Matrices whose units the shared-basis test reads through the component's token embedding, and that
    embedding: their kept rows' products with its token blocks are held (``products``), the responses every
    compare of the fingerprint would otherwise compute again. Whole or widely kept matrices are left out."""
    from ..statistics.shared_basis import UNIT_TYPE

    out = {}
    for comp in sorted({e.component for e in kept.values()}):
        members = [e for e in kept.values() if e.component == comp]
        emb = next((e for e in members if e.role == "embedding" and len(e.shape) >= 2), None)
        if emb is None or len(emb.shape) != 2 or emb.transposed or emb.info.base is not None:
            continue
        for e in members:
            r = rows.get(e.name)
            if (e.role in UNIT_TYPE and e.evidence and len(e.shape) == 2 and not e.transposed and e.info.base is None
                    and e.shape[1] == emb.shape[1] and r is not None and 0 < len(r) <= MAX_PRODUCT_ROWS):
                out[e.name] = emb.name
    return out


def _products(src: ModelSource, plan: FingerprintPlan) -> dict[str, np.ndarray]:
    """The kept rows of each planned matrix times its embedding's token-block rows (float32), as read from
    ``src``: what ``ModelSource.row_products`` of the fingerprint answers."""
    bases: dict[str, np.ndarray] = {}
    out = {}
    for name, emb in plan.products.items():
        if emb not in bases:
            info = src.tensors[emb]
            bases[emb] = src.read_rows(info, token_blocks(info.shape[0])).astype(np.float32, copy=False)
        w = src.read_rows(src.tensors[name], plan.rows[name]).astype(np.float32, copy=False)
        out[name] = np.ascontiguousarray(w @ bases[emb].T, dtype=np.float32)
    return out


def planned_size(tensors: dict[str, TensorInfo], config: dict | None = None, policy: SamplePolicy = FINGERPRINT_SAMPLE,
                 vocab: dict[str, int] | None = None) -> tuple[int, FingerprintPlan]:
    """(bytes of the fingerprint file, the plan) of a model known by its header alone; no weights needed."""
    plan = plan_fingerprint(ShapeSource(tensors, config), policy)
    header = _header(tensors, plan, policy, config, vocab, {"location": "planned", "revision": None, "files": None}, {})
    entries = {}
    off = 0
    for name, info in tensors.items():
        held = plan.rows[name]
        n = (info.shape[0] if info.shape else 1) if held is None else len(held)
        nb = n * _stored_row_bytes(info)
        entries[f"p{len(entries)}"] = {"dtype": stored_dtype(info), "shape": [n] + list(info.shape[1:]),
                                       "data_offsets": [off, off + nb]}
        off += nb
    for i, (name, emb) in enumerate(plan.products.items()):
        shape = [len(plan.rows[name]), len(token_blocks(tensors[emb].shape[0]))]
        entries[f"q{i}"] = {"dtype": "F32", "shape": shape, "data_offsets": [off, off + 4 * shape[0] * shape[1]]}
        off += 4 * shape[0] * shape[1]
    head = dict(entries)
    head["__metadata__"] = {MAGIC_KEY: json.dumps(header, separators=(",", ":"))}
    text = json.dumps(head, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return 8 + len(text) + (-len(text) % 8) + off, plan


def llama_like(hidden: int, layers: int, ffn: int, vocab: int, kv_heads: int | None = None, head_dim: int = 128,
               dtype: str = "BF16") -> tuple[dict[str, TensorInfo], dict]:
    """(tensor headers, config) of a Llama-shaped model: what ``planned_size`` needs, without any weights."""
    from ..sources.dtypes import lookup

    dt = lookup(dtype)
    kv = (kv_heads or hidden // head_dim) * head_dim
    shapes = {"model.embed_tokens.weight": (vocab, hidden), "lm_head.weight": (vocab, hidden), "model.norm.weight": (hidden,)}
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes.update({p + "self_attn.q_proj.weight": (hidden, hidden), p + "self_attn.k_proj.weight": (kv, hidden),
                       p + "self_attn.v_proj.weight": (kv, hidden), p + "self_attn.o_proj.weight": (hidden, hidden),
                       p + "mlp.gate_proj.weight": (ffn, hidden), p + "mlp.up_proj.weight": (ffn, hidden),
                       p + "mlp.down_proj.weight": (hidden, ffn), p + "input_layernorm.weight": (hidden,),
                       p + "post_attention_layernorm.weight": (hidden,)})
    tensors = {n: TensorInfo(n, dt, s, "model.safetensors", 0, dt.n_bytes(int(np.prod(s)))) for n, s in shapes.items()}
    config = {"model_type": "llama", "hidden_size": hidden, "num_hidden_layers": layers, "intermediate_size": ffn,
              "vocab_size": vocab, "num_attention_heads": hidden // head_dim, "num_key_value_heads": kv // head_dim}
    return tensors, config


def _runs(rows: np.ndarray) -> list[list[int]]:
    if len(rows) == 0:
        return []
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    starts = np.concatenate([[0], breaks])
    ends = np.concatenate([breaks, [len(rows)]])
    return [[int(rows[s]), int(e - s)] for s, e in zip(starts, ends)]


def _payload(src: ModelSource, info: TensorInfo, rows: np.ndarray | None) -> tuple[str, np.ndarray]:
    """(dtype code, stored bytes of the kept rows): plain types as stored, block/packed types decoded to F16."""
    code = stored_dtype(info)
    f = src.file_of(info)
    row_len = info.numel // info.shape[0] if info.shape and info.shape[0] else info.numel
    spans = [(0, info.numel)] if rows is None else [(r0 * row_len, n * row_len) for r0, n in _runs(rows)]
    parts = []
    for start, count in spans:
        if count == 0:
            continue
        if code == info.dtype.code:
            parts.append(np.ascontiguousarray(f.read_raw(info, start, count)).view(np.uint8).reshape(-1))
        else:
            parts.append(np.asarray(f.read_elements(info, start, count), dtype="<f2").view(np.uint8).reshape(-1))
    data = np.concatenate(parts) if parts else np.empty(0, np.uint8)
    return code, data


def _vocab(src: ModelSource) -> dict[str, int] | None:
    from ..alignment.vocab import load_vocab

    return load_vocab(src)


def _header(tensors: dict[str, TensorInfo], plan: FingerprintPlan, policy: SamplePolicy, config, vocab, source: dict,
            claims: dict) -> dict:
    entries = {}
    for i, (name, info) in enumerate(tensors.items()):
        rows = plan.rows[name]
        entries[name] = {"dtype": stored_dtype(info), "source_dtype": info.dtype.code, "shape": list(info.shape),
                         "n_bytes": int(info.n_bytes), "payload": f"p{i}", "rows": None if rows is None else _runs(rows)}
    return {
        "format": FORMAT_NAME, "version": VERSION, "policy": policy_to_dict(policy), "source": source,
        "config": config, "vocab": vocab,
        "vocab_sha256": None if vocab is None else hashlib.sha256(
            json.dumps(sorted(vocab.items()), ensure_ascii=False).encode()).hexdigest(),
        "tensors": entries, "modelkin_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "parameters": sum(i.numel for i in tensors.values()), "claims": claims,
        "products": {name: {"payload": f"q{i}", "basis": emb} for i, (name, emb) in enumerate(plan.products.items())},
    }


def make_fingerprint(location, out, *, revision: str | None = None, policy: SamplePolicy = FINGERPRINT_SAMPLE,
                     threads: int = 2, hash_files: bool = True) -> FingerprintSummary:
    """Read ``location`` (local path, Hub id or URL) at the rows ``plan_fingerprint`` keeps and write its
    fingerprint to ``out``. ``threads`` is accepted for compatibility (the reads are few)."""
    import time

    if not policy.budgeted:
        from ..errors import UsageError

        raise UsageError("a fingerprint needs a budgeted sample policy (budget_bytes or max_layers set): it must hold "
                         "everything its compare reads, invariant tests included")
    t0 = time.perf_counter()
    src = location if isinstance(location, ModelSource) else open_model(location, revision)
    try:
        tensors = dict(sorted(src.tensors.items()))
        plan = plan_fingerprint(src, policy)
        if src.remote:  # one batch of ranged requests for everything kept
            src.prefetch_rows([(info, np.arange(info.shape[0]) if plan.rows[n] is None else plan.rows[n])
                               for n, info in tensors.items() if info.shape and info.n_bytes
                               and (plan.rows[n] is None or len(plan.rows[n]))])
        vocab = _vocab(src)
        files = {k: asdict(v) for k, v in src.file_records().items()} if hash_files else None
        payload_header, blobs, offset = {}, [], 0
        for i, (name, info) in enumerate(tensors.items()):
            rows = plan.rows[name]
            code, data = _payload(src, info, rows)
            pshape = list(info.shape) if rows is None else [len(rows)] + list(info.shape[1:])
            payload_header[f"p{i}"] = {"dtype": code, "shape": pshape, "data_offsets": [offset, offset + data.size]}
            blobs.append(data)
            offset += data.size
        for i, (name, prod) in enumerate(_products(src, plan).items()):
            data = prod.view(np.uint8).reshape(-1)
            payload_header[f"q{i}"] = {"dtype": "F32", "shape": list(prod.shape), "data_offsets": [offset, offset + data.size]}
            blobs.append(data)
            offset += data.size
        header = _header(tensors, plan, policy, src.config, vocab,
                         {"location": str(src.location), "revision": src.revision, "files": files}, read_claims(src))
        n_bytes = write_safetensors(out, payload_header, blobs, {MAGIC_KEY: json.dumps(header, separators=(",", ":"))})
        return FingerprintSummary(str(out), n_bytes, header["parameters"], src.n_bytes, offset, len(tensors),
                                  sum(1 for r in plan.rows.values() if r is None), time.perf_counter() - t0)
    finally:
        if src is not location:
            src.close()


def write_safetensors(out, entries: dict, blobs: list[np.ndarray], metadata: dict[str, str]) -> int:
    """Write a safetensors file atomically (a temporary file in the same folder, then renamed)."""
    head = dict(entries)
    head["__metadata__"] = metadata
    text = json.dumps(head, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)
    out = Path(out)
    with atomic_file(out, durable=True) as fh:
        fh.write(struct.pack("<Q", len(text)))
        fh.write(text)
        for b in blobs:
            fh.write(memoryview(b))
    return out.stat().st_size


def _front_matter(text: str) -> dict[str, list[str]]:
    """``key: value`` and ``key:`` + ``- item`` lines of a model card's YAML front matter (no YAML library
    needed for these two keys; anything else is ignored)."""
    if not text.startswith("---"):
        return {}
    end = text.find("\n---", 3)
    out: dict[str, list[str]] = {}
    key = None
    for line in text[3: end if end > 0 else len(text)].splitlines():
        if not line.strip():
            continue
        if line.startswith((" ", "-", "\t")) and key is not None:
            item = line.strip().lstrip("-").strip().strip("'\"")
            if item:
                out[key].append(item)
            continue
        k, _, v = line.partition(":")
        key = k.strip()
        out[key] = [v.strip().strip("'\"")] if v.strip() else []
    return out


def read_claims(src: ModelSource) -> dict:
    """The parents and license a model claims: ``base_model`` and ``license`` of its model card (README.md
    front matter, local folders) or config. Recorded as claims, compared with the evidence by ``audit``."""
    bases: list[str] = []
    lic = None
    cfg = src.config or {}
    for k in ("base_model", "base_model_name_or_path"):
        v = cfg.get(k)
        bases += [v] if isinstance(v, str) else [x for x in v if isinstance(x, str)] if isinstance(v, list) else []
    root = Path(str(src.root)) if not src.remote else None
    card = None
    if root is not None:
        folder = root if root.is_dir() else root.parent
        if (folder / "README.md").is_file():
            try:
                card = (folder / "README.md").read_text(encoding="utf-8", errors="replace")[:1_000_000]
            except OSError:
                card = None
    if card:
        fm = _front_matter(card)
        bases += fm.get("base_model", [])
        lic = (fm.get("license") or [None])[0]
    return {"base_model": list(dict.fromkeys(b for b in bases if b))[:64], "license": lic}
