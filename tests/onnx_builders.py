"""ONNX files written the way exporters write them, with the onnx helper API, from named numpy weights.

``export`` lays a model out as torch's ONNX exporter does: each ``Linear`` becomes a MatMul with an
anonymous initializer ``onnx::MatMul_<n>`` holding W.T ([in, out]), followed by an Add of the named bias;
embeddings are Gathers and norms Muls (or LayerNormalization) of named weights. Quantised variants follow
onnxruntime's quantiser: ``qdq`` (int8 weights, per-channel DequantizeLinear, activations through
QuantizeLinear/DequantizeLinear), ``dynamic`` (DynamicQuantizeLinear + MatMulInteger, the weight scale on
the Mul after the Cast), ``qlinear`` (QLinearMatMul with per-column scales), ``nbits`` (onnxruntime's
weight-only block quantisation, com.microsoft MatMulNBits: ``quantize_nbits`` below follows the layout the
operator documents). The graphs are schema-valid and shaped like the real thing; nothing here validates
what it is given.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


class _Builder:
    def __init__(self, tensors: dict[str, np.ndarray], quant: str | None, scopes: bool, per_channel: bool, weight_type: str,
                 nbits: dict | None = None):
        self.t = tensors
        self.quant = quant
        self.scopes = scopes
        self.per_channel = per_channel
        self.weight_type = weight_type
        self.nbits = nbits or {}
        self.nodes: list = []
        self.inits: dict[str, np.ndarray] = {}
        self.counter = 100
        self.values = 0
        self.used: set[str] = set()

    def _value(self, hint: str) -> str:
        self.values += 1
        return f"/{hint}_output_{self.values}"

    def _node_name(self, scope: str, op: str) -> str:
        """torch's style: the module path as a scope, a counter on repeated ops (or ``MatMul_123``)."""
        self.counter += 1
        if not self.scopes:
            return f"{op}_{self.counter}"
        path = "/" + re.sub(r"\.(\d+)", r"§\1", scope).replace(".", "/").replace("§", ".") + "/" + op
        name, k = path, 0
        while name in self.used:
            k += 1
            name = f"{path}_{k}"
        self.used.add(name)
        return name

    def node(self, op: str, inputs: list[str], scope: str, n_out: int = 1, **attrs) -> list[str]:
        outs = [self._value(op) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=self._node_name(scope, op), **attrs))
        return outs

    def init(self, name: str, value: np.ndarray) -> str:
        self.inits[name] = value
        return name

    def embed(self, name: str, ids: str) -> str:
        return self.node("Gather", [self.init(name, self.t[name]), ids], name.rsplit(".", 1)[0])[0]

    def norm(self, module: str, x: str, layer_norm: bool = False) -> str:
        w = self.init(module + ".weight", self.t[module + ".weight"])
        if layer_norm:
            b = self.init(module + ".bias", self.t[module + ".bias"])
            return self.node("LayerNormalization", [x, w, b], module, axis=-1, epsilon=1e-12)[0]
        return self.node("Mul", [x, w], module)[0]

    def linear(self, module: str, x: str, weight: np.ndarray | None = None, bias: str | None = None) -> str:
        w = (self.t[module + ".weight"] if weight is None else weight).T.astype(np.float32)  # [in, out]
        self.counter += 1
        anon = f"onnx::MatMul_{self.counter}"
        if self.quant is None:
            y = self.node("MatMul", [x, self.init(anon, np.ascontiguousarray(w))], module)[0]
        else:
            y = getattr(self, "_" + self.quant)(module, x, w, anon)
        bias = bias or module + ".bias"
        if bias in self.t:
            y = self.node("Add", [self.init(bias, self.t[bias]), y], module)[0]
        return y

    # -- onnxruntime-style quantisation of one MatMul ----------------------------------------------
    def _quantise(self, w: np.ndarray, signed: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(q [in, out], scale, zero point): per output column when per_channel, else one of each."""
        axis = 0 if self.per_channel else None
        if signed:  # symmetric int8
            amax = np.abs(w).max(axis=axis)
            scale = (np.maximum(amax, 1e-8) / 127.0).astype(np.float32)
            q = np.clip(np.round(w / scale), -127, 127).astype(np.int8)
            zp = np.zeros_like(scale, dtype=np.int8)
        else:  # asymmetric uint8
            lo, hi = np.minimum(w.min(axis=axis), 0), np.maximum(w.max(axis=axis), 0)
            scale = ((hi - lo) / 255.0).astype(np.float32)
            zp = np.clip(np.round(-lo / scale), 0, 255).astype(np.uint8)
            q = np.clip(np.round(w / scale) + zp, 0, 255).astype(np.uint8)
        return q, np.asarray(scale, np.float32), np.asarray(zp)

    def _qdq(self, module: str, x: str, w: np.ndarray, anon: str) -> str:
        q, scale, zp = self._quantise(w, signed=self.weight_type == "int8")
        s_x = self.init(f"{x}_scale", np.array(0.05, np.float32))
        z_x = self.init(f"{x}_zero_point", np.array(128, np.uint8))
        xq = self.node("QuantizeLinear", [x, s_x, z_x], module)[0]
        xd = self.node("DequantizeLinear", [xq, s_x, z_x], module)[0]
        wq = self.init(anon + "_quantized", q)
        ws = self.init(anon + "_scale", scale)
        wz = self.init(anon + "_zero_point", zp)
        wd = self.node("DequantizeLinear", [wq, ws, wz], module, axis=1)[0]
        return self.node("MatMul", [xd, wd], module)[0]

    def _dynamic(self, module: str, x: str, w: np.ndarray, anon: str) -> str:
        q, scale, zp = self._quantise(w, signed=self.weight_type == "int8")
        xq, xs, xz = self.node("DynamicQuantizeLinear", [x], module, n_out=3)
        wq = self.init(anon + "_quantized", q)
        ws = self.init(anon + "_scale", scale)
        wz = self.init(anon + "_zero_point", zp)
        y32 = self.node("MatMulInteger", [xq, wq, xz, wz], module)[0]
        yf = self.node("Cast", [y32], module, to=TensorProto.FLOAT)[0]
        scales = self.node("Mul", [xs, ws], module)[0]
        return self.node("Mul", [yf, scales], module)[0]

    def _qlinear(self, module: str, x: str, w: np.ndarray, anon: str) -> str:
        q, scale, zp = self._quantise(w, signed=False)
        s_x = self.init(f"{x}_scale", np.array(0.05, np.float32))
        z_x = self.init(f"{x}_zero_point", np.array(128, np.uint8))
        s_y = self.init(f"{anon}_out_scale", np.array(0.05, np.float32))
        z_y = self.init(f"{anon}_out_zero_point", np.array(128, np.uint8))
        xq = self.node("QuantizeLinear", [x, s_x, z_x], module)[0]
        wq = self.init(anon + "_quantized", q)
        ws = self.init(anon + "_scale", scale)
        wz = self.init(anon + "_zero_point", zp)
        yq = self.node("QLinearMatMul", [xq, s_x, z_x, wq, ws, wz, s_y, z_y], module)[0]
        return self.node("DequantizeLinear", [yq, s_y, z_y], module)[0]

    def _nbits(self, module: str, x: str, w: np.ndarray, anon: str) -> str:
        """onnxruntime's MatMul4BitsQuantizer (QOperator): the MatMul becomes a MatMulNBits of W [N, K]."""
        bits, block = self.nbits.get("bits", 4), self.nbits.get("block_size", 32)
        zero = self.nbits.get("zero", "uint8")
        packed, scales, zp = quantize_nbits(w.T, bits, block, zero)
        k, n = w.shape
        inputs = [x, self.init(f"{anon}_Q{bits}", packed), self.init(f"{anon}_scales", scales)]
        if zp is not None:
            inputs.append(self.init(f"{anon}_zero_points", zp))
        self.counter += 1
        name = self._node_name(module, "MatMul") + f"_Q{bits}"
        self.nodes.append(helper.make_node("MatMulNBits", inputs, [self._value("MatMulNBits")], name=name, domain="com.microsoft",
                                           K=k, N=n, bits=bits, block_size=block, accuracy_level=4))
        return self.nodes[-1].output[0]

    def model(self, inputs: list, outputs: list[str]) -> onnx.ModelProto:
        inits = [numpy_helper.from_array(np.ascontiguousarray(v), name=k) for k, v in self.inits.items()]
        graph = helper.make_graph(self.nodes, "main_graph", inputs,
                                  [helper.make_tensor_value_info(o, TensorProto.FLOAT, [1, "seq", "out"]) for o in outputs], inits)
        opsets = [helper.make_opsetid("", 21)] + ([helper.make_opsetid("com.microsoft", 1)] if self.quant == "nbits" else [])
        return helper.make_model(graph, producer_name="pytorch", producer_version="2.13.0", opset_imports=opsets)


def _n_layers(tensors: dict[str, np.ndarray], marker: str) -> int:
    return 1 + max(int(k.split(marker)[1].split(".")[0]) for k in tensors if marker in k)


def export_decoder(tensors: dict[str, np.ndarray], prefix: str = "model.", **options) -> onnx.ModelProto:
    """A Qwen2/Llama-style causal LM as torch exports it (residual stream, RMSNorm as Mul)."""
    b = _Builder(tensors, **_defaults(options))
    x = b.embed(f"{prefix}embed_tokens.weight", "input_ids")
    for i in range(_n_layers(tensors, f"{prefix}layers.")):
        p = f"{prefix}layers.{i}."
        h = b.norm(p + "input_layernorm", x)
        q = b.linear(p + "self_attn.q_proj", h)
        b.linear(p + "self_attn.k_proj", h)
        b.linear(p + "self_attn.v_proj", h)
        x = b.node("Add", [x, b.linear(p + "self_attn.o_proj", q)], p + "self_attn")[0]
        h = b.norm(p + "post_attention_layernorm", x)
        gate = b.node("Sigmoid", [b.linear(p + "mlp.gate_proj", h)], p + "mlp")[0]
        up = b.linear(p + "mlp.up_proj", h)
        x = b.node("Add", [x, b.linear(p + "mlp.down_proj", b.node("Mul", [gate, up], p + "mlp")[0])], p + "mlp")[0]
    logits = b.linear("lm_head", b.norm(f"{prefix}norm", x))
    return b.model([helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, "seq"])], [logits])


def export_bert(tensors: dict[str, np.ndarray], prefix: str = "bert.", **options) -> onnx.ModelProto:
    """A BERT masked LM as torch exports it (post-LayerNorm; decoder tied to the word embeddings).
    ``prefix=""`` is the bare BertModel layout (MiniLM and other sentence encoders)."""
    b = _Builder(tensors, **_defaults(options))
    e = f"{prefix}embeddings."
    x = b.node("Add", [b.embed(e + "word_embeddings.weight", "input_ids"), b.embed(e + "position_embeddings.weight", "position_ids")], e)[0]
    x = b.norm(e + "LayerNorm", x, layer_norm=True)
    for i in range(_n_layers(tensors, f"{prefix}encoder.layer.")):
        p = f"{prefix}encoder.layer.{i}."
        q = b.linear(p + "attention.self.query", x)
        b.linear(p + "attention.self.key", x)
        b.linear(p + "attention.self.value", x)
        a = b.linear(p + "attention.output.dense", q)
        x = b.norm(p + "attention.output.LayerNorm", b.node("Add", [x, a], p + "attention")[0], layer_norm=True)
        h = b.node("Relu", [b.linear(p + "intermediate.dense", x)], p + "intermediate")[0]
        x = b.norm(p + "output.LayerNorm", b.node("Add", [x, b.linear(p + "output.dense", h)], p + "output")[0], layer_norm=True)
    h = b.norm("cls.predictions.transform.LayerNorm", b.linear("cls.predictions.transform.dense", x), layer_norm=True)
    # torch adds the tied decoder's bias under its stored name, cls.predictions.bias
    logits = b.linear("cls.predictions.decoder", h, weight=tensors[e + "word_embeddings.weight"], bias="cls.predictions.bias")
    ids = [helper.make_tensor_value_info(n, TensorProto.INT64, [1, "seq"]) for n in ("input_ids", "position_ids")]
    return b.model(ids, [logits])


def _defaults(options: dict) -> dict:
    return {"quant": options.get("quant"), "scopes": options.get("scopes", True),
            "per_channel": options.get("per_channel", True), "weight_type": options.get("weight_type", "int8"),
            "nbits": options.get("nbits")}


def quantize_nbits(weight: np.ndarray, bits: int = 4, block_size: int = 32, zero: str | None = "uint8"
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Block-quantise ``weight`` [N, K] as MatMulNBits stores it: (B uint8 [N, n_blocks, block_size*bits/8],
    scales float32 [N * n_blocks], zero points or None).

    Blocks of ``block_size`` run along K (the last block padded with zeros); codes are packed low bits
    first. ``zero="uint8"``: asymmetric, zero points packed ``bits``-bit per row of N
    ([N * ceil(n_blocks*bits/8)]); ``"float"``: asymmetric, zero points unpacked float32 [N * n_blocks];
    None: symmetric around the default zero point 2^(bits-1), no zero-point input."""
    n, k = weight.shape
    n_blocks = -(-k // block_size)
    w = np.zeros((n, n_blocks * block_size), np.float64)
    w[:, :k] = weight
    w = w.reshape(n, n_blocks, block_size)
    top = (1 << bits) - 1
    if zero is None:
        mid = 1 << (bits - 1)
        scale = np.abs(w).max(axis=2) / mid
        scale[scale == 0] = 1.0
        codes = np.clip(np.round(w / scale[..., None]) + mid, 0, top)
        zp = None
    else:
        lo, hi = np.minimum(w.min(axis=2), 0), np.maximum(w.max(axis=2), 0)
        scale = (hi - lo) / top
        scale[scale == 0] = 1.0
        zf = np.clip(np.round(-lo / scale), 0, top)
        codes = np.clip(np.round(w / scale[..., None]) + zf[..., None], 0, top)
        if zero == "float":
            zp = zf.astype(np.float32).reshape(-1)
        else:
            zp = _pack(zf.astype(np.uint8), bits).reshape(-1)
    packed = _pack(codes.astype(np.uint8).reshape(n, -1), bits).reshape(n, n_blocks, block_size * bits // 8)
    return packed, scale.astype(np.float32).reshape(-1), zp


def _pack(codes: np.ndarray, bits: int) -> np.ndarray:
    """Rows of ``bits``-bit codes -> rows of bytes, low bits first (each row padded to whole bytes)."""
    per = 8 // bits
    rows, m = codes.shape
    padded = np.zeros((rows, -(-m // per) * per), np.uint8)
    padded[:, :m] = codes
    groups = padded.reshape(rows, -1, per)
    out = np.zeros(groups.shape[:2], np.uint8)
    for j in range(per):
        out |= groups[:, :, j] << np.uint8(j * bits)
    return out


def bert_tensors(seed: int, hidden: int = 64, ffn: int = 256, vocab: int = 256, layers: int = 2, positions: int = 64, prefix: str = "bert.") -> dict[str, np.ndarray]:
    """Random BERT-named weights (HF BertForMaskedLM layout), like tests.builders.qwen2_tensors."""
    r = np.random.default_rng(seed)
    e = f"{prefix}embeddings."
    t = {e + "word_embeddings.weight": r.normal(size=(vocab, hidden)) * 0.5,
         e + "position_embeddings.weight": r.normal(size=(positions, hidden)) * 0.5,
         e + "LayerNorm.weight": 1 + 0.02 * r.normal(size=hidden), e + "LayerNorm.bias": 0.02 * r.normal(size=hidden)}
    mats = [("attention.self.query", hidden, hidden), ("attention.self.key", hidden, hidden),
            ("attention.self.value", hidden, hidden), ("attention.output.dense", hidden, hidden),
            ("intermediate.dense", ffn, hidden), ("output.dense", hidden, ffn)]
    for i in range(layers):
        p = f"{prefix}encoder.layer.{i}."
        for name, out, inp in mats:
            t[p + name + ".weight"] = r.normal(size=(out, inp)) / np.sqrt(inp)
            t[p + name + ".bias"] = 0.02 * r.normal(size=out)
        for ln in ("attention.output.LayerNorm", "output.LayerNorm"):
            t[p + ln + ".weight"] = 1 + 0.02 * r.normal(size=hidden)
            t[p + ln + ".bias"] = 0.02 * r.normal(size=hidden)
    c = "cls.predictions."
    t[c + "transform.dense.weight"] = r.normal(size=(hidden, hidden)) / np.sqrt(hidden)
    t[c + "transform.dense.bias"] = 0.02 * r.normal(size=hidden)
    t[c + "transform.LayerNorm.weight"] = 1 + 0.02 * r.normal(size=hidden)
    t[c + "transform.LayerNorm.bias"] = 0.02 * r.normal(size=hidden)
    t[c + "bias"] = 0.02 * r.normal(size=vocab)
    return {k: v.astype(np.float32) for k, v in t.items()}


BERT_CONFIG = {"model_type": "bert", "architectures": ["BertForMaskedLM"], "hidden_size": 64, "num_hidden_layers": 2,
               "num_attention_heads": 4, "intermediate_size": 256, "vocab_size": 256}


def save(model: onnx.ModelProto, folder: Path, name: str = "model.onnx", external: bool = False, config: dict | None = None) -> Path:
    """Write ``model`` into ``folder`` (weights in ``model.onnx_data`` when ``external``)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    if external:
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=name + "_data", size_threshold=256)
    else:
        onnx.save_model(model, str(path))
    if config is not None:
        (folder / "config.json").write_text(json.dumps(config))
    return path
