"""The partition pass: place GEMM nodes on the NPU or CPU with the cost model and rewrite the model
(`npu_ep.partition.planner`, `npu-ep partition`).

The package itself is callable, `npu_ep.partition(model_path_or_proto, device="xdna1")`, because
the public API promises a function of that name and a subpackage import would shadow a function.
"""
from __future__ import annotations

import sys
import types


class _CallablePackage(types.ModuleType):
    def __call__(self, model_path_or_proto, device: str = "xdna1"):
        """The onnx.ModelProto with its NPU-worthy GEMMs rewritten into the provider's custom ops."""
        from npu_ep.partition.planner import partition

        return partition(model_path_or_proto, device)


sys.modules[__name__].__class__ = _CallablePackage
