"""Whisper checkpoints -> ONNX Runtime models (`npu-ep export`), and the one door to exported folders.

Importing this package stays light: torch, transformers and optimum load only when an export runs.
"""
from npu_ep.export.resolve import export_model, rebuild_command, resolve_model
from npu_ep.export.weights import KNOWN_MODELS, ct2_model_dir

__all__ = ["KNOWN_MODELS", "ct2_model_dir", "export_model", "rebuild_command", "resolve_model"]
