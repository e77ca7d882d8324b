"""Finding the nodes of a model the op forms (npu_ep.forms) could offload, and their shapes in the
model's real use.

Shapes: graph inputs are bound to Whisper's real use (encoder: 3000 mel frames -> 1500 positions;
decoder with past: one token; decoder without past: a 4-token prompt), then ONNX shape inference
runs; if some candidate shapes stay symbolic, one CPU run on zero inputs measures them.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, shape_inference

from npu_ep import forms
from npu_ep.forms import Candidate

from npu_ep.whisper.spec import (DECODER_INPUT_IDS, ENCODER_FRAMES, ENCODER_HIDDEN_STATES, ENCODER_POSITIONS,
                                 INPUT_FEATURES, INPUT_IDS, PAST, is_cross_attention)

PROMPT_TOKENS = 4    # <|startoftranscript|><|lang|><|transcribe|><|notimestamps|>
PAST_TOKENS = 64     # a mid-length transcript window for decoder self-attention caches
SKELETON_BYTES = 1 << 16  # initializers above this size are not needed to resolve shapes


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
    """Every node (or block) an op form could offload, shapes not yet known."""
    return forms.match(model.graph)


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
    """Fill each candidate's shapes for the model's real use, and what its form says of them (in place)."""
    bound = real_use_dims(model, dims)
    probe, weights = _skeleton(model, bound)
    inferred = shape_inference.infer_shapes(probe, data_prop=True)
    known, types = {}, {}
    for value in list(inferred.graph.value_info) + list(inferred.graph.input):
        types[value.name] = value.type.tensor_type.elem_type
        dims_ = value.type.tensor_type.shape.dim
        if dims_ and all(d.HasField("dim_value") for d in dims_):
            known[value.name] = [d.dim_value for d in dims_]
    needed = [name for c in candidates for name in c.form.shaped(c)]
    missing = [name for name in dict.fromkeys(needed) if name not in known]
    if missing:
        measured = _measure_shapes(probe, bound, weights, missing)
        known.update({name: shape for name, (shape, _) in measured.items()})
        types.update({name: elem for name, (_, elem) in measured.items()})
    for candidate in candidates:
        for name in candidate.form.shaped(candidate):
            candidate.shapes[name] = known[name]
            candidate.types[name] = types.get(name)
        candidate.unsupported = candidate.unsupported or candidate.form.check_shapes(candidate)


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
