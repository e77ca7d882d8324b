"""The cost model: predicted time of one candidate's `Work` (npu_ep.forms) on the CPU and through
the NPU provider.

CPU side: this machine's `Calibration` (measured by `npu_ep.calibrate`, above this package and the
provider it measures): the rates of ONNX Runtime's own kernels the CPU path runs (MatMul with a
weight, MatMulInteger, attention's batched MatMul, Softmax), plus the host copy rate and the fixed
cost of one Python custom-op call.
NPU side: the device profile (dispatch, measured whole-array GEMM and softmax rates, DMA
overlapping them) plus the host work this provider really does per call (bridge copies, packing,
layout), priced with the calibration.
"""
from __future__ import annotations

import math
import os
import platform
from dataclasses import dataclass

from npu_ep.forms import Work
from npu_ep.kernels import Design
from npu_ep.partition.profiles import DeviceProfile

CALIBRATION_VERSION = 5  # 4: the host path measured without the emulated device's own run time; 5: batched MatMul and Softmax rates


@dataclass(frozen=True)
class Calibration:
    machine: str
    cpu_fixed_ms: float     # one small MatMul node
    cpu_gflops: float       # float32 MatMul, activation-heavy shape
    cpu_int8_gops: float    # MatMulInteger, same shape
    cpu_batched_gflops: float  # float32 MatMul of two activations over 6 heads (attention's shapes)
    cpu_softmax_gelems: float  # Softmax over the last axis, 10^9 elements per second
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


_VECTOR_BYTES = 8  # per element of a layer's elementwise work on the CPU: a float32 read and a write


def cpu_ms(work: Work, cal: Calibration) -> float:
    """ONNX Runtime's CPU time for the nodes a candidate replaces: per node a fixed cost, GEMMs at the
    calibrated rate of their kind (bounded below by streaming a weight), Softmax at its rate. A GEMM
    with its own int8 flag (a fused layer's) replaces float nodes: the CPU runs it in float. A layer's
    norms, GELU and residual adds are priced as streaming memory (one float read and one written per
    element), a lower bound: no CPU elementwise rate is calibrated."""
    nodes = len(work.gemms) + (1 if work.softmax else 0)

    def rate(g) -> float:
        if work.int8 and g.int8 is None:
            return cal.cpu_int8_gops
        return cal.cpu_gflops if g.batch == 1 else cal.cpu_batched_gflops

    flops_s = sum(g.flops / (rate(g) * 1e9) for g in work.gemms)
    gemm_s = max(flops_s, work.weight_bytes / (cal.cpu_mem_gbs * 1e9)) if work.gemms else 0.0
    vector_s = work.vector * _VECTOR_BYTES / (cal.cpu_mem_gbs * 1e9)
    return nodes * cal.cpu_fixed_ms + (gemm_s + work.softmax / (cal.cpu_softmax_gelems * 1e9) + vector_s) * 1e3


def estimate(work: Work, kernel: Design, device: DeviceProfile, cal: Calibration) -> Estimate:
    """Predicted CPU time and NPU-provider time of a warm device: dispatch + device time (compute,
    or the shim DMAs where they take longer: they overlap) + host work. The device computes and
    moves the problem padded to the design's multiples."""
    padding = math.prod(kernel.padded(*work.dims)) / math.prod(work.dims)
    gemm_ms = sum(device.compute_ms(g.flops, work.int8 if g.int8 is None else g.int8) for g in work.gemms)
    # Norms, GELU and residuals on the vector units at the measured softmax rate (the one vector-unit figure).
    compute = (gemm_ms + device.vector_ms(work.softmax + work.vector)) * padding
    dma = (work.to_device + work.from_device + work.resident_bytes) * padding / (device.dma_gbs * 1e9) * 1e3
    transfer = max(0.0, dma - compute)  # what the DMAs add beyond the compute they overlap
    host = cal.op_fixed_ms + work.host_bytes / (cal.host_gbs * 1e9) * 1e3
    # A reconfiguration inside a run is priced as one more command (no public figure found for it).
    dispatch = device.dispatch_ms * (work.dispatches + work.reconfigurations)
    return Estimate(cpu_ms(work, cal), dispatch + compute + transfer + host, dispatch, transfer, compute, host)
