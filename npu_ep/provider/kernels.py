"""The GEMM kernel manifest (`kernels/manifest.json`): which xclbin and instruction files exist, their
tile sizes, data types and argument group ids, and the host-side padding they need."""
from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from npu_ep.errors import NpuEpError
from npu_ep.paths import shipped

# Device family of each partition profile's kernels; the emulator stands in for an XDNA1 (npu1).
FAMILY = {"xdna1": "npu1", "xdna2": "npu2", "emulator": "npu1"}
DTYPES = {"bf16": np.uint16, "f32": np.float32, "i8": np.int8, "i32": np.int32}


@dataclass(frozen=True)
class KernelEntry:
    name: str
    device: str
    xclbin: str
    insts: str
    kernel_name: str
    opcode: int
    m: int
    k: int
    n: int
    rows: int
    cols: int
    dtype_in: str
    dtype_out: str
    group_ids: dict

    def padded(self, M: int, K: int, N: int) -> tuple[int, int, int]:
        """(M, K, N) rounded up to what one whole-array run accepts."""
        def up(value: int, multiple: int) -> int:
            return -(-value // multiple) * multiple

        return up(M, self.m * self.rows), up(K, self.k), up(N, self.n * self.cols)

    def insts_name(self, M: int, K: int, N: int) -> str:
        return self.insts.format(M=M, K=K, N=N)


def kernels_dir() -> Path:
    """`$NPU_EP_KERNELS`, else the project's kernels/ (checkout or installed)."""
    env = os.environ.get("NPU_EP_KERNELS")
    return Path(env).expanduser() if env else shipped("kernels")


@functools.lru_cache(maxsize=None)
def manifest() -> dict[str, KernelEntry]:
    path = kernels_dir() / "manifest.json"
    if not path.exists():
        raise NpuEpError(f"{path}: kernel manifest missing (set NPU_EP_KERNELS to the project's kernels/ folder)")
    entries = {}
    for name, raw in json.loads(path.read_text())["kernels"].items():
        entries[name] = KernelEntry(
            name=name, device=raw["device"], xclbin=raw["xclbin"], insts=raw["insts"], kernel_name=raw["kernel_name"],
            opcode=raw["opcode"], m=raw["tile"]["m"], k=raw["tile"]["k"], n=raw["tile"]["n"],
            rows=raw["array"]["rows"], cols=raw["array"]["cols"], dtype_in=raw["dtype_in"],
            dtype_out=raw["dtype_out"], group_ids=raw["group_ids"],
        )
    return entries


def kernel_for(profile: str, dtype_in: str) -> KernelEntry:
    """The kernel a partition profile uses for `dtype_in` ("bf16" for float MatMuls, "i8" for int8)."""
    family = FAMILY[profile]
    for entry in manifest().values():
        if entry.device == family and entry.dtype_in == dtype_in:
            return entry
    raise NpuEpError(f"kernels/manifest.json: no {dtype_in} GEMM kernel for {family} (add one to the manifest)")


def read_instructions(entry: KernelEntry, M: int, K: int, N: int) -> np.ndarray | None:
    """The built instruction sequence for this problem size, or None if it was not built."""
    path = kernels_dir() / entry.insts_name(M, K, N)
    return np.fromfile(path, dtype=np.uint32) if path.exists() else None
