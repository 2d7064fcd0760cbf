"""The public entry point: ``compare(a, b)`` runs the pipeline

    sources -> inventory -> alignment -> metrics -> statistics -> verdict -> ComparisonResult
"""

from __future__ import annotations

import itertools
import time
from dataclasses import replace

import numpy as np
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Callable, NamedTuple

from . import __version__
from .alignment import (
    VocabMap, align_by_name, map_experts, map_layers, map_vocab, repair_by_layers, split_fused,
)
from .errors import UsageError
from .inventory import COMPONENTS, Inventory, build_inventory
from .alignment.budget import LayerSample, plan_layers, restrict
from .alignment.reads import FULL, SAMPLED, ReadPlan, plan_reads, prefetch_requests
from .metrics import stream_metrics
from .metrics.intervals import sample_intervals
from .options import CompareOptions
from .pool import one_blas_thread
from .results import ComparisonResult, ModelRef, ReadSummary, TensorResult, UnmatchedTensor
from .sampling import DEFAULT_SAMPLE
from .sources import ModelSource, open_model
from .sources.fingerprint_format import MissingRowsError
from .sources.digests import DigestJobs
from .sources.http import FetchStats
from .statistics import find_anchor
from .statistics.evidence import evidence_chunks, evidence_of, realign_candidates
from .statistics.invariant import component_tests, prefetch_component_reads
from .statistics.screening import screen
from .verdict import judge_components, overall
from .verdict.coverage import counted_components

ProgressFn = Callable[[int, int], None]  # (bytes done, bytes total)


def _ref(src: ModelSource, inv: Inventory, digests: dict | None) -> ModelRef:
    files = digests if digests is not None else {name: None for name in src.file_names()}
    parameters = {c: sum(roles.values()) for c, roles in inv.summary().items()}
    return ModelRef(src.location, str(src.root), inv.family, len(src.tensors), src.n_bytes, files, src.revision, parameters)


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
    stats = FetchStats()
    if progress is not None:  # remote bytes as they arrive, against what the prefetches announced
        stats.on_bytes = lambda n: progress(stats.bytes_fetched + stats.bytes_from_cache, max(stats.planned, 1))
    src_a, src_b = _open_both(a, b, options, stats)
    try:
        options = _fingerprint_options(src_a, src_b, options)
        # modelkin parallelises over tensors itself; BLAS threads on top of that only fight for the cores.
        with one_blas_thread():
            return _run(src_a, src_b, options, progress, started, stats)
    finally:
        if src_a is not a:
            src_a.close()
        if src_b is not b:
            src_b.close()


def _fingerprint_options(src_a: ModelSource, src_b: ModelSource, options: CompareOptions) -> CompareOptions:
    """A fingerprint holds the rows the sampled mode reads with its policy: compare in that mode, that policy."""
    policies = {f.policy for s in (src_a, src_b) for f in s.files if f.format_name == "fingerprint"}
    if not policies:
        return options
    if len(policies) > 1:
        raise UsageError("the two fingerprints were made with different sample policies: make them with the same one")
    if options.read_mode == FULL:
        raise UsageError("a fingerprint holds sampled rows only: compare it in sampled mode (drop --full)")
    return replace(options, read_mode=SAMPLED, sample_policy=policies.pop())


def _open_both(a, b, options: CompareOptions, stats: FetchStats) -> tuple[ModelSource, ModelSource]:
    """Both sources, opened together (a remote model's listing and headers are a few round trips each)."""
    def one(x, revision):
        return x if isinstance(x, ModelSource) else open_model(x, revision, stats)

    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = [pool.submit(one, a, options.revision_a), pool.submit(one, b, options.revision_b)]
    errors = [f.exception() for f in futures]
    if any(errors):
        for f, x in zip(futures, (a, b)):
            if f.exception() is None and f.result() is not x:
                f.result().close()
        raise next(e for e in errors if e is not None)
    stats.opening_bytes = stats.bytes_fetched  # headers: what a byte cap does not count
    return futures[0].result(), futures[1].result()


def _read_mode(src_a: ModelSource, src_b: ModelSource, options: CompareOptions) -> str:
    return options.read_mode or (SAMPLED if src_a.remote or src_b.remote else FULL)


def _prefetch(src: ModelSource, inv: Inventory, options: CompareOptions, mode: str) -> None:
    """A remote model's bytes that the comparison will read, fetched together (coalesced, in parallel)."""
    if not src.remote:
        return
    components = set(options.components or ())
    # The sampled rows (what alignment reads, and a sampled comparison's reads): in the background in sampled
    # mode, so that alignment and the comparison start on the first rows while the others arrive. Capped, at
    # most half the cap per model, chosen as the plan chooses (``_plan`` counts them). A full read then
    # fetches every other byte beside the comparison, which reads each range as soon as it has arrived.
    cap = None if options.max_bytes is None else options.max_bytes // 2
    src.prefetch_rows(prefetch_requests(inv.tensors, components, SAMPLED, options.sample_policy, cap),
                      background=mode == SAMPLED and cap is None)
    if mode == FULL and cap is None:  # capped: the plan decides what is fetched (``_plan``)
        src.prefetch_rows(prefetch_requests(inv.tensors, components, FULL, options.sample_policy), background=True)
    if cap is not None:  # alignment reads only what was fetched here (a step needing more is skipped); ``_plan`` lifts it
        src.hold_fetches(True)


def _align(src_a: ModelSource, src_b: ModelSource, options: CompareOptions):
    """Inventory and alignment stages: names/roles/fused parts, vocabulary, layers, experts.

    A budgeted sample (fingerprints) reads some layers only: the stages after this one see inventories without
    the other layers (``alignment.budget``); the full inventories are returned too, for the model records."""
    full_a, full_b = build_inventory(src_a), build_inventory(src_b)
    mode = _read_mode(src_a, src_b, options)
    budget = ((plan_layers(full_a.tensors, options.sample_policy), plan_layers(full_b.tensors, options.sample_policy))
              if mode == SAMPLED else (None, None))
    inv_a, inv_b = restrict(full_a, budget[0]), restrict(full_b, budget[1])
    with ThreadPoolExecutor(max_workers=2) as pool:  # both models' requests in flight together
        list(pool.map(lambda si: _prefetch(si[0], si[1], options, mode), ((src_a, inv_a), (src_b, inv_b))))
    inv_a, inv_b = split_fused(inv_a, inv_b)
    vocab = _vocabulary(src_a, src_b, inv_a, inv_b)
    alignment = align_by_name(inv_a, inv_b, vocab)
    shared = sorted(set(inv_a.components()) & set(inv_b.components()))
    if options.components:
        shared = [c for c in shared if c in options.components]
    layer_maps = {c: m for c in shared if (m := _held(map_layers, None, src_a, src_b, inv_a, inv_b, c,
                                                        _unit_policy(options, mode))) is not None}
    alignment = repair_by_layers(alignment, inv_a, inv_b, layer_maps)
    alignment, expert_maps = _held(map_experts, (alignment, {}), src_a, src_b, inv_a, inv_b, alignment, vocab)
    return _Aligned((full_a, full_b), (inv_a, inv_b), budget, vocab, alignment, layer_maps, expert_maps)


class _Aligned(NamedTuple):
    """What the alignment stages produce for ``_run``."""

    full: tuple[Inventory, Inventory]  # every tensor (the model records, counted components)
    inventories: tuple[Inventory, Inventory]  # what is compared (a budgeted sample's layers only)
    budget: tuple[LayerSample | None, LayerSample | None]
    vocab: VocabMap | None
    alignment: object
    layer_maps: dict
    expert_maps: dict


def _unit_policy(options: CompareOptions, mode: str):
    """The sample the layer signatures and the invariant tests' units come from: the default policy's in every
    read mode (so sampled and full reads test the same units), except under a budgeted policy, whose sample
    holds everything its compare reads."""
    return options.sample_policy if mode == SAMPLED and options.sample_policy.budgeted else DEFAULT_SAMPLE


def _budget_note(budget: tuple[LayerSample | None, LayerSample | None]) -> str | None:
    parts = []
    for side, plan in zip("AB", budget):
        if plan is not None and (left := plan.left_out()):
            parts.append(f"{side}: " + ", ".join(f"{plan.k} of {len(plan.layers[c])} {c} layers" for c in sorted(left)))
    if not parts:
        return None
    return ("Budgeted sample (a fingerprint's): only some layers were read, chosen by a key-seeded order of layer "
            "indices (" + "; ".join(parts) + "); the tensors of the other layers were not compared.")


def _held(step, fallback, *args):
    """A step whose reads a fingerprint may not hold: without those rows it is skipped (as without data)."""
    try:
        return step(*args)
    except MissingRowsError:
        return fallback


def _plan(src_a: ModelSource, src_b: ModelSource, pairs: list, options: CompareOptions, stats: FetchStats) -> ReadPlan:
    """Full or sampled reads (sampled by default for remote models), capped; remote bytes fetched ahead.

    Under a byte cap, what was fetched since the headers (alignment's rows) counts against it, and a pair costs
    what of its reads is still to fetch."""
    src_a.hold_fetches(False)
    src_b.hold_fetches(False)
    cap = None if options.max_bytes is None else options.max_bytes - (stats.bytes_fetched - stats.opening_bytes)
    plan = plan_reads(pairs, _read_mode(src_a, src_b, options), cap, options.sample_policy,
                      lambda p: src_a.unfetched_bytes(p.a.info) + src_b.unfetched_bytes(p.b.info))
    held = [p for p in plan.pairs if src_a.covers(p.a.info) and src_b.covers(p.b.info)]
    if len(held) < len(plan.pairs):  # a fingerprint lacks rows this pairing needs (e.g. a re-mapped vocabulary)
        ids = {id(p) for p in held}
        plan = replace(plan, pairs=tuple(held), not_held=tuple(p for p in plan.pairs if id(p) not in ids))
    for src, side in ((src_a, "a"), (src_b, "b")):
        if src.remote and (plan.mode != FULL or options.max_bytes is not None):  # else fetched in the background
            src.prefetch_rows([(info, np.arange(info.shape[0])) for p in plan.pairs
                               if (info := getattr(p, side).info).shape and info.n_bytes],
                              background=options.max_bytes is None)
    return plan


def _fetch_ahead(src_a: ModelSource, src_b: ModelSource, inv_a, inv_b, vocab, counted, plan: ReadPlan,
                 options: CompareOptions) -> Future | None:
    """Remote models: what the invariant tests will read, fetched while the metric pass runs instead of after
    it (none under a byte cap, whose share for the tests is known only then)."""
    if not (src_a.remote or src_b.remote) or options.max_bytes is not None:
        return None
    pool = ThreadPoolExecutor(max_workers=1)
    future = pool.submit(prefetch_component_reads, src_a, src_b, inv_a, inv_b, vocab, list(counted),
                         plan.mode == SAMPLED, _unit_policy(options, plan.mode))
    pool.shutdown(wait=False)
    return future


def _why_untested(p, t, screened: str | None) -> str | None:
    """Why an aligned pair carries no evidence test (None when one ran)."""
    if t is not None:
        return None
    if screened or not p.evidence:
        return screened or p.non_evidence_reason
    if p.width_differs:
        return "widths differ and no unit-matching test applies to this role"
    return "too few exchangeable units to test (needs at least 16 on a unit axis)"


def _run(src_a: ModelSource, src_b: ModelSource, options: CompareOptions, progress, started: float,
         stats: FetchStats) -> ComparisonResult:
    (full_a, full_b), (inv_a, inv_b), budget, vocab, alignment, layer_maps, expert_maps = _align(src_a, src_b, options)
    pairs = list(alignment.pairs)
    unmatched = list(alignment.unmatched)
    if options.components:
        keep = set(options.components)
        pairs = [p for p in pairs if p.component in keep]
        unmatched = [u for u in unmatched if u.component in keep]
    plan = _plan(src_a, src_b, pairs, options, stats)
    pairs = list(plan.pairs)

    total = sum(p.a.info.n_bytes + p.b.info.n_bytes for p in pairs)
    done = 0

    def on_bytes(n: int) -> None:
        nonlocal done
        done += n
        if progress:
            progress(min(done, total), total)

    counted = counted_components(full_a, full_b, options.components)
    ahead = _fetch_ahead(src_a, src_b, inv_a, inv_b, vocab, counted, plan, options)
    # Hash the files on a side thread while the metric pass runs (hashlib releases the GIL), then on every
    # thread given: the files left are hashed beside the statistics.
    hashing = DigestJobs((src_a, src_b), options.digest_cache) if options.hash_files else None
    try:
        metrics = stream_metrics(src_a, src_b, pairs, threads=options.threads, on_bytes=on_bytes)
        if hashing:
            hashing.widen(options.threads)
        anchors = {c: _held(find_anchor, None, src_a, src_b, [p for p in pairs if p.component == c]) for c in {p.component for p in pairs}}
        screened = screen(src_a, pairs, metrics, src_b)
        realign = realign_candidates(pairs)
        evidence_idx = [i for i, p in enumerate(pairs) if p.evidence and i not in screened]
        chunks = evidence_chunks(evidence_idx)
        with ThreadPoolExecutor(max_workers=options.threads) as pool:
            found = dict(zip(evidence_idx, itertools.chain.from_iterable(pool.map(
                lambda idx: evidence_of(src_a, src_b, [pairs[i] for i in idx], anchors, [i in realign for i in idx]), chunks,
            ))))
        tests = [found.get(i) for i in range(len(pairs))]
        digest_a, digest_b = hashing.result() if hashing else (None, None)
    finally:
        if hashing:
            hashing.cancel()
        if ahead is not None:
            wait([ahead])  # before the sources close, whatever happened here

    rows = [TensorResult.from_pair(p, m, t, sample_intervals(src_a, src_b, p, m) if options.intervals else None,
                                   _why_untested(p, t, screened.get(i)))
            for i, (p, m, t) in enumerate(zip(pairs, metrics, tests))]
    if ahead is not None:
        ahead.result()  # a failed fetch fails here as it would have below
    left = None if plan.left_bytes is None else max(0, plan.left_bytes)
    excluded = ({pairs[i].a.name for i in screened}, {pairs[i].b.name for i in screened})
    invariant = component_tests(src_a, src_b, inv_a, inv_b, vocab, list(counted), left, plan.mode == "sampled", excluded,
                                _unit_policy(options, plan.mode), options.threads)
    components = judge_components(pairs, tests, rows, options.alpha, options.min_effect, layer_maps, expert_maps,
                                  invariant, counted)
    verdict, log10_p = overall(components)
    notes = []
    if not pairs and not any(t["ran"] for c in components.values() for t in c.invariant_tests):
        notes.append("No tensor of A could be paired with a tensor of B: nothing was compared (see unmatched).")
    elif not pairs:
        notes.append("No tensor of A pairs with a tensor of B by name, role and shape (see unmatched): components "
                     "were compared only through the inputs both models share (shared-basis or channel tests).")
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
    if plan.mode == SAMPLED and plan.planned_bytes < plan.full_bytes:  # models read whole: nothing to say
        notes.append(
            f"Sampled reads: {plan.planned_bytes / max(plan.full_bytes, 1):.1%} of the compared tensors' bytes were read "
            "(key-seeded blocks of rows). Pearson, cosine and rel-L2 of sampled tensors are estimates with 95 % "
            "intervals; 'identical' of a sampled tensor speaks of the sampled rows only."
        )
    if (budget_note := _budget_note(budget)) is not None:
        notes.append(budget_note)
    if plan.not_held:
        notes.append(
            f"{len(plan.not_held)} tensor pairs were not compared: a fingerprint does not hold the rows this pairing "
            "needs (compare the models themselves for them): " + ", ".join(p.a.name for p in plan.not_held[:5])
        )
    if plan.left_out:
        notes.append(
            f"The byte cap (--max-bytes) left {len(plan.left_out)} tensor pairs out: they were not read, and the "
            "verdicts' power counts only what was read."
        )
    return ComparisonResult(
        modelkin_version=__version__,
        a=_ref(src_a, full_a, digest_a),
        b=_ref(src_b, full_b, digest_b),
        verdict=verdict,
        log10_p=log10_p,
        alpha=options.alpha,
        components=components,
        tensors=rows,
        unmatched=[UnmatchedTensor(u.side, u.name, u.component, u.role, u.reason) for u in unmatched],
        seconds=time.perf_counter() - started,
        notes=notes,
        vocabulary=None if vocab is None else vocab.to_dict(),
        reads=ReadSummary(plan.mode, plan.planned_bytes, plan.full_bytes, stats.bytes_fetched, stats.bytes_from_cache,
                          stats.requests, options.max_bytes, [p.a.name for p in plan.left_out]),
        min_effect=options.min_effect,
    )
