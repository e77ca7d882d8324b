"""One-node ONNX models: how the CPU fallbacks run an op, and how calibration and bench time one."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

OPSET = 17


def one_node_model(op_type: str, inputs: list[tuple[str, int, list[int] | None]], output_type: int,
                   initializers: dict[str, np.ndarray] | None = None, domain: str = "",
                   output_shape: list[int] | None = None, **attrs) -> onnx.ModelProto:
    """A model of one `op_type` node reading `inputs` ((name, element type, shape or None) graph inputs)
    and `initializers` (constant inputs, after the graph inputs), writing output "y"."""
    initializers = initializers or {}
    names = [name for name, _, _ in inputs] + list(initializers)
    node = helper.make_node(op_type, names, ["y"], name=op_type, domain=domain, **attrs)
    graph = helper.make_graph(
        [node], op_type,
        [helper.make_tensor_value_info(name, elem, shape) for name, elem, shape in inputs],
        [helper.make_tensor_value_info("y", output_type, output_shape)],
        [numpy_helper.from_array(value, name) for name, value in initializers.items()])
    opsets = [helper.make_opsetid("", OPSET)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    return helper.make_model(graph, opset_imports=opsets)
