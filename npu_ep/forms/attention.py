"""Activation-only forms: attention's batched MatMuls (QKᵀ and AV, batched over heads), Softmax, and
the fused attention block QKᵀ -> Softmax -> AV, whose score matrix never leaves the device.

Every operand is an activation: packed to bf16 on each call, no resident weight. A fused block is a
candidate beside its three parts; the planner keeps whichever placement the cost model prefers.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto

from npu_ep.forms.base import F32, Candidate, Form, Gemm, GraphIndex, Signature, Work, attributes

HEAD_MULTIPLE = 16  # the attention design's vector width along D: its 1/sqrt(D) is of the padded D
# Per element moved, the host path: bridge copy in (4 bytes), packing read + bf16 write (6); out: bridge (4).
_HOST_IN, _HOST_OUT = 10, 4


def _lead(shape: list[int]) -> int:
    return int(np.prod(shape[:-2])) if len(shape) > 2 else 1


def _last_axis_softmax(node: onnx.NodeProto | None) -> bool:
    # opset >= 13 Softmax normalises one axis; Whisper's exports use -1 (the last).
    return node is not None and node.op_type == "Softmax" and attributes(node).get("axis", -1) == -1


def _activations(index: GraphIndex, *names: str) -> bool:
    return all(name not in index.constants and
               getattr(index.producers.get(name), "op_type", "") != "DequantizeLinear" for name in names)


class BatchedMatMulForm(Form):
    """MatMul of two activations [..., M, K] @ [..., K, N] with equal leading dims (attention's QKᵀ
    and AV): one run of the batched bf16 kernel over every head."""
    name = "batched_matmul"
    op_types = ("MatMul",)
    kernel_kind = "batched_gemm"
    signatures = (Signature("NpuBatchedMatMul", (F32, F32)),)

    def match(self, node, index):
        a, b = node.input
        return Candidate(self, node, [a, b]) if _activations(index, a, b) else None

    def shaped(self, candidate):
        return list(candidate.inputs)

    def check_shapes(self, candidate):
        a, b = (candidate.shapes[n] for n in candidate.inputs)
        if len(a) < 2 or a[:-2] != b[:-2]:
            return "activation MatMul with broadcast batch dims"
        if any(candidate.types.get(n) != TensorProto.FLOAT for n in candidate.inputs):
            return "activation MatMul is not float32"
        return ""

    def work(self, candidate):
        a, b = (candidate.shapes[n] for n in candidate.inputs)
        B, M, K, N = _lead(a), a[-2], a[-1], b[-1]
        ins, out = B * (M * K + K * N), B * M * N
        return Work((Gemm(B, M, K, N),), False, (B, M, K, N), to_device=2 * ins, from_device=4 * out,
                    host_bytes=_HOST_IN * ins + _HOST_OUT * out, weight_bytes=4 * B * K * N)

    def rewrite(self, candidate, kernel, key, graph):
        return self._node(candidate, "NpuBatchedMatMul", list(candidate.inputs), kernel, key)

    def npu(self, backend, key, kernel, cpu, a, b):
        lead, (M, K), N = a.shape[:-2], a.shape[-2:], b.shape[-1]
        B = int(np.prod(lead))
        out = backend.run(key, kernel, (B, M, K, N), {"a": a.reshape(B, M, K), "b": b.reshape(B, K, N)}, cpu)
        return out.reshape(*lead, M, N)

    def cpu(self, run, a, b):
        return run("MatMul", [a, b])


class SoftmaxForm(Form):
    """Softmax over the last axis (attention scores) on the device's vector units: bf16 in, fp32 out."""
    name = "softmax"
    op_types = ("Softmax",)
    kernel_kind = "softmax"
    signatures = (Signature("NpuSoftmax", (F32,)),)

    def match(self, node, index):
        return Candidate(self, node, [node.input[0]]) if _last_axis_softmax(node) else None

    def check_shapes(self, candidate):
        return "" if candidate.types.get(candidate.inputs[0]) == TensorProto.FLOAT else "Softmax is not float32"

    def work(self, candidate):
        shape = candidate.shapes[candidate.inputs[0]]
        n = int(np.prod(shape))
        return Work((), False, (n // shape[-1], shape[-1], shape[-1]), to_device=2 * n, from_device=4 * n, host_bytes=(_HOST_IN + _HOST_OUT) * n, softmax=n)

    def rewrite(self, candidate, kernel, key, graph):
        return self._node(candidate, "NpuSoftmax", list(candidate.inputs), kernel, key)

    def npu(self, backend, key, kernel, cpu, x):
        flat = x.reshape(-1, x.shape[-1])
        return backend.run(key, kernel, (*flat.shape, flat.shape[1]), {"x": flat}, cpu).reshape(x.shape)

    def cpu(self, run, x):
        return run("Softmax", [x], axis=-1)


@dataclass
class AttentionCandidate(Candidate):
    qk: onnx.NodeProto | None = None
    softmax: onnx.NodeProto | None = None


class AttentionForm(Form):
    """softmax(Q @ Kᵀ) @ V as one run, the scores never leaving the device's tiles. Q [.., S, D],
    Kᵀ [.., D, T], V [.., T, D] in; [.., S, D] out."""
    name = "attention"
    op_types = ("MatMul",)
    kernel_kind = "attention"
    block = True
    signatures = (Signature("NpuAttention", (F32, F32, F32)),)

    def match(self, node, index):
        q, kt = node.input
        softmax = index.only_consumer(node.output[0])
        if not _activations(index, q, kt) or not _last_axis_softmax(softmax):
            return None
        av = index.only_consumer(softmax.output[0])
        if av is None or av.op_type != "MatMul" or av.input[0] != softmax.output[0] or not _activations(index, av.input[1]):
            return None
        return AttentionCandidate(self, av, [q, kt, av.input[1]], members=(node, softmax, av), qk=node, softmax=softmax)

    def shaped(self, candidate):
        return list(candidate.inputs)

    def check_shapes(self, candidate):
        q, kt, v = (candidate.shapes[n] for n in candidate.inputs)
        if len(q) < 2 or not q[:-2] == kt[:-2] == v[:-2]:
            return "attention with broadcast batch dims"
        if v[-1] != q[-1]:
            return "attention whose values are not as wide as its queries"
        if q[-1] % HEAD_MULTIPLE:
            return f"attention head width {q[-1]} is not a multiple of {HEAD_MULTIPLE}"
        if any(candidate.types.get(n) != TensorProto.FLOAT for n in candidate.inputs):
            return "attention is not float32"
        return ""

    def work(self, candidate):
        q, kt, v = (candidate.shapes[n] for n in candidate.inputs)
        B, M, D, S, Dv = _lead(q), q[-2], q[-1], kt[-1], v[-1]
        ins, out = B * (M * D + D * S + S * Dv), B * M * Dv
        return Work((Gemm(B, M, D, S), Gemm(B, M, S, Dv)), False, (B, M, S, D, S), to_device=2 * ins, from_device=4 * out,
                    host_bytes=_HOST_IN * ins + _HOST_OUT * out, weight_bytes=4 * B * (D * S + S * Dv),
                    softmax=B * M * S)

    def rewrite(self, candidate, kernel, key, graph):
        return self._node(candidate, "NpuAttention", list(candidate.inputs), kernel, key)

    def npu(self, backend, key, kernel, cpu, q, kt, v):
        lead, (S, D), T = q.shape[:-2], q.shape[-2:], kt.shape[-1]
        B = int(np.prod(lead))
        # The kernel reads keys row-major [B, T, D] (the graph hands them transposed) and divides the
        # scores by sqrt(D), which Whisper's graph has already done through Q and K: Q is scaled back.
        inputs = {"q": q.reshape(B, S, D) * np.float32(np.sqrt(D)), "k": kt.reshape(B, D, T).transpose(0, 2, 1),
                  "v": v.reshape(B, T, D)}
        return backend.run(key, kernel, (B, S, T, D, T), inputs, cpu).reshape(*lead, S, D)

    def cpu(self, run, q, kt, v):
        return run("MatMul", [run("Softmax", [run("MatMul", [q, kt])], axis=-1), v])
