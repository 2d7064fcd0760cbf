"""The public entry point: ``compare(a, b)`` runs the pipeline

    sources -> inventory -> alignment -> metrics -> statistics -> verdict -> ComparisonResult
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

from threadpoolctl import threadpool_limits

from . import __version__
from .alignment import (
    VocabMap, align_by_name, logical_shape, map_experts, map_layers, map_vocab, repair_by_layers, split_fused,
)
from .errors import UsageError
from .inventory import COMPONENTS, Inventory, build_inventory
from .metrics import stream_metrics
from .options import CompareOptions
from .results import ComparisonResult, ModelRef, TensorResult, UnmatchedTensor
from .sources import ModelSource, open_model
from .statistics import find_anchor, pair_evidence
from .statistics.evidence import realign_candidates
from .statistics.screening import screen
from .verdict import judge_components, overall

ProgressFn = Callable[[int, int], None]  # (bytes done, bytes total)


def _ref(src: ModelSource, inv: Inventory, digests: dict[str, str] | None) -> ModelRef:
    files = digests if digests is not None else {str(f.path.name): None for f in src.files}
    return ModelRef(src.location, str(src.root), inv.family, len(src.tensors), src.n_bytes, files)


def _vocabulary(src_a: ModelSource, src_b: ModelSource, inv_a: Inventory, inv_b: Inventory) -> VocabMap | None:
    """Token-row correspondence, when both models have token embeddings."""
    emb_a = [e for e in inv_a.tensors if e.role == "embedding" and len(e.shape) == 2]
    emb_b = [e for e in inv_b.tensors if e.role == "embedding" and len(e.shape) == 2]
    if not emb_a or not emb_b:
        return None
    return map_vocab(src_a, src_b, emb_a[0].shape[0], emb_b[0].shape[0])


def compare(
    a: str | Path | ModelSource,
    b: str | Path | ModelSource,
    options: CompareOptions | None = None,
    progress: ProgressFn | None = None,
    **option_values,
) -> ComparisonResult:
    """Compare two models' weights. ``a``/``b``: a .safetensors file, a model folder, or an open source.

    Keyword arguments are ``CompareOptions`` fields (``alpha``, ``min_effect``, ``threads``,
    ``components``, ``hash_files``).
    """
    if options is None:
        options = CompareOptions(**option_values)
    elif option_values:
        raise UsageError("give either options= or keyword options, not both")
    if options.components:
        bad = [c for c in options.components if c not in COMPONENTS]
        if bad:
            raise UsageError(f"unknown component(s) {bad}; choose from {list(COMPONENTS)}")
    started = time.perf_counter()
    src_a = a if isinstance(a, ModelSource) else open_model(a)
    src_b = b if isinstance(b, ModelSource) else open_model(b)
    try:
        # modelkin parallelises over tensors itself; BLAS threads on top of that only fight for the cores.
        with threadpool_limits(limits=1, user_api="blas"):
            return _run(src_a, src_b, options, progress, started)
    finally:
        if src_a is not a:
            src_a.close()
        if src_b is not b:
            src_b.close()


def _align(src_a: ModelSource, src_b: ModelSource, options: CompareOptions):
    """Inventory and alignment stages: names/roles/fused parts, vocabulary, layers, experts."""
    inv_a, inv_b = split_fused(build_inventory(src_a), build_inventory(src_b))
    vocab = _vocabulary(src_a, src_b, inv_a, inv_b)
    alignment = align_by_name(inv_a, inv_b, vocab)
    shared = sorted(set(inv_a.components()) & set(inv_b.components()))
    if options.components:
        shared = [c for c in shared if c in options.components]
    layer_maps = {c: m for c in shared if (m := map_layers(src_a, src_b, inv_a, inv_b, c)) is not None}
    alignment = repair_by_layers(alignment, inv_a, inv_b, layer_maps)
    alignment, expert_maps = map_experts(src_a, src_b, inv_a, inv_b, alignment, vocab)
    return inv_a, inv_b, vocab, alignment, layer_maps, expert_maps


def _run(src_a: ModelSource, src_b: ModelSource, options: CompareOptions, progress, started: float) -> ComparisonResult:
    inv_a, inv_b, vocab, alignment, layer_maps, expert_maps = _align(src_a, src_b, options)
    pairs = list(alignment.pairs)
    unmatched = list(alignment.unmatched)
    if options.components:
        keep = set(options.components)
        pairs = [p for p in pairs if p.component in keep]
        unmatched = [u for u in unmatched if u.component in keep]

    total = sum(p.a.info.n_bytes + p.b.info.n_bytes for p in pairs)
    done = 0

    def on_bytes(n: int) -> None:
        nonlocal done
        done += n
        if progress:
            progress(min(done, total), total)

    # Hash the files on a side thread: hashlib releases the GIL, so it overlaps the metric pass.
    with ThreadPoolExecutor(max_workers=1) as side:
        digests = [side.submit(s.file_digests, options.digest_cache) for s in (src_a, src_b)] if options.hash_files else None
        metrics = stream_metrics(src_a, src_b, pairs, threads=options.threads, on_bytes=on_bytes)
        anchors = {c: find_anchor(src_a, src_b, [p for p in pairs if p.component == c]) for c in {p.component for p in pairs}}
        screened = screen(src_a, pairs, metrics, src_b)
        realign = realign_candidates(pairs)
        evidence_idx = [i for i, p in enumerate(pairs) if p.evidence and i not in screened]
        with ThreadPoolExecutor(max_workers=options.threads) as pool:
            found = dict(zip(evidence_idx, pool.map(
                lambda i: pair_evidence(src_a, src_b, pairs[i], anchors[pairs[i].component], i in realign), evidence_idx,
            )))
        tests = [found.get(i) for i in range(len(pairs))]
        digest_a, digest_b = (d.result() for d in digests) if digests else (None, None)

    rows = []
    for i, (p, m, t) in enumerate(zip(pairs, metrics, tests)):
        reason = screened.get(i, p.non_evidence_reason)
        if p.evidence and t is None and i not in screened:
            reason = (
                "widths differ and no unit-matching test applies to this role" if p.width_differs
                else "too few exchangeable units to test (needs at least 16 on a unit axis)"
            )
        rows.append(TensorResult(
            a=p.a.name, b=p.b.name, role=p.a.role, component=p.component,
            layer_a=p.a.layer, layer_b=p.b.layer, shape=list(p.a.shape),
            compared_shape=list(logical_shape(p.b)) if p.width_differs else list(p.shape),
            kept_unit_fraction=p.kept_unit_fraction,
            dtype_a=p.a.info.dtype.code, dtype_b=p.b.info.dtype.code, matched_by=p.matched_by,
            cosine=m.cosine, pearson=m.pearson, rel_l2=m.rel_l2, identical=m.identical,
            evidence=t is not None, non_evidence_reason=None if t is not None else reason,
            unit_cosine=None if t is None else t.mean_cosine, z=None if t is None else t.z,
            log10_p=None if t is None else t.log10_p, test_axis=None if t is None else t.axis,
            test=None if t is None else t.test,
            mean_a=m.mean_a, std_a=m.std_a, mean_b=m.mean_b, std_b=m.std_b,
            evidence_class=None if t is None else t.evidence_class,
            tests=None if t is None else {name: {"z": z, "log10_p": lp} for name, z, lp in t.by_test},
        ))
    components = judge_components(pairs, tests, rows, options.alpha, options.min_effect, layer_maps, expert_maps)
    verdict, log10_p = overall(components)
    notes = []
    if not pairs:
        notes.append("No tensor of A could be paired with a tensor of B: nothing was compared (see unmatched).")
    if vocab is not None and vocab.source == "leading-ids" and not vocab.identity:
        notes.append(
            "No tokenizer files on both sides: token rows were compared on their common leading ids, assuming "
            "the same id means the same token there."
        )
    n_non = sum(1 for r in rows if not r.evidence)
    if n_non:
        notes.append(
            f"{n_non} matched tensors are shown but not counted as evidence (norm gains, biases, fixed buffers, "
            "tiny tensors): their similarity says nothing about lineage."
        )
    return ComparisonResult(
        modelkin_version=__version__,
        a=_ref(src_a, inv_a, digest_a),
        b=_ref(src_b, inv_b, digest_b),
        verdict=verdict,
        log10_p=log10_p,
        alpha=options.alpha,
        components=components,
        tensors=rows,
        unmatched=[UnmatchedTensor(u.side, u.name, u.component, u.role, u.reason) for u in unmatched],
        seconds=time.perf_counter() - started,
        notes=notes,
        vocabulary=None if vocab is None else vocab.to_dict(),
    )
