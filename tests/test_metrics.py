import numpy as np
import pytest

from modelkin.alignment import align_by_name
from modelkin.inventory import build_inventory
from modelkin.metrics import stream_metrics
from modelkin.metrics import streaming
from modelkin.sources import open_model

from builders import write_model


def _run(tmp_path, ta, tb, config=None, threads=2, **save):
    a = open_model(write_model(tmp_path / "a", ta, config))
    b = open_model(write_model(tmp_path / "b", tb, config))
    al = align_by_name(build_inventory(a), build_inventory(b))
    return {p.a.name: m for p, m in zip(al.pairs, stream_metrics(a, b, al.pairs, threads=threads))}


def test_metrics_match_numpy_across_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(streaming, "CHUNK_ELEMS", 1000)
    monkeypatch.setattr(streaming, "RANGE_ELEMS", 3000)  # many ranges and chunks, merged in any order
    r = np.random.default_rng(0)
    x = r.normal(size=(97, 103)).astype(np.float32) + 0.3
    y = (0.5 * x + r.normal(size=x.shape)).astype(np.float32)
    m = _run(tmp_path, {"w": x}, {"w": y})["w"]
    a, b = x.astype(np.float64).ravel(), y.astype(np.float64).ravel()
    assert m.n == a.size
    # float32 storage: chunk products in float32, totals in float64 (docstring of metrics.streaming)
    assert m.cosine == pytest.approx(a @ b / np.linalg.norm(a) / np.linalg.norm(b), rel=1e-6)
    assert m.pearson == pytest.approx(np.corrcoef(a, b)[0, 1], rel=1e-6)
    assert m.rel_l2 == pytest.approx(np.linalg.norm(a - b) / np.linalg.norm(a), rel=1e-6)
    assert m.std_a == pytest.approx(a.std(), rel=1e-6)
    assert m.identical is False
    # float64 storage stays float64 throughout
    m64 = _run(tmp_path / "f64", {"w": x.astype(np.float64)}, {"w": y.astype(np.float64)})["w"]
    assert m64.pearson == pytest.approx(np.corrcoef(a, b)[0, 1], rel=1e-12)
    assert m64.rel_l2 == pytest.approx(np.linalg.norm(a - b) / np.linalg.norm(a), rel=1e-12)


def test_rel_l2_is_exact_for_near_identical_tensors(tmp_path):
    x = np.random.default_rng(1).normal(size=100_000).astype(np.float32).reshape(100, 1000)
    y = x.copy()
    y[0, 0] = np.nextafter(y[0, 0], np.float32(np.inf))  # one ulp apart in one element
    m = _run(tmp_path, {"w": x}, {"w": y})["w"]
    expected = abs(float(y[0, 0]) - float(x[0, 0])) / np.linalg.norm(x.astype(np.float64))
    assert m.rel_l2 == pytest.approx(expected, rel=1e-6)
    assert m.identical is False


def test_identical_bytes_and_constant_tensors(tmp_path):
    x = np.random.default_rng(2).normal(size=(64, 64)).astype(np.float32)
    ones = np.ones((8, 8), np.float32)
    m = _run(tmp_path, {"w": x, "c": ones}, {"w": x, "c": ones})
    assert m["w"].identical is True and m["w"].rel_l2 == 0.0 and m["w"].pearson == pytest.approx(1.0)
    assert m["c"].pearson is None  # undefined for a constant, not 0 and not 1
    assert m["c"].cosine == pytest.approx(1.0)


def test_bf16_decoding_and_cross_dtype(tmp_path):
    import ml_dtypes

    x = np.random.default_rng(3).normal(size=(32, 32)).astype(np.float32)
    xb = x.astype(ml_dtypes.bfloat16)
    m = _run(tmp_path, {"w": xb}, {"w": xb.astype(np.float32)})["w"]
    assert m.rel_l2 == 0.0  # the same values, stored in two formats
    assert m.identical is False  # but not the same bytes


def test_transposed_pair_compares_matching_elements(tmp_path, monkeypatch):
    monkeypatch.setattr(streaming, "TILE", 7)
    w = np.random.default_rng(4).normal(size=(20, 30)).astype(np.float32)
    m = _run(tmp_path, {"transformer.h.0.mlp.c_fc.weight": np.ascontiguousarray(w.T)}, {"h.0.mlp.c_fc.weight": np.ascontiguousarray(w.T)}, {"model_type": "gpt2"})
    assert m["transformer.h.0.mlp.c_fc.weight"].rel_l2 == 0.0

    a = write_model(tmp_path / "c", {"model.layers.0.mlp.up_proj.weight": w}, {"model_type": "qwen2"})
    b = write_model(tmp_path / "d", {"h.0.mlp.c_fc.weight": np.ascontiguousarray(w.T)}, {"model_type": "gpt2"})
    sa, sb = open_model(a), open_model(b)
    al = align_by_name(build_inventory(sa), build_inventory(sb))
    assert len(al.pairs) == 1 and al.pairs[0].transpose_b
    (mm,) = stream_metrics(sa, sb, al.pairs)
    assert mm.rel_l2 == 0.0 and mm.pearson == pytest.approx(1.0)


def test_pearson_of_values_near_one_is_exact(tmp_path):
    # Norm gains: mean 1, spread 0.01. E[ab] - E[a]E[b] cancels 4 digits; small tensors stay in float64.
    r = np.random.default_rng(5)
    x = (1 + 0.01 * r.normal(size=4096)).astype(np.float32)
    y = (1 + 0.01 * r.normal(size=4096)).astype(np.float32)
    m = _run(tmp_path, {"g": x.reshape(64, 64)}, {"g": y.reshape(64, 64)})["g"]
    assert m.pearson == pytest.approx(np.corrcoef(x.astype(np.float64), y.astype(np.float64))[0, 1], abs=1e-9)
    assert m.cosine > 0.999  # why cosine of gains is no evidence
