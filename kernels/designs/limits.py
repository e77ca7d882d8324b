"""AIE-ML (XDNA / XDNA2 array) limits the designs are checked against, and the memory budget form.

Sources: AMD AM020 (Versal AI Edge Series AIE-ML Architecture Manual): 64 KB data memory per compute
tile, 512 KB per memory tile, 16 KB program memory per compute tile; mlir-aie gives every core a
stack in its data memory (1 KB unless a design asks for more). XDNA (npu1, Phoenix/Hawk Point) and
XDNA2 (npu2, Strix/Krackan) arrays: 4 compute rows; 4 and 8 columns for a whole-array design.
"""
from __future__ import annotations

from dataclasses import dataclass, field

KB = 1024
COMPUTE_TILE_DATA = 64 * KB
MEM_TILE = 512 * KB
CORE_STACK = 1 * KB
ROWS = 4
COLUMNS = {"npu1": 4, "npu2": 8}
ITEMSIZE = {"bf16": 2, "i8": 1, "f32": 4, "i32": 4}
# aie::mmul shapes (r x s x t) of the GEMM microkernels: the per-core tile must be a multiple.
MMUL = {("npu1", "bf16"): (4, 8, 4), ("npu1", "i8"): (4, 8, 8),
        ("npu2", "bf16"): (4, 8, 8), ("npu2", "i8"): (8, 8, 8)}
VECTOR_BF16 = 16  # bf16 lanes of one vector register (softmax, attention rows)
# Object-fifo depth 2 everywhere: the DMA fills one buffer while the core works on the other.
DEPTH = 2


class DesignError(ValueError):
    """An artifact this design cannot build; the message names the constraint and the reason."""


def require(condition: bool, reason: str) -> None:
    if not condition:
        raise DesignError(reason)


@dataclass
class Budget:
    """Memory of one compute tile (L1) and one memory tile (L2), each item with its arithmetic."""
    artifact: str
    l1: list[tuple[str, int, str]] = field(default_factory=list)   # (buffer, bytes, arithmetic)
    l2: list[tuple[str, int, str]] = field(default_factory=list)
    loops: dict[str, int] = field(default_factory=dict)             # compile-time loop counts

    @property
    def l1_bytes(self) -> int:
        return sum(size for _, size, _ in self.l1)

    @property
    def l2_bytes(self) -> int:
        return sum(size for _, size, _ in self.l2)

    def check(self) -> "Budget":
        require(self.l1_bytes <= COMPUTE_TILE_DATA,
                f"{self.artifact}: {self.l1_bytes} bytes per compute tile exceed its {COMPUTE_TILE_DATA} "
                f"bytes of data memory ({self.describe(self.l1)})")
        require(self.l2_bytes <= MEM_TILE,
                f"{self.artifact}: {self.l2_bytes} bytes per memory tile exceed its {MEM_TILE} bytes "
                f"({self.describe(self.l2)})")
        return self

    @staticmethod
    def describe(items: list[tuple[str, int, str]]) -> str:
        return ", ".join(f"{name} {arithmetic} = {size}" for name, size, arithmetic in items)

    def table(self) -> str:
        lines = [f"{self.artifact}", f"  L1 per compute tile: {self.l1_bytes} of {COMPUTE_TILE_DATA} bytes"]
        lines += [f"    {name}: {arithmetic} = {size}" for name, size, arithmetic in self.l1]
        lines.append(f"  L2 per memory tile: {self.l2_bytes} of {MEM_TILE} bytes")
        lines += [f"    {name}: {arithmetic} = {size}" for name, size, arithmetic in self.l2]
        lines.append("  loops: " + ", ".join(f"{name} = {count}" for name, count in self.loops.items()))
        return "\n".join(lines)


def check_array(artifact) -> None:
    """The design's core array is the device's whole array."""
    design = artifact.design
    require(design.device in COLUMNS, f"{artifact.identity}: unknown device {design.device!r}")
    require(design.rows == ROWS, f"{artifact.identity}: {design.rows} rows, but every column has {ROWS} compute tiles")
    require(design.cols == COLUMNS[design.device],
            f"{artifact.identity}: {design.cols} columns, but a whole-array {design.device} design uses "
            f"{COLUMNS[design.device]}")
