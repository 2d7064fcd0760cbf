"""ONNX exports (issue 9, item 3): fp32 and int8 exports compare with their source as related, exports of
independent models as independent; anonymous weights get their source names back; reads are exact and
lazy; hostile files give one FormatError line and exit 2.

The files are written with the onnx helper API the way torch's exporter and onnxruntime's quantiser write
them (``onnx_builders``); an optional test exports the zoo's BERT and vision tower with torch itself.
"""

from __future__ import annotations

import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from safetensors.numpy import load_file  # noqa: E402

import modelkin  # noqa: E402
from modelkin.cli import main as cli_main  # noqa: E402
from modelkin.errors import FormatError, ModelkinError  # noqa: E402
from modelkin.sources import onnx_format, open_model  # noqa: E402
from modelkin.sources.onnx_format import OnnxFile, anonymous  # noqa: E402

try:  # tests/ may or may not become a package
    from . import builders, onnx_builders as ob
    from .fuzz import target_onnx
except ImportError:
    import builders
    import onnx_builders as ob

    sys.path.insert(0, str(Path(__file__).parent / "fuzz"))
    import target_onnx

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
BASE = load_file(str(EXAMPLES / "base" / "model.safetensors"))


def _matrices(result) -> list:
    return [t for t in result.tensors if len(t.shape) == 2]


def _assert_same_model(result, source_matrices: int, min_pearson: float = 0.99) -> None:
    """Related, every matrix of the source paired with one of the export, each with Pearson >= min."""
    assert result.verdict == "related"
    mats = _matrices(result)
    assert len(mats) == source_matrices
    worst = min(mats, key=lambda t: t.pearson)
    assert worst.pearson >= min_pearson, (worst.a, worst.pearson)
    assert all(t.a == t.b for t in mats)  # paired by their (recovered) names
    assert not [u for u in result.unmatched if u.side == "a" and "." in u.name and u.name.endswith("weight") and "position_ids" not in u.name]


def _n_matrices(tensors: dict) -> int:
    return sum(1 for v in tensors.values() if v.ndim == 2)


# -- fp32 exports -------------------------------------------------------------------------------------


@pytest.mark.parametrize("scopes", [True, False], ids=["node-scopes", "no-node-names"])
@pytest.mark.parametrize("external", [False, True], ids=["embedded", "external-data"])
def test_fp32_export_of_the_qwen2_example_is_related(tmp_path, scopes, external):
    """examples/base exported as MatMul graphs with anonymous [in, out] weights (node scopes as torch
    writes them, or no node names at all: names then come from biases and graph position)."""
    path = ob.save(ob.export_decoder(BASE, scopes=scopes), tmp_path / "export", external=external)
    assert (path.parent / "model.onnx_data").exists() == external
    res = modelkin.compare(EXAMPLES / "base", path.parent)
    _assert_same_model(res, _n_matrices(BASE), min_pearson=0.9999)
    assert all(t.identical for t in _matrices(res))  # the same float32 values, transposed back
    with OnnxFile(path) as f:
        names = f.metadata["names"]
        assert ("from node scopes" in names) == scopes and ("by graph position" in names)
        assert f.tensors["model.layers.1.mlp.down_proj.weight"].shape == (64, 128)
    assert not res.unmatched
    # the external data file holds the weights: it is identified (hashed) in the report too
    assert sorted(res.b.files) == (["model.onnx", "model.onnx_data"] if external else ["model.onnx"])
    assert all(d.sha256 for d in res.b.files.values())


def test_positional_names_without_any_bias(tmp_path):
    """A bias-free decoder without node names: every matrix is named by its place in the graph,
    anchored on the first layer's named norm."""
    tensors = {k: v for k, v in BASE.items() if not k.endswith(".bias")}
    src = builders.write_model(tmp_path / "src", tensors)
    path = ob.save(ob.export_decoder(tensors, scopes=False), tmp_path / "export")
    with OnnxFile(path) as f:
        assert f.metadata["names"] == "6 stored, 15 by graph position"
    _assert_same_model(modelkin.compare(src, path.parent), _n_matrices(tensors), min_pearson=0.9999)


def test_positions_that_do_not_fit_the_layout_name_nothing(tmp_path):
    """When the repeated blocks do not repeat the same shapes, no weight is named by position (a wrong
    name would pair unrelated matrices): they keep their anonymous names and are reported unassigned."""
    tensors = {k: v for k, v in BASE.items() if not k.endswith(".bias")}
    tensors["model.layers.1.mlp.up_proj.weight"] = np.ones((96, 64), np.float32)
    with OnnxFile(ob.save(ob.export_decoder(tensors, scopes=False), tmp_path / "x")) as f:
        assert "by graph position" not in f.metadata["names"]
        assert sum(anonymous(n) for n in f.tensors) == 15
        assert "model.embed_tokens.weight" in f.tensors


def test_names_from_torch_dynamo_metadata(tmp_path):
    """torch's dynamo exporter (the default since torch 2.9) folds W.T into ``val_<n>`` and names nodes
    ``node_MatMul_<n>``, but records each node's module scopes and FX node: the weight is named from them
    when the FX node confirms the parameter; stack traces are dropped while reading."""
    r = np.random.default_rng(4)
    wq, wk = r.normal(size=(8, 8)).astype(np.float32), r.normal(size=(8, 8)).astype(np.float32)

    def node(value, out, layer, module, param_in_fx):
        n = helper.make_node("MatMul", ["x", value], [out], name=f"node_MatMul_{out}")
        fx = f"%linear : call_function[target=torch.ops.aten.linear.default](args = (%x, %{param_in_fx}, None))"
        for key, text in (("pkg.torch.onnx.name_scopes", f"['', 'encoder.layer.{layer}', '{module}', 'linear']"),
                          ("pkg.torch.onnx.fx_node", fx), ("pkg.torch.onnx.stack_trace", "File x.py, line 1\n" * 40)):
            n.metadata_props.add(key=key, value=text)
        return n

    q = "encoder.layer.0.attention.self.query"
    nodes = [node("val_17", "yq", 0, q, "p_" + q.replace(".", "_") + "_weight"),
             node("val_25", "yk", 0, "encoder.layer.0.attention.self.key", "p_somewhere_else_weight")]  # not confirmed
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                              [helper.make_tensor_value_info(v, TensorProto.FLOAT, [1, 8]) for v in ("yq", "yk")],
                              [numpy_helper.from_array(wq.T.copy(), "val_17"), numpy_helper.from_array(wk.T.copy(), "val_25")])
    path = ob.save(helper.make_model(graph), tmp_path / "dynamo")
    with OnnxFile(path) as f:
        assert sorted(f.tensors) == [q + ".weight", "val_25"]
        assert f.metadata["names"] == "1 from torch metadata, 1 left anonymous"
        assert np.array_equal(f.read_elements(f.tensors[q + ".weight"], 0, 64).reshape(8, 8), wq)


@pytest.mark.parametrize("prefix, scopes", [("bert.", True), ("", False)], ids=["bert-mlm", "minilm-style-no-node-names"])
def test_fp32_bert_export_is_related(tmp_path, prefix, scopes):
    tensors = ob.bert_tensors(1, prefix=prefix)
    src = builders.write_model(tmp_path / "src", tensors, ob.BERT_CONFIG)
    path = ob.save(ob.export_bert(tensors, prefix=prefix, scopes=scopes), tmp_path / "export")
    res = modelkin.compare(src, path.parent)
    _assert_same_model(res, _n_matrices(tensors), min_pearson=0.9999)
    # The decoder is tied to the word embeddings: the export's transposed copy is named after its bias.
    assert [(u.side, u.name) for u in res.unmatched] == [("b", "cls.predictions.decoder.weight")]


# -- int8 exports --------------------------------------------------------------------------------------

INT8 = [
    ("qwen2", "qdq", "int8", True),  # static QDQ: per-channel DequantizeLinear, activations through Q/DQ
    ("qwen2", "dynamic", "uint8", False),  # dynamic: MatMulInteger, per-tensor uint8 with zero points
    ("bert", "dynamic", "int8", True),  # dynamic: MatMulInteger, per-channel scales on the Mul after the Cast
    ("bert", "qlinear", "uint8", True),  # QOperator: QLinearMatMul with per-column scales and zero points
]


@pytest.mark.parametrize("family, quant, weight_type, per_channel", INT8, ids=["-".join(map(str, c)) for c in INT8])
def test_int8_export_is_related(tmp_path, family, quant, weight_type, per_channel):
    if family == "qwen2":
        tensors, src = BASE, EXAMPLES / "base"
        model = ob.export_decoder(tensors, quant=quant, weight_type=weight_type, per_channel=per_channel)
    else:
        tensors = ob.bert_tensors(1)
        src = builders.write_model(tmp_path / "src", tensors, ob.BERT_CONFIG)
        model = ob.export_bert(tensors, quant=quant, weight_type=weight_type, per_channel=per_channel)
    path = ob.save(model, tmp_path / "export")
    res = modelkin.compare(src, path.parent)
    _assert_same_model(res, _n_matrices(tensors), min_pearson=0.999)  # 8-bit rounding: measured >= 0.9999
    quantised = [t for t in _matrices(res) if t.dtype_b.startswith("Q")]
    assert len(quantised) == _n_matrices(tensors) - (1 if family == "qwen2" else 2)  # embeddings stay float
    with OnnxFile(path) as f:
        schemes = set(f.metadata["quantized"].values())
        assert all(("per-axis" in s) == per_channel for s in schemes), schemes
        assert not any("_scale" in n or "zero_point" in n for n in f.tensors)  # folded into the weights


def test_dequantisation_is_exact(tmp_path):
    """Read values equal (q - zero_point) * scale computed here, for per-axis uint8 behind a transposing
    MatMul, blocked int4 under Gemm(transB=1), and a per-tensor int8 weight behind a Transpose node."""
    r = np.random.default_rng(3)
    q8 = r.integers(0, 256, size=(10, 6), dtype=np.uint8)  # [in, out]
    s8 = r.uniform(0.01, 0.1, size=6).astype(np.float32)
    z8 = r.integers(100, 150, size=6, dtype=np.uint8)
    q4 = r.integers(-8, 8, size=(6, 10)).astype(np.int8)  # [out, in], blocks of 4 along the input axis
    s4 = r.uniform(0.01, 0.1, size=(6, 3)).astype(np.float32)
    z4 = r.integers(-2, 3, size=(6, 3)).astype(np.int8)
    qt = r.integers(-127, 128, size=(6, 10)).astype(np.int8)  # [out, in], transposed in the graph
    named = r.normal(size=(10, 6)).astype(np.float32)  # a named [in, out] weight: kept as stored

    def int4(name, values):
        flat = (values.astype(np.int16) & 0xF).astype(np.uint8).reshape(-1)
        flat = np.concatenate([flat, np.zeros(len(flat) % 2, np.uint8)])
        return helper.make_tensor(name, TensorProto.INT4, values.shape, (flat[0::2] | (flat[1::2] << 4)).tobytes(), raw=True)

    inits = [numpy_helper.from_array(v, k) for k, v in {
        "onnx::MatMul_1_quantized": q8, "onnx::MatMul_1_scale": s8, "onnx::MatMul_1_zero_point": z8,
        "onnx::Gemm_2_scale": s4, "onnx::MatMul_3_quantized": qt, "onnx::MatMul_3_scale": np.array(0.05, np.float32),
        "layer.c.weight": named, "layer.a.bias": np.zeros(6, np.float32)}.items()]
    inits += [int4("onnx::Gemm_2_quantized", q4), int4("onnx::Gemm_2_zero_point", z4)]
    nodes = [
        helper.make_node("DequantizeLinear", ["onnx::MatMul_1_quantized", "onnx::MatMul_1_scale", "onnx::MatMul_1_zero_point"], ["wa"], axis=1),
        helper.make_node("MatMul", ["x", "wa"], ["ya"], name="/layer/a/MatMul"),
        helper.make_node("Add", ["layer.a.bias", "ya"], ["ya2"]),
        helper.make_node("DequantizeLinear", ["onnx::Gemm_2_quantized", "onnx::Gemm_2_scale", "onnx::Gemm_2_zero_point"], ["wb"], axis=1, block_size=4),
        helper.make_node("Gemm", ["x", "wb"], ["yb"], name="/layer/b/Gemm", transB=1),
        helper.make_node("DequantizeLinear", ["onnx::MatMul_3_quantized", "onnx::MatMul_3_scale"], ["wt"]),
        helper.make_node("Transpose", ["wt"], ["wt2"], perm=[1, 0]),
        helper.make_node("MatMul", ["x", "wt2"], ["yt"], name="/layer/t/MatMul"),
        helper.make_node("Gemm", ["x", "layer.c.weight"], ["yc"], name="/layer/c/Gemm"),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 10])],
                              [helper.make_tensor_value_info(v, TensorProto.FLOAT, [1, 6]) for v in ("ya2", "yb", "yt", "yc")], inits)
    path = ob.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)]), tmp_path / "q")
    onnx.checker.check_model(str(path), full_check=True)
    src = open_model(path)
    read = {n: src.read(i).reshape(i.shape) for n, i in src.tensors.items()}
    f32 = np.float32
    assert np.array_equal(read["layer.a.weight"], ((q8.astype(f32) - z8.astype(f32)) * s8).T)  # named from its bias
    blocks = np.repeat(np.arange(3), 4)[:10]
    assert np.array_equal(read["onnx::Gemm_2_quantized"], (q4.astype(f32) - z4[:, blocks].astype(f32)) * s4[:, blocks])
    assert np.array_equal(read["onnx::MatMul_3_quantized"], qt.astype(f32) * f32(0.05))  # Transpose cancels the MatMul's
    assert np.array_equal(read["layer.c.weight"], named)  # named: as stored, [in, out]
    codes = {n: i.dtype.code for n, i in src.tensors.items()}
    assert codes == {"layer.a.weight": "QU8", "onnx::Gemm_2_quantized": "QI4", "onnx::MatMul_3_quantized": "QI8",
                     "layer.c.weight": "F32", "layer.a.bias": "F32"}
    assert "blocked (axis 1, 4 per block)" in src.files[0].metadata["quantized"]["onnx::Gemm_2_quantized"]
    src.close()


@pytest.mark.parametrize("shape, axis, block", [((7, 5), 0, 0), ((7, 5), 1, 0), ((3, 4, 5), 0, 0), ((3, 4, 5), 1, 0),
                                                  ((3, 4, 5), 2, 2), ((6, 4, 5), 0, 4), ((3, 7, 5), 1, 3), ((9,), 0, 4)])
def test_scales_per_axis_and_blocked_match_a_per_element_reference(shape, axis, block):
    """Scales and zero points broadcast by rows and columns equal a per-element lookup, for any range."""
    r = np.random.default_rng(7)
    pshape = tuple(-(-d // block) if (block and i == axis) else d for i, d in enumerate(shape)) if block else (shape[axis],)
    scale = r.uniform(0.5, 2.0, size=pshape).astype(np.float32)
    zero = r.integers(-3, 4, size=pshape).astype(np.float32)
    quant = onnx_format._Quant(onnx_format._Param(scale.reshape(-1), axis, block, pshape),
                               onnx_format._Param(zero.reshape(-1), axis, block, pshape), "")
    q = r.integers(-100, 100, size=shape).astype(np.float32)
    idx = list(np.indices(shape))
    if block:
        idx[axis] = idx[axis] // block
        expected = (q - zero[tuple(idx)]) * scale[tuple(idx)]
    else:
        expected = (q - zero[idx[axis]]) * scale[idx[axis]]
    flat, want = q.reshape(-1), expected.reshape(-1)
    for start, count in [(0, flat.size), (1, flat.size - 1), (3, 4), (flat.size - 2, 2), (2, flat.size // 2)]:
        got = quant.apply_flat(flat[start : start + count], start, shape)
        assert np.array_equal(got, want[start : start + count]), (start, count)


def test_block_quantised_gather_is_said_unread(tmp_path):
    """onnxruntime's GatherBlockQuantized (4-bit embeddings) is not decoded: its weight is not listed as raw
    bytes (that would compare packed nibbles as numbers) and inspect says how many were left out."""
    nodes = [helper.make_node("GatherBlockQuantized", ["emb.weight_Q4", "ids", "emb.weight_scales"], ["y"], domain="com.microsoft",
                              block_size=16, bits=4)]
    inits = [numpy_helper.from_array(np.zeros((4, 8), np.uint8), "emb.weight_Q4"),
             numpy_helper.from_array(np.ones((4, 1), np.float32), "emb.weight_scales"),
             numpy_helper.from_array(np.ones((4, 8), np.float32), "other.weight")]
    path = ob.save(helper.make_model(helper.make_graph(nodes, "g", [], [], inits)), tmp_path / "gbq")
    with OnnxFile(path) as f:
        assert list(f.tensors) == ["other.weight"]
        assert f.metadata_used()["not read"].startswith("1 block-quantised weights of GatherBlockQuantized")


# -- MatMulNBits (onnxruntime's 4-bit weight-only quantisation of LLMs) ------------------------------------

NBITS = [  # (bits, block_size, zero points, node names): measured worst Pearson on examples/base
    (4, 32, "uint8", True),  # MatMul4BitsQuantizer's default: asymmetric, packed 4-bit zero points (0.9967)
    (4, 16, None, False),  # symmetric (no zero-point input: 8), no node names: named by bias and position (0.9960)
    (8, 16, "float", True),  # 8-bit codes, zero points in the scales' float type (0.99999)
]


@pytest.mark.parametrize("bits, block, zero, scopes", NBITS, ids=[f"{b}bit-{bs}-{z}-{'scopes' if s else 'anon'}" for b, bs, z, s in NBITS])
def test_matmulnbits_export_is_related(tmp_path, bits, block, zero, scopes):
    """examples/base quantised as onnxruntime's MatMulNBits: every matrix is decoded to [out, in], named as
    the source names it, and compares element-wise with it (Pearson >= 0.99 at 4 bits)."""
    model = ob.export_decoder(BASE, quant="nbits", scopes=scopes, nbits={"bits": bits, "block_size": block, "zero": zero})
    path = ob.save(model, tmp_path / "nbits")
    onnx.checker.check_model(str(path))
    res = modelkin.compare(EXAMPLES / "base", path.parent)
    _assert_same_model(res, _n_matrices(BASE), min_pearson=0.999 if bits == 8 else 0.995)
    quantised = {t.a: t.dtype_b for t in _matrices(res) if t.dtype_b.startswith("Q")}
    assert len(quantised) == _n_matrices(BASE) - 1 and set(quantised.values()) == {f"QU{bits}"}  # embeddings stay float
    assert not res.unmatched
    with OnnxFile(path) as f:
        assert "not read" not in f.metadata
        assert not any("_scales" in n or "zero_points" in n or n.endswith(f"_Q{bits}") for n in f.tensors)
        how = {None: f"default zero point {2 ** (bits - 1)}", "uint8": f"zero points packed {bits}-bit", "float": "zero points F32"}[zero]
        assert set(f.metadata["quantized"].values()) == {f"MatMulNBits {bits}-bit blocks of {block} along K, {how}"}
        assert f.tensors["model.layers.1.mlp.down_proj.weight"].shape == (64, 128)


def _nbits_reference(packed: np.ndarray, scales: np.ndarray, zp, n: int, k: int, bits: int, block: int) -> np.ndarray:
    """Per element, straight from the operator's description: code j of row r sits in byte j*bits//8 of the
    row's blocks, at bit (j*bits) % 8; value (code - zero point of its block) * scale of its block."""
    n_blocks = -(-k // block)
    flat = packed.reshape(n, -1)
    out = np.empty((n, k), np.float32)
    for r in range(n):
        for j in range(k):
            code = (int(flat[r, j * bits // 8]) >> (j * bits % 8)) & ((1 << bits) - 1)
            b = j // block
            if zp is None:
                z = 2 ** (bits - 1)
            elif zp.dtype == np.uint8:
                row = zp.reshape(n, -1)[r]
                z = (int(row[b * bits // 8]) >> (b * bits % 8)) & ((1 << bits) - 1)
            else:
                z = zp.reshape(n, n_blocks)[r, b]
            out[r, j] = (np.float32(code) - np.float32(z)) * scales.reshape(n, n_blocks)[r, b]
    return out


@pytest.mark.parametrize("bits, zero", [(4, "uint8"), (2, "uint8"), (8, None), (4, "float")])
def test_matmulnbits_reads_are_exact(tmp_path, bits, zero):
    """K not a multiple of the block (the last block padded), fp16 scales and a trivial g_idx: every read
    range (parts of rows, across rows, the whole matrix, rows, blocks) equals the per-element reference."""
    n, k, block = 7, 40, 16
    r = np.random.default_rng(bits)
    packed, scales, zp = ob.quantize_nbits(r.normal(size=(n, k)), bits, block, zero)
    scales = scales.astype(np.float16)
    if zp is not None and zp.dtype != np.uint8:
        zp = zp.astype(np.float16)
    want = _nbits_reference(packed, scales.astype(np.float32), zp, n, k, bits, block)
    inits = {"fc.weight_Q": packed, "fc.weight_scales": scales, "g_idx": (np.arange(k) // block).astype(np.int32)}
    inputs = ["x", "fc.weight_Q", "fc.weight_scales", "" if zp is None else "fc.weight_zp", "g_idx"]
    if zp is not None:
        inits["fc.weight_zp"] = zp
    node = helper.make_node("MatMulNBits", inputs, ["y"], domain="com.microsoft", K=k, N=n, bits=bits, block_size=block)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [1, k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT16, [1, n])],
                              [numpy_helper.from_array(v, name) for name, v in inits.items()])
    path = ob.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)]), tmp_path / "q")
    with open_model(path) as src:
        assert list(src.tensors) == ["fc.weight_Q"]  # the stored name (no _Q<bits> suffix to drop here)
        info = src.tensors["fc.weight_Q"]
        assert info.shape == (n, k) and info.dtype.code == f"QU{bits}"
        assert np.array_equal(src.read(info).reshape(n, k), want)
        flat = want.reshape(-1)
        for start, count in [(0, 1), (3, 30), (17, 40), (39, 2), (41, 200), (n * k - 5, 5)]:
            assert np.array_equal(src.read(info, start, count), flat[start : start + count]), (start, count)
        rows = np.array([0, 3, 6])
        assert np.array_equal(src.read_rows(info, rows), want[rows])
        assert np.array_equal(src.read_block(info, 1, 5, 9, 37), want[1:5, 9:37])
        assert np.array_equal(np.concatenate([p.copy() for p in src.stream(info, 0, n * k)]), flat)
        assert np.array_equal(src.read_raw(info, 0, k).astype(np.int64),
                              [(int(packed.reshape(n, -1)[0, j * bits // 8]) >> (j * bits % 8)) & ((1 << bits) - 1) for j in range(k)])


def test_matmulnbits_names_drop_the_quantiser_suffix(tmp_path):
    """onnxruntime's quantiser names B after the initializer it replaced plus ``_Q4``: a named weight
    comes back under its own name."""
    packed, scales, zp = ob.quantize_nbits(np.random.default_rng(0).normal(size=(8, 32)), 4, 32, "uint8")
    inits = [numpy_helper.from_array(packed, "head.weight_Q4"), numpy_helper.from_array(scales, "head.weight_scales"),
             numpy_helper.from_array(zp, "head.weight_zero_points")]
    node = helper.make_node("MatMulNBits", ["x", "head.weight_Q4", "head.weight_scales", "head.weight_zero_points"], ["y"],
                            domain="com.microsoft", K=32, N=8, bits=4, block_size=32)
    path = ob.save(helper.make_model(helper.make_graph([node], "g", [], [], inits)), tmp_path / "named")
    with OnnxFile(path) as f:
        assert list(f.tensors) == ["head.weight"] and f.tensors["head.weight"].shape == (8, 32)


def test_matmulnbits_exports_of_independent_models_are_independent(tmp_path):
    other = load_file(str(EXAMPLES / "independent" / "model.safetensors"))
    a = ob.save(ob.export_decoder(BASE, quant="nbits"), tmp_path / "a")
    b = ob.save(ob.export_decoder(other, quant="nbits"), tmp_path / "b")
    res = modelkin.compare(a.parent, b.parent)
    assert res.verdict == "independent"
    assert len(_matrices(res)) == _n_matrices(BASE)  # paired by name, every one decoded


# -- independence ------------------------------------------------------------------------------------------


def test_exports_of_independent_models_are_independent(tmp_path):
    other = load_file(str(EXAMPLES / "independent" / "model.safetensors"))
    a = ob.save(ob.export_decoder(BASE), tmp_path / "a")
    b = ob.save(ob.export_decoder(other, quant="qdq"), tmp_path / "b")
    assert modelkin.compare(a.parent, b.parent).verdict == "independent"
    c = ob.save(ob.export_bert(ob.bert_tensors(1), quant="dynamic"), tmp_path / "c", config=ob.BERT_CONFIG)
    d = ob.save(ob.export_bert(ob.bert_tensors(2)), tmp_path / "d", config=ob.BERT_CONFIG)
    res = modelkin.compare(c.parent, d.parent)
    assert res.verdict == "independent"
    assert len(_matrices(res)) == _n_matrices(ob.bert_tensors(1)) + 1  # the tied decoder copies pair too


def test_torch_exports_of_zoo_bert_and_vision_tower(tmp_path):
    """torch.onnx.export itself (TorchScript exporter) of the zoo's BERT and Qwen2.5-VL-style vision
    tower: related to their own weights."""
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    from modelkin.zoo.models import BertConfig, BertMLM, VisionClassifier, VisionConfig

    def export(model, args, name):
        folder = tmp_path / name
        folder.mkdir()
        torch.onnx.export(model.eval(), args, str(folder / "model.onnx"), dynamo=False, opset_version=17)
        (tmp_path / (name + "-src")).mkdir()
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / (name + "-src") / "model.safetensors"))
        return tmp_path / (name + "-src"), folder

    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(0)
        bert_src, bert = export(BertMLM(BertConfig()), (torch.randint(0, 512, (1, 16)),), "bert")
        torch.manual_seed(0)
        vit_src, vit = export(VisionClassifier(VisionConfig(), 10), (torch.randn(1, 3, 32, 32),), "vit")
    res = modelkin.compare(bert_src, bert)
    assert res.verdict == "related" and min(t.pearson for t in _matrices(res)) >= 0.9999
    assert {u.name for u in res.unmatched if u.side == "a"} == {"bert.pooler.dense.weight", "bert.pooler.dense.bias", "bert.embeddings.position_ids"}  # unused by forward: not exported
    res = modelkin.compare(vit_src, vit)
    assert res.verdict == "related" and min(t.pearson for t in _matrices(res)) >= 0.9999 and not res.unmatched


def test_over_http_the_same_as_local(tmp_path, monkeypatch):
    """An ONNX file read through HTTP ranges (the local stand-in Hub): the same numbers as the local file;
    external data, which needs the neighbouring file, is refused there in one line."""
    try:
        from .hub_server import HubServer, patch_hf_endpoint
    except ImportError:
        from hub_server import HubServer, patch_hf_endpoint
    pytest.importorskip("huggingface_hub")
    folder = ob.save(ob.export_decoder(BASE, quant="dynamic"), tmp_path / "int8").parent
    ext = ob.save(ob.export_decoder(BASE), tmp_path / "ext", external=True).parent
    local = modelkin.compare(EXAMPLES / "base", folder, read_mode="full")
    with HubServer() as hub:
        patch_hf_endpoint(monkeypatch, hub.url)
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
        monkeypatch.setenv("MODELKIN_CACHE", str(tmp_path / "mk-cache"))
        hub.add_repo("someone/int8", folder)
        hub.add_repo("someone/ext", ext)
        remote = modelkin.compare(EXAMPLES / "base", hub.content_url("someone/int8", "model.onnx"), read_mode="full")
        assert remote.verdict == local.verdict == "related"
        assert remote.log10_p == pytest.approx(local.log10_p, abs=1e-9)
        assert [t.pearson for t in remote.tensors] == pytest.approx([t.pearson for t in local.tensors], abs=1e-12)
        with pytest.raises(ModelkinError, match="external data .* can only be read from local files"):
            open_model(hub.content_url("someone/ext", "model.onnx"))


# -- reading --------------------------------------------------------------------------------------------


def test_reads_match_the_source_exactly(tmp_path, monkeypatch):
    """Transposed weights read by ranges, rows, blocks and streams give the source's values; tiny panels
    make every read cross panel edges."""
    monkeypatch.setattr(onnx_format, "PANEL_ELEMS", 100)
    r = np.random.default_rng(0)
    tensors = dict(BASE)
    tensors["model.layers.0.mlp.down_proj.weight"] = r.normal(size=(64, 128)).astype(np.float32)
    st = builders.write_model(tmp_path / "st", tensors)
    with open_model(st) as a, open_model(ob.save(ob.export_decoder(tensors, quant=None), tmp_path / "ox", external=True)) as b:
        for name, ia in a.tensors.items():
            ib = b.tensors[name]
            assert ib.shape == ia.shape
            full = a.read(ia)
            assert np.array_equal(b.read(ib), full)
            n = min(77, ia.numel - 5)
            assert np.array_equal(b.read(ib, 5, n), full[5 : 5 + n])
            if len(ia.shape) == 2:
                rows = np.array([0, 1, 7, ia.shape[0] - 1])
                assert np.array_equal(b.read_rows(ib, rows), a.read_rows(ia, rows))
                r1, c1 = ia.shape[0] - 3, ia.shape[1] - 2
                assert np.array_equal(b.read_block(ib, 3, r1, 5, c1), a.read_block(ia, 3, r1, 5, c1))
                assert np.array_equal(b.read_rows(ib.columns(8, 24), rows), a.read_rows(ia.columns(8, 24), rows))
            pieces_a = [p.copy() for p in a.stream(ia, 0, ia.numel)]
            pieces_b = [p.copy() for p in b.stream(ib, 0, ib.numel)]
            assert [len(p) for p in pieces_b] == [len(p) for p in pieces_a]
            assert np.array_equal(np.concatenate(pieces_b), np.concatenate(pieces_a))


def test_large_tensor_streams_in_the_same_pieces(tmp_path):
    """A weight larger than one stream piece: ONNX and safetensors cut the same pieces (metrics zips them)."""
    w = np.random.default_rng(1).normal(size=(1024, 300)).astype(np.float32)  # [out, in]; stored [in, out]
    st = builders.write_model(tmp_path / "st", {"fc.weight": w})
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "onnx::MatMul_9"], ["y"], name="/fc/MatMul")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 300])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1024])],
                              [numpy_helper.from_array(np.ascontiguousarray(w.T), "onnx::MatMul_9")])
    path = ob.save(helper.make_model(graph), tmp_path / "ox")
    with open_model(st) as a, open_model(path) as b:
        assert list(b.tensors) == ["onnx::MatMul_9"] and b.tensors["onnx::MatMul_9"].shape == (1024, 300)
        pa = [p.copy() for p in a.stream(a.tensors["fc.weight"], 0, w.size)]
        pb = [p.copy() for p in b.stream(b.tensors["onnx::MatMul_9"], 0, w.size)]
        assert len(pa) == len(pb) == 2 and all(np.array_equal(x, y) for x, y in zip(pa, pb))


def test_opening_reads_no_tensor_data(tmp_path):
    """The protobuf is walked, not loaded: opening an 8 MB export allocates well under 1 MB."""
    w = np.random.default_rng(2).normal(size=(1024, 2048)).astype(np.float32)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "onnx::MatMul_1"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1024])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2048])],
                              [numpy_helper.from_array(w, "onnx::MatMul_1")])
    path = ob.save(helper.make_model(graph), tmp_path / "big")
    del w, graph
    tracemalloc.start()
    with OnnxFile(path) as f:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert f.tensors["onnx::MatMul_1"].shape == (2048, 1024)
    assert peak < 1 << 20, peak


def test_anonymous_names():
    assert all(anonymous(n) for n in ("onnx::MatMul_123", "1234", "val_7", "_val_12", "/model/Constant_output_0", "onnx::MatMul_5_quantized"))
    assert not any(anonymous(n) for n in ("model.layers.0.mlp.up_proj.weight", "fc.bias", "dense/kernel:0", "w_quantized"))


# -- inspect ---------------------------------------------------------------------------------------------


def test_inspect_shows_format_and_quantised_dtypes(tmp_path, capsys):
    path = ob.save(ob.export_decoder(BASE, quant="dynamic"), tmp_path / "export")
    assert cli_main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "model.onnx: format onnx; stored types: QI8 (15), F32 (12)" in out
    assert "metadata names = 12 stored, 6 from their bias, 8 from node scopes, 1 by graph position" in out
    assert "metadata quantized = MatMulInteger I8 per-axis (axis 1) (15)" in out
    assert cli_main(["inspect", str(path), "--json", "-"]) == 0
    import json

    doc = json.loads(capsys.readouterr().out)
    (f,) = doc["files"]
    assert f["format"] == "onnx" and doc["dtypes"] == {"QI8": 15, "F32": 12}
    assert f["metadata_used"]["opset"] == "ai.onnx 21"
    assert {t["name"]: t["dtype"] for t in doc["tensors"]}["model.layers.1.mlp.up_proj.weight"] == "QI8"
    assert not doc["unassigned"]


# -- hostile files --------------------------------------------------------------------------------------


def _model(tensors: list, nodes: list | None = None, opset: int = 17) -> bytes:
    graph = helper.make_graph(nodes or [], "g", [], [], tensors)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]).SerializeToString()


def _tensor(name="w", dims=(4, 4), raw: bytes | None = None, dtype=TensorProto.FLOAT) -> onnx.TensorProto:
    t = onnx.TensorProto(name=name, data_type=dtype, dims=list(dims))
    t.raw_data = bytes(64) if raw is None else raw
    return t


def _external(name: str, location: str, offset: int = 0, length: int = 64) -> onnx.TensorProto:
    t = onnx.TensorProto(name=name, data_type=TensorProto.FLOAT, dims=[4, 4], data_location=TensorProto.EXTERNAL)
    for k, v in (("location", location), ("offset", str(offset)), ("length", str(length))):
        t.external_data.add(key=k, value=v)
    return t


def _write(tmp: Path, name: str, data: bytes) -> Path:
    folder = tmp / "model"
    folder.mkdir(exist_ok=True)
    (folder / name).write_bytes(data)
    return folder / name


def _truncated(tmp):
    return _write(tmp, "truncated.onnx", ob.export_decoder(BASE).SerializeToString()[:30_000])


def _escaping(tmp):
    (tmp / "outside.bin").write_bytes(bytes(64))  # exists, but outside the model's folder
    return _write(tmp, "escape.onnx", _model([_external("w", "../outside.bin")]))


def _absolute(tmp):
    (tmp / "abs.bin").write_bytes(bytes(64))
    return _write(tmp, "absolute.onnx", _model([_external("w", str(tmp / "abs.bin"))]))


def _external_past_end(tmp):
    folder = tmp / "model"
    folder.mkdir()
    (folder / "w.bin").write_bytes(bytes(32))
    return _write(tmp, "short_external.onnx", _model([_external("w", "w.bin")]))


def _external_missing(tmp):
    return _write(tmp, "missing_external.onnx", _model([_external("w", "nothere.bin")]))


def _size_mismatch(tmp):
    return _write(tmp, "size.onnx", _model([_tensor(raw=bytes(60))]))


def _dims_overflow(tmp):
    return _write(tmp, "overflow.onnx", _model([_tensor(dims=(2**62, 2**62), raw=bytes(16))]))


def _negative_dim(tmp):
    return _write(tmp, "negative.onnx", _model([_tensor(dims=(-1, 16))]))


def _not_onnx(tmp):
    return _write(tmp, "random.onnx", np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())


def _empty(tmp):
    return _write(tmp, "empty.onnx", b"")


def _two_graphs(tmp):
    one = _model([_tensor()])
    return _write(tmp, "two_graphs.onnx", one + one)


def _scale_shape(tmp):
    nodes = [helper.make_node("DequantizeLinear", ["onnx::q", "onnx::s"], ["w"], axis=1), helper.make_node("MatMul", ["x", "w"], ["y"])]
    tensors = [numpy_helper.from_array(np.zeros((4, 4), np.int8), "onnx::q"), numpy_helper.from_array(np.ones(3, np.float32), "onnx::s")]
    return _write(tmp, "scale.onnx", _model(tensors, nodes))


def _cycle(tmp):
    nodes = [helper.make_node("MatMul", ["b", "w"], ["a"]), helper.make_node("Relu", ["a"], ["b"])]
    return _write(tmp, "cycle.onnx", _model([_tensor()], nodes))


def _nbits_file(tmp, name, n=4, k=32, bits=4, block=16, b_shape=None, scales_shape=None, g_idx=None, zp=None):
    n_blocks = -(-k // block)
    b = np.zeros(b_shape or (n, n_blocks, block * bits // 8), np.uint8)
    tensors = [numpy_helper.from_array(b, "onnx::B_Q4"), numpy_helper.from_array(np.ones(scales_shape or (n * n_blocks,), np.float32), "onnx::B_scales")]
    inputs = ["x", "onnx::B_Q4", "onnx::B_scales", "", ""]
    if zp is not None:
        tensors.append(numpy_helper.from_array(zp, "onnx::B_zp"))
        inputs[3] = "onnx::B_zp"
    if g_idx is not None:
        tensors.append(numpy_helper.from_array(g_idx.astype(np.int32), "onnx::g_idx"))
        inputs[4] = "onnx::g_idx"
    nodes = [helper.make_node("MatMulNBits", inputs, ["y"], domain="com.microsoft", K=k, N=n, bits=bits, block_size=block)]
    return _write(tmp, name, _model(tensors, nodes))


HOSTILE_NBITS = {
    "nbits-k-mismatch": (lambda t: _nbits_file(t, "nbits_k.onnx", k=64, b_shape=(4, 2, 8)),
                         ("B is U8 [4, 2, 8] but K=64, N=4, bits=4, block_size=16 need U8 [4, 4, 8]",)),
    "nbits-blob-size": (lambda t: _nbits_file(t, "nbits_blob.onnx", b_shape=(4, 2, 16)), ("need U8 [4, 2, 8]",)),
    "nbits-n-mismatch": (lambda t: _nbits_file(t, "nbits_n.onnx", b_shape=(5, 2, 8)), ("B is U8 [5, 2, 8]",)),
    "nbits-scales": (lambda t: _nbits_file(t, "nbits_scales.onnx", scales_shape=(7,)), ("scales is f32 [7], not float [8] or [4, 2]",)),
    "nbits-zero-points": (lambda t: _nbits_file(t, "nbits_zp.onnx", zp=np.zeros(3, np.uint8)), ("zero_points is u8 [3], not u8 [4] or [4, 1]",)),
    "nbits-3-bit": (lambda t: _nbits_file(t, "nbits_3.onnx", bits=3, block=32, b_shape=(4, 1, 12)), ("3-bit codes are not supported",)),
    "nbits-act-order": (lambda t: _nbits_file(t, "nbits_gidx.onnx", g_idx=np.arange(32)[::-1] // 16), ("g_idx reorders the blocks",)),
}


HOSTILE = {
    "truncated": (_truncated, ("past the end of the file", "truncated")),
    "external-path-escapes": (_escaping, ("'../outside.bin'", "outside the model folder")),
    "external-path-absolute": (_absolute, ("outside the model folder",)),
    "external-past-end": (_external_past_end, ("past the end of the 32-byte file",)),
    "external-missing": (_external_missing, ("does not exist",)),
    "raw-data-size": (_size_mismatch, ("dims [4, 4] of f32 need 64 bytes but raw_data holds 60",)),
    "dims-overflow": (_dims_overflow, ("dims [4611686018427387904, 4611686018427387904] of f32", "but raw_data holds 16")),
    "negative-dim": (_negative_dim, ("negative dimension",)),
    "not-onnx": (_not_onnx, ("protobuf",)),
    "empty": (_empty, ("empty",)),
    "two-graphs": (_two_graphs, ("two graphs",)),
    "scale-shape": (_scale_shape, ("scale shape [3] does not fit weight [4, 4] along axis 1",)),
    "cycle": (_cycle, ("cycle",)),
    **HOSTILE_NBITS,
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_file_is_one_format_error(tmp_path, case, capsys):
    build, fragments = HOSTILE[case]
    path = build(tmp_path)
    with pytest.raises(FormatError) as err:
        open_model(path)
    message = str(err.value)
    assert path.name in message and all(f in message.lower() for f in (x.lower() for x in fragments)), message
    assert cli_main(["inspect", str(path)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("modelkin: error: ") and path.name in lines[0]


def test_escaping_external_data_through_the_cli(tmp_path):
    """End to end: exit 2, one line, no traceback, and the outside file is never opened."""
    path = _escaping(tmp_path)
    out = subprocess.run([sys.executable, "-m", "modelkin", "compare", str(path), str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().count("\n") == 0 and "outside the model folder" in out.stderr


# -- fuzz target ------------------------------------------------------------------------------------------


def test_fuzz_target_seeds_and_cuts():
    """The fuzz target reads its seeds, and every prefix of a seed raises only ModelkinError."""
    assert len(target_onnx.SEEDS) == 6
    for seed in target_onnx.SEEDS:
        target_onnx.fuzz_one(seed)
        for cut in range(0, len(seed), 7):
            try:
                target_onnx.fuzz_one(seed[:cut])
            except ModelkinError:
                pass
