"""npu_ep: Whisper on ONNX Runtime, with large MatMuls offloaded to the AMD XDNA NPU.

Importing it stays light: torch loads only when exporting, onnxruntime.quantization only when quantizing.
"""
__version__ = "0.1.0"

from npu_ep.export import export_model, resolve_model
from npu_ep.quantize import quantize_model
from npu_ep.whisper.decoding import DecodeOptions
from npu_ep.whisper.pipeline import Pipeline, transcribe


def session_options(device: str = "auto", threads: int | None = None):
    """onnxruntime.SessionOptions with the NPU provider's custom ops registered (see npu_ep.session)."""
    from npu_ep.session import session_options as _session_options

    return _session_options(device, threads)


from npu_ep import partition  # noqa: E402


class _CallablePackage(type(partition)):
    """`npu_ep.partition(model, device)` is a function of the public API and also the package's name:
    a subpackage import would shadow a plain function, so the package itself is made callable."""

    def __call__(self, model_path_or_proto, device: str = "xdna1"):
        """The onnx.ModelProto with its NPU-worthy GEMMs rewritten into the provider's custom ops."""
        from npu_ep import calibrate
        from npu_ep.partition.planner import partition as _partition

        return _partition(model_path_or_proto, device, calibrate.calibration())


partition.__class__ = _CallablePackage

__all__ = [
    "DecodeOptions",
    "Pipeline",
    "export_model",
    "partition",
    "quantize_model",
    "resolve_model",
    "session_options",
    "transcribe",
]
