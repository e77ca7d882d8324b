"""This machine's calibration of the cost model, measured once and cached per machine under
`npu_ep.paths.cache_dir()`.

It sits above the partition pass (whose cost model it feeds) and the provider (whose per-call host
work it measures), so neither of those imports the other.
"""
from __future__ import annotations

import json
import statistics
import time
from dataclasses import asdict

import numpy as np

from npu_ep.partition.cost import Calibration, host_bytes, machine_id
from npu_ep.paths import cache_dir


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


def _median_ms(fn, repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def _one_node_session(op_type: str, a: np.ndarray, w: np.ndarray, domain: str = "", **attrs):
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    out_type = TensorProto.INT32 if op_type == "MatMulInteger" else TensorProto.FLOAT
    node = helper.make_node(op_type, ["a", "w"], ["y"], domain=domain, **attrs)
    graph = helper.make_graph([node], "calibrate", [helper.make_tensor_value_info(
        "a", helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)], [helper.make_tensor_value_info("y", out_type, None)],
        [numpy_helper.from_array(w, "w")])
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    model = helper.make_model(graph, opset_imports=opsets)
    options = ort.SessionOptions()
    if domain:  # the provider's op, its key bound to no device ("@unbound"): the bridge and CPU path only
        from npu_ep.provider import ops  # defines the ops before the library registers

        options.register_custom_ops_library(ops.library_path())
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return lambda: session.run(None, {"a": a})


def _measure(machine: str) -> Calibration:
    rng = np.random.default_rng(0)
    M, K, N = 1500, 384, 1536
    a = rng.standard_normal((M, K), dtype=np.float32)
    w = rng.standard_normal((K, N), dtype=np.float32)
    gflops = 2 * M * K * N / _median_ms(_one_node_session("MatMul", a, w), 5) / 1e6
    a8 = rng.integers(0, 255, (M, K), dtype=np.uint8)
    w8 = rng.integers(-127, 127, (K, N), dtype=np.int8)
    int8_gops = 2 * M * K * N / _median_ms(_one_node_session("MatMulInteger", a8, w8), 5) / 1e6
    row = rng.standard_normal((1, 1536), dtype=np.float32)
    big = rng.standard_normal((1536, 1536), dtype=np.float32)
    mem_gbs = big.nbytes / _median_ms(_one_node_session("MatMul", row, big), 20) / 1e6
    host_gbs = _host_gbs(rng, M, K)
    tiny_a = rng.standard_normal((1, 8), dtype=np.float32)
    tiny_w = rng.standard_normal((8, 8), dtype=np.float32)
    cpu_fixed = _median_ms(_one_node_session("MatMul", tiny_a, tiny_w), 50)
    op_call = _median_ms(_one_node_session("NpuMatMul", tiny_a, tiny_w, domain="ai.onnx.contrib",
                                            node_key="calibrate@unbound", kernel="none"), 50)
    return Calibration(machine=machine, cpu_fixed_ms=cpu_fixed, cpu_gflops=gflops, cpu_int8_gops=int8_gops,
                       cpu_mem_gbs=mem_gbs, op_fixed_ms=max(op_call - cpu_fixed, 0.0), host_gbs=host_gbs)


def _host_gbs(rng: np.random.Generator, M: int, K: int) -> float:
    """The provider's whole host path (onnxruntime-extensions bridge copying inputs, the weight
    included, and the output; bf16 packing; sync and run calls) per byte, measured through a real
    session on the emulated device with the emulated kernel computing nothing."""
    from npu_ep import kernels
    from npu_ep.provider import emulator, ops

    tag, backend = ops.bind("emulator")
    x = rng.standard_normal((M, K), dtype=np.float32)
    square = rng.standard_normal((K, K), dtype=np.float32)
    run = _one_node_session("NpuMatMul", x, square, domain="ai.onnx.contrib", node_key=f"calibrate@{tag}",
                            kernel=kernels.kernel_for("emulator", "bf16").name)
    run()  # weight resident, buffers prepared
    with emulator.without_compute():
        host_ms = _median_ms(run, 7)
    del backend
    return host_bytes(M, K, K, int8=False) / max(host_ms, 0.01) / 1e6
