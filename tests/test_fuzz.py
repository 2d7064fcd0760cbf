"""Fuzzing every parser: a short deterministic run per target, the kept regression inputs, the harness itself.

Targets are ``tests/fuzz/target_*.py`` (each ``fuzz_one(data)`` + ``SEEDS``), found by globbing, so a new
format's target joins these tests by existing. The harness (``tests/fuzz/harness.py``) draws inputs with
hypothesis (derandomized here: the same inputs every run) and flags anything but ``ModelkinError``, inputs
over the time limit and runaway memory. ``benchmarks/fuzz.py`` runs the same harness at 100,000 inputs
per target; what either finds is kept under ``tests/fuzz/regressions/<target>/`` and replayed below.
"""

from __future__ import annotations

import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "fuzz"))
import harness  # noqa: E402

from modelkin.errors import FormatError  # noqa: E402

TARGETS = sorted(harness.discover())
SHORT_RUN_INPUTS = 150  # per target: about 1 s each on an idle core (hypothesis draws most of it)
SHORT_RUN_BUDGET_S = 6.0  # a loaded machine stops a target's run here rather than stretch the suite


def test_every_parser_has_a_target():
    assert {"safetensors", "shard_index", "gguf", "pytorch", "tokenizer", "config"} <= set(TARGETS)


@pytest.mark.parametrize("name", TARGETS)
def test_seeds_are_valid_files(name):
    """Seeds must parse cleanly (not even a ModelkinError): mutations of broken seeds test little."""
    module = harness.load(name)
    for seed in module.SEEDS:
        module.fuzz_one(seed)


@pytest.mark.parametrize("name", TARGETS)
def test_short_fuzz_run(name, tmp_path):
    module = harness.load(name)
    report = harness.run(name, module, SHORT_RUN_INPUTS, budget_s=SHORT_RUN_BUDGET_S)
    assert report.inputs >= min(100, SHORT_RUN_INPUTS)  # the budget cut it short only on a very busy machine
    lines = []
    for f in report.findings.values():
        path = f.save(tmp_path / name)
        lines.append(f"{f.kind}: {f.signature}: {f.detail} (input {path}; keep it in tests/fuzz/regressions/{name}/)")
    assert not lines, "\n".join(lines)


def _regressions() -> list[tuple[str, Path]]:
    return [(name, p) for name in TARGETS for p in sorted((harness.REGRESSIONS / name).glob("*.bin"))]


@pytest.mark.parametrize("name,path", _regressions(), ids=lambda v: v.name if isinstance(v, Path) else v)
def test_kept_regression_inputs(name, path):
    """Every input that once crashed, hung or ran away with memory now gives a ModelkinError or parses."""
    finding = harness.replay(name, harness.load(name), path.read_bytes())
    assert finding is None, f"{finding.kind}: {finding.signature}: {finding.detail}"


def test_regression_folders_name_targets():
    if harness.REGRESSIONS.exists():
        assert {p.name for p in harness.REGRESSIONS.iterdir() if p.is_dir()} <= set(TARGETS)


# -- the harness finds what it is for ----------------------------------------------------------------------


def _fake_target(fuzz_one) -> types.ModuleType:
    module = types.ModuleType("target_fake")
    module.fuzz_one = fuzz_one
    module.SEEDS = [b'\x10\x00\x00\x00\x00\x00\x00\x00{"a": [1, 2]}   ', b"PK\x03\x04" + bytes(60)]
    return module


def test_harness_reports_crashes_but_not_modelkin_errors():
    def fuzz_one(data: bytes) -> None:
        if len(data) < 8:
            raise FormatError("too short", "fake")
        if data[:1] == b"\x10" and data[8:9] != b"{":
            raise KeyError("length field edited")

    report = harness.run("fake", _fake_target(fuzz_one), 100)
    assert report.crash_inputs > 0
    assert list(report.findings) == [f"KeyError at test_fuzz.py:{fuzz_one.__code__.co_firstlineno + 4} in fuzz_one"]
    assert report.findings["KeyError at test_fuzz.py:" + str(fuzz_one.__code__.co_firstlineno + 4) + " in fuzz_one"].kind == "crash"


def test_harness_interrupts_a_hang():
    def fuzz_one(data: bytes) -> None:
        while data[:2] == b"PK":
            pass

    t = time.perf_counter()
    report = harness.run("fake", _fake_target(fuzz_one), 0, time_limit_s=0.2)
    assert time.perf_counter() - t < 5
    assert report.hang_inputs == 1 and list(report.findings) == ["hang"]


def test_harness_flags_runaway_memory():
    def fuzz_one(data: bytes) -> None:
        if data[:2] == b"PK":
            np.ones(64 << 20, np.uint8)  # 64 MiB, touched

    report = harness.run("fake", _fake_target(fuzz_one), 0, memory_limit_bytes=16 << 20, trace_memory=True)
    assert report.memory_inputs == 1 and report.findings["memory"].data[:2] == b"PK"


def test_harness_flags_a_rise_of_resident_memory():
    def fuzz_one(data: bytes) -> None:
        if b"\xff" in data:
            np.ones(96 << 20, np.uint8)  # 96 MiB resident for a moment, freed on return

    report = harness.run("fake", _fake_target(fuzz_one), 100, memory_limit_bytes=32 << 20)
    assert report.memory_inputs > 0 and b"\xff" in report.findings["memory"].data
    assert report.crash_inputs == report.hang_inputs == 0


def test_mutations_reach_past_the_length_prefix():
    """JSON edits mostly keep a safetensors header's length prefix consistent, so the parser sees the edited
    JSON rather than stopping at the length check; and the full mutator changes the seeds."""
    import json

    from hypothesis import given, settings
    from hypothesis import strategies as st

    seed = harness.load("safetensors").SEEDS[0]
    seen = {"json_consistent": 0, "json_edited": 0, "changed": 0}

    @st.composite
    def json_edits(draw):
        return bytes(harness._json_edit(draw, bytearray(seed), [seed]))

    @settings(max_examples=100, derandomize=True, database=None, deadline=None)
    @given(json_edits(), harness.mutated([seed]))
    def draw(edited, mutated):
        seen["changed"] += mutated != seed
        if edited == seed:
            return
        seen["json_edited"] += 1
        n = int.from_bytes(edited[:8], "little")
        try:
            json.loads(edited[8 : 8 + n])
            seen["json_consistent"] += 1
        except (ValueError, RecursionError):  # prefix left stale on purpose, or a "deep" edit
            pass

    draw()
    assert seen["changed"] > 75 and seen["json_edited"] > 75 and seen["json_consistent"] > seen["json_edited"] // 3, seen
