"""Whisper's attention blocks as ONNX Runtime's fused MultiHeadAttention, for graphs run on the CPU EP.

optimum exports each attention as its parts: Q, K and V reshaped to heads and transposed, scaled,
QKᵀ, Softmax, ·V, transposed and reshaped back. ONNX Runtime runs those as separate kernels, writing the
whole score matrix (heads × 1500 × 1500 in the encoder) to memory twice. Its com.microsoft
MultiHeadAttention computes the same block in one kernel that never materialises the scores. Only blocks
of exactly that shape, whose intermediate values nothing else reads, are rewritten; the NPU path keeps
the parts (the partition pass offloads them), so this is applied to CPU sessions only.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import onnx

MS_DOMAIN = "com.microsoft"


def fuse_attention(model: onnx.ModelProto, heads: int) -> int:
    """Rewrite `model`'s unmasked attention blocks of `heads` heads in place; returns how many were fused."""
    import numpy as np
    from onnx import helper, numpy_helper

    graph = model.graph
    producer = {name: node for node in graph.node for name in node.output}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    outputs = {value.name for value in graph.output}
    constants = {init.name: init for init in graph.initializer}
    constants.update({node.output[0]: node.attribute[0].t for node in graph.node
                      if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value"})

    def scalar(name: str) -> float | None:
        tensor = constants.get(name)
        if tensor is None or int(np.prod(tensor.dims)) != 1:
            return None
        return float(numpy_helper.to_array(tensor).reshape(()))

    def made_by(name: str, op_type: str):
        node = producer.get(name)
        return node if node is not None and node.op_type == op_type else None

    def only_user(node, op_type: str):
        users = consumers.get(node.output[0], [])
        if len(users) != 1 or users[0].op_type != op_type or node.output[0] in outputs:
            return None
        return users[0]

    def splits_heads(reshape) -> bool:
        """Whether a Reshape splits [batch, time, hidden] into [batch, time, heads, head_dim]: optimum builds its
        shape with a Concat whose third entry is `heads` or -1 (inferred) and whose fourth is a constant."""
        shape = made_by(reshape.input[1], "Concat")
        return (shape is not None and len(shape.input) == 4 and scalar(shape.input[2]) in (-1, heads)
                and scalar(shape.input[3]) is not None)

    replaced: dict[int, onnx.NodeProto] = {}
    removed: set[int] = set()
    fused = 0
    for softmax in [node for node in graph.node if node.op_type == "Softmax"]:
        scores = made_by(softmax.input[0], "MatMul")
        mix = only_user(softmax, "MatMul")
        if scores is None or mix is None or only_user(scores, "Softmax") is None or mix.input[0] != softmax.output[0]:
            continue
        scale_q, scale_k = made_by(scores.input[0], "Mul"), made_by(scores.input[1], "Mul")
        if scale_q is None or scale_k is None or None in (scalar(scale_q.input[1]), scalar(scale_k.input[1])):
            continue
        heads_q, heads_k, heads_v = (made_by(name, "Transpose") for name in (scale_q.input[0], scale_k.input[0], mix.input[1]))
        if None in (heads_q, heads_k, heads_v):
            continue
        split_q, split_k, split_v = (made_by(node.input[0], "Reshape") for node in (heads_q, heads_k, heads_v))
        merge_t = only_user(mix, "Transpose")
        merge = only_user(merge_t, "Reshape") if merge_t is not None else None
        if None in (split_q, split_k, split_v, merge):
            continue
        perms = [list(next(a.ints for a in node.attribute if a.name == "perm")) for node in (heads_q, heads_k, heads_v, merge_t)]
        if perms != [[0, 2, 1, 3], [0, 2, 3, 1], [0, 2, 1, 3], [0, 2, 1, 3]] or not all(
                splits_heads(node) for node in (split_q, split_k, split_v)):
            continue
        parts = (scores, softmax, mix, scale_q, scale_k, heads_q, heads_k, heads_v, split_q, split_k, split_v, merge_t)
        # Every value inside the block must be the block's own: read by nothing outside it.
        inside = {id(node) for node in (*parts, merge)}
        if any(out in outputs or any(id(user) not in inside for user in consumers.get(out, []))
               for node in parts for out in node.output):
            continue
        attention = helper.make_node(
            "MultiHeadAttention", [split_q.input[0], split_k.input[0], split_v.input[0]], [merge.output[0]],
            name=f"{softmax.name}/MultiHeadAttention", domain=MS_DOMAIN, num_heads=heads,
            scale=scalar(scale_q.input[1]) * scalar(scale_k.input[1]),
        )
        replaced[id(merge)] = attention
        removed.update(id(node) for node in parts)
        fused += 1
    if fused:
        nodes = [replaced.get(id(node), node) for node in graph.node if id(node) not in removed]
        # The scales the block multiplied by are now an attribute: drop the constants nothing reads any more.
        used = {name for node in nodes for name in node.input} | outputs
        nodes = [node for node in nodes if node.op_type != "Constant" or node.output[0] in used]
        unused = [init for init in graph.initializer if init.name not in used]
        for init in unused:
            graph.initializer.remove(init)
        del graph.node[:]
        graph.node.extend(nodes)
        if not any(opset.domain == MS_DOMAIN for opset in model.opset_import):
            model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    return fused
