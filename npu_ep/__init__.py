"""npu_ep: Whisper on ONNX Runtime, with large MatMuls offloaded to the AMD XDNA NPU."""
__version__ = "0.1.0"
