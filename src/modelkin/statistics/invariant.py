"""Per component, the test that is invariant to permutations and rotations of hidden units.

Same-index tests see nothing once a copier has permuted or rotated hidden units, and they cannot compare
models of different widths at all. So every component present in both models gets one component-level test
that can:

* **shared-basis** (``shared_basis``): when both models embed inputs they share — token strings (a text
  component), pixels of a patch (a vision tower), or the vision tower's pixels seen through a projector.
* **channels** (``channel_test``): networks without such an embedding (CNNs, plain MLP stacks) whose first
  layer reads the input directly; channels are recovered layer by layer from that input basis.
* otherwise the test cannot run, and says why; the verdict then cannot be "independent" (see ``verdict``).

Every test is planned before anything is read (which rows of which tensors), so a remote model's bytes are
fetched together, in parallel, before the tests read them.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ..alignment import VocabMap, logical_shape
from ..alignment.channels import ChannelGraph, infer_graph
from ..inventory import Inventory, TensorEntry
from ..sampling import DEFAULT_SAMPLE, SamplePolicy
from ..sources import ModelSource
from ..sources.fingerprint_format import MissingRowsError
from .channel_test import channel_test
from .margins import ComponentTest, not_run
from .screening import generated_reason
from .shared_basis import BasisPlan, UnitPlan, head_counts, pixel_plan, plan_units, shared_basis_test, token_plan

IMAGE_CHANNELS = 4  # a first kernel reading at most this many channels reads an image (RGB, RGBA, grey)
NO_BASIS = "channels could not be aligned: no input basis shared"
# Unit rows come from the row blocks sampled reads fetch anyway; the basis (embedding rows, a patch embedding
# read whole) and attention heads (read whole) are extra. They may cost at most this much per model, in every
# read mode alike (so sampled and full reads give the same verdicts).
EXTRA_FLOOR_BYTES = 1 << 20
EXTRA_FRACTION = 0.02


@dataclass(frozen=True)
class _SharedJob:
    name = "shared-basis"
    basis: BasisPlan
    units_a: UnitPlan
    units_b: UnitPlan
    residual: bool  # the basis is the component's own embedding: its dimensions are units too

    def requests(self) -> tuple[list, list]:
        ra, rb = self.basis.requests()
        return ra + self.units_a.requests(), rb + self.units_b.requests()

    def run(self, src_a: ModelSource, src_b: ModelSource, comp: str) -> ComponentTest:
        basis = self.basis.read(src_a, src_b)
        return shared_basis_test(src_a, src_b, basis, self.units_a, self.units_b, comp, self.residual)


@dataclass(frozen=True)
class _ChannelJob:
    name = "channels"
    ga: ChannelGraph
    gb: ChannelGraph

    def requests(self) -> tuple[list, list]:
        whole = lambda g: [(n.entry.info, np.arange(n.entry.shape[0])) for n in g.nodes]  # noqa: E731
        return whole(self.ga), whole(self.gb)

    def run(self, src_a: ModelSource, src_b: ModelSource, comp: str) -> ComponentTest:
        return channel_test(src_a, src_b, self.ga, self.gb)


@dataclass(frozen=True)
class _NotRun:
    test: ComponentTest

    def requests(self) -> tuple[list, list]:
        return [], []

    def run(self, src_a: ModelSource, src_b: ModelSource, comp: str) -> ComponentTest:
        return self.test


def _first(entries: list[TensorEntry], role: str) -> TensorEntry | None:
    return next((e for e in entries if e.role == role and len(e.shape) >= 2), None)


def _own_basis(ea: list[TensorEntry], eb: list[TensorEntry], vocab: VocabMap | None,
               sampled: bool) -> tuple[BasisPlan | None, str | None]:
    """The component's own shared basis, or why its embeddings give none (None, None: it has no embedding)."""
    emb_a, emb_b = _first(ea, "embedding"), _first(eb, "embedding")
    if emb_a is not None and emb_b is not None:
        plan = token_plan(emb_a, emb_b, vocab, sampled)
        why = "too few token strings shared by the two vocabularies to fingerprint units" + (
            " among the rows sampled reads take (compare with full reads)" if sampled else "")
        return plan, None if plan else why
    pe_a, pe_b = _first(ea, "patch_embed"), _first(eb, "patch_embed")
    if pe_a is not None and pe_b is not None:
        plan = pixel_plan(pe_a, pe_b)
        why = f"the patch embeddings read different pixel layouts ({list(pe_a.shape[1:])} vs {list(pe_b.shape[1:])})"
        return plan, None if plan else why
    return None, None


def _bytes(requests: list) -> int:
    return sum(len(rows) * (info.n_bytes // info.shape[0]) for info, rows in requests if info.shape and info.shape[0])


def _usable(src: ModelSource, e: TensorEntry, excluded: set[str]) -> bool:
    """A tensor the tests may use: not screened out (buffers by content, duplicates, non-finite…); a tensor of
    unknown role that pairs with nothing was never screened, so its content is checked here."""
    if e.name in excluded:
        return False
    return e.role != "other" or not e.evidence or generated_reason(src, e.info) is None


def component_tests(src_a: ModelSource, src_b: ModelSource, inv_a: Inventory, inv_b: Inventory,
                    vocab: VocabMap | None, components: list[str], budget: int | None = None,
                    sampled: bool = False, excluded: tuple[set[str], set[str]] = (set(), set()),
                    policy: SamplePolicy = DEFAULT_SAMPLE, threads: int = 1) -> dict[str, list[ComponentTest]]:
    """Component name -> its invariant test(s) (one per component today), ``threads`` components at once (each
    test's randomness is seeded by its component: the order they run in changes nothing).

    ``budget``: bytes the tests may read (what ``--max-bytes`` leaves after the read plan); a test whose reads
    do not fit is not run, and says so. ``sampled``: a sampled compare, where every row read must be decided by
    one model alone (a fingerprint records what a sampled read of its model reads, and holds just that). Unit
    rows follow the default sample policy in every mode, so sampled and full reads test the same units.
    ``excluded``: names in A and in B that screening found not to be evidence (generated, possible fixed
    buffers, duplicates): never units, never channels. ``policy``: the sample unit rows come from (the default
    one, except under a budgeted policy: then its own sample, and no attention heads, which are read whole; the
    basis rows are part of such a policy's budget, not capped here).
    """
    jobs = _plan_jobs(src_a, src_b, inv_a, inv_b, vocab, components, budget, sampled, excluded, policy)
    _prefetch_both(src_a, src_b, list(jobs.values()))
    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(jobs)))) as pool:
        done = list(pool.map(lambda kv: [_run(kv[1], src_a, src_b, kv[0])], jobs.items()))
    return dict(zip(jobs, done))


def prefetch_component_reads(src_a: ModelSource, src_b: ModelSource, inv_a: Inventory, inv_b: Inventory,
                             vocab: VocabMap | None, components: list[str], sampled: bool = False,
                             policy: SamplePolicy = DEFAULT_SAMPLE) -> None:
    """Fetch ahead what ``component_tests`` will read, before screening is known (a remote comparison runs
    this beside the metric pass): planned with nothing excluded, so it reads what the tests will read
    plus, at most, rows of tensors screening then leaves out. No byte cap: call it only without one."""
    if src_a.remote or src_b.remote:
        jobs = _plan_jobs(src_a, src_b, inv_a, inv_b, vocab, components, None, sampled, (set(), set()), policy)
        _prefetch_both(src_a, src_b, list(jobs.values()))


def _plan_jobs(src_a: ModelSource, src_b: ModelSource, inv_a: Inventory, inv_b: Inventory, vocab: VocabMap | None,
               components: list[str], budget: int | None, sampled: bool, excluded: tuple[set[str], set[str]],
               policy: SamplePolicy) -> dict:
    """Component name -> the job that tests it, every read planned."""
    policy_rows = policy
    entries = {c: ([e for e in inv_a.tensors if e.component == c and _usable(src_a, e, excluded[0])],
                   [e for e in inv_b.tensors if e.component == c and _usable(src_b, e, excluded[1])])
               for c in components}
    own = {c: _own_basis(*entries[c], vocab, sampled) for c in components}
    jobs = {}
    for comp in components:
        ea, eb = entries[comp]
        if not any(e.evidence for e in ea) or not any(e.evidence for e in eb):
            continue  # nothing to test (only scalars, buffers, norm gains, biases): not counted at all
        basis, why_not = own[comp]
        if why_not is not None:
            jobs[comp] = _NotRun(not_run("shared-basis", f"{NO_BASIS}: {why_not}"))
        elif basis is not None:
            heads = ((head_counts(src_a.config), head_counts(src_b.config)) if basis.kind == "tokens" and not policy.budgeted
                     else (None, None))
            jobs[comp] = _shared_job(basis, ea, eb, heads if None not in heads else (None, None), True, policy_rows)
        elif comp == "projector" and (vision := own.get("vision", (None, None))[0]) is not None and vision.kind == "pixels":
            # A projector reads the vision tower's stream: its units are fingerprinted through the pixels.
            jobs[comp] = _shared_job(vision, ea, eb, (None, None), False, policy_rows)
        else:
            jobs[comp] = _channel_job(inv_a, inv_b, comp, ea, eb)
    if budget is not None:
        for comp, job in list(jobs.items()):
            need = sum(_bytes(r) for r in job.requests())
            if need > budget:
                jobs[comp] = _NotRun(not_run(getattr(job, "name", "shared-basis"), (
                    f"not run: its reads ({need:,} bytes) exceed what the byte cap leaves ({budget:,} bytes)")))
            else:
                budget -= need
    return jobs


def _prefetch_both(src_a: ModelSource, src_b: ModelSource, jobs: list) -> None:
    """One batch of requests per remote model for everything the tests will read, both models' at once."""
    batches = [(src, [r for job in jobs for r in job.requests()[side]]) for side, src in enumerate((src_a, src_b))]
    batches = [(src, reqs) for src, reqs in batches if src.remote and reqs]
    if len(batches) == 2:
        with ThreadPoolExecutor(max_workers=2) as pool:
            list(pool.map(lambda b: b[0].prefetch_rows(b[1]), batches))
    elif batches:
        batches[0][0].prefetch_rows(batches[0][1])


def _run(job, src_a: ModelSource, src_b: ModelSource, comp: str) -> ComponentTest:
    try:
        return job.run(src_a, src_b, comp)
    except MissingRowsError:  # a fingerprint made without these rows
        return not_run(getattr(job, "name", "shared-basis"),
                       "not run: a fingerprint does not hold the rows this test reads (remake it with this version)")


def _shared_job(basis: BasisPlan, ea: list[TensorEntry], eb: list[TensorEntry], heads, residual: bool,
                policy: SamplePolicy):
    """The shared-basis test, unless its basis costs more than allowed; heads only where they fit too."""
    cap = [max(EXTRA_FLOOR_BYTES, EXTRA_FRACTION * sum(e.info.n_bytes for e in es)) for es in (ea, eb)]
    extra = [_bytes(r) for r in basis.requests()]
    if policy.budgeted:  # the basis is paid for by the budget (alignment.budget); heads are not read
        return _SharedJob(basis, plan_units(ea, None, policy), plan_units(eb, None, policy), residual)
    if extra[0] > cap[0] or extra[1] > cap[1]:
        what = "embedding rows" if basis.kind == "tokens" else "patch embedding"
        return _NotRun(not_run("shared-basis", (
            f"{NO_BASIS} within the read budget: its basis ({what}, {max(extra):,} bytes) would cost more than "
            f"{EXTRA_FRACTION:.0%} of the component")))
    units = [plan_units(es, h, policy) for es, h in zip((ea, eb), heads)]
    if any(extra[i] + _bytes([r for h in units[i].heads for r in ((h.q.info, h.q_rows), (h.k.info, h.k_rows))]) > cap[i]
           for i in (0, 1)):
        units = [plan_units(es, None, policy) for es in (ea, eb)]  # heads are read whole: dropped when over budget
    return _SharedJob(basis, units[0], units[1], residual)


def _channel_job(inv_a: Inventory, inv_b: Inventory, comp: str, ea, eb):
    ga, gb = infer_graph(ea), infer_graph(eb)
    if ga is None or gb is None:
        return _NotRun(not_run("channels", f"{NO_BASIS} (no layer with channels to align)"))
    if not (ga.input_found and gb.input_found):
        return _NotRun(not_run("channels", f"{NO_BASIS}: no layer reads an input of a width the network does not "
                                           "also produce inside, so the layer reading the input could not be identified"))
    first = ga.nodes[0].entry
    reads_image = len(first.shape) >= 3 and logical_shape(first)[1] <= IMAGE_CHANNELS
    whole_network = all(e.component == comp for e in inv_a.tensors if e.evidence) and all(
        e.component == comp for e in inv_b.tensors if e.evidence)
    if not (reads_image or whole_network):
        return _NotRun(not_run("channels", f"{NO_BASIS}: its first layer ({ga.nodes[0].key}) reads the hidden units "
                                           "of another part of the model, not an input both models share"))
    return _ChannelJob(ga, gb)
