"""Result records: what a comparison returns, in the one shape the API, the CLI and the JSON report share.

``to_json()`` is the documented schema (docs/schema.md). "Missing" and "different" are kept apart: an
undefined number is ``null`` with the reason alongside, never a sentinel like 0 or -1.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

from .sources.digests import FileDigest

RELATED, INDEPENDENT, INCONCLUSIVE = "related", "independent", "inconclusive"
# The only report fields that may differ between two runs on the same inputs: times and dates, and the
# command line that asked for the run (it names --threads). Every other byte of ``to_json()`` is a function
# of the inputs and the options, whatever the thread count. (Remote models add transfer counters in
# ``reads`` that depend on what the range cache already held.)
TIME_FIELDS = ("seconds", "created")
INVOCATION_FIELDS = ("command",)


@dataclass(frozen=True, slots=True)
class ModelRef:
    location: str
    path: str
    family: str | None
    n_tensors: int
    n_bytes: int
    files: dict[str, FileDigest | None]  # weights file -> identity (None when hashing was switched off)
    revision: str | None = None  # commit SHA the files were read at (remote sources)
    parameters: dict[str, int] | None = None  # component -> parameters (all tensors of the model, compared or not)


@dataclass(frozen=True, slots=True)
class TensorResult:
    a: str
    b: str
    role: str
    component: str
    layer_a: int | None
    layer_b: int | None
    shape: list[int]
    compared_shape: list[int]  # logical shape compared (shared tokens only, for a re-mapped vocabulary)
    kept_unit_fraction: float | None  # width pruning: units of B / units of A (None when widths agree)
    dtype_a: str
    dtype_b: str
    matched_by: str
    cosine: float | None
    pearson: float | None
    rel_l2: float | None
    identical: bool
    evidence: bool
    non_evidence_reason: str | None
    unit_cosine: float | None  # matched-unit cosine of the evidence test
    z: float | None
    log10_p: float | None
    test_axis: int | None
    test: str | None  # "same-index" or "anchored" (docs/method.md)
    mean_a: float
    std_a: float
    mean_b: float
    std_b: float
    # Sampled reads: rows of A read (of its rows), 95 % jackknife intervals of the estimates, and whether
    # ``identical`` speaks of every byte ("full") or of the sampled rows only ("sampled").
    sampled_rows: list[int] | None = None  # [rows read, rows of A]
    pearson_ci: list[float] | None = None
    cosine_ci: list[float] | None = None
    rel_l2_ci: list[float] | None = None
    identity_basis: str = "full"
    evidence_class: str | None = None  # "permutation" or "assumption-based": what the test's null rests on
    tests: dict | None = None  # every test that ran: name -> {"z", "log10_p"} (uncorrected), for calibration

    @classmethod
    def from_pair(cls, p, m, t, ci, reason: str | None) -> "TensorResult":
        """The row of one aligned pair ``p`` (alignment's TensorPair) from its metrics ``m`` (TensorMetrics),
        its evidence test ``t`` (statistics' PairEvidence; None when no test ran: ``reason`` says why) and
        its sampling intervals ``ci`` (None for a full read)."""
        span = lambda iv: None if iv is None else [iv.low, iv.high]  # noqa: E731
        tested = t is not None
        return cls(
            a=p.a.name, b=p.b.name, role=p.a.role, component=p.component,
            layer_a=p.a.layer, layer_b=p.b.layer, shape=list(p.a.shape), compared_shape=list(p.compared_shape),
            kept_unit_fraction=p.kept_unit_fraction,
            dtype_a=p.a.info.dtype.code, dtype_b=p.b.info.dtype.code, matched_by=p.matched_by,
            cosine=m.cosine, pearson=m.pearson, rel_l2=m.rel_l2, identical=m.identical,
            evidence=tested, non_evidence_reason=None if tested else reason,
            unit_cosine=t.mean_cosine if tested else None, z=t.z if tested else None,
            log10_p=t.log10_p if tested else None, test_axis=t.axis if tested else None,
            test=t.test if tested else None,
            mean_a=m.mean_a, std_a=m.std_a, mean_b=m.mean_b, std_b=m.std_b,
            sampled_rows=None if ci is None else [ci.rows_a, ci.rows_total_a],
            pearson_ci=None if ci is None else span(ci.pearson),
            cosine_ci=None if ci is None else span(ci.cosine),
            rel_l2_ci=None if ci is None else span(ci.rel_l2),
            identity_basis="sampled" if p.a.info.sampled else "full",
            evidence_class=t.evidence_class if tested else None,
            tests={name: {"z": z, "log10_p": lp} for name, z, lp in t.by_test} if tested else None,
        )


@dataclass(frozen=True, slots=True)
class UnmatchedTensor:
    side: str
    name: str
    component: str
    role: str
    reason: str


@dataclass(frozen=True, slots=True)
class ComponentResult:
    name: str
    verdict: str
    log10_p: float
    n_tensors: int  # pairs compared in this component
    n_evidence: int  # of which counted as evidence
    median_pearson: float | None
    median_cosine: float | None
    median_unit_cosine: float | None
    min_detectable_unit_cosine: float | None  # smallest matched-unit cosine the evidence would detect
    decided_by: str  # the test behind the verdict
    reason: str  # one sentence a reader can check
    strongest: list[str]  # names (in A) of the strongest evidence tensors
    layer_map: dict  # method, pairs [[layer of A, layer of B]], dropped_a, unmatched_b, duplicated_a, reordered
    test: str | None = None  # the test of the strongest evidence tensor (the one that decides a "related")
    evidence_class: str | None = None  # that test's class: "permutation" or "assumption-based"
    matching_roles: list[str] = field(default_factory=list)  # related: roles of tensors significant on their own
    # Whether the component counts in the overall verdict (False: only scalars, buffers, gains, biases).
    counted: bool = True
    # Component-level tests invariant to permuted / rotated hidden units (shared-basis, channels).
    invariant_tests: list[dict] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ReadSummary:
    """What the comparison read: mode, bytes planned and fetched, and what a byte cap left out."""

    mode: str  # "full" or "sampled"
    planned_bytes: int  # tensor bytes of A and B the compared pairs read
    full_bytes: int  # tensor bytes of A and B those pairs hold
    remote_bytes_fetched: int  # bytes fetched over HTTP (0 for local models); cache hits not counted
    remote_bytes_cached: int  # bytes served from the on-disk range cache
    remote_requests: int
    max_bytes: int | None
    left_out: list[str]  # tensors of A left out by the byte cap


@dataclass(frozen=True)
class ComparisonResult:
    modelkin_version: str
    a: ModelRef
    b: ModelRef
    verdict: str
    log10_p: float
    alpha: float
    components: dict[str, ComponentResult]
    tensors: list[TensorResult]
    unmatched: list[UnmatchedTensor]
    seconds: float
    notes: list[str] = field(default_factory=list)
    vocabulary: dict | None = None  # source, n_a, n_b, n_shared, remapped
    reads: ReadSummary | None = None
    min_effect: float | None = None  # weakest matched-unit cosine "independent" must rule out
    created: str = field(default_factory=lambda: _now())  # when the comparison finished (UTC, ISO 8601)
    command: list[str] | None = None  # the command line, when run from the CLI

    def to_dict(self) -> dict:
        d = asdict(self)
        return _finite(d)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _finite(x):
    """JSON has no infinities: -inf log10 p (p = 0 exactly, e.g. identical tensors) becomes -1e308."""
    if isinstance(x, float):
        if math.isnan(x):
            return None
        if math.isinf(x):
            return -1e308 if x < 0 else 1e308
        return x
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_finite(v) for v in x]
    return x
