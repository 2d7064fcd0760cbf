"""Fuzz target: the ONNX reader (protobuf wire walk, graph analysis, dequantisation) on arbitrary bytes.

``fuzz_one`` parses the bytes as a ``.onnx`` file held in memory and reads a bounded stretch of every
tensor; bad input may only raise ``ModelkinError`` (an external-data reference gives ``UnsupportedError``:
an in-memory file has no folder). ``SEEDS`` are small valid models: a float MatMul graph with an
anonymous [in, out] weight and a named bias, a per-channel DequantizeLinear graph, a MatMulInteger graph
with its scale on the Mul after the Cast, a Constant-node weight, a dynamo-style node with metadata, and a
MatMulNBits node (4-bit blocks, packed zero points).
"""

from __future__ import annotations

import numpy as np

from modelkin.sources.onnx_format import OnnxFile

from modelkin.sources.transport import MemoryFile  # noqa: E402

MAX_READ = 4096  # elements read per tensor


class BytesTransport(MemoryFile):
    """This target's in-memory file (``MemoryFile`` under the target's file name)."""

    def __init__(self, data: bytes, name: str = '<fuzz>.onnx'):
        super().__init__(data, name)


def fuzz_one(data: bytes) -> None:
    f = OnnxFile(BytesTransport(data))
    try:
        for info in f.tensors.values():
            n = min(info.numel, MAX_READ)
            if n:
                f.read_elements(info, 0, n)
                f.read_elements(info, info.numel - 1, 1)
                f.read_raw(info, 0, n)
    finally:
        f.close()


def _seeds() -> list[bytes]:
    try:
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        return []
    r = np.random.default_rng(0)
    w = r.normal(size=(8, 4)).astype(np.float32)  # [in, out]
    q = np.clip(np.round(w / 0.02), -127, 127).astype(np.int8)
    scale = np.full(4, 0.02, np.float32)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])

    def model(nodes, inits):
        graph = helper.make_graph(nodes, "g", [x], [y], [numpy_helper.from_array(v, k) for k, v in inits.items()])
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)]).SerializeToString()

    bias = {"fc.bias": np.zeros(4, np.float32)}
    return [
        model([helper.make_node("MatMul", ["x", "onnx::MatMul_1"], ["m"], name="/fc/MatMul"),
               helper.make_node("Add", ["m", "fc.bias"], ["y"])], {"onnx::MatMul_1": w, **bias}),
        model([helper.make_node("DequantizeLinear", ["w_q", "w_s", "w_z"], ["w"], axis=1),
               helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Add", ["m", "fc.bias"], ["y"])],
              {"w_q": q, "w_s": scale, "w_z": np.zeros(4, np.int8), **bias}),
        model([helper.make_node("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xz"]),
               helper.make_node("MatMulInteger", ["xq", "w_q", "xz", "w_z"], ["i"]),
               helper.make_node("Cast", ["i"], ["f"], to=TensorProto.FLOAT),
               helper.make_node("Mul", ["xs", "w_s"], ["s"]), helper.make_node("Mul", ["f", "s"], ["y"])],
              {"w_q": (q.astype(np.int16) + 128).astype(np.uint8), "w_s": scale, "w_z": np.full(4, 128, np.uint8)}),
        model([helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(w, "c")),
               helper.make_node("MatMul", ["x", "c"], ["y"])], {}),
        model([_dynamo_node()], {"val_3": w}),
        model([helper.make_node("MatMulNBits", ["x", "fc.weight_Q4", "fc.weight_scales", "fc.weight_zero_points"], ["y"],
                                domain="com.microsoft", K=8, N=4, bits=4, block_size=16)],
              {"fc.weight_Q4": r.integers(0, 256, size=(4, 1, 8), dtype=np.uint8), "fc.weight_scales": np.full(4, 0.1, np.float32),
               "fc.weight_zero_points": np.full(4, 8, np.uint8)}),
    ]


def _dynamo_node():
    """A MatMul as torch's dynamo exporter writes it: module scopes, FX node, a long stack trace."""
    from onnx import helper

    node = helper.make_node("MatMul", ["x", "val_3"], ["y"], name="node_MatMul_3")
    for key, value in (("pkg.torch.onnx.name_scopes", "['', 'fc', 'linear']"),
                       ("pkg.torch.onnx.fx_node", "%linear : call_function(args = (%x, %p_fc_weight, None))"),
                       ("pkg.torch.onnx.stack_trace", 'File "model.py", line 1, in forward\n' * 20)):
        node.metadata_props.add(key=key, value=value)
    return node


SEEDS: list[bytes] = _seeds()
