"""The shipped examples give the verdicts the README promises (issue: core compare)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

import modelkin

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.parametrize("b, verdict", [("finetuned", "related"), ("independent", "independent")])
def test_base_against_child_and_independent(b, verdict):
    res = modelkin.compare(EXAMPLES / "base", EXAMPLES / b)
    assert res.verdict == verdict
    assert res.components["text"].verdict == verdict


def test_grafted_vision_tower_is_found_per_component():
    out = subprocess.run(
        [sys.executable, "-m", "modelkin", "compare", str(EXAMPLES / "vlm-donor"), str(EXAMPLES / "vlm-graft"), "--json", "-"],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["components"]["vision"]["verdict"] == "related"
    assert doc["components"]["text"]["verdict"] == "independent"
    assert doc["verdict"] == "related"
    # The layer map of the copied tower pairs block i with block i.
    assert doc["components"]["vision"]["layer_map"]["pairs"] == [[0, 0], [1, 1]]


def test_examples_stay_small():
    total = sum(p.stat().st_size for p in EXAMPLES.rglob("*") if p.is_file())
    assert total <= 5 * 1024 * 1024
