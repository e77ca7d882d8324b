"""GEMM forms with a constant weight: MatMul, Gemm, MatMulInteger, the QDQ MatMul, and Conv as a GEMM.

The weight is converted and uploaded once, then resident; a call moves only the activation in and
the result out. int8 forms use the int8 x int8 -> int32 kernel, float forms the bf16 -> fp32 one.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto

from npu_ep.forms.base import (F32, I8, I32, U8, Candidate, Form, Gemm, GraphIndex, Signature, Work, attributes,
                               float_2d, rows, zero_int8)


def gemm_work(M: int, K: int, N: int, int8: bool, extra_host: int = 0) -> Work:
    """One [M, K] @ [K, N] call with a resident weight."""
    # Host path per call: the bridge copies the activation and the weight in and the output out,
    # and packing reads the activation and writes it in the kernel's type.
    size_host, size_in = (1, 1) if int8 else (4, 2)
    host = M * K * size_host + K * N * size_host + M * K * (size_host + size_in) + M * N * 4 + extra_host
    return Work((Gemm(1, M, K, N),), int8, (M, K, N), to_device=M * K * size_in, from_device=M * N * 4, host_bytes=host,
                weight_bytes=K * N * (1 if int8 else 4), resident_bytes=K * N * size_in)


class _WeightForm(Form):
    """Shared by the constant-weight forms."""
    kernel_kind = "gemm"

    def _candidate(self, cls, node, index: GraphIndex, weight: str, inputs: list[str], **fields):
        return cls(self, node, inputs, weight=weight, weight_dims=tuple(index.constants[weight].dims), **fields)

    def KN(self, candidate: Candidate) -> tuple[int, int]:
        K, N = candidate.weight_dims[-2:]
        return K, N

    def work(self, candidate: Candidate) -> Work:
        K, N = self.KN(candidate)
        return gemm_work(rows(candidate.shapes[candidate.inputs[0]]), K, N, self.dtype(candidate) == "i8")


class MatMulForm(_WeightForm):
    """MatMul(activation, constant float32 [K, N])."""
    name = "matmul"
    op_types = ("MatMul",)
    signatures = (Signature("NpuMatMul", (F32, F32)),)

    def match(self, node, index):
        a, b = node.input
        if b not in index.constants or a in index.constants:
            return None
        candidate = self._candidate(Candidate, node, index, b, [a, b])
        candidate.unsupported = float_2d(index.constants[b])
        return candidate

    def rewrite(self, candidate, kernel, key, graph):
        return self._node(candidate, "NpuMatMul", list(candidate.inputs), kernel, key)

    def npu(self, backend, key, kernel, cpu, a, w):
        return backend.gemm(key, kernel, a, lambda: w, backend.fingerprint(w), cpu)

    def cpu(self, run, a, w):
        return run("MatMul", [a, w])


@dataclass
class GemmCandidate(Candidate):
    trans_b: bool = False


class GemmForm(_WeightForm):
    """Gemm(activation, constant weight, bias) with alpha = beta = 1 and no transposed A."""
    name = "gemm"
    op_types = ("Gemm",)
    signatures = (Signature("NpuGemm", (F32, F32, F32), int_attrs=("trans_b",)),)

    def match(self, node, index):
        if len(node.input) < 2 or node.input[1] not in index.constants:
            return None
        attrs = attributes(node)
        candidate = self._candidate(GemmCandidate, node, index, node.input[1], list(node.input[:3]),
                                    trans_b=bool(attrs.get("transB", 0)))
        if float_2d(index.constants[node.input[1]]):
            candidate.unsupported = float_2d(index.constants[node.input[1]])
        elif attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
            candidate.unsupported = "Gemm with transA or alpha/beta != 1"
        elif len(node.input) < 3 or not node.input[2]:
            candidate.unsupported = "Gemm without bias input"
        return candidate

    def KN(self, candidate):
        K, N = candidate.weight_dims
        return (N, K) if candidate.trans_b else (K, N)

    def rewrite(self, candidate, kernel, key, graph):
        return self._node(candidate, "NpuGemm", list(candidate.inputs), kernel, key, trans_b=int(candidate.trans_b))

    def npu(self, backend, key, kernel, cpu, a, w, c, trans_b):
        return backend.gemm(key, kernel, a, lambda: w.T if trans_b else w, backend.fingerprint(w), cpu,
                            finish=lambda y: y + c)

    def cpu(self, run, a, w, c, trans_b):
        return run("Gemm", [a, w, c], transB=trans_b)


@dataclass
class IntegerCandidate(Candidate):
    w_zero_missing: bool = False


class MatMulIntegerForm(_WeightForm):
    """MatMulInteger(uint8 activation, constant int8 weight) with weight zero point 0."""
    name = "matmul_integer"
    op_types = ("MatMulInteger",)
    signatures = (Signature("NpuMatMulInteger", (U8, I8, U8, I8), (I32,)),)

    def match(self, node, index):
        if node.input[1] not in index.constants:
            return None
        candidate = self._candidate(IntegerCandidate, node, index, node.input[1], list(node.input[:4]),
                                    w_zero_missing=len(node.input) < 4 or not node.input[3])
        w_zero = index.scalar(node.input[3] if len(node.input) > 3 else None)
        if index.constants[node.input[1]].data_type != TensorProto.INT8:
            candidate.unsupported = "MatMulInteger weight is not int8"
        elif len(node.input) < 3 or not node.input[2]:
            candidate.unsupported = "MatMulInteger without activation zero point"
        elif not candidate.w_zero_missing and (w_zero is None or np.any(w_zero != 0)):
            candidate.unsupported = "MatMulInteger weight zero point is not 0"
        return candidate

    def check_shapes(self, candidate):
        return "" if candidate.types.get(candidate.inputs[0]) == TensorProto.UINT8 else \
            "MatMulInteger activation is not uint8"

    def dtype(self, candidate):
        return "i8"

    def rewrite(self, candidate, kernel, key, graph):
        inputs = list(candidate.inputs[:3]) + [zero_int8(graph) if candidate.w_zero_missing else candidate.inputs[3]]
        return self._node(candidate, "NpuMatMulInteger", inputs, kernel, key)

    def npu(self, backend, key, kernel, cpu, a, w, a_zero, w_zero):
        return backend.gemm(key, kernel, a, lambda: w, backend.fingerprint(w), cpu, a_zero=int(a_zero))

    def cpu(self, run, a, w, a_zero, w_zero):
        return run("MatMulInteger", [a, w, a_zero, w_zero], TensorProto.INT32)


@dataclass
class QdqCandidate(Candidate):
    dq_a: onnx.NodeProto | None = None
    dq_b: onnx.NodeProto | None = None


class QdqMatMulForm(_WeightForm):
    """MatMul(DequantizeLinear(int8/uint8 activation), DequantizeLinear(constant int8 weight)), as
    onnxruntime.quantization's QDQ format writes it: the int8 kernel, then the scales on the host."""
    name = "qdq_matmul"
    op_types = ("MatMul",)
    signatures = (Signature("NpuQdqMatMul", (I8, F32, I8, I8, F32, I8)),
                  Signature("NpuQdqMatMulU8", (U8, F32, U8, I8, F32, I8)))

    def match(self, node, index):
        dq_a, dq_b = (index.producers.get(name) for name in node.input)
        if dq_a is None or dq_b is None or not dq_a.op_type == dq_b.op_type == "DequantizeLinear" \
                or dq_b.input[0] not in index.constants:
            return None
        w_zero = dq_b.input[2] if len(dq_b.input) > 2 and dq_b.input[2] else ""
        inputs = [dq_a.input[0], dq_a.input[1], dq_a.input[2] if len(dq_a.input) > 2 else "", dq_b.input[0],
                  dq_b.input[1], w_zero]
        candidate = self._candidate(QdqCandidate, node, index, dq_b.input[0], inputs, dq_a=dq_a, dq_b=dq_b)
        zero = index.scalar(w_zero or None)
        scale = index.scalar(dq_b.input[1])
        if index.constants[dq_b.input[0]].data_type != TensorProto.INT8:
            candidate.unsupported = "QDQ weight is not int8"
        elif zero is None or np.any(zero != 0):
            candidate.unsupported = "QDQ weight zero point is not a constant 0"
        elif scale is None or (scale.size > 1 and attributes(dq_b).get("axis", 1) not in (1, -1)):
            candidate.unsupported = "QDQ weight scale is not per-tensor or per output column"
        elif not inputs[2]:
            candidate.unsupported = "QDQ activation without zero point"
        return candidate

    def dtype(self, candidate):
        return "i8"

    def rewrite(self, candidate, kernel, key, graph):
        inputs = list(candidate.inputs[:5]) + [candidate.inputs[5] or zero_int8(graph)]
        u8 = candidate.types.get(candidate.inputs[0]) == TensorProto.UINT8
        return self._node(candidate, self.signatures[1 if u8 else 0].op_type, inputs, kernel, key)

    def npu(self, backend, key, kernel, cpu, a_q, a_scale, a_zero, w_q, w_scale, w_zero):
        scale = np.float32(a_scale) * w_scale.astype(np.float32)
        return backend.gemm(key, kernel, a_q, lambda: w_q, backend.fingerprint(w_q), cpu, a_zero=int(a_zero),
                            finish=lambda acc: np.multiply(acc, scale, dtype=np.float32))

    def cpu(self, run, a_q, a_scale, a_zero, w_q, w_scale, w_zero):
        # The float MatMul of the dequantized tensors, as the QDQ graph defines it.
        a = run("DequantizeLinear", [a_q, a_scale, a_zero])
        w = run("DequantizeLinear", [w_q, w_scale, w_zero], axis=1) if w_scale.size > 1 else \
            run("DequantizeLinear", [w_q, w_scale, w_zero])
        return run("MatMul", [a, w])


@dataclass
class ConvCandidate(Candidate):
    stride: int = 1
    pad: int = 0


def im2col(x: np.ndarray, kernel_size: int, stride: int, pad: int) -> np.ndarray:
    """x[B, C, L] -> rows [B * L_out, C * kernel_size]: each output position's receptive field, in
    the weight's (C, k) order, so Conv1d is rows @ W.reshape(C_out, C * k).T."""
    padded = np.pad(x, ((0, 0), (0, 0), (pad, pad))) if pad else x
    windows = np.lib.stride_tricks.sliding_window_view(padded, kernel_size, axis=2)[:, :, ::stride]
    B, C, L_out, k = windows.shape
    return np.ascontiguousarray(windows.transpose(0, 2, 1, 3)).reshape(B * L_out, C * k)


class ConvGemmForm(_WeightForm):
    """Conv1d (group 1, no dilation, symmetric padding, constant float weight and bias) as a GEMM:
    im2col on the host, the bf16 kernel with the reshaped weight resident, bias and layout on the host."""
    name = "conv_gemm"
    op_types = ("Conv",)
    signatures = (Signature("NpuConv", (F32, F32, F32), int_attrs=("stride", "pad")),)

    def match(self, node, index):
        if len(node.input) < 2 or node.input[1] not in index.constants:
            return None
        attrs = attributes(node)
        weight = index.constants[node.input[1]]
        pads = list(attrs.get("pads", [0, 0]))
        candidate = self._candidate(ConvCandidate, node, index, node.input[1], list(node.input[:3]),
                                    stride=int(attrs.get("strides", [1])[0]), pad=int(pads[0]) if pads else 0)
        if weight.data_type != TensorProto.FLOAT or len(weight.dims) != 3:
            candidate.unsupported = "Conv weight is not a 1-D convolution's float32 [C_out, C_in, k]"
        elif attrs.get("group", 1) != 1 or any(d != 1 for d in attrs.get("dilations", [1])):
            candidate.unsupported = "Conv with groups or dilation"
        elif len(pads) != 2 or pads[0] != pads[1] or attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            candidate.unsupported = "Conv padding is not symmetric and explicit"
        elif len(node.input) < 3 or not node.input[2]:
            candidate.unsupported = "Conv without bias input"
        return candidate

    def _positions(self, candidate: Candidate) -> tuple[int, int]:
        B, _, L = candidate.shapes[candidate.inputs[0]]
        k = candidate.weight_dims[2]
        return B, (L + 2 * candidate.pad - k) // candidate.stride + 1

    def KN(self, candidate):
        c_out, c_in, k = candidate.weight_dims
        return c_in * k, c_out

    def work(self, candidate):
        B, L_out = self._positions(candidate)
        K, N = self.KN(candidate)
        M = B * L_out
        # im2col writes the rows the kernel reads; the output goes back to [B, C_out, L_out] on the host.
        return gemm_work(M, K, N, False, extra_host=M * K * 4 + 2 * M * N * 4)

    def check_shapes(self, candidate):
        return "" if len(candidate.shapes[candidate.inputs[0]]) == 3 else "Conv input is not [B, C, L]"

    def rewrite(self, candidate, kernel, key, graph):
        return self._node(candidate, "NpuConv", list(candidate.inputs), kernel, key, stride=candidate.stride,
                          pad=candidate.pad)

    def npu(self, backend, key, kernel, cpu, x, w, bias, stride, pad):
        c_out, c_in, k = w.shape
        B = x.shape[0]

        def finish(y: np.ndarray) -> np.ndarray:
            y = y.reshape(B, -1, c_out) + bias
            return np.ascontiguousarray(y.transpose(0, 2, 1))

        return backend.gemm(key, kernel, im2col(x, k, stride, pad), lambda: w.reshape(c_out, c_in * k).T,
                            backend.fingerprint(w), cpu, finish=finish)

    def cpu(self, run, x, w, bias, stride, pad):
        return run("Conv", [x, w, bias], strides=[stride], pads=[pad, pad], kernel_shape=[w.shape[2]])
