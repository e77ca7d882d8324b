"""NPU device profiles for the cost model, from published measurements (no NPU was available to
measure them here). Each figure names its source; figures derived from others say how; the one
figure no public source gave is marked as an assumption. Every time the cost model derives from
them is a projection, and the placement report shows what each decision does if a figure is 2x worse.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from npu_ep.errors import NpuEpError


@dataclass(frozen=True)
class DeviceProfile:
    name: str
    label: str
    peak_int8_tops: float        # rated int8 rate (2 ops per MAC): for reference, never used as a speed
    bf16_tflops: float           # measured whole-array GEMM rate, bf16 x bf16 -> f32
    int8_tops: float             # whole-array GEMM rate, int8 x int8 -> int32
    dma_gbs: float               # DRAM <-> array rate of one run's shim DMAs (overlaps the compute)
    dispatch_ms: float           # one warm kernel run: submit, start, wait, completion (XRT + firmware)
    cold_run_ms: float           # the first run after the device sat idle (clock at its lowest level)
    clock_ramp_s: float          # time for the clock to reach full speed after the driver raises it
    softmax_gelems: float        # row-wise bf16 softmax on the vector units, 10^9 elements per second

    def compute_ms(self, flops: float, int8: bool) -> float:
        return flops / ((self.int8_tops if int8 else self.bf16_tflops) * 1e12) * 1e3

    def vector_ms(self, elements: int) -> float:
        return elements / (self.softmax_gelems * 1e9) * 1e3


# The figures the placement report varies (each made 2x worse) and which way is worse.
FIGURES = {"bf16_tflops": 0.5, "int8_tops": 0.5, "dma_gbs": 0.5, "dispatch_ms": 2.0, "softmax_gelems": 0.5}

XDNA1 = DeviceProfile(
    name="xdna1",
    label="XDNA1 (Phoenix / Hawk Point, npu1)",
    # AMD: Ryzen 7040 "Phoenix" NPU up to 10 TOPS (Hawk Point 8040 up to 16 TOPS): the lower.
    peak_int8_tops=10.0,
    # nod-ai/iree-amd-aie PR #282: 1024x1024x1024 bf16 (f32 result) on the full 4x4 array of a
    # Phoenix NPU, timed through bare XRT: "about 0.6 tops". Xilinx/mlir-aie #2735 reports mlir-aie's
    # own whole-array example at most ~50 % of the array's bf16 peak (64x64x64 tiles), the same order.
    bf16_tflops=0.6,
    # Derived: no public whole-array int8 GEMM measurement on XDNA1 was found. AIE-ML cores do twice
    # as many int8 MACs per cycle as bf16 ones (AMD AM020: 256 vs 128), so twice the bf16 rate.
    int8_tops=1.2,
    # Assumption (no public figure found): the whole-array runs behind the measured rates above move
    # their operands through the shim DMAs while computing; 10 GB/s is a low share of LPDDR5's peak.
    dma_gbs=10.0,
    # `xrt-smi validate` latency test on a Phoenix NPU, default power mode: 121.3 us (quoted in
    # public xrt-smi logs).
    dispatch_ms=0.1213,
    # Xilinx/mlir-aie #2944: runs after a 10 s idle gap took 121-136 ms instead of 107-148 us; the
    # driver boots at its lowest DPM level (amd/xdna-driver #1416). We price the slower, 136 ms.
    cold_run_ms=136.0,
    # amd/xdna-driver #1425: the NPU clock reaches ~98 % of max ~3.5 s after a DPM change (Strix;
    # the same driver path on Phoenix).
    clock_ramp_s=3.5,
    # Xilinx/mlir-aie PR #2876: its softmax example (262,144 bf16 elements, programming_examples/ml/
    # softmax/softmax.py) in 141 us on 4 NPU2 cores = 1.86 G elements/s. Taken unscaled for the whole
    # XDNA1 array: 16 cores at a lower clock than NPU2's, with a table-lookup exp (aie2 lut_based_ops).
    softmax_gelems=1.86,
)

XDNA2 = DeviceProfile(
    name="xdna2",
    label="XDNA2 (Strix / Krackan, npu2)",
    # AMD: Ryzen AI 300 "Strix Point" NPU up to 50 TOPS.
    peak_int8_tops=50.0,
    # amd/IRON #55: 2048x2048x2048 bf16 GEMM, 64x64x64 tiles, 8 columns, on a Ryzen AI Max+ 395
    # (Strix Halo, the same XDNA2 array): 24,679 us = 696 GFLOP/s.
    bf16_tflops=0.696,
    # Derived as for XDNA1: twice the bf16 rate (AM020's 2:1 int8:bf16 MAC ratio holds for AIE-ML).
    int8_tops=1.392,
    # Assumption as for XDNA1, doubled for 8 shim columns instead of 4.
    dma_gbs=20.0,
    # `xrt-smi validate` latency on Strix: 84.2 us (an AMD-published figure; its primary source was
    # not found). amd/IRON #55's Strix Halo measured 52 us: we take the slower.
    dispatch_ms=0.0842,
    # Same driver and firmware behaviour as XDNA1 (mlir-aie #2944, xdna-driver #1425).
    cold_run_ms=136.0,
    clock_ramp_s=3.5,
    # The same measurement (mlir-aie PR #2876, 4 NPU2 cores), unscaled for the 32-core array.
    softmax_gelems=1.86,
)

# The emulated device stands in for an XDNA1: it runs the npu1 kernels, and placement for it is
# XDNA1's, so tests exercise the partition the real device would get. Its own speed (numpy on
# this CPU) is measured by the benchmarks, never projected from this profile.
EMULATOR = replace(XDNA1, name="emulator", label="emulated device (stands in for XDNA1)")

PROFILES = {profile.name: profile for profile in (XDNA1, XDNA2, EMULATOR)}


def profile(name: str) -> DeviceProfile:
    try:
        return PROFILES[name]
    except KeyError:
        raise NpuEpError(f"--device {name}: unknown NPU profile (use one of: {', '.join(PROFILES)})") from None


def worse(device: DeviceProfile, figure: str) -> DeviceProfile:
    """`device` with one figure of FIGURES made 2x worse."""
    return replace(device, **{figure: getattr(device, figure) * FIGURES[figure]})
