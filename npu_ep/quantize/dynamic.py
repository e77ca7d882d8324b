"""Dynamic INT8: int8 weights, activations quantized at run time by the CPU EP (no calibration)."""
from __future__ import annotations

from pathlib import Path

# "matmul-integer": DynamicQuantizeLinear + MatMulInteger (fused by ORT into DynamicQuantizeMatMul), weights
# in a 7-bit range (reduce_range: -64..64). Full-range weights lose accuracy on CPUs without VNNI or AMX, whose
# u8 x s8 kernel adds pairs of products in int16 with saturation (2 * 255 * 127 > 2**15 - 1); 2 * 255 * 64 fits.
# "matmul-nbits": com.microsoft MatMulNBits with 8-bit blocks and accuracy level 4 (int8 compute).
FORMS = ("matmul-integer", "matmul-nbits")
NBITS_BLOCK_SIZE = 32
WEIGHT_RANGE = 64  # |int8 weight| <= this in the matmul-integer form


def quantize_dynamic_file(source: Path, target: Path, form: str, exclude_nodes: list[str], per_channel: bool = True) -> None:
    """Write `target`: `source` with its constant-weight MatMuls in int8, `exclude_nodes` left in float."""
    if form == "matmul-integer":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        # Only MatMul: quantizing the token-embedding Gather saves disk, not time, and costs accuracy.
        quantize_dynamic(source, target, op_types_to_quantize=["MatMul"], per_channel=per_channel,
                         weight_type=QuantType.QInt8, reduce_range=True, nodes_to_exclude=exclude_nodes,
                         extra_options={"MatMulConstBOnly": True})
    elif form == "matmul-nbits":
        import onnx
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

        quantizer = MatMulNBitsQuantizer(onnx.load(source), bits=8, block_size=NBITS_BLOCK_SIZE, is_symmetric=True,
                                         accuracy_level=4, nodes_to_exclude=exclude_nodes)
        quantizer.process()
        quantizer.model.save_model_to_file(str(target))
    else:
        raise ValueError(f"unknown dynamic form {form!r} (one of {', '.join(FORMS)})")
