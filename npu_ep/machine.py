"""The CPU this process runs on: its model name and the instruction-set features that decide which int8
kernels ONNX Runtime's CPU EP (MLAS) picks, and so whether they compute int8 products exactly."""
from __future__ import annotations

import functools
import platform
from dataclasses import dataclass
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")
# /proc/cpuinfo flag -> the name printed. The order is the order printed.
FEATURES = {
    "avx2": "AVX2",
    "avx512f": "AVX-512F",
    "avx512_vnni": "AVX512-VNNI",
    "avx_vnni": "AVX-VNNI",
    "amx_int8": "AMX-INT8",
}
# numpy's own CPUID probe, for the features it knows (it has no name for AVX-VNNI or AMX).
_NUMPY_NAMES = {"avx2": "AVX2", "avx512f": "AVX512F", "avx512_vnni": "AVX512VNNI"}
# The features with which MLAS multiplies u8 x s8 straight into int32 (vpdpbusd, tdpbusd). Without them it
# uses vpmaddubsw, which adds pairs of products in int16 with saturation: not exact for full-range int8.
EXACT_INT8 = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})


@dataclass(frozen=True)
class Cpu:
    model: str
    features: frozenset[str]  # keys of FEATURES
    source: str  # where the features were read

    @property
    def exact_int8(self) -> bool:
        """Whether ONNX Runtime's u8 x s8 GEMM is exact here for full-range (8-bit) weights."""
        return bool(self.features & EXACT_INT8)

    def feature_names(self) -> list[str]:
        return [name for flag, name in FEATURES.items() if flag in self.features]

    def describe(self) -> str:
        """One line: model name and the relevant features, e.g. "Intel(R) Xeon(R) Processor (AVX2, AVX-512F)"."""
        return f"{self.model} ({', '.join(self.feature_names()) or 'none of ' + ', '.join(FEATURES.values())})"

    def as_dict(self) -> dict:
        return {"model": self.model, "features": self.feature_names(), "exact_int8": self.exact_int8,
                "source": self.source}


def _numpy_features() -> dict[str, bool]:
    """What the CPU itself answers to CPUID, as numpy probed it at import (flag -> present)."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__
    except ImportError:  # numpy < 2
        from numpy.core._multiarray_umath import __cpu_features__
    return {flag: bool(__cpu_features__.get(name)) for flag, name in _NUMPY_NAMES.items()}


def parse_cpuinfo(text: str) -> tuple[str | None, set[str]]:
    """(model name, flags) of the first processor in /proc/cpuinfo text."""
    model, flags = None, set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model is None:
            model = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
    return model, flags


def read_cpu(cpuinfo: str | None = None, probed: dict[str, bool] | None = None) -> Cpu:
    """The CPU from /proc/cpuinfo (or `cpuinfo` text), checked against numpy's CPUID probe (or `probed`).

    An emulator such as qemu-user shows the host's /proc/cpuinfo to the process it emulates: when the two
    disagree on a feature both know, CPUID describes the CPU that actually runs the code, and the features
    only /proc/cpuinfo names (AVX-VNNI, AMX) are not trusted either.
    """
    if cpuinfo is None:
        try:
            cpuinfo = CPUINFO.read_text(errors="replace")
        except OSError:
            cpuinfo = ""
    probed = _numpy_features() if probed is None else probed
    model, flags = parse_cpuinfo(cpuinfo)
    model = model or platform.processor() or platform.machine() or "unknown CPU"
    listed = {flag for flag in FEATURES if flag in flags}
    if not flags:
        return Cpu(model, frozenset(flag for flag, present in probed.items() if present), "CPUID (numpy)")
    if all((flag in listed) == present for flag, present in probed.items()):
        return Cpu(model, frozenset(listed), str(CPUINFO))
    return Cpu(model, frozenset(flag for flag, present in probed.items() if present),
               f"CPUID (numpy; {CPUINFO} disagrees, e.g. under an emulator)")


@functools.cache
def cpu() -> Cpu:
    """This process's CPU, read once."""
    return read_cpu()
