"""The custom ops that carry offloaded nodes (onnxruntime-extensions Python ops, domain ai.onnx.contrib):
one per signature of each op form in npu_ep.forms, which holds the NPU call and the CPU reference.

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
from npu_ep.forms import SIGNATURES, Form, Signature
from npu_ep.provider import cpu_ops
from npu_ep.provider.xrt_backend import Backend


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

_TYPES = {"float32": PyCustomOpDef.dt_float, "int8": PyCustomOpDef.dt_int8, "uint8": PyCustomOpDef.dt_uint8,
          "int32": PyCustomOpDef.dt_int32}
_STR, _INT = PyCustomOpDef.dt_string, PyCustomOpDef.dt_int64
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


def _op(form: Form, signature: Signature):
    """The Python op of one form's custom-op signature: the form's NPU call on the node's Backend,
    its CPU reference when the node has none or the device faults."""
    def body(*inputs: np.ndarray, node_key: str, kernel: str, **attrs) -> np.ndarray:
        key, backend = _backend(node_key)
        cpu = lambda: form.cpu(cpu_ops.run, *inputs, **attrs)  # noqa: E731
        if backend is None:
            return cpu()
        return form.npu(backend, key, kernel, cpu, *inputs, **attrs)

    attrs = {**_KEYS, **dict.fromkeys(signature.int_attrs, _INT)}
    onnx_op(op_type=signature.op_type, inputs=[_TYPES[t] for t in signature.inputs],
            outputs=[_TYPES[t] for t in signature.outputs], attrs=attrs)(body)


for _form, _signature in SIGNATURES.values():
    _op(_form, _signature)
