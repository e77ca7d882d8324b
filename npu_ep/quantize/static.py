"""Static INT8 in QDQ form: int8 activations with calibrated ranges and int8 weights around each
constant-weight MatMul, the int8 x int8 -> int32 shape the NPU's kernels compute (the partition pass
recognises it)."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # onnx loads only when a quantization runs
    import onnx

# --calibrate-method choices, each naming its onnxruntime.quantization.CalibrationMethod (imported only to quantize).
_CALIBRATION_METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}
METHODS = tuple(_CALIBRATION_METHODS)


def quantize_static_file(source: Path, target: Path, feeds: list[dict[str, np.ndarray]], method: str,
                         exclude_nodes: list[str], per_channel: bool = True) -> None:
    """Write `target`: `source` with QDQ int8 around its constant-weight MatMuls, ranges from `feeds`."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from npu_ep.quantize.calibration import FeedReader

    calibrate_method = getattr(CalibrationMethod, _CALIBRATION_METHODS[method])
    quantize_static(
        source, target, FeedReader(feeds), quant_format=QuantFormat.QDQ,
        # Constant-weight MatMuls only, everything else stays float.
        op_types_to_quantize=["MatMul"], per_channel=per_channel,
        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
        nodes_to_exclude=[*exclude_nodes, *activation_matmuls(onnx.load(source, load_external_data=False).graph)],
        calibrate_method=calibrate_method,
        extra_options={
            # One feed per calibration pass: the encoder's intermediate tensors of every clip at once
            # would hold gigabytes; ranges and histograms merge across passes.
            "CalibStridedMinMax": 1,
            # Activations keep their zero point (asymmetric): post-GELU inputs are nearly one-sided, and on
            # tiny.en's encoder this took the output cosine from 0.86 to 0.92 over symmetric ranges.
            "ActivationSymmetric": False,
        },
    )


def activation_matmuls(graph: onnx.GraphProto) -> list[str]:
    """The MatMuls of `graph` whose inputs are both activations (attention's QKᵀ and AV).

    ORT's QDQ quantizer would quantize them too (it ignores MatMulConstBOnly). AV's left input is
    Softmax's probabilities over every key, most of them far below one int8 step of a per-tensor
    [0, 1] range, so they round to zero (README, Quantization). In float they stay candidates for the
    NPU's bf16 attention forms.
    """
    constants = {init.name for init in graph.initializer}
    constants |= {out for node in graph.node if node.op_type == "Constant" for out in node.output}
    return [node.name for node in graph.node
            if node.op_type == "MatMul" and not any(name in constants for name in node.input)]
