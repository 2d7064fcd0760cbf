import numpy as np
import pytest

from modelkin.alignment import align_by_name
from modelkin.inventory import build_inventory
from modelkin.metrics import stream_metrics
from modelkin.metrics import streaming
from modelkin.sources import open_model

from builders import write_model


HAVE_NUMBA = streaming.load_numba() is not None
KERNELS = ["numpy", pytest.param("numba", marks=pytest.mark.skipif(not HAVE_NUMBA, reason="numba not installed (extra 'fast')"))]


def _run(tmp_path, ta, tb, config=None, threads=2, kernel="numpy", **save):
    a = open_model(write_model(tmp_path / "a", ta, config))
    b = open_model(write_model(tmp_path / "b", tb, config))
    al = align_by_name(build_inventory(a), build_inventory(b))
    return {p.a.name: m for p, m in zip(al.pairs, stream_metrics(a, b, al.pairs, threads=threads, kernel=kernel))}


def _small_pieces(monkeypatch, piece_bytes=4096, sub=1000, range_elems=30_000):
    """Many pieces, float64 blocks and parallel units per tensor, merged in any order."""
    monkeypatch.setattr(streaming, "RAW_PIECE_BYTES", piece_bytes)
    monkeypatch.setattr(streaming, "CHUNK_ELEMS", 1000)
    monkeypatch.setattr(streaming, "SUB_ELEMS", sub)
    monkeypatch.setattr(streaming, "RANGE_ELEMS", range_elems)


@pytest.mark.parametrize("kernel", KERNELS)
def test_metrics_match_numpy_across_chunks(tmp_path, monkeypatch, kernel):
    _small_pieces(monkeypatch, range_elems=3000)
    r = np.random.default_rng(0)
    x = r.normal(size=(97, 103)).astype(np.float32) + 0.3
    y = (0.5 * x + r.normal(size=x.shape)).astype(np.float32)
    m = _run(tmp_path, {"w": x}, {"w": y}, kernel=kernel)["w"]
    a, b = x.astype(np.float64).ravel(), y.astype(np.float64).ravel()
    assert m.n == a.size
    # float32 products are exact in float64 and every sum is float64: float64 accuracy
    assert m.cosine == pytest.approx(a @ b / np.linalg.norm(a) / np.linalg.norm(b), rel=1e-12)
    assert m.pearson == pytest.approx(np.corrcoef(a, b)[0, 1], rel=1e-12)
    assert m.rel_l2 == pytest.approx(np.linalg.norm(a - b) / np.linalg.norm(a), rel=1e-12)
    assert m.std_a == pytest.approx(a.std(), rel=1e-12)
    assert m.identical is False
    # float64 storage stays float64 throughout
    m64 = _run(tmp_path / "f64", {"w": x.astype(np.float64)}, {"w": y.astype(np.float64)}, kernel=kernel)["w"]
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


def _decoded(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float32).astype(np.float64).ravel()


def _reference(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """float64, two-pass (centred) statistics of the decoded values."""
    a, b = _decoded(x), _decoded(y)
    return {
        "pearson": float(np.corrcoef(a, b)[0, 1]),
        "cosine": float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)),
        "rel_l2": float(np.linalg.norm(a - b) / np.linalg.norm(a)),
    }


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("code", ["F32", "BF16", "F16"])
def test_pearson_of_near_identical_tensors_is_right_to_1e7(tmp_path, monkeypatch, kernel, code):
    """A lightly fine-tuned copy (1 - r ~ 1e-6) of large tensors, one centred near 0 and one of gains near 1
    (where E[ab] - E[a]E[b] cancels four digits): Pearson within 1e-7 of a float64 two-pass reference.
    Earlier passes summed float32 products per chunk and were off by ~1e-3 on the gains."""
    import ml_dtypes

    _small_pieces(monkeypatch, piece_bytes=1 << 16, sub=1 << 12, range_elems=1 << 17)
    dt = {"F32": np.float32, "BF16": ml_dtypes.bfloat16, "F16": np.float16}[code]
    r = np.random.default_rng(11)
    n = 5 << 18  # above the 2^20 elements below which earlier passes summed in float64
    w = 0.02 * r.normal(size=n) + 0.001
    g = 1 + 0.02 * r.normal(size=n)
    step = {"F32": 1e-3, "BF16": 0.1, "F16": 1e-2}[code]  # bfloat16 near 1 is spaced 0.4 % apart: coarser steps
    ta = {"w": w.astype(dt).reshape(512, -1), "g": g.astype(dt).reshape(512, -1)}
    tb = {k: (v.astype(np.float64) + step * np.std(v.astype(np.float64)) * r.normal(size=v.shape)).astype(dt) for k, v in ta.items()}
    m = _run(tmp_path, ta, tb, kernel=kernel)
    for name in ("w", "g"):
        ref = _reference(ta[name], tb[name])
        assert 0 < 1 - ref["pearson"] < 1e-2  # near-identical indeed, not identical
        assert abs(m[name].pearson - ref["pearson"]) <= 1e-7
        assert m[name].cosine == pytest.approx(ref["cosine"], abs=1e-9)
        assert m[name].rel_l2 == pytest.approx(ref["rel_l2"], rel=1e-9)
        assert m[name].identical is False


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("code", ["F32", "BF16", "F16", "F64"])
def test_identical_means_equal_stored_bits(tmp_path, kernel, code):
    """Equal values are not equal bytes: -0.0 against +0.0 compares equal but is not identical; NaN with the
    same bits is (and is not finite)."""
    import ml_dtypes

    dt = {"F32": np.float32, "BF16": ml_dtypes.bfloat16, "F16": np.float16, "F64": np.float64}[code]
    x = np.random.default_rng(12).normal(size=(8, 40)).astype(dt)
    signed = x.copy()
    signed[3, 7] = dt(0.0)
    flipped = signed.copy()
    flipped[3, 7] = dt(-0.0)
    nan = x.copy()
    nan[0, 0] = dt(np.nan)
    m = _run(tmp_path, {"same": x, "zero": signed, "nan": nan}, {"same": x.copy(), "zero": flipped, "nan": nan.copy()}, kernel=kernel)
    assert m["same"].identical is True and m["same"].rel_l2 == 0.0
    assert m["zero"].identical is False and m["zero"].rel_l2 == 0.0
    assert m["nan"].identical is True and m["nan"].finite is False and m["nan"].pearson is None


@pytest.mark.skipif(not HAVE_NUMBA, reason="numba not installed (extra 'fast')")
def test_numba_kernel_equals_numpy_reference(tmp_path, monkeypatch):
    """The accelerator computes the reference's sums: every metric equal to 1e-12 (only the order of float64
    additions differs), identical flags equal, for every dtype read as stored, a decoded one (F8), a
    mixed-dtype pair, a transposed pair (tiles) and special values."""
    import ml_dtypes

    _small_pieces(monkeypatch, piece_bytes=1 << 12, sub=1 << 9, range_elems=1 << 13)
    r = np.random.default_rng(13)
    base = r.normal(size=(96, 200)) * 0.05 + 0.01
    other = base + 0.01 * r.normal(size=base.shape)
    ta, tb = {}, {}
    for code, dt in {"F32": np.float32, "BF16": ml_dtypes.bfloat16, "F16": np.float16, "F64": np.float64, "F8": ml_dtypes.float8_e4m3fn}.items():
        ta[f"{code}.w"], tb[f"{code}.w"] = base.astype(dt), other.astype(dt)
        ta[f"{code}.same"], tb[f"{code}.same"] = base.astype(dt), base.astype(dt)
        special = base.astype(dt)
        special[0, :6] = np.array([0.0, -0.0, np.inf, -np.inf, 1e-7, 1e4]).astype(dt)
        ta[f"{code}.special"], tb[f"{code}.special"] = special, special.copy()
    ta["mixed"], tb["mixed"] = base.astype(ml_dtypes.bfloat16), other.astype(np.float32)
    got = {k: _run(tmp_path / k, ta, tb, kernel=k) for k in ("numpy", "numba")}
    assert set(got["numpy"]) == set(ta)
    for name, ref in got["numpy"].items():
        fast = got["numba"][name]
        for field in ("n", "identical", "finite"):
            assert getattr(fast, field) == getattr(ref, field), (name, field)
        for field in ("cosine", "pearson", "rel_l2", "mean_a", "std_a", "norm_a", "mean_b", "std_b", "norm_b"):
            u, v = getattr(fast, field), getattr(ref, field)
            assert (u is None) == (v is None), (name, field)
            if u is not None and not (np.isnan(u) and np.isnan(v)):
                assert u == pytest.approx(v, rel=1e-12, abs=1e-15), (name, field)


def test_kernel_choice(monkeypatch):
    monkeypatch.delenv(streaming.KERNEL_ENV, raising=False)
    assert streaming.choose_kernel("auto", streaming.NUMBA_MIN_BYTES - 1) == "numpy"  # start-up would not pay
    assert streaming.choose_kernel("numpy", 1 << 40) == "numpy"
    expected = "numba" if HAVE_NUMBA else "numpy"  # falls back to the reference when numba is missing
    assert streaming.choose_kernel("auto", streaming.NUMBA_MIN_BYTES) == expected
    assert streaming.choose_kernel("numba", 1) == expected
    monkeypatch.setenv(streaming.KERNEL_ENV, "numpy")
    assert streaming.choose_kernel("auto", 1 << 40) == "numpy"
    with pytest.raises(ValueError, match="unknown metric kernel"):
        streaming.choose_kernel("fortran", 1)


@pytest.mark.parametrize("kernel", KERNELS)
def test_a_format_that_transforms_values_is_read_through_its_own_reads(tmp_path, kernel):
    """The pass reads stored bits itself only for tensors their format stores plainly: a format that
    overrides its element reads (GGUF undoes permutations and offsets) is decoded by those reads."""
    from modelkin.sources import ModelSource, SafetensorsFile
    from modelkin.sources.transport import LocalFile

    class Doubled(SafetensorsFile):
        def read_elements(self, info, start, count):
            return 2 * super().read_elements(info, start, count)

        def stream_elements(self, info, start, count, scratch=None):
            for piece in super().stream_elements(info, start, count, scratch):
                yield 2 * piece

    x = np.random.default_rng(14).normal(size=(64, 300)).astype(np.float32)
    a = open_model(write_model(tmp_path / "a", {"w": x}))
    plain = open_model(write_model(tmp_path / "b", {"w": x}))
    doubled = Doubled(LocalFile(tmp_path / "b" / "model.safetensors"))
    b = ModelSource(plain.location, plain.root, (doubled,), doubled.tensors, plain.config)
    assert not b.stores_plainly(b.tensors["w"]) and plain.stores_plainly(plain.tensors["w"])
    al = align_by_name(build_inventory(a), build_inventory(b))
    (m,) = stream_metrics(a, b, al.pairs, kernel=kernel)
    assert m.rel_l2 == pytest.approx(1.0, rel=1e-12) and m.cosine == pytest.approx(1.0, rel=1e-12)
