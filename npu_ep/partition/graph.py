"""Finding the GEMM nodes of a model and their shapes in the model's real use.

Candidates: MatMul and Gemm with one constant weight, their int8 forms (MatMulInteger with a
constant weight; a MatMul between two DequantizeLinear nodes whose weight side is constant, as
onnxruntime.quantization's QDQ format writes), and, for the report only, activation x activation
MatMuls (attention), which stay on the CPU.

Shapes: graph inputs are bound to Whisper's real use (encoder: 3000 mel frames -> 1500 positions;
decoder with past: one token; decoder without past: a 4-token prompt), then ONNX shape inference
runs; if some candidate shapes stay symbolic, one CPU run on zero inputs measures them.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper, shape_inference

from npu_ep.whisper.spec import (DECODER_INPUT_IDS, ENCODER_FRAMES, ENCODER_HIDDEN_STATES, ENCODER_POSITIONS,
                                 INPUT_FEATURES, INPUT_IDS, PAST, is_cross_attention)

PROMPT_TOKENS = 4    # <|startoftranscript|><|lang|><|transcribe|><|notimestamps|>
PAST_TOKENS = 64     # a mid-length transcript window for decoder self-attention caches
SKELETON_BYTES = 1 << 16  # initializers above this size are not needed to resolve shapes


@dataclass
class Candidate:
    node: onnx.NodeProto
    kind: str                       # matmul | gemm | matmul_integer | qdq_matmul | activation_matmul
    activation: str                 # the activation tensor feeding the GEMM (for its shape)
    weight: str | None              # the constant weight initializer
    M: int = 0
    K: int = 0
    N: int = 0
    int8: bool = False
    unsupported: str = ""           # why the NPU kernels cannot take it, if they cannot
    extra: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.node.name or self.node.output[0]


def real_use_dims(model: onnx.ModelProto, dims: dict[str, int] | None = None) -> dict[str, list[int]]:
    """Concrete input shapes for the model's real use; `dims` overrides by dim_param name."""
    names = {i.name for i in model.graph.input}
    has_past = any(n.startswith(PAST) for n in names)
    shapes = {}
    initializers = {i.name for i in model.graph.initializer}
    for value in model.graph.input:
        if value.name in initializers:
            continue
        shape = []
        for axis, dim in enumerate(value.type.tensor_type.shape.dim):
            if dim.HasField("dim_value"):
                shape.append(dim.dim_value)
            elif dims and dim.dim_param in dims:
                shape.append(dims[dim.dim_param])
            else:
                shape.append(_real_use_dim(value.name, axis, has_past))
        shapes[value.name] = shape
    return shapes


def _real_use_dim(name: str, axis: int, has_past: bool) -> int:
    if axis == 0:
        return 1  # one audio window at a time
    if name == INPUT_FEATURES:
        return ENCODER_FRAMES
    if name in (INPUT_IDS, DECODER_INPUT_IDS):
        return 1 if has_past else PROMPT_TOKENS
    if name == ENCODER_HIDDEN_STATES or (name.startswith(PAST) and is_cross_attention(name)):
        return ENCODER_POSITIONS
    if name.startswith(PAST):
        return PAST_TOKENS
    return 1


def find_candidates(model: onnx.ModelProto) -> list[Candidate]:
    graph = model.graph
    constants = {i.name: i for i in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}
    found = []
    for node in graph.node:
        if node.op_type == "MatMul":
            a, b = node.input
            dq_a, dq_b = producers.get(a), producers.get(b)
            if b in constants:
                found.append(Candidate(node, "matmul", a, b, unsupported=_not_float(constants[b])))
            elif (dq_a is not None and dq_b is not None and dq_a.op_type == dq_b.op_type == "DequantizeLinear"
                  and dq_b.input[0] in constants):
                found.append(_qdq(node, dq_a, dq_b, constants))
            elif a not in constants:
                found.append(Candidate(node, "activation_matmul", a, None,
                                       unsupported="activation x activation (attention) stays on the CPU"))
        elif node.op_type == "Gemm" and len(node.input) >= 2 and node.input[1] in constants:
            found.append(_gemm(node, constants))
        elif node.op_type == "MatMulInteger" and node.input[1] in constants:
            found.append(_matmul_integer(node, constants))
    return found


def _not_float(weight: onnx.TensorProto) -> str:
    return "" if weight.data_type == onnx.TensorProto.FLOAT and len(weight.dims) == 2 else \
        "weight is not a 2-D float32 tensor"


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _gemm(node, constants) -> Candidate:
    attrs = _attrs(node)
    candidate = Candidate(node, "gemm", node.input[0], node.input[1], extra={"trans_b": int(attrs.get("transB", 0))})
    if _not_float(constants[node.input[1]]):
        candidate.unsupported = _not_float(constants[node.input[1]])
    elif attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
        candidate.unsupported = "Gemm with transA or alpha/beta != 1"
    elif len(node.input) < 3 or not node.input[2]:
        candidate.unsupported = "Gemm without bias input"
    return candidate


def _scalar(constants, name: str | None) -> np.ndarray | None:
    return numpy_helper.to_array(constants[name]) if name and name in constants else None


def _matmul_integer(node, constants) -> Candidate:
    candidate = Candidate(node, "matmul_integer", node.input[0], node.input[1], int8=True)
    weight = constants[node.input[1]]
    w_zero = _scalar(constants, node.input[3] if len(node.input) > 3 else None)
    if weight.data_type != onnx.TensorProto.INT8:
        candidate.unsupported = "MatMulInteger weight is not int8"
    elif len(node.input) < 3 or not node.input[2]:
        candidate.unsupported = "MatMulInteger without activation zero point"
    elif len(node.input) > 3 and node.input[3] and (w_zero is None or np.any(w_zero != 0)):
        candidate.unsupported = "MatMulInteger weight zero point is not 0"
    else:
        candidate.extra["w_zero_missing"] = len(node.input) < 4 or not node.input[3]
    return candidate


def _qdq(node, dq_a, dq_b, constants) -> Candidate:
    candidate = Candidate(node, "qdq_matmul", dq_a.input[0], dq_b.input[0], int8=True,
                          extra={"dq_a": dq_a, "dq_b": dq_b})
    weight = constants[dq_b.input[0]]
    w_zero = _scalar(constants, dq_b.input[2] if len(dq_b.input) > 2 else None)
    w_scale = _scalar(constants, dq_b.input[1])
    axis = _attrs(dq_b).get("axis", 1)
    if weight.data_type != onnx.TensorProto.INT8:
        candidate.unsupported = "QDQ weight is not int8"
    elif w_zero is None or np.any(w_zero != 0):
        candidate.unsupported = "QDQ weight zero point is not a constant 0"
    elif w_scale is None or (w_scale.size > 1 and axis not in (1, -1)):
        candidate.unsupported = "QDQ weight scale is not per-tensor or per output column"
    elif len(dq_a.input) < 3 or not dq_a.input[2]:
        candidate.unsupported = "QDQ activation without zero point"
    return candidate


def _skeleton(model: onnx.ModelProto, bound: dict[str, list[int]]) -> tuple[onnx.ModelProto, dict]:
    """The model with its inputs bound to real-use shapes and its large initializers turned into
    inputs (shape and type only): shape inference and the probe run need no weight values, and
    copying a 200 MB decoder would cost more than the rest of the pass."""
    probe = onnx.ModelProto()
    probe.ir_version = model.ir_version
    probe.opset_import.extend(model.opset_import)
    graph = probe.graph
    graph.name = model.graph.name
    graph.node.extend(model.graph.node)
    graph.output.extend(model.graph.output)
    names = {i.name for i in model.graph.initializer}
    for value in model.graph.input:
        if value.name in names:
            continue
        graph.input.append(value)
        for dim, size in zip(graph.input[-1].type.tensor_type.shape.dim, bound[value.name]):
            dim.Clear()
            dim.dim_value = size
    weights = {}
    for tensor in model.graph.initializer:
        dtype = helper.tensor_dtype_to_np_dtype(tensor.data_type)
        if int(np.prod(tensor.dims)) * dtype.itemsize > SKELETON_BYTES:
            graph.input.append(helper.make_tensor_value_info(tensor.name, tensor.data_type, list(tensor.dims)))
            weights[tensor.name] = (list(tensor.dims), dtype)
        else:
            graph.initializer.append(tensor)
    return probe, weights


def resolve_shapes(model: onnx.ModelProto, candidates: list[Candidate], dims: dict[str, int] | None = None) -> None:
    """Fill M, K, N of each candidate for the model's real use (in place)."""
    bound = real_use_dims(model, dims)
    probe, weights = _skeleton(model, bound)
    inferred = shape_inference.infer_shapes(probe, data_prop=True)
    known, types = {}, {}
    for value in list(inferred.graph.value_info) + list(inferred.graph.input):
        types[value.name] = value.type.tensor_type.elem_type
        dims_ = value.type.tensor_type.shape.dim
        if dims_ and all(d.HasField("dim_value") for d in dims_):
            known[value.name] = [d.dim_value for d in dims_]
    needed = [c.activation for c in candidates] + [c.node.input[1] for c in candidates if c.weight is None]
    missing = [name for name in needed if name not in known]
    if missing:
        measured = _measure_shapes(probe, bound, weights, missing)
        known.update({name: shape for name, (shape, _) in measured.items()})
        types.update({name: elem for name, (_, elem) in measured.items()})
    constants = {i.name: i for i in model.graph.initializer}
    for candidate in candidates:
        shape = known[candidate.activation]
        candidate.extra["a_type"] = types.get(candidate.activation)
        if candidate.kind == "matmul_integer" and not candidate.unsupported and \
                candidate.extra["a_type"] != onnx.TensorProto.UINT8:
            candidate.unsupported = "MatMulInteger activation is not uint8"
        candidate.M = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
        candidate.K = shape[-1]
        if candidate.weight is not None:
            w_dims = list(constants[candidate.weight].dims)
            candidate.N = w_dims[0] if candidate.extra.get("trans_b") else w_dims[-1]
        else:
            candidate.N = known[candidate.node.input[1]][-1]


def _measure_shapes(probe: onnx.ModelProto, bound: dict[str, list[int]], weights: dict,
                    names: list[str]) -> dict[str, tuple[list[int], int]]:
    """One CPU run of the skeleton on zero inputs and zero weights with `names` exposed as
    outputs: their real shapes and element types."""
    import onnxruntime as ort

    existing = {o.name for o in probe.graph.output}
    for name in dict.fromkeys(names):
        if name not in existing:
            probe.graph.output.append(onnx.ValueInfoProto(name=name))
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {}
    for value in session.get_inputs():
        if value.name in weights:
            shape, dtype = weights[value.name]
        else:
            shape = bound[value.name]
            dtype = {"tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(bool)": np.bool_}.get(value.type, np.float32)
        feeds[value.name] = np.zeros(shape, dtype=dtype)
    wanted = list(dict.fromkeys(names))
    results = session.run(wanted, feeds)
    return {name: (list(result.shape), helper.np_dtype_to_tensor_dtype(result.dtype))
            for name, result in zip(wanted, results)}
