"""The CPU result of an offloaded node, computed by ONNX Runtime's own kernel for that op.

Fallbacks (no device, failed run, CPU-only sessions) must give exactly what the CPU model gives,
so they run the original op type in a one-node ORT session rather than a numpy approximation. That
session uses the thread count of the session whose node it stands in for (`threads`, set by the
node's Backend around each CPU result, else the process default of `session_options`): with ORT's
default, each fallback would spread over every core whatever `--threads` said.
"""
from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from contextvars import ContextVar

import numpy as np
import onnxruntime as ort
from onnx import TensorProto

from npu_ep.one_node import one_node_model

_ELEM = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.int8): TensorProto.INT8,
         np.dtype(np.uint8): TensorProto.UINT8, np.dtype(np.int32): TensorProto.INT32,
         np.dtype(np.int64): TensorProto.INT64}


_threads: ContextVar[int | None] = ContextVar("npu_ep_cpu_threads", default=None)
_default_threads: int | None = None


def set_default_threads(count: int | None) -> None:
    """The thread count of fallbacks run outside any Backend (sessions opened with `session_options`)."""
    global _default_threads
    _default_threads = count


@contextlib.contextmanager
def threads(count: int | None) -> Iterator[None]:
    """Run the fallbacks inside with `count` intra-op threads (None: the process default)."""
    token = _threads.set(count)
    try:
        yield
    finally:
        _threads.reset(token)


@functools.lru_cache(maxsize=None)
def _session(op_type: str, in_types: tuple, out_type: int, attrs: tuple, threads: int | None) -> ort.InferenceSession:
    model = one_node_model(op_type, [(f"in{i}", t, None) for i, t in enumerate(in_types)], out_type, **dict(attrs))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def run(op_type: str, inputs: list[np.ndarray], out_type: int = TensorProto.FLOAT, **attrs) -> np.ndarray:
    """Run one ONNX op on the CPU EP (e.g. run("MatMul", [a, w]))."""
    count = _threads.get() or _default_threads
    frozen = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in attrs.items()))
    session = _session(op_type, tuple(_ELEM[x.dtype] for x in inputs), out_type, frozen, count)
    return session.run(None, {f"in{i}": x for i, x in enumerate(inputs)})[0]
