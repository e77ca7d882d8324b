"""The two decoder graphs as one, so their weights are held once.

Each ONNX Runtime session packs its MatMul weights into its own heap copy, so separate first-pass and
with-past sessions hold the decoder's weights twice. The merged graph is an If on USE_CACHE_BRANCH whose
branches are the two graphs' nodes, reading the weights from the outer graph: one session, one packed copy.
Outputs only the first pass makes (the cross-attention caches, the alignment scores) are empty in the
with-past branch; inputs only one branch reads get empty defaults, so each pass is fed as its own graph was.

Not optimum's `merge_decoders`: importing it loads torch and transformers, which the CPU path does without,
and it keeps small int64 initializers inside the branches, where LOGITS_START's default would hide the input.
"""
from __future__ import annotations

import hashlib

import onnx
from onnx import TensorProto, helper

from npu_ep.errors import NpuEpError
from npu_ep.whisper.spec import USE_CACHE_BRANCH


def _content_key(tensor: onnx.TensorProto) -> tuple:
    """What makes two initializers interchangeable: type, shape and bytes (names differ between the graphs)."""
    named = onnx.TensorProto()
    named.CopyFrom(tensor)
    named.name = ""
    return tensor.data_type, tuple(tensor.dims), hashlib.sha256(named.SerializeToString()).digest()


def _value_names(graph: onnx.GraphProto) -> set[str]:
    names = {value.name for value in graph.input} | {value.name for value in graph.output}
    for node in graph.node:
        names.update(node.output)
    return names


def _empty_default(value: onnx.ValueInfoProto) -> onnx.TensorProto:
    """An empty tensor of `value`'s type and rank: its last symbolic dimension (the first, if none is) 0, the
    other symbolic ones 1, the fixed ones as declared."""
    tensor_type = value.type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else 1 for d in tensor_type.shape.dim]
    if not dims:
        raise NpuEpError(f"decoder input {value.name} is a scalar: it cannot default to an empty tensor")
    symbolic = [i for i, d in enumerate(tensor_type.shape.dim) if not d.HasField("dim_value")]
    dims[symbolic[-1] if symbolic else 0] = 0
    return helper.make_tensor(value.name, tensor_type.elem_type, dims, [])


class _Weights:
    """The outer graph's initializers: each distinct one once, under a name no branch value takes."""

    def __init__(self, taken: set[str], kept: set[str]) -> None:
        self._taken = taken  # value names in either branch: an outer name may not shadow them
        self._kept = kept  # inputs with defaults (e.g. LOGITS_START): fed by name, never merged with a lookalike
        self.tensors: dict[str, onnx.TensorProto] = {}
        self._by_content: dict[tuple, str] = {}

    def add(self, graph: onnx.GraphProto, tag: str) -> dict[str, str]:
        """Take `graph`'s initializers; returns the outer name of each of them."""
        renamed: dict[str, str] = {}
        for tensor in graph.initializer:
            if tensor.name in self._kept:
                if tensor.name not in self.tensors:
                    self.tensors[tensor.name] = tensor
                renamed[tensor.name] = tensor.name
                continue
            key = _content_key(tensor)
            if key not in self._by_content:
                name = tensor.name
                if name in self.tensors or name in self._taken or name in self._kept:
                    name = f"{tag}/{tensor.name}"
                shared = onnx.TensorProto()
                shared.CopyFrom(tensor)
                shared.name = name
                self.tensors[name] = shared
                self._by_content[key] = name
            renamed[tensor.name] = self._by_content[key]
        return renamed


def _branch(graph: onnx.GraphProto, renamed: dict[str, str], name: str,
            outputs: list[onnx.ValueInfoProto]) -> onnx.GraphProto:
    """`graph`'s nodes as an If branch over the outer weights, making `outputs` in order (empty where it has none).
    Its outputs get branch names: a subgraph value may not share a name with the If's outputs."""
    local = {value.name: f"{value.name}/{name}" for value in graph.output}
    nodes = []
    for source in graph.node:
        node = onnx.NodeProto()
        node.CopyFrom(source)
        node.input[:] = [local.get(x, renamed.get(x, x)) for x in node.input]
        node.output[:] = [local.get(x, x) for x in node.output]
        nodes.append(node)
    made = {value.name for value in graph.output}
    branch_outputs = []
    for value in outputs:
        elem_type = value.type.tensor_type.elem_type
        if value.name in made:
            branch_outputs.append(helper.make_tensor_value_info(local[value.name], elem_type, None))
            continue
        empty = f"{value.name}/{name}/empty"
        nodes.append(helper.make_node("Constant", [], [empty], name=empty,
                                      value=helper.make_tensor(empty, elem_type, [0], [])))
        branch_outputs.append(helper.make_tensor_value_info(empty, elem_type, None))
    value_info = [v for v in graph.value_info if v.name not in local]
    return helper.make_graph(nodes, name, [], branch_outputs, value_info=value_info)


def merge_decoders(first: onnx.ModelProto, with_past: onnx.ModelProto) -> onnx.ModelProto:
    """One model running `first` (the first-pass decoder) when USE_CACHE_BRANCH is false and `with_past`
    when it is true; weights equal in both are stored once. Its outputs are the first pass's, in order."""
    first_outputs = {value.name for value in first.graph.output}
    if missing := [v.name for v in with_past.graph.output if v.name not in first_outputs]:
        raise NpuEpError(f"the decoder-with-past graph makes outputs the first-pass one does not ({', '.join(missing)}): "
                         "re-export the model with: npu-ep export --force")
    defaults = {tensor.name for graph in (first.graph, with_past.graph) for tensor in graph.initializer} & {
        value.name for graph in (first.graph, with_past.graph) for value in graph.input}
    weights = _Weights(_value_names(first.graph) | _value_names(with_past.graph), defaults)
    first_names = weights.add(first.graph, "first_pass")
    past_names = weights.add(with_past.graph, "with_past")

    outputs = list(first.graph.output)
    inputs = {}
    for value in [*first.graph.input, *with_past.graph.input]:
        inputs.setdefault(value.name, value)
    in_both = {v.name for v in first.graph.input} & {v.name for v in with_past.graph.input}
    for name, value in inputs.items():
        if name not in in_both and name not in weights.tensors:  # read by one branch only: optional
            weights.tensors[name] = _empty_default(value)
    branch = helper.make_node(
        "If", [USE_CACHE_BRANCH], [value.name for value in outputs], name="decoder_branch",
        then_branch=_branch(with_past.graph, past_names, "with_past", outputs),
        else_branch=_branch(first.graph, first_names, "first_pass", outputs),
    )
    graph = helper.make_graph(
        [branch], "decoder_merged",
        [helper.make_tensor_value_info(USE_CACHE_BRANCH, TensorProto.BOOL, [1]), *inputs.values()],
        outputs, initializer=list(weights.tensors.values()),
    )
    opsets = {}
    for model in (first, with_past):
        for opset in model.opset_import:
            opsets[opset.domain] = max(opsets.get(opset.domain, 0), opset.version)
    merged = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()])
    merged.ir_version = max(first.ir_version, with_past.ir_version)
    merged.metadata_props.extend(first.metadata_props)
    return merged
