"""This machine's calibration of the cost model, measured once and cached per machine under
`npu_ep.paths.cache_dir()`.

It sits above the partition pass (whose cost model it feeds) and the provider (whose per-call host
work it measures), so neither of those imports the other.
"""
from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np

from npu_ep.forms.gemm import gemm_work
from npu_ep.partition.cost import Calibration, machine_id
from npu_ep.one_node import one_node_model
from npu_ep.paths import cache_dir
from npu_ep.timing import median_ms


def calibration(refresh: bool = False) -> Calibration:
    """This machine's calibration, measured once (about two seconds) and then read from the cache."""
    path = cache_dir() / "cpu_calibration.json"
    machine = machine_id()
    if not refresh and path.exists():
        try:
            cached = json.loads(path.read_text())
            if cached.get("machine") == machine:
                return Calibration(**cached)
        except (ValueError, TypeError):
            pass  # a damaged cache is measured again
    result = _measure(machine)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(result), indent=2))
    return result


def _one_node_session(op_type: str, a: np.ndarray, w: np.ndarray, domain: str = "", **attrs):
    """`a` times the constant `w` through `op_type` in its own session; returns the call to time."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    out_type = TensorProto.INT32 if op_type == "MatMulInteger" else TensorProto.FLOAT
    model = one_node_model(op_type, [("a", helper.np_dtype_to_tensor_dtype(a.dtype), list(a.shape))], out_type,
                           {"w": w}, domain=domain, **attrs)
    options = ort.SessionOptions()
    if domain:  # the provider's op: the custom-op library must be registered
        from npu_ep.provider import ops  # defines the ops before the library registers

        options.register_custom_ops_library(ops.library_path())
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return lambda: session.run(None, {"a": a})


def _activation_session(op_type: str, *operands: np.ndarray, **attrs):
    """`op_type` on activations only (attention's MatMul, Softmax) in its own session; returns the call to time."""
    import onnxruntime as ort
    from onnx import TensorProto

    names = ["a", "b"][:len(operands)]
    model = one_node_model(op_type, [(name, TensorProto.FLOAT, None) for name in names], TensorProto.FLOAT, **attrs)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feed = dict(zip(names, operands))
    return lambda: session.run(None, feed)


def _measure(machine: str) -> Calibration:
    rng = np.random.default_rng(0)
    M, K, N = 1500, 384, 1536
    a = rng.standard_normal((M, K), dtype=np.float32)
    w = rng.standard_normal((K, N), dtype=np.float32)
    gflops = 2 * M * K * N / median_ms(_one_node_session("MatMul", a, w), 5) / 1e6
    a8 = rng.integers(0, 255, (M, K), dtype=np.uint8)
    w8 = rng.integers(-127, 127, (K, N), dtype=np.int8)
    int8_gops = 2 * M * K * N / median_ms(_one_node_session("MatMulInteger", a8, w8), 5) / 1e6
    q = rng.standard_normal((6, 1500, 64), dtype=np.float32)
    kt = rng.standard_normal((6, 64, 1500), dtype=np.float32)
    batched_gflops = 2 * 6 * 1500 * 64 * 1500 / median_ms(_activation_session("MatMul", q, kt), 5) / 1e6
    scores = rng.standard_normal((6, 1500, 1500), dtype=np.float32)
    softmax_gelems = scores.size / median_ms(_activation_session("Softmax", scores, axis=-1), 5) / 1e6
    row = rng.standard_normal((1, 1536), dtype=np.float32)
    big = rng.standard_normal((1536, 1536), dtype=np.float32)
    mem_gbs = big.nbytes / median_ms(_one_node_session("MatMul", row, big), 20) / 1e6
    host_gbs = gemm_work(M, K, K, int8=False).host_bytes / max(host_call_ms(M, K, K, 7), 0.01) / 1e6
    tiny_a = rng.standard_normal((1, 8), dtype=np.float32)
    tiny_w = rng.standard_normal((8, 8), dtype=np.float32)
    cpu_fixed = median_ms(_one_node_session("MatMul", tiny_a, tiny_w), 50)
    op_call = median_ms(_one_node_session("NpuMatMul", tiny_a, tiny_w, domain="ai.onnx.contrib",
                                            node_key="calibrate@unbound", kernel="none"), 50)
    return Calibration(machine=machine, cpu_fixed_ms=cpu_fixed, cpu_gflops=gflops, cpu_int8_gops=int8_gops,
                       cpu_batched_gflops=batched_gflops, cpu_softmax_gelems=softmax_gelems, cpu_mem_gbs=mem_gbs, op_fixed_ms=max(op_call - cpu_fixed, 0.0), host_gbs=host_gbs)


def host_call_ms(M: int, K: int, N: int, repeat: int, seed: int = 3) -> float:
    """The provider's whole host path for one offloaded (M x K) @ (K x N) MatMul in a real ORT session:
    the onnxruntime-extensions bridge copying inputs (the weight included) and the output, packing,
    sync and run calls. On the emulated device with its kernel computing nothing and its own run time
    excluded, so what remains is the host's work."""
    from npu_ep import kernels
    from npu_ep.provider import emulator, ops

    rng = np.random.default_rng(seed)
    tag, backend = ops.bind("emulator")
    x = rng.standard_normal((M, K), dtype=np.float32)
    w = rng.standard_normal((K, N), dtype=np.float32)
    run = _one_node_session("NpuMatMul", x, w, domain="ai.onnx.contrib", node_key=f"calibrate@{tag}",
                            kernel=kernels.kernel_for("emulator", "bf16").name)
    with emulator.without_compute():
        host_ms = median_ms(run, repeat, excluded_seconds=lambda: emulator.stats.compute_seconds)
    del backend
    return host_ms
