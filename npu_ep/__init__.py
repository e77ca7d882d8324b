"""npu_ep: Whisper on ONNX Runtime, with large MatMuls offloaded to the AMD XDNA NPU."""
__version__ = "0.1.0"

from npu_ep.whisper.pipeline import Pipeline, transcribe  # noqa: E402  (numpy only; sessions open on use)
from npu_ep.export import export_model, resolve_model  # noqa: E402  (torch loads only when exporting)
from npu_ep.quantize import quantize_model  # noqa: E402  (onnxruntime.quantization loads only when quantizing)


def session_options(device: str = "auto"):
    """onnxruntime.SessionOptions with the NPU provider's custom ops registered (see npu_ep.provider)."""
    from npu_ep.provider import session_options as _session_options

    return _session_options(device)

from npu_ep import partition  # noqa: E402,F401  (callable: npu_ep.partition(model, device="xdna1"))
