"""Silero VAD's ONNX graph with its convolutional front end as a few large MatMuls.

The model scores N windows in one call: a front end (an STFT as a 256-tap convolution, its magnitude,
four small convolutions) per window, then an LSTM over the windows in order. As shipped, every front-end
Conv runs once per window on a 4-frame input, tiny products that one thread spends most of its time
setting up and a second thread cannot share. Here each convolution becomes one MatMul over all N
windows (frames side by side, taps concatenated), which ONNX Runtime's GEMM splits across threads; the
LSTM and what follows it stay as shipped. The function is the same; float sums run in another order.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

_WINDOW = 576  # samples per row of the model's input: 64 of context, then the 512-sample window
_BLOCK = 128  # the STFT's hop; its 256-tap frames are two consecutive blocks
_FRAMES = 4  # the STFT frames the model keeps per window (the first of the five it computes is dropped)
_BINS = 129


class _Builder:
    def __init__(self, initializers: dict[str, np.ndarray]) -> None:
        self.weights = initializers
        self.nodes: list[onnx.NodeProto] = []
        self.constants: dict[str, onnx.TensorProto] = {}

    def const(self, value: np.ndarray) -> str:
        name = f"front_end/const_{len(self.constants)}"
        self.constants[name] = numpy_helper.from_array(np.ascontiguousarray(value), name)
        return name

    def node(self, op: str, inputs: list[str], **attributes) -> str:
        output = f"front_end/{op}_{len(self.nodes)}"
        self.nodes.append(helper.make_node(op, inputs, [output], **attributes))
        return output

    def slice(self, x: str, start: int, end: int, axis: int, step: int = 1) -> str:
        ints = [self.const(np.array([value], np.int64)) for value in (start, end, axis, step)]
        return self.node("Slice", [x, *ints])

    def conv(self, x: str, layer: int, stride: int, outputs: int) -> str:
        """Conv1d (3 taps, padding 1) + ReLU on x laid out (N, time, channels), as one MatMul."""
        weight = self.weights[f"encoder.conv_layers.{layer}.weight"]  # (out, in, taps)
        bias = self.weights[f"encoder.conv_layers.{layer}.bias"]
        out_channels, in_channels, taps = weight.shape
        padded = self.node("Pad", [x, self.const(np.array([0, 1, 0, 0, 1, 0], np.int64))])
        span = stride * (outputs - 1) + 1
        columns = self.node("Concat", [self.slice(padded, tap, tap + span, 1, stride) for tap in range(taps)], axis=2)
        matrix = weight.transpose(2, 1, 0).reshape(taps * in_channels, out_channels)  # rows: tap-major
        return self.node("Relu", [self.node("Add", [self.node("MatMul", [columns, self.const(matrix)]), self.const(bias)])])


def batched_front_end(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model` (faster-whisper's silero_vad_v6.onnx) with its front end rewritten; KeyError or
    StopIteration when the graph is not the one this expects."""
    graph = model.graph
    nodes = list(graph.node)
    lstm = next(index for index, node in enumerate(nodes) if node.op_type == "LSTM")
    b = _Builder({tensor.name: numpy_helper.to_array(tensor) for tensor in graph.initializer})
    basis = b.weights["encoder.feature_extractor.forward_basis_buffer"][:, 0, :]  # (2 * bins, 256)
    # The kept frames cover the window's 576 samples and 64 reflected past its end: five blocks.
    right = b.node("Pad", [graph.input[0].name, b.const(np.array([0, 0, 0, 5 * _BLOCK - _WINDOW], np.int64))],
                   mode="reflect")
    blocks = b.node("Reshape", [right, b.const(np.array([0, 5, _BLOCK], np.int64))])
    frames = b.node("Concat", [b.slice(blocks, 0, _FRAMES, 1), b.slice(blocks, 1, _FRAMES + 1, 1)], axis=2)
    spectrum = b.node("MatMul", [frames, b.const(basis.T)])  # (N, frames, real bins then imaginary)
    real, imaginary = b.slice(spectrum, 0, _BINS, 2), b.slice(spectrum, _BINS, 2 * _BINS, 2)
    x = b.node("Sqrt", [b.node("Add", [b.node("Mul", [real, real]), b.node("Mul", [imaginary, imaginary])])])
    x = b.conv(x, 0, stride=1, outputs=4)
    x = b.conv(x, 1, stride=2, outputs=2)
    x = b.conv(x, 2, stride=2, outputs=1)
    x = b.conv(x, 3, stride=1, outputs=1)  # (N, 1, 128): the LSTM's (sequence, batch, features) input
    b.nodes[-1].output[0] = nodes[lstm].input[0]
    rest = nodes[lstm:]
    used = {name for node in rest for name in node.input}
    initializers = [tensor for tensor in graph.initializer if tensor.name in used] + list(b.constants.values())
    rewritten = helper.make_model(helper.make_graph(b.nodes + rest, graph.name, list(graph.input), list(graph.output),
                                                    initializers), opset_imports=model.opset_import)
    rewritten.ir_version = model.ir_version
    onnx.checker.check_model(rewritten)
    return rewritten
