"""The NPU kernel interface (`kernels/manifest.json`): kernel kinds, designs and built artifacts.

A *design* is a kernel kind (gemm, batched_gemm, softmax, attention, encoder_layer) for one data
type and device family, with its per-core tile sizes and core array. An *artifact* is a design compiled for one
padded problem shape: one xclbin (opened as its own hardware context) and one instruction
sequence, or for a kind of format "elf" (a program of several array configurations, an encoder
layer) one full ELF holding its configurations and its sequence. The designs compile their tile counts into the core programs, as mlir-aie's static
whole-array GEMM does, so an xclbin serves exactly the shape it was built for. Artifacts are named
by all their parameters, e.g. `gemm-bf16-npu1-1536x384x384-t64x64x32-a4x4`.
"""
from __future__ import annotations

import functools
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from npu_ep.errors import NpuEpError
from npu_ep.paths import shipped

# Device family of each partition profile's kernels; the emulator stands in for an XDNA1 (npu1).
FAMILY = {"xdna1": "npu1", "xdna2": "npu2", "emulator": "npu1"}
DTYPES = {"bf16": np.uint16, "f32": np.float32, "i8": np.int8, "i32": np.int32}
# The vector width the bf16 softmax/attention cores read along a row: rows are padded to it.
_VECTOR = 16


@dataclass(frozen=True)
class Design:
    """One kernel kind for one data type and device, with its tiling: what `kernel` names in a node."""
    name: str
    kind: str
    device: str
    dtype_in: str
    dtype_out: str
    tile: tuple[tuple[str, int], ...]   # per-core tile sizes, in the manifest's order
    rows: int
    cols: int
    dims: tuple[str, ...]               # the kind's problem dimensions, e.g. ("M", "K", "N")
    args: tuple[tuple[str, tuple[str | int, ...]], ...]  # buffer name -> its dimensions (or fixed sizes), in call order
    outputs: tuple[str, ...]
    types: tuple[tuple[str, str], ...] = ()   # buffers whose type is not the design's dtype_in / dtype_out
    device_only: tuple[str, ...] = ()         # buffers only the device reads and writes (never synced)
    format: str = "xclbin"                    # xclbin (+ instruction sequence) or elf

    @property
    def t(self) -> dict[str, int]:
        return dict(self.tile)

    @property
    def multiples(self) -> dict[str, int]:
        """What each dimension is padded to a multiple of, so the tiles cover the array evenly."""
        t, rows, cols = self.t, self.rows, self.cols
        if self.kind in ("gemm", "batched_gemm"):
            # A blocks of m rows go down each column's cores, B blocks of n columns across the columns.
            rule = {"M": t["m"] * rows, "K": t["k"], "N": t["n"] * cols}
        elif self.kind == "softmax":  # L (the valid row length) exact: compiled in, the tail masked
            rule = {"R": t["r"] * rows * cols, "C": _VECTOR}
        elif self.kind == "encoder_layer":  # its GEMM phases take D and F as K and as N; its attention S
            widths = math.lcm(t["k"], t["n"] * cols)
            rule = {"S": math.lcm(t["m"] * rows, t["sq"] * rows * cols), "D": widths, "F": widths}
        else:  # L (the valid key count) exact: compiled in, the padded keys masked
            rule = {"S": t["sq"] * rows * cols, "T": t["tk"], "D": _VECTOR}
        return {dim: rule.get(dim, 1) for dim in self.dims}

    def padded(self, *shape: int) -> tuple[int, ...]:
        """`shape` (in `dims` order) rounded up to what one run of this design accepts."""
        if len(shape) != len(self.dims):
            raise ValueError(f"{self.name}: a shape has {len(self.dims)} dimensions {self.dims}, got {shape}")
        return tuple(-(-size // self.multiples[dim]) * self.multiples[dim] for dim, size in zip(self.dims, shape))

    def artifact(self, *shape: int) -> "Artifact":
        """The artifact that runs `shape` (padded here)."""
        return Artifact(self, self.padded(*shape))

    def arg_shape(self, arg: str, shape: tuple[int, ...]) -> tuple[int, ...]:
        sizes = dict(zip(self.dims, shape))
        return tuple(sizes[dim] if isinstance(dim, str) else dim for dim in dict(self.args)[arg])

    def arg_dtype(self, arg: str) -> type:
        given = dict(self.types).get(arg)
        return DTYPES[given or (self.dtype_out if arg in self.outputs else self.dtype_in)]


@dataclass(frozen=True)
class Artifact:
    """A design built for one padded shape: one xclbin, one hardware context, one instruction sequence."""
    design: Design
    shape: tuple[int, ...]

    def __post_init__(self) -> None:
        if self.design.padded(*self.shape) != tuple(self.shape):
            raise ValueError(f"{self.design.name}: shape {self.shape} is not padded to {self.design.multiples}")

    @property
    def identity(self) -> str:
        d = self.design
        tile = "x".join(str(size) for _, size in d.tile)
        return f"{d.name}-{'x'.join(map(str, self.shape))}-t{tile}-a{d.rows}x{d.cols}"

    @property
    def xclbin(self) -> str:
        return f"{self.identity}.xclbin"

    @property
    def insts(self) -> str:
        return f"{self.identity}.insts.bin"

    @property
    def elf(self) -> str:
        return f"{self.identity}.elf"

    @property
    def files(self) -> tuple[str, ...]:
        """The files a build makes: xclbin and instruction sequence, or the one ELF."""
        return (self.elf,) if self.design.format == "elf" else (self.xclbin, self.insts)

    def nbytes(self, arg: str) -> int:
        return int(np.prod(self.design.arg_shape(arg, self.shape))) * np.dtype(self.design.arg_dtype(arg)).itemsize


@dataclass(frozen=True)
class Call:
    """How the host calls every kernel: kernel(opcode, insts, n_words, *buffers), with the
    instructions on `insts_group_id` and the buffers from `first_arg_group_id` on (mlir-aie's convention);
    an ELF artifact's kernel is `elf_kernel` in the hardware context the ELF makes, called with the
    buffers alone (XRT's full-ELF flow)."""
    kernel_name: str
    opcode: int
    insts_group_id: int
    first_arg_group_id: int
    elf_kernel: str


@dataclass(frozen=True)
class Manifest:
    designs: dict[str, Design]
    call: Call
    artifacts: dict[str, dict]   # identity -> build record (files, toolchain, verification)
    path: Path


@functools.lru_cache(maxsize=None)
def _shipped() -> Path:
    # Looked up once: finding an installed copy asks sysconfig, ~3 ms a call (once per dispatch, measured).
    return shipped("kernels")


def kernels_dir() -> Path:
    """`$NPU_EP_KERNELS`, else the project's kernels/ (checkout or installed)."""
    env = os.environ.get("NPU_EP_KERNELS")
    return Path(env).expanduser() if env else _shipped()


@functools.lru_cache(maxsize=None)
def _read(path: Path, stamp: int) -> Manifest:
    raw = json.loads(path.read_text())
    if raw.get("version") != 3:  # 3: ELF artifacts, an artifact's "files"
        raise NpuEpError(f"{path}: kernel manifest version {raw.get('version')} (this npu_ep reads version 3; "
                         "build the artifacts again: npu-ep kernels build)")
    designs = {}
    for name, entry in raw["designs"].items():
        kind = raw["kinds"][entry["kind"]]
        designs[name] = Design(
            name=name, kind=entry["kind"], device=entry["device"], dtype_in=entry["dtype_in"],
            dtype_out=entry["dtype_out"], tile=tuple(entry["tile"].items()), rows=entry["array"]["rows"],
            cols=entry["array"]["cols"], dims=tuple(kind["dims"]),
            args=tuple((arg, tuple(dims)) for arg, dims in kind["args"].items()), outputs=tuple(kind["outputs"]),
            types=tuple(kind.get("types", {}).items()), device_only=tuple(kind.get("device_only", ())),
            format=kind.get("format", "xclbin"))
        if name != f"{entry['kind']}-{entry['dtype_in']}-{entry['device']}":
            raise NpuEpError(f"{path}: design {name!r} must be named <kind>-<dtype>-<device>")
    return Manifest(designs, Call(**raw["call"]), raw.get("artifacts", {}), path)


def manifest() -> Manifest:
    """The kernels folder's manifest; a folder without one (a fresh $NPU_EP_KERNELS for builds) has
    the shipped designs and no artifacts yet."""
    path = kernels_dir() / "manifest.json"
    if not path.exists():
        path = _shipped() / "manifest.json"
    if not path.exists():
        raise NpuEpError(f"{path}: kernel manifest missing (set NPU_EP_KERNELS to the project's kernels/ folder)")
    return _read(path, path.stat().st_mtime_ns)  # re-read when `npu-ep kernels build` records artifacts


def design(name: str) -> Design:
    try:
        return manifest().designs[name]
    except KeyError:
        raise NpuEpError(f"kernels/manifest.json: no kernel design {name!r}") from None


def find(profile: str, dtype_in: str, kind: str = "gemm") -> Design | None:
    """The design a partition profile uses for `kind` on `dtype_in`, if the manifest has one."""
    return manifest().designs.get(f"{kind}-{dtype_in}-{FAMILY[profile]}")


def kernel_for(profile: str, dtype_in: str, kind: str = "gemm") -> Design:
    """The design a partition profile uses for `kind` on `dtype_in` ("bf16" or "i8")."""
    name = f"{kind}-{dtype_in}-{FAMILY[profile]}"
    if name not in manifest().designs:
        raise NpuEpError(f"kernels/manifest.json: no {dtype_in} {kind} kernel for {FAMILY[profile]} (add one)")
    return manifest().designs[name]


def placed_artifact(design_name: str, candidate) -> Artifact:
    """The artifact a placed node runs: its form's problem dims (`candidate.work.dims`, in the
    design's dims order) padded for the design."""
    return design(design_name).artifact(*candidate.work.dims)


def parse(identity: str) -> Artifact:
    """The artifact an identity names; ValueError saying why when it names none of the manifest's designs."""
    parts = identity.split("-")
    if len(parts) != 6:
        raise ValueError(f"{identity!r} is not <kind>-<dtype>-<device>-<shape>-t<tile>-a<rows>x<cols>")
    found = manifest().designs.get("-".join(parts[:3]))
    if found is None:
        raise ValueError(f"{identity!r}: no design {'-'.join(parts[:3])!r} in the manifest")
    try:
        shape = tuple(int(size) for size in parts[3].split("x"))
    except ValueError:
        raise ValueError(f"{identity!r}: bad shape {parts[3]!r}") from None
    artifact = Artifact(found, shape)
    if artifact.identity != identity:
        raise ValueError(f"{identity!r}: tile or array differs from the design's ({artifact.identity})")
    return artifact


def built(artifact: Artifact) -> tuple[Path, ...] | None:
    """The files of a built artifact recorded in the manifest (xclbin and insts, or its ELF), all
    present, else None."""
    found = manifest()
    record = found.artifacts.get(artifact.identity)
    folder = kernels_dir()
    if record is None or found.path.parent != folder:
        return None
    files = tuple(folder / name for name in record["files"])
    return files if all(path.exists() for path in files) else None


def built_identities() -> tuple[str, ...]:
    """Every artifact the kernels folder's manifest records as built (what a real device can run)."""
    return tuple(sorted(manifest().artifacts))
