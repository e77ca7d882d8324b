"""The NPU provider: custom ops that run offloaded MatMuls on an XDNA device (or its emulator).

`create_session` is the one door the pipeline, quantize and bench use to open an ONNX file.
"""
from __future__ import annotations

from pathlib import Path

import onnxruntime as ort

DEVICES = ("auto", "cpu", "npu", "emulator")


def create_session(onnx_path: str | Path, device: str = "cpu", threads: int | None = None) -> ort.InferenceSession:
    """Open `onnx_path` for `device`; only the CPU path exists until the provider lands."""
    if device != "cpu":
        from npu_ep.errors import NpuEpError

        raise NpuEpError(f"--device {device}: the NPU provider is not available yet (use --device cpu)")
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
