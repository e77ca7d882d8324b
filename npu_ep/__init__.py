"""npu_ep: Whisper on ONNX Runtime, with large MatMuls offloaded to the AMD XDNA NPU.

Importing it stays light: torch loads only when exporting, onnxruntime.quantization only when quantizing.
"""
__version__ = "0.1.0"

from npu_ep.export import export_model, resolve_model
from npu_ep.quantize import quantize_model
from npu_ep.whisper.pipeline import Pipeline, transcribe


def session_options(device: str = "auto", threads: int | None = None):
    """onnxruntime.SessionOptions with the NPU provider's custom ops registered (see npu_ep.provider)."""
    from npu_ep.provider import session_options as _session_options

    return _session_options(device, threads)


from npu_ep import partition  # noqa: E402  (callable: npu_ep.partition(model, device="xdna1"))

__all__ = [
    "Pipeline",
    "export_model",
    "partition",
    "quantize_model",
    "resolve_model",
    "session_options",
    "transcribe",
]
