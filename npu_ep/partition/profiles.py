"""NPU device profiles for the cost model. No NPU was available to measure these: each figure is
a published peak or a stated assumption, with its source beside it, and every time the cost model
derives from them is a projection."""
from __future__ import annotations

from dataclasses import dataclass, replace

from npu_ep.errors import NpuEpError


@dataclass(frozen=True)
class DeviceProfile:
    name: str
    label: str
    peak_int8_tops: float       # int8 multiply-accumulate rate, 2 ops per MAC
    peak_bf16_tflops: float
    sustained_fraction: float   # share of peak a whole-array GEMM reaches on Whisper-sized problems
    host_bandwidth_gbs: float   # host <-> device buffer transfer rate seen by one run
    dispatch_ms: float          # one kernel run: submit, start, wait, completion (XRT + firmware)

    def compute_ms(self, flops: float, int8: bool) -> float:
        rate = (self.peak_int8_tops if int8 else self.peak_bf16_tflops) * 1e12 * self.sustained_fraction
        return flops / rate * 1e3


XDNA1 = DeviceProfile(
    name="xdna1",
    label="XDNA1 (Phoenix / Hawk Point, npu1)",
    # AMD: Ryzen 7040 "Phoenix" NPU up to 10 TOPS (Hawk Point 8040 up to 16 TOPS): we take the lower.
    peak_int8_tops=10.0,
    # AIE-ML cores do half as many bf16 MACs per cycle as int8 ones (AMD AM020 AIE-ML architecture
    # manual: 256 int8 vs 128 bf16 MACs/cycle/tile), so half the int8 peak.
    peak_bf16_tflops=5.0,
    # Assumption: mlir-aie's whole-array GEMM examples report a fraction of peak well below one;
    # 0.3 leaves room for the DMA/tiling stalls of K = 384..2048 problems.
    sustained_fraction=0.3,
    # Assumption: host_only buffers live in shared LPDDR5 (~100 GB/s peak); the 4 shim-tile DMA
    # columns sustain far less; 10 GB/s is a conservative round figure.
    host_bandwidth_gbs=10.0,
    # Assumption: XRT run submit + wait on amdxdna is on the order of 0.1-0.3 ms; we take 0.25 ms.
    dispatch_ms=0.25,
)

XDNA2 = DeviceProfile(
    name="xdna2",
    label="XDNA2 (Strix / Krackan, npu2)",
    # AMD: Ryzen AI 300 "Strix Point" NPU up to 50 TOPS.
    peak_int8_tops=50.0,
    # Same half-rate assumption for bf16 as on XDNA1.
    peak_bf16_tflops=25.0,
    # Same assumption as XDNA1.
    sustained_fraction=0.3,
    # Assumption: 8 shim columns instead of 4, so twice XDNA1's transfer rate.
    host_bandwidth_gbs=20.0,
    # Assumption: same XRT/driver path as XDNA1.
    dispatch_ms=0.25,
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
