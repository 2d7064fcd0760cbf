"""Fixed buffers are never evidence: generated tensors recognised by name and by content."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

import modelkin
from modelkin.errors import FormatError
from modelkin.inventory import build_inventory
from modelkin.inventory.buffers import _load, buffer_reason
from modelkin.sources import open_model
from modelkin.statistics.screening import generated_reason

from builders import qwen2_tensors, write_model


def sinusoid(n_pos: int, d: int) -> np.ndarray:
    """The Transformer's sinusoidal position table [n_pos, d] (sin on even columns, cos on odd)."""
    pos = np.arange(n_pos)[:, None]
    ang = pos / 10000 ** (2 * np.arange(d // 2)[None, :] / d)
    t = np.zeros((n_pos, d))
    t[:, 0::2], t[:, 1::2] = np.sin(ang), np.cos(ang)
    return t.astype(np.float32)


def rotary_cos(n_pos: int = 128, head_dim: int = 32) -> np.ndarray:
    inv = 1.0 / 10000 ** (np.arange(0, head_dim, 2) / head_dim)
    return np.cos(np.arange(n_pos)[:, None] * np.concatenate([inv, inv])[None, :]).astype(np.float32)


def unknown_model(seed: int, extra: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A small model of an architecture no family file knows: random matrices plus ``extra``."""
    r = np.random.default_rng(seed)
    return {"enc.w1": r.normal(size=(64, 64)).astype(np.float32),
            "enc.w2": r.normal(size=(128, 64)).astype(np.float32), **extra}


def _compare(tmp_path, ta, tb, config=None):
    return modelkin.compare(write_model(tmp_path / "a", ta, config), write_model(tmp_path / "b", tb, config))


def _row(res, name):
    return next(t for t in res.tensors if t.a == name)


def test_shared_sinusoidal_table_of_unknown_name_is_not_evidence(tmp_path):
    # Review finding 1: two independent random models holding the same table came out related (log10 p -42.9).
    table = sinusoid(128, 64)
    res = _compare(tmp_path, unknown_model(1, {"enc.table": table}), unknown_model(2, {"enc.table": table.copy()}))
    row = _row(res, "enc.table")
    assert row.identical and not row.evidence and row.log10_p is None
    assert row.non_evidence_reason.startswith("a closed-form sequence down every column")
    # Not related. Not "independent" either: this two-layer network has 64 channels for the channel test
    # (the only test a permuted copy cannot fool), too few to rule out a weak relationship.
    assert res.verdict == "inconclusive" and res.components["other"].n_evidence == 2
    assert "too few units" in res.components["other"].reason


def test_buffer_names_are_recognised_in_unknown_and_known_families(tmp_path):
    # Under a buffer's name the table is recognised before any value is read ...
    table = sinusoid(128, 64)
    res = _compare(tmp_path, unknown_model(1, {"enc.pos_table": table}), unknown_model(2, {"enc.pos_table": table}))
    row = _row(res, "enc.pos_table")
    assert (row.role, row.evidence) == ("buffer", False)
    assert row.non_evidence_reason.startswith("a sinusoidal position table: generated from a formula")
    assert res.verdict == "inconclusive"  # not related; too few channels for "independent" (see above)
    # ... and a rotary cache left in a qwen2 checkpoint (review: related, log10 p -43.1) joins the text component.
    ta, tb = qwen2_tensors(1), qwen2_tensors(2)
    ta["model.rotary_emb.cos_cached"] = tb["model.rotary_emb.cos_cached"] = rotary_cos()
    res = _compare(tmp_path / "q", ta, tb, {"model_type": "qwen2"})
    row = _row(res, "model.rotary_emb.cos_cached")
    assert (row.role, row.component, row.evidence) == ("buffer", "text", False)
    assert "rotary sine/cosine table" in row.non_evidence_reason
    assert res.verdict == "independent" and set(res.components) == {"text"}


def test_buffer_name_outranks_a_family_rule_and_is_not_unassigned(tmp_path):
    t = qwen2_tensors(1)
    t["model.layers.0.self_attn.causal_mask"] = np.tril(np.ones((64, 64), np.float32))
    write_model(tmp_path / "m", t, {"model_type": "qwen2"})
    inv = build_inventory(open_model(tmp_path / "m"))
    e = inv.by_name["model.layers.0.self_attn.causal_mask"]
    assert (e.role, e.component, e.evidence) == ("buffer", "text", False)
    assert "attention mask" in e.non_evidence_reason and inv.unassigned == ()
    # A rule that matches the name's head (embed_tokens) does not make its generated tail a weight.
    t["model.embed_tokens.position_ids"] = np.arange(256, dtype=np.float32)[None, :]
    write_model(tmp_path / "m2", t, {"model_type": "qwen2"})
    e = build_inventory(open_model(tmp_path / "m2")).by_name["model.embed_tokens.position_ids"]
    assert (e.role, e.component, e.family, e.evidence) == ("buffer", "text", "qwen2", False)
    assert buffer_reason("x.inv_freq") is not None and buffer_reason("x.weight") is None


@pytest.mark.parametrize("case", ["arange", "causal_mask", "constant", "geometric", "sinusoid_bf16", "rotary_cos"])
def test_generated_content_is_recognised(tmp_path, case):
    n = 256
    tensors = {
        "arange": np.arange(512, dtype=np.float32)[None, :],  # position ids [1, 512]
        "causal_mask": np.tril(np.ones((n, n), np.float32)) * -3.4e38,  # additive mask: 0 and the float minimum
        "constant": np.full((64, 64), 0.5, np.float32),
        "geometric": np.tile(1.0 / 10000 ** (np.arange(0, 64, 2) / 64), (8, 1)).astype(np.float32),
        "sinusoid_bf16": sinusoid(2048, 128).astype(ml_dtypes.bfloat16),  # rounded to 8 bits of mantissa
        "rotary_cos": rotary_cos(4096, 64),
    }
    write_model(tmp_path / "m", {"x.t": tensors[case]})
    with open_model(tmp_path / "m") as src:
        why = generated_reason(src, src.tensors["x.t"])
    expected = {"arange": "closed-form sequence", "causal_mask": "two values", "constant": "every value is 0.5",
                "geometric": "closed-form sequence", "sinusoid_bf16": "closed-form sequence",
                "rotary_cos": "closed-form sequence"}[case]
    assert why is not None and expected in why


@pytest.mark.parametrize("case", ["gaussian", "smooth_random_walk", "learned_position_like", "int8_grid"])
def test_learned_looking_content_is_not_called_generated(tmp_path, case):
    r = np.random.default_rng(3)
    walk = np.cumsum(r.normal(size=(256, 64)), axis=0)  # smooth down the columns, but not a recurrence
    tensors = {
        "gaussian": r.normal(size=(128, 64)),
        "smooth_random_walk": walk,
        # a sinusoidal table plus the noise training adds: learned from a generated start
        "learned_position_like": sinusoid(256, 64) + 0.05 * r.normal(size=(256, 64)),
        "int8_grid": np.round(r.normal(size=(128, 64)) * 20) / 20,
    }
    write_model(tmp_path / "m", {"x.t": tensors[case].astype(np.float32)})
    with open_model(tmp_path / "m") as src:
        assert generated_reason(src, src.tensors["x.t"]) is None


def test_identical_tensor_of_unknown_role_is_a_possible_fixed_buffer(tmp_path):
    # A seeded random projection both models build the same way: byte-identical, unknown role, not a formula
    # this screen knows. It must not decide the verdict on its own.
    proj = np.random.default_rng(0).normal(size=(64, 48)).astype(np.float32)
    res = _compare(tmp_path, unknown_model(1, {"enc.proj": proj}), unknown_model(2, {"enc.proj": proj.copy()}))
    row = _row(res, "enc.proj")
    assert row.identical and not row.evidence and "possibly a fixed buffer" in row.non_evidence_reason
    # Not related: the buffer is no channel either (it would otherwise align the network from itself).
    assert res.verdict == "inconclusive" and res.components["other"].invariant_tests[0]["layers"][0]["module"] == "enc.w1"
    # The same tensor, but every comparable tensor is identical: a verbatim copy, which does count.
    copy = _compare(tmp_path / "c", unknown_model(1, {"enc.proj": proj}), unknown_model(1, {"enc.proj": proj}))
    assert copy.verdict == "related" and all(t.evidence for t in copy.tensors)


def test_buffer_table_is_validated():
    assert _load({"buffers": [{"what": "w", "names": ["a", "b"]}]}) == {"a": "w", "b": "w"}
    with pytest.raises(FormatError, match="'what'"):
        _load({"buffers": [{"what": "w", "names": ["a"], "role": "x"}]})
    with pytest.raises(FormatError, match="twice"):
        _load({"buffers": [{"what": "w", "names": ["a"]}, {"what": "v", "names": ["a"]}]})
    with pytest.raises(FormatError, match="keys"):
        _load({"buffer": []})
