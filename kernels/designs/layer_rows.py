"""A rows phase of the encoder layer (encoder_layer.py): blocks of rows streamed through every column's
memory tile to its cores, one core function applied to each block (a norm, a bias and scale, GELU,
a residual add, int8 quantization), the results streamed back out. The layer's element-wise work
between its GEMMs and its attention.

Streams. A phase reads one or two streams and writes one or two. Each is rows of `width` values;
on the DDR side its `layout` says where they are: "rows" (row-major, `pitch` values between row
starts), "heads" (the rows' H slices of width/H values in head-major [H, S, width/H] blocks, as the
attention reads and writes them) or "column" (`width` values per row, `stride` apart, at row pitch
`pitch`: int8 row scales, written beside the rows of the GEMM results that need them).

Parameters (norm weights, biases, column scales) come first through the first input stream: the
phase's group of vector rows, each core receiving the whole group as its first blocks, which its
`<name>_params` function keeps (counting the blocks itself); then `<name>_rows` runs on every
block. So a phase needs no third input stream. Every run sends the group again: the workers loop
(IRON's `while_true`), so consecutive runs of one phase program need no reconfiguration.

DMA channels (AMD AM020, AIE-ML): a compute tile has 2 input and 2 output channels, a memory tile 6
and 6, a shim tile 2 and 2. A column's memory tile splits each input stream to its cores (one
output channel per core) and joins each output stream (one input channel per core): with one
stream each way all 4 cores of a column take part; with two inputs or two outputs only 2 do.

Tiling. Column j's cores take blocks of r rows, c cores to a group, the column every cols-th group:
the phase's rows must be whole groups (S a multiple of r * c * cols). r is the design's, halved
until a core's buffers fit.

Compile-time constants: blocks per core, the widths, the parameter rows (why an ELF is built per
padded shape). Core kernel: `layer_rows.cc` here (ours; scalar float arithmetic).
"""
from __future__ import annotations

from dataclasses import dataclass

from .limits import CORE_STACK, DEPTH, ITEMSIZE, ROWS, Budget, DesignError, require

# DMA channels each way (AM020): compute tile, memory tile, shim tile.
CORE_CHANNELS, MEM_TILE_CHANNELS, SHIM_CHANNELS = 2, 6, 2


@dataclass(frozen=True)
class Stream:
    """One stream of a rows phase: its sequence argument, value type, values per row in the core,
    and where those rows lie in the argument."""
    arg: str
    dtype: str
    width: int
    layout: str = "rows"     # rows | heads | column
    pitch: int = 0           # rows, column: values between row starts in the argument
    heads: int = 0           # heads: H
    stride: int = 1          # column: values between a row's `width` values

    def tap(self, S: int, j: int, cols: int, c: int, r: int) -> tuple[int, list[int], list[int]]:
        """(offset, sizes, strides) in values of column j's rows, in the order the cores take them."""
        blocks, group = S // (r * c * cols), r * c
        if self.layout == "rows":
            return j * group * self.pitch, [blocks, group, self.width], [cols * group * self.pitch, self.pitch, 1]
        if self.layout == "heads":
            dh = self.width // self.heads
            return j * group * dh, [blocks, group, self.heads, dh], [cols * group * dh, dh, S * dh, 1]
        return j * group * self.pitch, [blocks, group, self.width], [cols * group * self.pitch, self.pitch, self.stride]

    @property
    def row_bytes(self) -> int:
        return self.width * ITEMSIZE[self.dtype]


@dataclass(frozen=True)
class RowsPhase:
    """One rows phase: its core functions `<name>_params` and `<name>_rows`, streams, parameters."""
    name: str
    inputs: tuple[Stream, ...]
    outputs: tuple[Stream, ...]
    params: tuple[str, int, int] | None = None  # (argument, rows, pitch in values), read first through inputs[0]
    kept: int = 0                               # parameter rows the core keeps (of inputs[0]'s width)
    temp: int = 0                               # f32 values of the core's working row (a norm's)
    int8: bool = False

    def flags(self, r: int) -> list[str]:
        widths = [f"-DW_IN{i}={s.width}" for i, s in enumerate(self.inputs)]
        widths += [f"-DW_OUT{i}={s.width}" for i, s in enumerate(self.outputs)]
        rows = self.params[1] if self.params else 0
        return [f"-DPHASE_{self.name.upper()}", f"-DR={r}", f"-DINT8={int(self.int8)}", f"-DPARAM_ROWS={rows}",
                f"-DKEPT={self.kept}", *widths]


def cores_per_column(phase: RowsPhase) -> int:
    """The most cores of a column the phase's streams can feed through the memory tile's channels."""
    ins, outs = len(phase.inputs), len(phase.outputs)
    require(ins <= min(CORE_CHANNELS, SHIM_CHANNELS) and outs <= min(CORE_CHANNELS, SHIM_CHANNELS),
            f"{phase.name}: {ins} inputs, {outs} outputs: a core and a shim have {CORE_CHANNELS} DMA channels each way")
    for c in (ROWS, 2, 1):
        if ins * c + outs <= MEM_TILE_CHANNELS and ins + outs * c <= MEM_TILE_CHANNELS:
            return c
    raise DesignError(f"{phase.name}: no core count fits the memory tile's {MEM_TILE_CHANNELS} channels each way")


def plan(phase: RowsPhase, S: int, r: int, cols: int, label: str) -> tuple[Budget, int, int]:
    """The phase's budget with its rows per block r (the largest, from the design's, that fits a
    core) and cores per column c: (budget, r, c)."""
    c = cores_per_column(phase)
    while True:
        try:
            return _plan(phase, S, r, c, cols, label), r, c
        except DesignError:
            if r == 1:
                raise
            r //= 2


def _plan(phase: RowsPhase, S: int, r: int, c: int, cols: int, label: str) -> Budget:
    name = f"{label} {phase.name} (blocks of {r} rows, {c} cores a column)"
    require(S % (r * c * cols) == 0, f"{name}: S = {S} must be whole groups of r*c*cols = {r * c * cols} rows")
    if phase.params:
        _, rows, _ = phase.params
        require(rows % r == 0, f"{name}: its {rows} parameter rows must be whole blocks of {r}")
    budget = Budget(name)
    for kind, streams in (("in", phase.inputs), ("out", phase.outputs)):
        for s in streams:
            budget.l1.append((f"{s.arg} {kind}", DEPTH * r * s.row_bytes, f"{DEPTH} x {r} x {s.width} x {ITEMSIZE[s.dtype]} B"))
            budget.l2.append((f"{s.arg} {'split' if kind == 'in' else 'join'}", DEPTH * c * r * s.row_bytes,
                              f"{DEPTH} x {c} x {r} x {s.width} x {ITEMSIZE[s.dtype]} B"))
    if phase.kept:
        width = phase.inputs[0].width
        budget.l1.append(("parameters kept", phase.kept * width * 4, f"{phase.kept} x {width} x 4 B"))
    if phase.temp:
        budget.l1.append(("working row", phase.temp * 4, f"{phase.temp} x 4 B"))
    budget.l1.append(("core stack", CORE_STACK, "mlir-aie default"))
    budget.loops = {"blocks per core": S // (r * c * cols), "parameter blocks": phase.params[1] // r if phase.params else 0,
                    "cores per column": c}
    return budget.check()


def kernel_object(phase: RowsPhase, r: int) -> tuple[str, list[str], str]:
    """(kernel source, compile flags, object name) of the phase's core functions."""
    widths = "x".join(str(s.width) for s in (*phase.inputs, *phase.outputs))
    return "layer_rows.cc", phase.flags(r), f"layer_{phase.name}_{'i8' if phase.int8 else 'bf16'}_r{r}_{widths}.o"


def program(phase: RowsPhase, S: int, r: int, c: int, device: str, cols: int, args: list[tuple[str, str, int]]):
    """The phase's IRON program (imports mlir-aie). `args`: its sequence arguments in order, each
    (name, value type, values), the views the layer's sequence hands it."""
    import numpy as np
    from aie.helpers.taplib import TensorAccessPattern
    from aie.iron import Kernel, ObjectFifo, Program, Runtime, Worker
    from aie.iron.controlflow import range_
    from aie.iron.device import NPU1, NPU2, Tile
    from aie.iron.placers import SequentialPlacer
    from ml_dtypes import bfloat16

    types = {"bf16": bfloat16, "i8": np.int8, "f32": np.float32, "i32": np.int32}
    block = {s: np.ndarray[(r, s.width), np.dtype[types[s.dtype]]] for s in (*phase.inputs, *phase.outputs)}
    group = {s: np.ndarray[(c * r, s.width), np.dtype[types[s.dtype]]] for s in block}
    _, _, obj = kernel_object(phase, r)
    first = phase.inputs[0]
    kernels_ = [Kernel(f"{phase.name}_rows", obj, [block[s] for s in (*phase.inputs, *phase.outputs)])]
    if phase.params:
        kernels_.append(Kernel(f"{phase.name}_params", obj, [block[first]]))

    offsets = [i * r for i in range(c)]
    ins, outs = [], []
    for k, s in enumerate(phase.inputs):
        fifos = [ObjectFifo(group[s], name=f"in{k}_l3l2_{j}", depth=DEPTH) for j in range(cols)]
        split = [fifos[j].cons().split([o * s.width for o in offsets], obj_types=[block[s]] * c,
                                       names=[f"in{k}_l2l1_{j}_{i}" for i in range(c)], placement=Tile(j, 1))
                 for j in range(cols)]
        ins.append((fifos, split))
    for k, s in enumerate(phase.outputs):
        fifos = [ObjectFifo(group[s], name=f"out{k}_l2l3_{j}", depth=DEPTH) for j in range(cols)]
        joined = [fifos[j].prod().join([o * s.width for o in offsets], obj_types=[block[s]] * c,
                                       names=[f"out{k}_l1l2_{j}_{i}" for i in range(c)], placement=Tile(j, 1))
                  for j in range(cols)]
        outs.append((fifos, joined))
    blocks = S // (r * c * cols)
    parameter_blocks = phase.params[1] // r if phase.params else 0
    n_in, n_out = len(ins), len(outs)

    def core(*handles):
        streams_in, streams_out = handles[:n_in], handles[n_in:n_in + n_out]
        rows, *keep = handles[n_in + n_out:]
        for _ in range(parameter_blocks):  # unrolled: a handful of blocks
            keep[0](streams_in[0].acquire(1))
            streams_in[0].release(1)
        for _ in range_(blocks):
            rows(*[f.acquire(1) for f in streams_in], *[f.acquire(1) for f in streams_out])
            for f in (*streams_in, *streams_out):
                f.release(1)

    workers = [Worker(core, [*[split[j][i].cons() for _, split in ins], *[joined[j][i].prod() for _, joined in outs],
                             *kernels_], placement=Tile(j, 2 + i)) for i in range(c) for j in range(cols)]
    names = [name for name, _, _ in args]
    runtime = Runtime()
    with runtime.sequence(*[np.ndarray[(n,), np.dtype[types[t]]] for _, t, n in args]) as buffers:
        buffers = dict(zip(names, buffers))
        size = {name: n for name, _, n in args}
        runtime.start(*workers)
        for j in range(cols):
            if phase.params:
                arg, rows, pitch = phase.params
                # The parameter group once for each of the column's cores, one block of r rows at a time.
                tap = TensorAccessPattern((size[arg],), 0, [rows // r, c, r, first.width], [r * pitch, 0, pitch, 1])
                runtime.fill(ins[0][0][j].prod(), buffers[arg], tap=tap, placement=Tile(j, 0))
            for (fifos, _), s in zip(ins, phase.inputs):
                offset, sizes, strides = s.tap(S, j, cols, c, r)
                runtime.fill(fifos[j].prod(), buffers[s.arg], tap=TensorAccessPattern((size[s.arg],), offset, sizes, strides),
                             placement=Tile(j, 0))
            for (fifos, _), s in zip(outs, phase.outputs):
                offset, sizes, strides = s.tap(S, j, cols, c, r)
                runtime.drain(fifos[j].cons(), buffers[s.arg], wait=True, placement=Tile(j, 0),
                              tap=TensorAccessPattern((size[s.arg],), offset, sizes, strides))
    return Program(NPU1() if device == "npu1" else NPU2(), runtime).resolve_program(SequentialPlacer())
