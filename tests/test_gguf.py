"""GGUF: header, metadata and vocabulary, dequantisation of every type, the converter's transforms undone,
same verdict as the safetensors source, hostile files.

GGUF files are written here with the ``gguf`` package's ``GGUFWriter`` from the shipped example models, the
way llama.cpp's ``convert_hf_to_gguf.py`` does it: the same tensor names, hyper-parameters and token list, Q/K
rows permuted by ``LlamaModel.permute`` for the llama architecture, ``1 + w`` stored for Gemma's norms, 2-D
matrices in F16 / Q8_0 (``gguf.quants.quantize``) and 1-D tensors in F32. ``gguf`` cannot quantise K-quants,
so Q4_K blocks are built by ``quantize_q4_k`` below: the Q4_K block layout of ggml with a simpler scale
search than llama.cpp's (min/max per 32-value sub-block, 6-bit scales and mins per 256-value super-block),
checked against ``gguf.quants.dequantize``; Q6_K blocks likewise by ``quantize_q6_k`` (``pack_q6_k`` lays given
codes out exactly as gguf dequantises them). K-quants need rows of a multiple of 256 values, which the
64-wide example models do not have (llama.cpp would fall back to Q5_0 for them), so the Q4_K comparisons use
two 256-wide random-init models written here. ``Q4_K_M`` files mix types per tensor as llama-quantize does
(``q4_k_m_type``): Q6_K for the output matrix and for attn_v / ffn_down of the layers ``use_more_bits``
picks, Q4_K for the other matrices, F32 for 1-D tensors, and llama.cpp's fallbacks (Q5_0 for Q4_K, Q8_0
for Q6_K) where rows are not a multiple of 256.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import gguf
from gguf import GGMLQuantizationType as Q

import modelkin
from modelkin.cli import main as cli_main
from modelkin.errors import FormatError, UnsupportedError
from modelkin.inventory import build_inventory
from modelkin.sources import open_model
from modelkin.sources.gguf_format import DTYPES, GGUFFile
from modelkin.sources.transport import LocalFile

try:  # tests/ may or may not become a package
    from . import hostile_gguf as hg
except ImportError:
    import hostile_gguf as hg

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

# Hugging Face names -> GGUF names (gguf-py's TensorNameMap, for the Qwen2 / Llama layout)
TOP = {"model.embed_tokens.weight": "token_embd.weight", "lm_head.weight": "output.weight", "model.norm.weight": "output_norm.weight"}
PER_LAYER = {
    "input_layernorm.weight": "attn_norm.weight", "post_attention_layernorm.weight": "ffn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight", "self_attn.q_proj.bias": "attn_q.bias",
    "self_attn.k_proj.weight": "attn_k.weight", "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.weight": "attn_v.weight", "self_attn.v_proj.bias": "attn_v.bias",
    "self_attn.o_proj.weight": "attn_output.weight", "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight", "mlp.down_proj.weight": "ffn_down.weight",
}


def gguf_name(hf: str) -> str:
    if hf in TOP:
        return TOP[hf]
    _, _, layer, rest = hf.split(".", 3)
    return f"blk.{layer}.{PER_LAYER[rest]}"


def llama_permute(w: np.ndarray, n_head: int, n_head_kv: int | None) -> np.ndarray:
    """``LlamaModel.permute`` of convert_hf_to_gguf.py, in numpy."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def quantize_q4_k(x: np.ndarray) -> np.ndarray:
    """Rows of float32 (length a multiple of 256) -> Q4_K blocks: d, dmin (f16), 12 bytes of packed 6-bit
    scales and mins, 128 bytes of 4-bit values; value = d*sc*q - dmin*m per 32-value sub-block."""
    f32, u8 = np.float32, np.uint8
    rows = x.shape[0]
    blocks = x.astype(f32).reshape(-1, 8, 32)
    n = blocks.shape[0]
    lo = np.minimum(blocks.min(-1), 0)
    scale, mins = (blocks.max(-1) - lo) / 15, -lo
    d16, dmin16 = (scale.max(-1) / 63).astype(np.float16), (mins.max(-1) / 63).astype(np.float16)
    d, dmin = d16.astype(f32)[:, None], dmin16.astype(f32)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        sc = np.where(d > 0, np.rint(scale / d), 0).clip(0, 63).astype(u8)
        mn = np.where(dmin > 0, np.rint(mins / dmin), 0).clip(0, 63).astype(u8)
        step, offset = (d * sc)[..., None], (dmin * mn)[..., None]
        q = np.where(step > 0, np.rint((blocks + offset) / step), 0).clip(0, 15).astype(u8)
    packed = np.empty((n, 12), u8)
    packed[:, 0:4] = sc[:, :4] | ((sc[:, 4:] >> 4) << 6)
    packed[:, 4:8] = mn[:, :4] | ((mn[:, 4:] >> 4) << 6)
    packed[:, 8:12] = (sc[:, 4:] & 0xF) | ((mn[:, 4:] & 0xF) << 4)
    qs = (q[:, 0::2, :] | (q[:, 1::2, :] << 4)).reshape(n, 128)
    out = np.concatenate([d16.reshape(n, 1).view(u8), dmin16.reshape(n, 1).view(u8), packed, qs], axis=1)
    return out.reshape(rows, -1)


def pack_q6_k(codes: np.ndarray, scales: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Q6_K blocks from 6-bit codes [n, 256] (0..63, value = d * scale * (code - 32)), int8 sub-block scales
    [n, 16] and f16 super-block scales [n]: ql (128 bytes: low nibbles, element h*128 + j in the low and
    h*128 + 64 + j in the high half of byte h*64 + j), qh (64 bytes: the 2 high bits of element
    h*128 + t*32 + j at bit 2t of byte h*32 + j), 16 scales, d (ggml's block_q6_K)."""
    n, u8 = codes.shape[0], np.uint8
    c = codes.astype(u8).reshape(n, 2, 128)
    ql = ((c[:, :, :64] & 0xF) | ((c[:, :, 64:] & 0xF) << 4)).reshape(n, 128)
    hi = (c >> 4).reshape(n, 2, 4, 32)
    qh = (hi[:, :, 0] | (hi[:, :, 1] << 2) | (hi[:, :, 2] << 4) | (hi[:, :, 3] << 6)).astype(u8).reshape(n, 64)
    sc = scales.astype(np.int8).view(u8).reshape(n, 16)
    return np.concatenate([ql, qh, sc, d.astype(np.float16).reshape(n, 1).view(u8)], axis=1)


def quantize_q6_k(x: np.ndarray) -> np.ndarray:
    """Rows of float32 (length a multiple of 256) -> Q6_K blocks: per 16-value sub-block a scale of max|x|/31,
    stored as int8 multiples of the super-block's f16 d = max(scale)/127; codes round(x / (d*sc)) in -32..31."""
    rows, f32 = x.shape[0], np.float32
    blocks = x.astype(f32).reshape(-1, 16, 16)
    n = blocks.shape[0]
    sub = np.abs(blocks).max(-1) / 31
    d16 = (sub.max(-1) / 127).astype(np.float16)
    d = d16.astype(f32)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        sc = np.where(d > 0, np.rint(sub / d), 0).clip(-128, 127).astype(np.int8)
        step = (d * sc)[..., None]
        q = np.where(step != 0, np.rint(blocks / step), 0).clip(-32, 31)
    return pack_q6_k((q + 32).reshape(n, 256), sc, d16).reshape(rows, -1)


def _use_more_bits(i: int, n: int) -> bool:
    """llama.cpp's use_more_bits: the first and last eighth of the layers and every third one between."""
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


_K_FALLBACK = {Q.Q4_K: Q.Q5_0, Q.Q6_K: Q.Q8_0}  # llama-quantize when a row is not a multiple of 256


def q4_k_m_type(name: str, shape: tuple, n_layer: int) -> Q:
    """The type llama-quantize gives a tensor of a Q4_K_M file (llama_tensor_get_type, as far as these
    models go): F32 for 1-D tensors, Q6_K for output and the chosen layers' attn_v / ffn_down, else Q4_K."""
    if len(shape) == 1:
        return Q.F32
    layer = int(name.split(".")[1]) if name.startswith("blk.") else -1
    more = name == "output.weight" or name.endswith(("attn_v.weight", "ffn_down.weight")) and _use_more_bits(layer, n_layer)
    qtype = Q.Q6_K if more else Q.Q4_K
    return _K_FALLBACK[qtype] if shape[-1] % 256 else qtype


def _encode(data: np.ndarray, qtype: Q) -> tuple[np.ndarray, Q | None]:
    if qtype == Q.F32:
        return data.astype(np.float32), None
    if qtype == Q.F16:
        return data.astype(np.float16), None
    if qtype == Q.Q4_K:
        return quantize_q4_k(data), qtype
    if qtype == Q.Q6_K:
        return quantize_q6_k(data), qtype
    return gguf.quants.quantize(data, qtype), qtype


PERMUTED = {"llama"}  # architectures whose converter permutes Q/K rows (as far as these tests go)
GEMMA = {"gemma", "gemma2", "gemma3"}


Q4_K_M = "Q4_K_M"  # a mixed file, types per tensor by q4_k_m_type


def convert(folder: Path, out: Path, arch: str, qtype: Q | str, weights: dict | None = None) -> Path:
    """What convert_hf_to_gguf.py (and llama-quantize for Q4_K / Q4_K_M) would write for this HF folder."""
    cfg = json.loads((folder / "config.json").read_text())
    w = weights if weights is not None else load_file(str(folder / "model.safetensors"))
    from tokenizers import Tokenizer

    vocab = Tokenizer.from_file(str(folder / "tokenizer.json")).get_vocab(with_added_tokens=True)
    tokens = [f"[PAD{i}]" for i in range(cfg["vocab_size"])]
    for t, i in vocab.items():
        tokens[i] = t
    n_head, n_kv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    wr = gguf.GGUFWriter(str(out), arch)
    wr.add_block_count(cfg["num_hidden_layers"])
    wr.add_context_length(cfg["max_position_embeddings"])
    wr.add_embedding_length(cfg["hidden_size"])
    wr.add_feed_forward_length(cfg["intermediate_size"])
    wr.add_head_count(n_head)
    wr.add_head_count_kv(n_kv)
    wr.add_rope_freq_base(cfg["rope_theta"])
    wr.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    wr.add_file_type({Q.F16: 1, Q.Q8_0: 7, Q.Q4_K: 14, Q4_K_M: 15}[qtype])
    wr.add_tokenizer_model("gpt2")
    wr.add_token_list(tokens)
    for hf, data in w.items():
        if arch in PERMUTED and hf.endswith(("q_proj.weight", "q_proj.bias")):
            data = llama_permute(data, n_head, n_head)
        if arch in PERMUTED and hf.endswith(("k_proj.weight", "k_proj.bias")):
            data = llama_permute(data, n_head, n_kv)
        if arch in GEMMA and hf.endswith("norm.weight"):
            data = data + 1
        name = gguf_name(hf)
        if data.ndim == 1:
            t = Q.F32
        elif qtype == Q4_K_M:
            t = q4_k_m_type(name, data.shape, cfg["num_hidden_layers"])
        else:
            t = qtype
        encoded, raw_dtype = _encode(data, t)
        wr.add_tensor(name, encoded, raw_dtype=raw_dtype)
    wr.write_header_to_file()
    wr.write_kv_data_to_file()
    wr.write_tensors_to_file()
    wr.close()
    return out


def wide_model(folder: Path, seed: int) -> Path:
    """A 256-wide Qwen2-style model with random-init weights (std 0.02), the example tokenizer."""
    cfg = json.loads((EXAMPLES / "base" / "config.json").read_text())
    cfg.update(hidden_size=256, intermediate_size=512, num_attention_heads=4, num_key_value_heads=2, head_dim=64)
    rng = np.random.default_rng(seed)
    h, f, v, kv = 256, 512, cfg["vocab_size"], 2 * 64
    shapes = {"model.embed_tokens.weight": (v, h), "lm_head.weight": (v, h), "model.norm.weight": (h,)}
    for layer in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        shapes.update({p + "input_layernorm.weight": (h,), p + "post_attention_layernorm.weight": (h,),
                       p + "self_attn.q_proj.weight": (h, h), p + "self_attn.q_proj.bias": (h,),
                       p + "self_attn.k_proj.weight": (kv, h), p + "self_attn.k_proj.bias": (kv,),
                       p + "self_attn.v_proj.weight": (kv, h), p + "self_attn.v_proj.bias": (kv,),
                       p + "self_attn.o_proj.weight": (h, h), p + "mlp.gate_proj.weight": (f, h),
                       p + "mlp.up_proj.weight": (f, h), p + "mlp.down_proj.weight": (h, f)})
    weights = {k: (1 + 0.1 * rng.standard_normal(s) if k.endswith("norm.weight") else 0.02 * rng.standard_normal(s)).astype(np.float32)
               for k, s in shapes.items()}
    folder.mkdir()
    save_file(weights, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(cfg))
    shutil.copy(EXAMPLES / "base" / "tokenizer.json", folder / "tokenizer.json")
    return folder


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    pytest.importorskip("tokenizers")
    d = tmp_path_factory.mktemp("gguf")
    out = {
        "base_f16": convert(EXAMPLES / "base", d / "base-llama-f16.gguf", "llama", Q.F16),
        "base_q8_0": convert(EXAMPLES / "base", d / "base-llama-q8_0.gguf", "llama", Q.Q8_0),
        "base_qwen2_f16": convert(EXAMPLES / "base", d / "base-qwen2-f16.gguf", "qwen2", Q.F16),
        "independent_q8_0": convert(EXAMPLES / "independent", d / "independent-llama-q8_0.gguf", "llama", Q.Q8_0),
        "base_gemma2_f16": convert(EXAMPLES / "base", d / "base-gemma2-f16.gguf", "gemma2", Q.F16),
        "wide_a": wide_model(d / "wide_a", 1),
        "wide_b": wide_model(d / "wide_b", 2),
    }
    out["wide_a_q4_k"] = convert(out["wide_a"], d / "wide-a-q4_k.gguf", "qwen2", Q.Q4_K)
    out["wide_b_q4_k"] = convert(out["wide_b"], d / "wide-b-q4_k.gguf", "qwen2", Q.Q4_K)
    out["wide_a_q4_k_m"] = convert(out["wide_a"], d / "wide-a-Q4_K_M.gguf", "llama", Q4_K_M)
    out["wide_b_q4_k_m"] = convert(out["wide_b"], d / "wide-b-Q4_K_M.gguf", "llama", Q4_K_M)
    return out


def _base_weights() -> dict[str, np.ndarray]:
    return load_file(str(EXAMPLES / "base" / "model.safetensors"))


# -- header, metadata, vocabulary -----------------------------------------------------------------


def test_header_config_and_vocabulary(files):
    f = GGUFFile(files["base_f16"])
    cfg = json.loads((EXAMPLES / "base" / "config.json").read_text())
    assert f.format_name == "gguf" and f.version == 3
    assert f.tensors["token_embd.weight"].shape == (512, 64)  # ne reversed: [out, in]
    assert f.tensors["blk.0.ffn_down.weight"].shape == (64, 128)
    assert f.tensors["blk.0.attn_q.weight"].dtype.code == "F16" and f.tensors["blk.0.attn_q.bias"].dtype.code == "F32"
    got = f.embedded_config()
    assert got["model_type"] == "llama"
    for key in ("hidden_size", "num_hidden_layers", "intermediate_size", "num_attention_heads", "num_key_value_heads",
                "max_position_embeddings", "rope_theta", "rms_norm_eps", "vocab_size", "tie_word_embeddings"):
        assert got[key] == cfg[key], key
    from tokenizers import Tokenizer

    assert f.embedded_vocab() == Tokenizer.from_file(str(EXAMPLES / "base" / "tokenizer.json")).get_vocab(with_added_tokens=True)
    used = f.metadata_used()
    assert used["general.architecture"] == "llama" and used["llama.attention.head_count_kv"] == 2
    assert used["tokenizer.ggml.tokens"] == "<512 tokens>"
    assert used["converter transforms undone"] == ["Q/K rows: interleaved RoPE order -> rotate-half"]
    assert GGUFFile(files["base_qwen2_f16"]).embedded_config()["model_type"] == "qwen2"


def test_qk_permutation_undone(files):
    """Reads of Q and K (weights and biases) give the source's rows, whatever range is asked for; the file
    itself really holds the permuted rows; an architecture the converter does not permute is read as stored."""
    w = _base_weights()
    with open_model(files["base_f16"]) as m:
        for layer in range(2):
            for which in ("q", "k"):
                src_w = w[f"model.layers.{layer}.self_attn.{which}_proj.weight"]
                src_b = w[f"model.layers.{layer}.self_attn.{which}_proj.bias"]
                info, bias = m.tensors[f"blk.{layer}.attn_{which}.weight"], m.tensors[f"blk.{layer}.attn_{which}.bias"]
                expect = src_w.astype(np.float16).astype(np.float32)
                np.testing.assert_array_equal(m.read(info).reshape(src_w.shape), expect)
                np.testing.assert_array_equal(m.read(bias), src_b)
                stored = m.read_raw(info).astype(np.float32).reshape(src_w.shape)
                assert not np.array_equal(stored, expect)  # the permutation is on disk
                rows = np.array([0, 3, 7, 8, 15, 16, src_w.shape[0] - 1])
                np.testing.assert_array_equal(m.read_rows(info, rows), expect[rows])
                np.testing.assert_array_equal(m.read(info, 37, 333), expect.reshape(-1)[37:370])
                np.testing.assert_array_equal(np.concatenate(list(m.stream(info, 5, info.numel - 5))), expect.reshape(-1)[5:])
                np.testing.assert_array_equal(m.read_block(info, 9, 21, 3, 50), expect[9:21, 3:50])
    with open_model(files["base_qwen2_f16"]) as m:
        info = m.tensors["blk.1.attn_q.weight"]
        src = w["model.layers.1.self_attn.q_proj.weight"].astype(np.float16).astype(np.float32)
        np.testing.assert_array_equal(m.read_raw(info).astype(np.float32).reshape(src.shape), src)


def test_gemma_norm_offset_undone(files):
    w = _base_weights()
    f = GGUFFile(files["base_gemma2_f16"])
    assert f.embedded_config()["model_type"] == "gemma2"
    for hf in ("model.norm.weight", "model.layers.0.input_layernorm.weight", "model.layers.1.post_attention_layernorm.weight"):
        info = f.tensors[gguf_name(hf)]
        raw = f.read_raw(info, 0, info.numel)
        np.testing.assert_allclose(raw, w[hf] + 1, rtol=0, atol=0)  # stored 1 + w, as the converter writes it
        np.testing.assert_allclose(f.read_elements(info, 0, info.numel), w[hf], rtol=0, atol=1e-6)
    q = f.tensors["blk.0.attn_q.weight"]  # not permuted for Gemma
    np.testing.assert_array_equal(f.read_elements(q, 0, q.numel), w["model.layers.0.self_attn.q_proj.weight"].astype(np.float16).astype(np.float32).reshape(-1))
    assert f.metadata_used()["converter transforms undone"] == ["norm gains stored as 1 + w"]
    r = modelkin.compare(EXAMPLES / "base" / "model.safetensors", files["base_gemma2_f16"], hash_files=False)
    final = next(t for t in r.tensors if t.b == "output_norm.weight")
    assert final.a == "model.norm.weight" and final.rel_l2 < 1e-6
    assert r.verdict == "related"


# -- dequantisation -------------------------------------------------------------------------------


def _random_blocks(qtype: Q, n_blocks: int, rng: np.random.Generator) -> np.ndarray:
    elems, n_bytes = gguf.GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, (n_blocks, n_bytes), dtype=np.uint8)
    return raw


BLOCK_TYPES = sorted((q for v, d in DTYPES.items() if d.is_block for q in [Q(v)]), key=lambda q: q.value)


def test_every_block_type_reads_as_gguf_dequantizes(tmp_path):
    """Random blocks of every block type: element ranges, row subsets and streams equal
    ``gguf.quants.dequantize`` of the whole tensor; types gguf cannot dequantize fail with one clear error."""
    rng = np.random.default_rng(0)
    path = tmp_path / "all-types.gguf"
    wr = gguf.GGUFWriter(str(path), "llama")
    raws = {}
    for qtype in BLOCK_TYPES:
        raws[qtype] = _random_blocks(qtype, 6, rng).reshape(3, -1)  # 3 rows of 2 blocks
        wr.add_tensor(f"t.{qtype.name}", raws[qtype], raw_dtype=qtype)
    wr.write_header_to_file()
    wr.write_kv_data_to_file()
    wr.write_tensors_to_file()
    wr.close()
    checked, refused = [], []
    with np.errstate(all="ignore"), open_model(path) as m:
        for qtype, raw in raws.items():
            info = m.tensors[f"t.{qtype.name}"]
            assert info.shape == (3, 2 * gguf.GGML_QUANT_SIZES[qtype][0]) and info.dtype.code == qtype.name
            try:
                expect = gguf.quants.dequantize(raw, qtype)
            except NotImplementedError:
                with pytest.raises(UnsupportedError, match=qtype.name):
                    m.read(info)
                refused.append(qtype.name)
                continue
            np.testing.assert_array_equal(m.read(info).reshape(info.shape), expect)
            flat = expect.reshape(-1)
            np.testing.assert_array_equal(m.read(info, 7, info.numel - 20), flat[7:-13])
            np.testing.assert_array_equal(m.read_rows(info, np.array([2, 0])), expect[[2, 0]])
            np.testing.assert_array_equal(np.concatenate(list(m.stream(info, 3, info.numel - 3))), flat[3:])
            assert m.read_raw(info).tobytes() == raw.tobytes()
            checked.append(qtype.name)
    for name in ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K",
                 "IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S", "IQ4_NL", "IQ4_XS", "TQ1_0", "TQ2_0", "MXFP4"):
        assert name in checked
    assert set(refused) <= {"Q8_1", "Q8_K", "Q1_0"}


def test_q4_k_builder_round_trips_through_gguf():
    rng = np.random.default_rng(3)
    x = (0.02 * rng.standard_normal((4, 512))).astype(np.float32)
    back = gguf.quants.dequantize(quantize_q4_k(x), Q.Q4_K)
    assert back.shape == x.shape
    assert np.linalg.norm(back - x) / np.linalg.norm(x) < 0.12
    assert np.corrcoef(back.ravel(), x.ravel())[0, 1] > 0.99


def test_q6_k_builder_lays_codes_out_as_gguf_dequantizes():
    """Given codes, scales and d, ``pack_q6_k`` gives blocks gguf dequantises to exactly d*sc*(code-32); the
    encoder round-trips within 6-bit rounding."""
    rng = np.random.default_rng(4)
    codes, sc = rng.integers(0, 64, size=(3, 256)), rng.integers(-128, 128, size=(3, 16))
    d = np.array([2**-8, 2**-10, 0.5], np.float16)
    back = gguf.quants.dequantize(pack_q6_k(codes, sc, d), Q.Q6_K)
    assert np.array_equal(back, (d.astype(np.float32)[:, None] * np.repeat(sc, 16, axis=1) * (codes - 32)).astype(np.float32))
    x = (0.02 * rng.standard_normal((4, 512))).astype(np.float32)
    back = gguf.quants.dequantize(quantize_q6_k(x), Q.Q6_K)
    assert back.shape == x.shape and np.linalg.norm(back - x) / np.linalg.norm(x) < 0.03


def test_q4_k_m_types_follow_llama_quantize():
    """Layer choice of use_more_bits (llama.cpp's integer arithmetic) and the fallbacks for short rows."""
    assert [_use_more_bits(i, 2) for i in range(2)] == [False, True]
    assert [i for i in range(32) if _use_more_bits(i, 32)] == [0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31]
    assert q4_k_m_type("output.weight", (512, 256), 2) == Q.Q6_K and q4_k_m_type("output.weight", (512, 64), 2) == Q.Q8_0
    assert q4_k_m_type("blk.1.attn_v.weight", (128, 256), 2) == Q.Q6_K and q4_k_m_type("blk.0.attn_v.weight", (128, 256), 2) == Q.Q4_K
    assert q4_k_m_type("blk.0.ffn_up.weight", (128, 64), 2) == Q.Q5_0 and q4_k_m_type("blk.0.attn_norm.weight", (64,), 2) == Q.F32


def test_stacked_experts_listed_per_expert(tmp_path):
    rng = np.random.default_rng(5)
    gate = rng.standard_normal((4, 64, 32)).astype(np.float32)  # [expert, n_ff, n_embd]
    down = rng.standard_normal((4, 32, 64)).astype(np.float32)
    path = tmp_path / "moe.gguf"
    wr = gguf.GGUFWriter(str(path), "qwen2moe")
    wr.add_expert_count(4)
    wr.add_tensor("blk.0.ffn_gate_exps.weight", gguf.quants.quantize(gate, Q.Q8_0), raw_dtype=Q.Q8_0)
    wr.add_tensor("blk.0.ffn_down_exps.weight", down)
    wr.add_tensor("blk.0.ffn_gate_inp.weight", rng.standard_normal((4, 32)).astype(np.float32))
    wr.write_header_to_file()
    wr.write_kv_data_to_file()
    wr.write_tensors_to_file()
    wr.close()
    with open_model(path) as m:
        assert sorted(m.tensors) == sorted([f"blk.0.ffn_gate_exps.{e}.weight" for e in range(4)]
                                           + [f"blk.0.ffn_down_exps.{e}.weight" for e in range(4)] + ["blk.0.ffn_gate_inp.weight"])
        deq = gguf.quants.dequantize(gguf.quants.quantize(gate, Q.Q8_0), Q.Q8_0)
        for e in range(4):
            g, d = m.tensors[f"blk.0.ffn_gate_exps.{e}.weight"], m.tensors[f"blk.0.ffn_down_exps.{e}.weight"]
            assert g.shape == (64, 32) and d.shape == (32, 64)
            np.testing.assert_array_equal(m.read(g).reshape(64, 32), deq[e])
            np.testing.assert_array_equal(m.read(d).reshape(32, 64), down[e])
        inv = build_inventory(m)
        assert inv.family == "qwen2_moe" and not inv.unassigned
        e2 = inv.by_name["blk.0.ffn_down_exps.2.weight"]
        assert (e2.role, e2.layer, e2.expert, e2.component) == ("mlp.down", 0, 2, "text")
        assert inv.by_name["blk.0.ffn_gate_inp.weight"].role == "router"


def test_vision_projector_names(tmp_path):
    path = tmp_path / "mmproj-model-f16.gguf"
    wr = gguf.GGUFWriter(str(path), "clip")
    rng = np.random.default_rng(1)
    for name, shape in (("v.patch_embd.weight", (64, 3, 14, 14)), ("v.patch_embd.weight.1", (64, 3, 14, 14)),
                        ("v.blk.0.attn_q.weight", (64, 64)), ("v.blk.0.ln1.weight", (64,)), ("v.post_ln.weight", (64,)),
                        ("mm.0.weight", (128, 256)), ("mm.2.weight", (128, 128))):
        wr.add_tensor(name, rng.standard_normal(shape).astype(np.float16 if len(shape) > 1 else np.float32))
    wr.write_header_to_file()
    wr.write_kv_data_to_file()
    wr.write_tensors_to_file()
    wr.close()
    with open_model(path) as m:
        assert m.config is None  # a projector file carries no language-model config
        assert m.tensors["v.patch_embd.weight"].shape == (64, 3, 14, 14)
        inv = build_inventory(m)
        got = {e.name: (e.role, e.component) for e in inv.tensors}
    assert not inv.unassigned
    assert got["v.blk.0.attn_q.weight"] == ("attn.q", "vision")
    assert got["v.patch_embd.weight.1"] == ("patch_embed", "vision")
    assert got["mm.0.weight"] == ("mlp.up", "projector") and got["mm.2.weight"] == ("mlp.down", "projector")


def test_every_example_tensor_named_by_the_gguf_table(files):
    with open_model(files["base_q8_0"]) as m:
        inv = build_inventory(m)
    assert inv.family == "llama" and not inv.unassigned
    assert {e.family for e in inv.tensors} == {"gguf"}
    roles = {e.name: e.role for e in inv.tensors}
    assert roles["token_embd.weight"] == "embedding" and roles["output.weight"] == "lm_head"
    assert roles["blk.1.attn_output.weight"] == "attn.o" and roles["blk.0.ffn_norm.weight"] == "norm"


# -- same verdict as the source -------------------------------------------------------------------

MATRICES_IN_BASE = 16  # embedding, lm_head, 2 layers x (q, k, v, o, gate, up, down)


def _matrix_rows(result) -> list:
    return [t for t in result.tensors if len(t.shape) == 2]


@pytest.mark.parametrize("which", ["base_f16", "base_q8_0", "base_qwen2_f16"])
def test_gguf_related_to_its_source(files, which):
    r = modelkin.compare(EXAMPLES / "base" / "model.safetensors", files[which], hash_files=False)
    assert r.verdict == "related"
    assert r.components["text"].verdict == "related"
    rows = _matrix_rows(r)
    assert len(rows) == MATRICES_IN_BASE
    worst = min(t.pearson for t in rows)
    assert worst >= 0.99, {t.a: t.pearson for t in rows}
    assert all(t.evidence for t in rows)
    assert r.vocabulary is None or not r.vocabulary["remapped"]


def test_q4_k_related_to_its_source(files):
    r = modelkin.compare(files["wide_a"], files["wide_a_q4_k"], hash_files=False)
    assert r.verdict == "related"
    rows = _matrix_rows(r)
    assert len(rows) == MATRICES_IN_BASE and {t.dtype_b for t in rows} == {"Q4_K"}
    assert min(t.pearson for t in rows) >= 0.98, {t.a: t.pearson for t in rows}


# (type, Pearson floor): measured worst 0.9969 (Q4_K), 0.99981 (Q6_K) on 256-wide random-init weights
Q4_K_M_FLOORS = {"Q4_K": 0.995, "Q6_K": 0.999}
# a 64-wide model gets llama-quantize's fallbacks: measured worst 0.99906 (Q5_0), 0.99999 (Q8_0)
Q4_K_M_FALLBACK_FLOORS = {"Q5_0": 0.998, "Q8_0": 0.9999}


def _worst_by_type(result) -> dict[str, tuple[float, int]]:
    by: dict[str, list[float]] = {}
    for t in _matrix_rows(result):
        by.setdefault(t.dtype_b, []).append(t.pearson)
    return {k: (min(v), len(v)) for k, v in by.items()}


def test_q4_k_m_mixed_file_related_to_its_source(files):
    """A Q4_K_M file (Q4_K for most matrices, Q6_K for output, layer 1's attn_v and ffn_down, F32 norms,
    Llama's Q/K permutation): every matrix pairs with its source, each type above its floor."""
    with open_model(files["wide_a_q4_k_m"]) as m:
        types = {n: i.dtype.code for n, i in m.tensors.items()}
    assert {n for n, c in types.items() if c == "Q6_K"} == {"output.weight", "blk.1.attn_v.weight", "blk.1.ffn_down.weight"}
    assert sum(c == "Q4_K" for c in types.values()) == 13 and {c for n, c in types.items() if n.endswith(("norm.weight", ".bias"))} == {"F32"}
    r = modelkin.compare(files["wide_a"], files["wide_a_q4_k_m"], hash_files=False)
    assert r.verdict == "related" and r.components["text"].verdict == "related"
    worst = _worst_by_type(r)
    assert {k: n for k, (_, n) in worst.items()} == {"Q4_K": 13, "Q6_K": 3}
    assert all(worst[k][0] >= floor for k, floor in Q4_K_M_FLOORS.items()), worst


def test_q4_k_m_of_a_narrow_model_related_to_its_source(tmp_path):
    """examples/base (64-wide rows) as llama-quantize writes Q4_K_M for it: Q5_0 and Q8_0 in place of the
    K-quants."""
    path = convert(EXAMPLES / "base", tmp_path / "base-Q4_K_M.gguf", "llama", Q4_K_M)
    r = modelkin.compare(EXAMPLES / "base", path, hash_files=False)
    assert r.verdict == "related"
    worst = _worst_by_type(r)
    assert {k: n for k, (_, n) in worst.items()} == {"Q5_0": 13, "Q8_0": 3}
    assert all(worst[k][0] >= floor for k, floor in Q4_K_M_FALLBACK_FLOORS.items()), worst


def test_independent_ggufs_are_independent(files):
    r = modelkin.compare(files["base_q8_0"], files["independent_q8_0"], hash_files=False)
    assert r.verdict == "independent"
    assert len(_matrix_rows(r)) == MATRICES_IN_BASE
    r = modelkin.compare(files["wide_a_q4_k"], files["wide_b_q4_k"], hash_files=False)
    assert r.verdict == "independent"
    r = modelkin.compare(files["wide_a_q4_k_m"], files["wide_b_q4_k_m"], hash_files=False)
    assert r.verdict == "independent"
    assert len(_matrix_rows(r)) == MATRICES_IN_BASE and {t.dtype_b for t in _matrix_rows(r)} == {"Q4_K", "Q6_K"}


def _zoo_pair(zoo: Path, kind: str) -> tuple[Path, Path]:
    pair = next(p for p in json.loads((zoo / "manifest.json").read_text())["pairs"] if p["kind"] == kind)
    return zoo / pair["a"], zoo / pair["b"]


@pytest.mark.parametrize("kind, verdict", [("width_growth", "related"), ("independent_width", "independent")])
def test_cross_width_gguf_judged_like_its_safetensors(smoke_zoo, tmp_path, kind, verdict):
    """The zoo's width-grown model (64 -> 96 wide, 3 -> 4 layers) and an independent model of another width
    and vocabulary, as Q4_K_M GGUFs (llama-quantize's Q5_0/Q8_0 fallbacks at these widths, Llama's Q/K
    permutation): with no same-shape matrices, the cross-shape (shared-basis) test decides on the GGUF's
    embedded vocabulary, with the same verdict and log10 p as on the safetensors originals, whichever side
    is the GGUF."""
    a, b = _zoo_pair(smoke_zoo, kind)
    ga = convert(a, tmp_path / "a-Q4_K_M.gguf", "llama", Q4_K_M)
    gb = convert(b, tmp_path / "b-Q4_K_M.gguf", "llama", Q4_K_M)
    original = modelkin.compare(a, b, hash_files=False)
    assert original.verdict == verdict
    for x, y in ((a, gb), (ga, b), (ga, gb)):
        r = modelkin.compare(x, y, hash_files=False)
        assert r.verdict == verdict and r.components["text"].verdict == verdict, (x.name, y.name)
        assert "shared-basis" in r.components["text"].decided_by
        # 5-bit rounding costs a little evidence: measured -51.0 (B a GGUF), -57.7 (A), -53.5 (both) against -53.5 (related); 0.0 (independent)
        assert r.log10_p == pytest.approx(original.log10_p, rel=0.1, abs=0.5), (x.name, y.name, r.log10_p, original.log10_p)


def test_gguf_and_its_sibling_quantisation_related(files):
    r = modelkin.compare(files["base_f16"], files["base_q8_0"], hash_files=False)
    assert r.verdict == "related"
    assert min(t.pearson for t in _matrix_rows(r)) >= 0.999


# -- inspect --------------------------------------------------------------------------------------


def test_inspect_shows_format_types_and_metadata(files, capsys, tmp_path):
    assert cli_main(["inspect", str(files["wide_a_q4_k"]), "--tensors"]) == 0
    out = capsys.readouterr().out
    assert "wide-a-q4_k.gguf: format gguf; stored types: Q4_K (16), F32 (11)" in out
    assert "metadata general.architecture = qwen2" in out
    assert "metadata qwen2.attention.head_count_kv = 2" in out
    assert "blk.0.attn_q.weight  Q4_K  [256, 256]  attn.q" in out
    assert "blk.0.attn_q.bias  F32  [256]  attn.q" in out
    dest = tmp_path / "inv.json"
    assert cli_main(["inspect", str(files["base_f16"]), "--json", str(dest)]) == 0
    doc = json.loads(dest.read_text())
    assert doc["files"] == [{"name": "base-llama-f16.gguf", "format": "gguf", "metadata_used": GGUFFile(files["base_f16"]).metadata_used()}]
    assert {t["name"]: t["dtype"] for t in doc["tensors"]}["blk.0.ffn_up.weight"] == "F16"


# -- remote reads ---------------------------------------------------------------------------------


class CountingRemote(LocalFile):
    """A local file that calls itself remote and counts what is read (what an HTTP transport would fetch)."""

    remote = True

    def __init__(self, path):
        super().__init__(path)
        self.bytes_read, self.reads, self.ranges = 0, 0, []

    def read_into(self, offset, out):
        self.bytes_read += out.nbytes
        self.reads += 1
        super().read_into(offset, out)

    def read_ranges(self, ranges):
        self.ranges.extend(ranges)
        return super().read_ranges(ranges)


def test_header_read_through_the_transport_in_bounded_pieces(tmp_path):
    path = tmp_path / "big.gguf"
    wr = gguf.GGUFWriter(str(path), "llama")
    wr.add_head_count(4)
    wr.add_token_list([f"t{i}" for i in range(20_000)])
    big = np.random.default_rng(0).standard_normal((64, 8192)).astype(np.float32)
    wr.add_tensor("blk.0.attn_q.weight", gguf.quants.quantize(big, Q.Q8_0), raw_dtype=Q.Q8_0)
    wr.write_header_to_file()
    wr.write_kv_data_to_file()
    wr.write_tensors_to_file()
    wr.close()
    t = CountingRemote(path)
    f = GGUFFile(t)
    info = f.tensors["blk.0.attn_q.weight"]
    assert len(f.embedded_vocab()) == 20_000
    # the header in a few growing ranged reads (64 KiB, doubling), not the 557 KB of data after it
    assert t.reads <= 4 and t.bytes_read < 2 * info.data_offset + (1 << 16) < path.stat().st_size
    f.prefetch([(info, 8192 * 3, 8192)])  # logical row 3 of head 0 (16 rows per head)
    (offset, n), = t.ranges
    assert offset == info.data_offset and n == 16 * 8192 // 32 * 34  # the whole head: its rows are interleaved
    row = f.read_elements(info, 8192 * 3, 8192)
    deq = gguf.quants.dequantize(gguf.quants.quantize(big, Q.Q8_0), Q.Q8_0)
    np.testing.assert_array_equal(row, deq[llama_permute(np.arange(64), 4, 4).tolist().index(3)])


def test_gguf_over_http_from_a_hub_repo(files, tmp_path, monkeypatch):
    """A GGUF in a Hub repo (local server on 127.0.0.1) is read through HTTP ranges: same verdict as local."""
    try:
        from .hub_server import HubServer, patch_hf_endpoint
    except ImportError:
        from hub_server import HubServer, patch_hf_endpoint
    from modelkin.sources.http import FetchStats

    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copy(files["base_q8_0"], repo / "base-q8_0.gguf")
    with HubServer() as hub:
        hub.add_repo("someone/base-gguf", repo)
        patch_hf_endpoint(monkeypatch, hub.url)
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
        monkeypatch.setenv("MODELKIN_CACHE", str(tmp_path / "mk-cache"))
        monkeypatch.delenv("HF_TOKEN", raising=False)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        stats = FetchStats()
        with open_model("someone/base-gguf", stats=stats) as src:
            assert src.remote and src.config["model_type"] == "llama"
            assert isinstance(src.files[0], GGUFFile) and src.embedded_vocab()["<|endoftext|>"] >= 0
            q = src.tensors["blk.0.attn_q.weight"]
            with open_model(files["base_q8_0"]) as local:
                np.testing.assert_array_equal(src.read(q), local.read(local.tensors[q.name]))
        for location in ("someone/base-gguf", hub.content_url("someone/base-gguf", "base-q8_0.gguf")):
            r = modelkin.compare(EXAMPLES / "base", location, read_mode="full", hash_files=False)
            assert r.verdict == "related" and min(t.pearson for t in _matrix_rows(r)) >= 0.99


# -- hostile files --------------------------------------------------------------------------------


def _info(name="w", dims=(32, 2), t=hg.F32, offset=0, n_dims=None):
    return hg.tensor_info(name, list(dims), t, offset, n_dims)


ARCH = hg.kv_str("general.architecture", "llama")
DATA = np.zeros(64, np.float32).tobytes()

HOSTILE = {
    "empty": (lambda: b"", "too short"),
    "truncated_header": (lambda: hg.small_model()[:60], "truncated"),
    "truncated_data": (lambda: hg.small_model()[:-40], "runs past the end"),
    "offset_past_end": (lambda: hg.gguf_bytes([ARCH], [_info(offset=1 << 40)], DATA), "runs past the end"),
    "tensor_count_overflow": (lambda: hg.gguf_bytes([ARCH], [_info()], DATA, n_tensors=2**64 - 1), "tensors"),
    "tensor_count_past_file": (lambda: hg.gguf_bytes([ARCH], [_info()], DATA, n_tensors=5000), "more than the"),
    "kv_count_overflow": (lambda: hg.gguf_bytes([ARCH], [_info()], DATA, n_kv=2**63), "metadata entries"),
    "dims_product_overflow": (lambda: hg.gguf_bytes([ARCH], [_info(dims=(2**32, 2**32, 2**32))], DATA), "2^62"),
    "dims_wrap_to_zero": (lambda: hg.gguf_bytes([ARCH], [_info(dims=(2**63, 2))], DATA), "2^62"),
    "too_many_dims": (lambda: hg.gguf_bytes([ARCH], [_info(dims=(1, 1, 1, 1, 1))], DATA), "dimensions"),
    "huge_key_length": (lambda: hg.gguf_bytes([hg.string("general.architecture", claimed=2**63)], [], b""), "claims"),
    "huge_string_value": (lambda: hg.gguf_bytes([hg.string("k") + b"\x08\0\0\0" + hg.string("v", claimed=2**40)], [], b""), "claims"),
    "huge_array": (lambda: hg.gguf_bytes([hg.kv_str_array("tokenizer.ggml.tokens", ["a"], claimed=2**62)], [], b""), "array claims"),
    "array_longer_than_file": (lambda: hg.gguf_bytes([hg.kv_str_array("tokenizer.ggml.tokens", ["a"], claimed=1 << 20)], [], b""), "more than the"),
    "string_past_end": (lambda: hg.gguf_bytes([hg.string("k") + b"\x08\0\0\0" + hg.string("v" * 10, claimed=100)], [], b"", alignment=1), "truncated"),
    "nested_array": (lambda: hg.gguf_bytes([hg.string("k") + b"\x09\0\0\0\x09\0\0\0" + b"\x01" + b"\0" * 7], [], b""), "arrays of arrays"),
    "bad_magic": (lambda: hg.gguf_bytes([ARCH], [], b"", magic=b"GGML"), "magic"),
    "version_1": (lambda: hg.gguf_bytes([ARCH], [], b"", version=1), "version 1"),
    "big_endian": (lambda: hg.gguf_bytes([ARCH], [], b"", version=3 << 24), "big-endian"),
    "unknown_type": (lambda: hg.gguf_bytes([ARCH], [_info(t=99)], DATA), "unknown ggml type 99"),
    "unknown_value_type": (lambda: hg.gguf_bytes([hg.string("k") + b"\x63\0\0\0"], [], b""), "unknown value type"),
    "misaligned_offset": (lambda: hg.gguf_bytes([ARCH], [_info(offset=4)], DATA + DATA), "alignment"),
    "duplicate_tensor": (lambda: hg.gguf_bytes([ARCH], [_info(), _info(offset=256)], DATA + DATA), "twice"),
    "duplicate_key": (lambda: hg.gguf_bytes([ARCH, ARCH], [], b""), "twice"),
    "overlapping_tensors": (lambda: hg.gguf_bytes([ARCH], [_info("a"), _info("b", offset=128)], DATA + DATA), "overlaps"),
    "row_not_whole_blocks": (lambda: hg.gguf_bytes([ARCH], [_info(dims=(31, 2), t=hg.Q8_0)], DATA), "not a multiple"),
    "bad_alignment": (lambda: hg.gguf_bytes([ARCH, hg.kv_u32("general.alignment", 3)], [], b""), "power of two"),
    "key_not_utf8": (lambda: hg.gguf_bytes([hg.string(b"\xff\xfe") + b"\x04\0\0\0" + b"\0" * 4], [], b""), "utf-8"),
    "head_count_wrong": (lambda: hg.gguf_bytes([ARCH, hg.kv_u32("llama.attention.head_count", 3)],
                                               [_info("blk.0.attn_q.weight", dims=(32, 2))], DATA), "heads"),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_file_one_error_line(tmp_path, capsys, name):
    build, fragment = HOSTILE[name]
    path = tmp_path / f"{name}.gguf"
    path.write_bytes(build())
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(FormatError) as info:
            open_model(path)
        elapsed = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    line = info.value.one_line()
    assert "\n" not in line and f"{name}.gguf" in line and fragment.lower() in line.lower(), line
    assert info.value.__cause__ is None
    assert elapsed < 1.0 and peak < 4 << 20, (elapsed, peak)
    assert cli_main(["inspect", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("modelkin: error: ") and f"{name}.gguf" in err, err


def test_hostile_file_through_the_real_cli(tmp_path):
    path = tmp_path / "offsets.gguf"
    path.write_bytes(HOSTILE["offset_past_end"][0]())
    env_src = str(Path(__file__).resolve().parents[1] / "src")
    proc = subprocess.run([sys.executable, "-m", "modelkin", "inspect", str(path)], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHONPATH": env_src})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1 and "offsets.gguf" in proc.stderr and "runs past the end" in proc.stderr


def test_fuzz_seeds_are_valid():
    sys.path.insert(0, str(Path(__file__).resolve().parent / "fuzz"))
    try:
        import target_gguf
    finally:
        sys.path.pop(0)
    for seed in target_gguf.SEEDS:
        target_gguf.fuzz_one(seed)
    f = GGUFFile(target_gguf.BytesTransport(hg.small_model()))
    q = f.tensors["blk.0.attn_q.weight"]
    stored = np.arange(8 * 32, dtype=np.float32).reshape(8, 32) / 7
    np.testing.assert_array_equal(f.read_elements(q, 0, q.numel).reshape(8, 32), stored[llama_permute(np.arange(8), 2, 2).argsort()])
