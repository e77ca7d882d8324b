"""The first-pass decoder's logits from a given position on, for openings that carry a long prompt.

A window's opening pass runs the decoder over the previous text (up to half the text context) and the
start sequence, but decoding reads only the logits from <|startoftranscript|> on. The vocabulary
projection is the decoder's largest MatMul (n_vocab columns per position), so this adds an input
LOGITS_START that slices the hidden states before it. Its default (0, every position) keeps the graph's
old behaviour for callers that do not pass it.
"""
from __future__ import annotations

from pathlib import Path

from npu_ep.errors import NpuEpError
from npu_ep.whisper.spec import LOGITS, LOGITS_START


def add_logits_start(decoder_path: Path) -> None:
    """Rewrite the decoder graph at `decoder_path` so its logits cover positions LOGITS_START.. only."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(decoder_path))
    graph = model.graph
    projection = next((node for node in graph.node if LOGITS in node.output), None)
    if projection is None or projection.op_type != "MatMul":
        raise NpuEpError(f"{decoder_path}: its logits do not come from a MatMul "
                         "(check the optimum-onnx version: pip install -e '.[export]')")
    hidden, sliced = projection.input[0], "/logits_start/hidden_states"
    graph.initializer.extend([
        helper.make_tensor(LOGITS_START, TensorProto.INT64, [1], [0]),
        helper.make_tensor("/logits_start/end", TensorProto.INT64, [1], [2**63 - 1]),
        helper.make_tensor("/logits_start/axis", TensorProto.INT64, [1], [1]),
    ])
    # Listed as an input too, the initializer is only a default that a run may override.
    graph.input.append(helper.make_tensor_value_info(LOGITS_START, TensorProto.INT64, [1]))
    slice_node = helper.make_node("Slice", [hidden, LOGITS_START, "/logits_start/end", "/logits_start/axis"], [sliced],
                                  name="/logits_start/Slice")
    projection.input[0] = sliced
    position = list(graph.node).index(projection)
    graph.node.insert(position, slice_node)
    onnx.save(model, str(decoder_path))
