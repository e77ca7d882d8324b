"""The custom ops that carry offloaded nodes (onnxruntime-extensions Python ops, domain ai.onnx.contrib).

Python ops are process-global functions keyed by op type, and ORT hands them only inputs and
string attributes. So each node carries a stable `node_key` (node name + weight digest), and a
process registry maps it to device state: keys of the form "<key>@<tag>" (stamped by
`create_session`) go to that session's own Backend, plain keys to the process default set by
`session_options(device)`. A Backend lives as long as its session (weak reference), and keeps each
node's weight resident on the device; ORT passes the weight initializer again on every call, which
is only fingerprinted (64 sampled values), never converted again.
"""
from __future__ import annotations

import importlib
import importlib.abc
import itertools
import sys
import threading
import weakref

import numpy as np
from onnx import TensorProto

from npu_ep.provider import cpu_ops
from npu_ep.provider.xrt_backend import Backend, fingerprint


class _Blocked(importlib.abc.MetaPathFinder):
    """Makes `names` fail to import, in one thread only: other threads import them as usual."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self.names, self.thread = names, threading.get_ident()

    def find_spec(self, fullname, path=None, target=None):
        if threading.get_ident() == self.thread and fullname.partition(".")[0] in self.names:
            raise ModuleNotFoundError(f"{fullname} is not loaded with the NPU provider", name=fullname)
        return None


def _import_extensions():
    # The package's __init__ imports its tokenizer converters, which import transformers and torch
    # when installed (seconds and hundreds of MB: docs/measurements.md); its custom-op API needs neither,
    # so those two imports are made to fail (the converters catch that, and stay off in this process).
    # A finder that refuses them to this thread alone, rather than None in sys.modules: a threaded server
    # importing torch or transformers elsewhere meanwhile must not see them broken.
    blocked = _Blocked(("torch", "transformers"))
    sys.meta_path.insert(0, blocked)
    try:
        return importlib.import_module("onnxruntime_extensions")
    finally:
        sys.meta_path.remove(blocked)


_extensions = _import_extensions()
PyCustomOpDef, Opdef, onnx_op = _extensions.PyCustomOpDef, _extensions.Opdef, _extensions.onnx_op

_F, _I8, _U8, _I32, _STR, _INT = (PyCustomOpDef.dt_float, PyCustomOpDef.dt_int8, PyCustomOpDef.dt_uint8,
                                  PyCustomOpDef.dt_int32, PyCustomOpDef.dt_string, PyCustomOpDef.dt_int64)
_KEYS = {"node_key": _STR, "kernel": _STR}

_bindings: dict[str, weakref.ref] = {}
_tags = itertools.count(1)
_default: dict[str, object] = {"device": "cpu", "backend": None}


def library_path() -> str:
    """The onnxruntime-extensions library that bridges ORT to the Python ops above."""
    return _extensions.get_library_path()


def set_default_device(device: str, threads: int | None = None) -> None:
    """Where nodes without a session tag run: "npu", "emulator" or "cpu", their CPU results on `threads`."""
    cpu_ops.set_default_threads(threads)
    if _default["device"] != device or (_default["backend"] and _default["backend"].threads != threads):
        _default["device"] = device
        _default["backend"] = None if device == "cpu" else Backend(device, threads)


def bind(device: str, threads: int | None = None) -> tuple[str, Backend]:
    """A fresh Backend for one session (`threads`: its intra-op threads) and the tag its node keys carry."""
    tag = f"s{next(_tags)}"
    backend = Backend(device, threads)
    _bindings[tag] = weakref.ref(backend, lambda _ref, tag=tag: _bindings.pop(tag, None))
    return tag, backend


def _backend(node_key: str) -> tuple[str, Backend | None]:
    key, _, tag = node_key.partition("@")
    if tag:
        ref = _bindings.get(tag)
        return key, ref() if ref else None
    return key, _default["backend"]


def _invoke(k_id, feed, attributes):
    # Same contract as onnxruntime-extensions' own hook, but outputs go back as numpy arrays:
    # the stock hook turns them into Python lists (tens of ms for an encoder-sized output), and the
    # C++ side accepts arrays as they are.
    op = Opdef._odlist[k_id]
    result = op.body(*feed, **op.cast_attributes(attributes))
    outputs = result if isinstance(result, tuple) else (result,)
    fetch = [k_id]
    for value in outputs:
        fetch.append(value.shape)
        fetch.append(value.flatten().tolist() if value.dtype == object else np.ascontiguousarray(value).reshape(-1))
    return tuple(fetch)


PyCustomOpDef.install_hooker(_invoke)


@onnx_op(op_type="NpuMatMul", inputs=[_F, _F], outputs=[_F], attrs=_KEYS)
def npu_matmul(a: np.ndarray, w: np.ndarray, node_key: str, kernel: str) -> np.ndarray:
    key, backend = _backend(node_key)
    cpu = lambda: cpu_ops.run("MatMul", [a, w])  # noqa: E731
    if backend is None:
        return cpu()
    return backend.gemm(key, kernel, a, lambda: w, fingerprint(w), cpu)


@onnx_op(op_type="NpuGemm", inputs=[_F, _F, _F], outputs=[_F], attrs={**_KEYS, "trans_b": _INT})
def npu_gemm(a: np.ndarray, w: np.ndarray, c: np.ndarray, node_key: str, kernel: str, trans_b: int) -> np.ndarray:
    """Gemm with alpha = beta = 1 and no transposed A (the partition pass checks)."""
    key, backend = _backend(node_key)
    cpu = lambda: cpu_ops.run("Gemm", [a, w, c], transB=trans_b)  # noqa: E731
    if backend is None:
        return cpu()
    return backend.gemm(key, kernel, a, lambda: w.T if trans_b else w, fingerprint(w), cpu, finish=lambda y: y + c)


@onnx_op(op_type="NpuMatMulInteger", inputs=[_U8, _I8, _U8, _I8], outputs=[_I32], attrs=_KEYS)
def npu_matmul_integer(a: np.ndarray, w: np.ndarray, a_zero: np.ndarray, w_zero: np.ndarray,
                       node_key: str, kernel: str) -> np.ndarray:
    """MatMulInteger with uint8 activations and int8 weights whose zero point is 0."""
    key, backend = _backend(node_key)
    cpu = lambda: cpu_ops.run("MatMulInteger", [a, w, a_zero, w_zero], TensorProto.INT32)  # noqa: E731
    if backend is None:
        return cpu()
    return backend.gemm(key, kernel, a, lambda: w, fingerprint(w), cpu, a_zero=int(a_zero))


def _qdq(a_q, a_scale, a_zero, w_q, w_scale, w_zero, node_key, kernel):
    key, backend = _backend(node_key)

    def cpu() -> np.ndarray:
        # The float MatMul of the dequantized tensors, as the QDQ graph defines it.
        a = cpu_ops.run("DequantizeLinear", [a_q, a_scale, a_zero])
        w = cpu_ops.run("DequantizeLinear", [w_q, w_scale, w_zero], axis=1) if w_scale.size > 1 else \
            cpu_ops.run("DequantizeLinear", [w_q, w_scale, w_zero])
        return cpu_ops.run("MatMul", [a, w])

    if backend is None:
        return cpu()
    scale = np.float32(a_scale) * w_scale.astype(np.float32)
    return backend.gemm(key, kernel, a_q, lambda: w_q, fingerprint(w_q), cpu, a_zero=int(a_zero),
                        finish=lambda acc: np.multiply(acc, scale, dtype=np.float32))


@onnx_op(op_type="NpuQdqMatMul", inputs=[_I8, _F, _I8, _I8, _F, _I8], outputs=[_F], attrs=_KEYS)
def npu_qdq_matmul(a_q, a_scale, a_zero, w_q, w_scale, w_zero, node_key: str, kernel: str) -> np.ndarray:
    """DequantizeLinear(a) @ DequantizeLinear(w) for int8 activations, int8 weights (zero point 0)."""
    return _qdq(a_q, a_scale, a_zero, w_q, w_scale, w_zero, node_key, kernel)


@onnx_op(op_type="NpuQdqMatMulU8", inputs=[_U8, _F, _U8, _I8, _F, _I8], outputs=[_F], attrs=_KEYS)
def npu_qdq_matmul_u8(a_q, a_scale, a_zero, w_q, w_scale, w_zero, node_key: str, kernel: str) -> np.ndarray:
    """As NpuQdqMatMul, for uint8 activations."""
    return _qdq(a_q, a_scale, a_zero, w_q, w_scale, w_zero, node_key, kernel)

