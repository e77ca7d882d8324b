"""The NPU provider: custom ops that run offloaded MatMuls on an XDNA device (or its emulator).

`ops` defines the ops (onnxruntime-extensions Python ops), `xrt_backend` runs them through pyxrt or
the pyxrt-compatible `emulator`, `cpu_ops` gives their CPU result. Sessions that use them are opened
by `npu_ep.session`.
"""
