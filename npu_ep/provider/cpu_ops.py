"""The CPU result of an offloaded node, computed by ONNX Runtime's own kernel for that op.

Fallbacks (no device, failed run, CPU-only sessions) must give exactly what the CPU model gives,
so they run the original op type in a one-node ORT session rather than a numpy approximation.
"""
from __future__ import annotations

import functools

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper

_ELEM = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.int8): TensorProto.INT8,
         np.dtype(np.uint8): TensorProto.UINT8, np.dtype(np.int32): TensorProto.INT32}


@functools.lru_cache(maxsize=None)
def _session(op_type: str, in_types: tuple, out_type: int, attrs: tuple) -> ort.InferenceSession:
    names = [f"in{i}" for i in range(len(in_types))]
    node = helper.make_node(op_type, names, ["out"], **dict(attrs))
    graph = helper.make_graph(
        [node], op_type,
        [helper.make_tensor_value_info(n, t, None) for n, t in zip(names, in_types)],
        [helper.make_tensor_value_info("out", out_type, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def run(op_type: str, inputs: list[np.ndarray], out_type: int = TensorProto.FLOAT, **attrs) -> np.ndarray:
    """Run one ONNX op on the CPU EP (e.g. run("MatMul", [a, w]))."""
    session = _session(op_type, tuple(_ELEM[x.dtype] for x in inputs), out_type, tuple(sorted(attrs.items())))
    return session.run(None, {f"in{i}": x for i, x in enumerate(inputs)})[0]
