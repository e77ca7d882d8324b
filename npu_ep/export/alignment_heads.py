"""The decoder's extra output for word timestamps: the cross-attention scores of the alignment heads.

Whisper's word timing reads the attention of a few cross-attention heads (the checkpoint's
`alignment_heads`) over the audio frames. The first-pass decoder graph already computes them as the
scaled query-key products that feed each layer's cross-attention Softmax; this adds one output that
gathers those heads, so one decoder pass over a window's tokens gives both logits and alignment.
"""
from __future__ import annotations

import json
from pathlib import Path

from npu_ep.errors import NpuEpError
from npu_ep.whisper.spec import ALIGNMENT_OUTPUT


def alignment_heads(folder: Path) -> list[tuple[int, int]]:
    """(layer, head) pairs from the folder's generation config; without any, openai/whisper's default:
    every head of the upper half of the decoder layers."""
    generation_path = folder / "generation_config.json"
    generation = json.loads(generation_path.read_text()) if generation_path.is_file() else {}
    heads = [(int(layer), int(head)) for layer, head in generation.get("alignment_heads") or []]
    if heads:
        return heads
    config = json.loads((folder / "config.json").read_text())
    layers, per_layer = config["decoder_layers"], config["decoder_attention_heads"]
    return [(layer, head) for layer in range(layers // 2, layers) for head in range(per_layer)]


def add_alignment_output(decoder_path: Path, heads: list[tuple[int, int]]) -> None:
    """Rewrite the decoder graph at `decoder_path` with the output ALIGNMENT_OUTPUT
    [batch, len(heads), tokens, audio frames]: the pre-softmax cross-attention scores of `heads`."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(decoder_path))
    graph = model.graph
    # One cross-attention Softmax per decoder layer, in layer order (optimum names them
    # /model/decoder/layers.N/encoder_attn/Softmax).
    scores = {}
    for node in graph.node:
        if node.op_type == "Softmax" and "/encoder_attn/" in node.name:
            layer = int(node.name.split("layers.")[1].split("/")[0])
            scores[layer] = node.input[0]
    missing = sorted({layer for layer, _ in heads} - scores.keys())
    if missing:
        raise NpuEpError(f"{decoder_path}: no cross-attention Softmax in decoder layer {missing[0]} "
                         "(check the optimum-onnx version: pip install -e '.[export]')")
    by_layer: dict[int, list[int]] = {}
    for layer, head in heads:
        by_layer.setdefault(layer, []).append(head)
    gathered = []
    for layer, layer_heads in sorted(by_layer.items()):
        index = f"/alignment/heads_{layer}"
        graph.initializer.append(helper.make_tensor(index, TensorProto.INT64, [len(layer_heads)], layer_heads))
        gathered.append(f"/alignment/scores_{layer}")
        graph.node.append(helper.make_node("Gather", [scores[layer], index], [gathered[-1]], axis=1,
                                           name=f"/alignment/Gather_{layer}"))
    graph.node.append(helper.make_node("Concat", gathered, [ALIGNMENT_OUTPUT], axis=1, name="/alignment/Concat"))
    graph.output.append(helper.make_tensor_value_info(
        ALIGNMENT_OUTPUT, TensorProto.FLOAT, ["batch_size", len(heads), "decoder_sequence_length", "encoder_sequence_length"]))
    onnx.save(model, str(decoder_path))
