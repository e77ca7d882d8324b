"""Dynamic INT8: int8 weights, activations quantized at run time by the CPU EP (no calibration)."""
from __future__ import annotations

from pathlib import Path

from npu_ep.whisper.spec import LOGITS

# "matmul-integer": DynamicQuantizeLinear + MatMulInteger (fused by ORT into DynamicQuantizeMatMul), weights
# in a 7-bit range (reduce_range: -64..64). Full-range weights lose accuracy on CPUs without VNNI or AMX, whose
# u8 x s8 kernel adds pairs of products in int16 with saturation (2 * 255 * 127 > 2**15 - 1); 2 * 255 * 64 fits.
# The vocabulary projection (d_model x ~52k, read whole for every decoded token) is a MatMulNBits in both
# forms: for one row, its 8-bit blocks of 32 read faster and round less than MatMulInteger's per-tensor
# activation quantization.
# "matmul-nbits": com.microsoft MatMulNBits with 8-bit blocks and accuracy level 4 (int8 compute).
FORMS = ("matmul-integer", "matmul-nbits")
NBITS_BLOCK_SIZE = 32
WEIGHT_RANGE = 64  # |int8 weight| <= this in the matmul-integer form


def quantize_dynamic_file(source: Path, target: Path, form: str, exclude_nodes: list[str], per_channel: bool = True) -> None:
    """Write `target`: `source` with its constant-weight MatMuls in int8, `exclude_nodes` left in float."""
    if form == "matmul-integer":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        vocabulary = [name for name in vocabulary_projections(source) if name not in exclude_nodes]
        # Only MatMul: quantizing the token-embedding Gather saves disk, not time, and costs accuracy.
        quantize_dynamic(source, target, op_types_to_quantize=["MatMul"], per_channel=per_channel,
                         weight_type=QuantType.QInt8, reduce_range=True, nodes_to_exclude=[*exclude_nodes, *vocabulary],
                         extra_options={"MatMulConstBOnly": True})
        if vocabulary:
            _blocks(target, target, only=vocabulary)
    elif form == "matmul-nbits":
        _blocks(source, target, exclude=exclude_nodes)
    else:
        raise ValueError(f"unknown dynamic form {form!r} (one of {', '.join(FORMS)})")


def vocabulary_projections(path: Path) -> list[str]:
    """The MatMul nodes of the ONNX file at `path` that compute token logits (weights [d_model, vocab])."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    shapes = {init.name: list(init.dims) for init in graph.initializer}
    logits = {dim.dim_value for value in graph.output if value.name == LOGITS
              for dim in value.type.tensor_type.shape.dim[-1:]}
    return [node.name for node in graph.node if node.op_type == "MatMul" and node.input[1] in shapes
            and len(shapes[node.input[1]]) == 2 and shapes[node.input[1]][1] in logits]


def _blocks(source: Path, target: Path, only: list[str] | None = None, exclude: list[str] = ()) -> None:
    """Write `target`: `source`'s MatMuls (`only` these, or all but `exclude`) as 8-bit MatMulNBits."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    model = onnx.load(str(source))
    if only is not None:
        exclude = [node.name for node in model.graph.node if node.name not in only]
    quantizer = MatMulNBitsQuantizer(model, bits=8, block_size=NBITS_BLOCK_SIZE, is_symmetric=True,
                                     accuracy_level=4, nodes_to_exclude=list(exclude))
    quantizer.process()
    quantizer.model.save_model_to_file(str(target), use_external_data_format=True)
