"""The op-form registry: every way a node (or a block of nodes) of a model becomes one offloaded
custom node, one class per form, in the style of onnxruntime.quantization's operator registry.

`FORMS` is in match order. A node gets the first ordinary form that matches it; block forms
(attention, a whole encoder layer) are matched beside their parts, and the planner keeps the better.
`SIGNATURES` maps each custom op type to its form, for the provider's op registration.
"""
from __future__ import annotations

import onnx

from npu_ep.forms.attention import AttentionForm, BatchedMatMulForm, SoftmaxForm
from npu_ep.forms.base import DOMAIN, Candidate, Form, Gemm, GraphIndex, Signature, Work, weight_digest
from npu_ep.forms.gemm import ConvGemmForm, GemmForm, MatMulForm, MatMulIntegerForm, QdqMatMulForm
from npu_ep.forms.layer import EncoderLayerForm, EncoderLayerInt8Form

FORMS: tuple[Form, ...] = (MatMulForm(), QdqMatMulForm(), GemmForm(), MatMulIntegerForm(), ConvGemmForm(),
                           AttentionForm(), BatchedMatMulForm(), SoftmaxForm(), EncoderLayerForm(),
                           EncoderLayerInt8Form())
BY_NAME = {form.name: form for form in FORMS}
SIGNATURES: dict[str, tuple[Form, Signature]] = {s.op_type: (form, s) for form in FORMS for s in form.signatures}


def match(graph: onnx.GraphProto) -> list[Candidate]:
    """Every candidate of `graph`, in graph order: at most one ordinary form per node, plus blocks."""
    index = GraphIndex(graph)
    found = []
    for node in graph.node:
        taken = False
        for form in FORMS:
            if node.op_type not in form.op_types or (taken and not form.block):
                continue
            candidate = form.match(node, index)
            if candidate is not None:
                found.append(candidate)
                taken = taken or not form.block
    return found


__all__ = ["DOMAIN", "FORMS", "BY_NAME", "SIGNATURES", "Candidate", "Form", "Gemm", "Work", "match",
           "weight_digest"]
