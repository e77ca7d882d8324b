"""Rewriting the nodes placed on the NPU into the provider's custom-op nodes (domain ai.onnx.contrib).

Each candidate's form writes its custom node: it keeps the original inputs (weights stay
initializers) and carries `node_key` (node name + digest of its weight: stable across runs, distinct
across models) and `kernel` (the manifest entry to run). A block's other nodes (e.g. the Softmax and
the first MatMul of a fused attention) are dropped, as are DequantizeLinear nodes and initializers
nobody reads any more.
"""
from __future__ import annotations

import onnx
from onnx import helper

from npu_ep.forms import DOMAIN, Candidate, weight_digest

__all__ = ["DOMAIN", "rewrite"]


def rewrite(model: onnx.ModelProto, chosen: list[tuple[Candidate, str]]) -> onnx.ModelProto:
    """A copy of `model` with each (candidate, kernel name) in `chosen` replaced by a custom op."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    constants = {i.name: i for i in graph.initializer}
    by_output = {c.node.output[0]: (c, kernel) for c, kernel in chosen}
    dropped_outputs = {o for c, _ in chosen for n in c.replaced if n is not c.node for o in n.output}
    nodes = []
    for node in model.graph.node:
        if node.output and node.output[0] in by_output:
            candidate, kernel = by_output[node.output[0]]
            nodes.append(candidate.form.rewrite(candidate, kernel, weight_digest(candidate, constants), graph))
        elif not (node.output and node.output[0] in dropped_outputs):
            nodes.append(node)
    del graph.node[:]
    graph.node.extend(_without_dead_dequantize(nodes, graph))
    # Initializers only replaced nodes read (a fused layer's biases and norms, now in its vectors):
    # ONNX Runtime would drop each with a warning.
    read = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    kept = [i for i in graph.initializer if i.name in read]
    if len(kept) < len(graph.initializer):
        del graph.initializer[:]
        graph.initializer.extend(kept)
    if not any(o.domain == DOMAIN for o in out.opset_import):
        out.opset_import.append(helper.make_opsetid(DOMAIN, 1))
    return out


def _without_dead_dequantize(nodes: list[onnx.NodeProto], graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """Drop DequantizeLinear nodes whose output nobody reads any more (the QDQ rewrite bypasses them)."""
    used = {name for node in nodes for name in node.input} | {o.name for o in graph.output}
    return [n for n in nodes if not (n.op_type == "DequantizeLinear" and n.output[0] not in used)]
