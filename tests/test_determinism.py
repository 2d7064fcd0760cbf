"""Same inputs, same report: byte-identical JSON whatever the thread count or process, except time fields."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np

import modelkin
from modelkin.results import INVOCATION_FIELDS, TIME_FIELDS

from builders import permute_ffn_units, perturb, qwen2_tensors, transform_residual, write_model


def _without_times(text: str, fields=TIME_FIELDS) -> str:
    doc = json.loads(text)
    assert set(fields) <= set(doc)
    for key in fields:
        doc[key] = None
    return json.dumps(doc, indent=2)


def _models(tmp_path):
    base = qwen2_tensors(1, hidden=96, ffn=192)
    base["extra.w"] = np.random.default_rng(2).normal(size=(64, 48)).astype(np.float32)  # unknown role
    q = np.eye(96)[np.random.default_rng(8).permutation(96)]
    child = perturb(permute_ffn_units(transform_residual(base, q)), 0.3)  # runs all three tests
    return write_model(tmp_path / "a", base, {"model_type": "qwen2"}), write_model(tmp_path / "b", child, {"model_type": "qwen2"})


def test_report_is_byte_identical_across_thread_counts(tmp_path):
    a, b = _models(tmp_path)
    one, two = modelkin.compare(a, b, threads=1).to_json(), modelkin.compare(a, b, threads=2).to_json()
    assert {t["test"] for t in json.loads(one)["tensors"] if t["evidence"]} >= {"same-index", "realigned"}
    assert _without_times(one) == _without_times(two)
    # Everything but the listed time fields is compared: the reports differ there and nowhere else.
    lines = [(x, y) for x, y in zip(one.splitlines(), two.splitlines()) if x != y]
    assert all(x.strip().startswith(tuple(f'"{k}"' for k in TIME_FIELDS)) for x, _ in lines)


def test_report_is_byte_identical_across_processes(tmp_path):
    a, b = _models(tmp_path)
    outs = []
    for threads, hash_seed in (("1", "0"), ("2", "4242")):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}  # set and dict orders differ between the two
        r = subprocess.run([sys.executable, "-m", "modelkin", "compare", str(a), str(b), "--json", "-",
                            "--threads", threads], capture_output=True, text=True, timeout=120, env=env)
        assert r.returncode == 0, r.stderr
        outs.append(_without_times(r.stdout, TIME_FIELDS + INVOCATION_FIELDS))
    assert outs[0] == outs[1]
