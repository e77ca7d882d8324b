"""The cost model: predicted time of one GEMM node on the CPU and through the NPU provider.

CPU side: this machine's `Calibration` (measured by `npu_ep.calibrate`, above this package and the
provider it measures): ONNX Runtime's own MatMul and MatMulInteger rates, plus the host copy rate
and the fixed cost of one Python custom-op call.
NPU side: the device profile (dispatch, measured whole-array GEMM rates, DMA overlapping them) plus the
host work this provider really does per call (bridge copies, packing), priced with the calibration.
"""
from __future__ import annotations

import os
import platform
from dataclasses import dataclass

from npu_ep.kernels import Design
from npu_ep.partition.profiles import DeviceProfile

CALIBRATION_VERSION = 4  # 4: the host path measured without the emulated device's own run time


@dataclass(frozen=True)
class Calibration:
    machine: str
    cpu_fixed_ms: float     # one small MatMul node
    cpu_gflops: float       # float32 MatMul, activation-heavy shape
    cpu_int8_gops: float    # MatMulInteger, same shape
    cpu_mem_gbs: float      # weight streaming rate of a one-row MatMul
    op_fixed_ms: float      # one Python custom-op call beyond a plain ORT node
    host_gbs: float         # the provider's host path per byte: bridge copies and packing


@dataclass(frozen=True)
class Estimate:
    cpu_ms: float
    npu_ms: float
    dispatch_ms: float
    transfer_ms: float
    compute_ms: float
    host_ms: float


def machine_id() -> str:
    import onnxruntime

    model = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{platform.node()}|{model}|{os.cpu_count()} cpus|onnxruntime {onnxruntime.__version__}|v{CALIBRATION_VERSION}"


def host_bytes(M: int, K: int, N: int, int8: bool) -> int:
    """Bytes the host path moves per call: bridge in (activation, weight), packing, bridge out."""
    size_host, size_in = (1, 1) if int8 else (4, 2)
    return M * K * size_host + K * N * size_host + M * K * (size_host + size_in) + M * N * 4


def cpu_ms(M: int, K: int, N: int, int8: bool, cal: Calibration) -> float:
    rate = (cal.cpu_int8_gops if int8 else cal.cpu_gflops) * 1e9
    weight_bytes = K * N * (1 if int8 else 4)
    return cal.cpu_fixed_ms + max(2 * M * K * N / rate, weight_bytes / (cal.cpu_mem_gbs * 1e9)) * 1e3


def estimate(M: int, K: int, N: int, int8: bool, kernel: Design, device: DeviceProfile,
             cal: Calibration) -> Estimate:
    """Predicted CPU time and NPU-provider time of a warm device: dispatch + device time (compute,
    or the shim DMAs where they take longer: they overlap) + host work."""
    Mp, Kp, Np = kernel.padded(M, K, N)
    size_in, size_out = (1, 4) if int8 else (2, 4)
    compute = device.compute_ms(2 * Mp * Kp * Np, int8)
    dma = ((M * Kp + Kp * Np) * size_in + M * Np * size_out) / (device.dma_gbs * 1e9) * 1e3
    transfer = max(0.0, dma - compute)  # what the DMAs add beyond the compute they overlap
    host = cal.op_fixed_ms + host_bytes(M, K, N, int8) / (cal.host_gbs * 1e9) * 1e3
    npu = device.dispatch_ms + compute + transfer + host
    return Estimate(cpu_ms(M, K, N, int8, cal), npu, device.dispatch_ms, transfer, compute, host)
