"""Rewriting the nodes placed on the NPU into the provider's custom-op nodes (domain ai.onnx.contrib).

Each new node keeps the original inputs (weights stay initializers) and carries two attributes:
`node_key` (node name + digest of its weight: stable across runs, distinct across models) and
`kernel` (the manifest entry to run). Attribute types must match the op's declaration exactly
(onnxruntime-extensions refuses a node otherwise).
"""
from __future__ import annotations

import hashlib

import numpy as np
import onnx
from onnx import helper, numpy_helper

from npu_ep.partition.graph import Candidate

DOMAIN = "ai.onnx.contrib"


def node_key(candidate: Candidate, constants: dict[str, onnx.TensorProto]) -> str:
    digest = hashlib.sha1(numpy_helper.to_array(constants[candidate.weight]).tobytes()).hexdigest()[:12]
    return f"{candidate.name}#{digest}"


def rewrite(model: onnx.ModelProto, chosen: list[tuple[Candidate, str]]) -> onnx.ModelProto:
    """A copy of `model` with each (candidate, kernel name) in `chosen` replaced by a custom op."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    constants = {i.name: i for i in graph.initializer}
    by_output = {c.node.output[0]: (c, kernel) for c, kernel in chosen}
    nodes = []
    for node in graph.node:
        if node.output and node.output[0] in by_output:
            candidate, kernel = by_output[node.output[0]]
            nodes.append(_custom_node(candidate, kernel, node_key(candidate, constants), graph))
        else:
            nodes.append(node)
    del graph.node[:]
    graph.node.extend(_without_dead_dequantize(nodes, graph))
    if not any(o.domain == DOMAIN for o in out.opset_import):
        out.opset_import.append(helper.make_opsetid(DOMAIN, 1))
    return out


def _zero_int8(graph: onnx.GraphProto, name: str) -> str:
    if not any(i.name == name for i in graph.initializer):
        graph.initializer.append(numpy_helper.from_array(np.array(0, dtype=np.int8), name))
    return name


def _custom_node(candidate: Candidate, kernel: str, key: str, graph: onnx.GraphProto) -> onnx.NodeProto:
    node = candidate.node
    attrs = {"node_key": key, "kernel": kernel}
    name = node.name or node.output[0]
    if candidate.kind == "matmul":
        return helper.make_node("NpuMatMul", list(node.input), list(node.output), name=name, domain=DOMAIN, **attrs)
    if candidate.kind == "gemm":
        return helper.make_node("NpuGemm", list(node.input[:3]), list(node.output), name=name, domain=DOMAIN,
                                trans_b=int(candidate.extra["trans_b"]), **attrs)
    if candidate.kind == "matmul_integer":
        inputs = list(node.input[:3])
        inputs.append(_zero_int8(graph, "npu_ep_zero_int8") if candidate.extra["w_zero_missing"] else node.input[3])
        return helper.make_node("NpuMatMulInteger", inputs, list(node.output), name=name, domain=DOMAIN, **attrs)
    dq_a, dq_b = candidate.extra["dq_a"], candidate.extra["dq_b"]
    w_zero = dq_b.input[2] if len(dq_b.input) > 2 and dq_b.input[2] else _zero_int8(graph, "npu_ep_zero_int8")
    op_type = "NpuQdqMatMulU8" if candidate.extra.get("a_type") == onnx.TensorProto.UINT8 else "NpuQdqMatMul"
    inputs = [dq_a.input[0], dq_a.input[1], dq_a.input[2], dq_b.input[0], dq_b.input[1], w_zero]
    return helper.make_node(op_type, inputs, list(node.output), name=name, domain=DOMAIN, **attrs)


def _without_dead_dequantize(nodes: list[onnx.NodeProto], graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """Drop DequantizeLinear nodes whose output nobody reads any more (the QDQ rewrite bypasses them)."""
    used = {name for node in nodes for name in node.input} | {o.name for o in graph.output}
    return [n for n in nodes if not (n.op_type == "DequantizeLinear" and n.output[0] not in used)]
