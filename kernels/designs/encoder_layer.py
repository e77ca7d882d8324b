"""One whole pre-norm encoder layer in one run, every intermediate staying in device memory:

    h = LN1(x); q, k, v = (h Wq + bq) sq, (h Wk + bk) sk, h Wv + bv; a = attention(q, k, v) over H heads
    x1 = x + a Wo + bo; f = GELU(LN2(x1) W1 + b1); y = x1 + f W2 + b2

The run is a sequence of phases, each one of our programs owning the whole array: the whole-array
GEMM (gemm.py) for the six projections, the fused attention (attention.py), and rows phases
(layer_rows.py) for everything element-wise between them. `schedule` lists them with the part of
the layer's buffers each reads and writes; `program` joins their programs into one: an ELF holding
one aie.device per phase program and a main runtime sequence that configures each in turn
(`aiex.configure`, lowered to a PDI load: Xilinx/mlir-aie #2775) and runs its sequence on views of
the layer's buffers (`aiex.run`). The host dispatches it once per layer (kernel `main:sequence`).

Phases, in order (configurations: bf16 11, int8 12; consecutive runs on one program need none):

    norm1         x -> h1 (the GEMMs' operand type; int8: + row scales)
    gemm S,D,D    h1 Wq, h1 Wk, h1 Wv -> cq, ck, cv (f32; int8: i32)
    bias          cq, ck, cv -> (c · row scale · column scale + bias) · post -> q, k, v (bf16, head-major)
    attention     q, k, v -> o (f32, head-major; the scores unscaled: q and k come scaled)
    attention_rows  o -> a (operand type; int8: + row scales)
    gemm S,D,D    a Wo -> co
    residual1     x, co -> x1 = x + co·scales + bo (f32), h2 = LN2(x1) (operand type; int8: + row scales)
    gemm S,D,F    h2 W1 -> cf
    gelu          cf -> f = GELU(cf·scales + b1) (bf16; int8: f32), in column parts when a row is too wide
    [int8] quantize  f -> f8 + row scales
    gemm S,F,D    f W2 -> c2
    residual2     x1, c2 -> y = x1 + c2·scales + b2

int8 (design dtype i8): weights int8 per output column (their scales in the layer's vectors),
activations int8 per row, quantized by the rows phase that makes them, int32 accumulation. A
GEMM's result rows carry the row scales of its input in a trailer of T_INT8 values (written there
by the phase that quantized the input, before the GEMM, which writes only the first N values of
each row), so the phase after the GEMM reads both as one stream: no rows phase needs more DMA
channels than a tile has. The attention stays bf16.

Memory: a phase owns the whole array while it runs, so each must fit the tiles on its own; the
layer's budget is its largest phase's. The scratch buffer holds every intermediate; regions whose
lifetimes do not overlap share its bytes (`scratch_layout`).

Built with `aiecc --get-full-elf`: one ELF per padded shape (every phase compiles its loop counts).
None of this was ever compiled or run: mlir-aie is not installable on the machines this project was
developed on, and none had an NPU.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from npu_ep.forms.layer import VD, VD_GROUPS, VF_GROUPS

from . import attention, gemm, layer_rows
from .layer_rows import RowsPhase, Stream
from .limits import ITEMSIZE, VECTOR_BF16, Budget, DesignError, check_array, require

T_INT8 = 16  # trailer values per GEMM result row in int8: the row scale of its input (64 B keeps rows aligned)
GEMM_ARGS = (("a", ("M", "K")), ("b", ("K", "N")), ("c", ("M", "N")))
ATTENTION_ARGS = (("q", ("B", "S", "D")), ("k", ("B", "T", "D")), ("v", ("B", "T", "D")), ("o", ("B", "S", "D")))


@dataclass(frozen=True)
class View:
    """One argument of a phase's sequence: `values` values of `dtype` from byte `offset` of a layer buffer."""
    buffer: str
    offset: int
    dtype: str
    values: int

    @property
    def nbytes(self) -> int:
        return self.values * ITEMSIZE[self.dtype]


@dataclass(frozen=True)
class Device:
    """One phase program: a GEMM or attention artifact (with the GEMM's result row pitch), or a rows
    phase with its rows per block r and cores per column c."""
    name: str
    budget: Budget
    artifact: object = None
    ldc: int = 0
    rows: RowsPhase | None = None
    r: int = 0
    c: int = 0


@dataclass(frozen=True)
class Run:
    device: str
    views: tuple[tuple[str, View], ...]   # the phase sequence's arguments, in order


@dataclass(frozen=True)
class Schedule:
    devices: dict[str, Device]
    runs: tuple[Run, ...]
    scratch: dict[str, tuple[int, int]]   # region -> (byte offset, bytes)

    @property
    def configurations(self) -> int:
        return sum(1 for i, run in enumerate(self.runs) if i == 0 or run.device != self.runs[i - 1].device)


def _phase_artifact(artifact, kind: str, shape: tuple[int, ...]):
    """The artifact of a GEMM or attention phase, on the layer's array with the layer's tile sizes."""
    layer = artifact.design
    t = layer.t
    if kind == "gemm":
        design = dataclasses.replace(
            layer, name=f"gemm-{layer.dtype_in}-{layer.device}", kind="gemm", dims=("M", "K", "N"), args=GEMM_ARGS,
            outputs=("c",), dtype_out="i32" if layer.dtype_in == "i8" else "f32", types=(), device_only=(),
            tile=(("m", t["m"]), ("k", t["k"]), ("n", t["n"])))
    else:
        design = dataclasses.replace(
            layer, name=f"attention-bf16-{layer.device}", kind="attention", dims=("B", "S", "T", "D", "L"),
            args=ATTENTION_ARGS, outputs=("o",), dtype_in="bf16", dtype_out="f32", types=(), device_only=(),
            tile=(("sq", t["sq"]), ("tk", t["tk"])))
    return type(artifact)(design, design.padded(*shape))


def scratch_layout(regions: list[tuple[str, int, int, int]], capacity: int, name: str) -> dict[str, tuple[int, int]]:
    """Byte offsets for (region, bytes, first run, last run): each at the lowest offset clear of every
    region alive at the same time (first fit). Raises when the scratch buffer cannot hold them."""
    placed: dict[str, tuple[int, int, int, int]] = {}
    for region, size, first, last in regions:
        offset = 0
        for other, (start, length, o_first, o_last) in sorted(placed.items(), key=lambda item: item[1][0]):
            alive = o_first <= last and first <= o_last
            if alive and start < offset + size and offset < start + length:
                offset = start + length
        placed[region] = (offset, size, first, last)
    peak = max(start + length for start, length, _, _ in placed.values())
    require(peak <= capacity, f"{name}: the intermediates need {peak} bytes of scratch at their peak, the "
                              f"scratch buffer has {capacity}")
    return {region: (start, length) for region, (start, length, _, _) in placed.items()}


def schedule(artifact) -> Schedule:
    """Every phase of one run in order, the scratch regions and the views each phase reads and writes,
    each phase program checked against the tiles' memory and DMA channels."""
    design = artifact.design
    check_array(artifact)
    S, D, F, H, L = artifact.shape
    name = artifact.identity
    require(design.dtype_in in ("bf16", "i8") and design.dtype_out == "f32",
            f"{name}: an encoder layer takes bf16 or int8 weights and gives f32")
    require(D % H == 0 and (D // H) % VECTOR_BF16 == 0,
            f"{name}: head width D/H = {D}/{H} must be a whole multiple of the {VECTOR_BF16}-lane vector")
    require(0 < L <= S, f"{name}: valid positions L = {L} must be in 1..S = {S}")
    int8 = design.dtype_in == "i8"
    T = T_INT8 if int8 else 0
    op, acc = design.dtype_in, ("i32" if int8 else "f32")  # the GEMMs' operand and result types
    size, r0, cols = ITEMSIZE[op], design.t["r"], design.cols
    row_d, row_dt, row_f = S * D, S * (D + T), S * F

    # Scratch regions: (name, bytes, first phase, last phase), phases numbered as in the docstring.
    regions = [("h1", row_d * size, 1, 2), ("cqkv", 3 * row_dt * 4, 1, 3), ("qkv", 3 * row_d * 2, 3, 4),
               ("o", row_d * 4, 4, 5), ("a", row_d * size, 5, 6), ("co", row_dt * 4, 5, 7), ("x1", row_dt * 4, 7, 12),
               ("h2", row_d * size, 7, 8), ("cf", row_f * 4, 8, 9), ("f", row_f * (4 if int8 else 2), 9, 10 if int8 else 11),
               ("c2", row_dt * 4, 9, 12)]
    if int8:
        regions.append(("f8", row_f, 10, 11))
    scratch = scratch_layout(regions, 12 * S * F, name)

    def at(region: str, dtype: str, values: int, skip: int = 0) -> View:
        """`values` of `dtype` in a scratch region, from its `skip`-th value on."""
        start, length = scratch[region]
        view = View("scratch", start + skip * ITEMSIZE[dtype], dtype, values)
        require(view.offset + view.nbytes <= start + length, f"{name}: a view runs past scratch region {region}")
        return view

    def column(region: str, pitch: int, copies: int = 1, stride: int = 0) -> View:
        """The trailer column of a region's rows: `copies` values per row, `stride` apart."""
        return at(region, "f32", (S - 1) * pitch + (copies - 1) * stride + 1, skip=pitch - T)

    def vectors(buffer: str, group: tuple[int, int], width: int, pitch: int, values: int, skip: int = 0) -> View:
        return View(buffer, (group[0] * pitch + skip) * 4, "f32", values)

    devices: dict[str, Device] = {}
    runs: list[Run] = []

    def rows_device(key: str, phase: RowsPhase) -> None:
        if key not in devices:
            budget, r, c = layer_rows.plan(phase, S, r0, cols, name)
            devices[key] = Device(key, budget, rows=phase, r=r, c=c)

    def gemm_device(M: int, K: int, N: int, ldc: int) -> str:
        key = f"gemm_{M}x{K}x{N}"
        if key not in devices:
            phase = _phase_artifact(artifact, "gemm", (M, K, N))
            devices[key] = Device(key, gemm.plan(phase), artifact=phase, ldc=ldc)
        return key

    def run(key: str, **views: View) -> None:
        runs.append(Run(key, tuple(views.items())))

    # norm1
    scales = (Stream("scales", "f32", 3, "column", pitch=D + T, stride=row_dt),) if int8 else ()
    rows_device("norm1", RowsPhase("norm1", (Stream("x", "f32", D, pitch=D),), (Stream("h", op, D, pitch=D), *scales),
                                   params=("vd", 4, D), kept=3, temp=D, int8=int8))
    extra = {"scales": column("cqkv", D + T, copies=3, stride=row_dt)} if int8 else {}
    run("norm1", x=View("x", 0, "f32", row_d), h=at("h1", op, row_d), **extra, vd=vectors("vd", VD_GROUPS["norm1"], D, D, 4 * D))
    # q, k, v projections
    key = gemm_device(S, D, D, D + T)
    for i, weight in enumerate(("wq", "wk", "wv")):
        run(key, a=at("h1", op, row_d), b=View(weight, 0, op, D * D), c=at("cqkv", acc, row_dt, skip=i * row_dt))
    # bias (and scales, and the q/k factor) of each, into head-major bf16
    rows_device("bias", RowsPhase("bias", (Stream("c", acc, D + T, pitch=D + T),), (Stream("out", "bf16", D, "heads", heads=H),),
                                  params=("vd", 4, D), kept=3, int8=int8))
    for i, part in enumerate("qkv"):
        run("bias", c=at("cqkv", acc, row_dt, skip=i * row_dt), out=at("qkv", "bf16", row_d, skip=i * row_d),
            vd=vectors("vd", VD_GROUPS[part], D + T, D, 4 * D + T))
    # attention
    phase = _phase_artifact(artifact, "attention", (H, S, S, D // H, L))
    devices["attention"] = Device("attention", attention.plan(phase), artifact=phase)
    run("attention", q=at("qkv", "bf16", row_d), k=at("qkv", "bf16", row_d, skip=row_d),
        v=at("qkv", "bf16", row_d, skip=2 * row_d), o=at("o", "f32", row_d))
    # the attention's rows in the operand type
    scales = (Stream("scales", "f32", 1, "column", pitch=D + T),) if int8 else ()
    rows_device("attention_rows", RowsPhase("attention_rows", (Stream("o", "f32", D, "heads", heads=H),),
                                            (Stream("a", op, D, pitch=D), *scales), int8=int8))
    extra = {"scales": column("co", D + T)} if int8 else {}
    run("attention_rows", o=at("o", "f32", row_d), a=at("a", op, row_d), **extra)
    # out projection
    run(gemm_device(S, D, D, D + T), a=at("a", op, row_d), b=View("wo", 0, op, D * D), c=at("co", acc, row_dt))
    # first residual and the second norm; int8: h2's row scales in x1's trailer
    rows_device("residual1", RowsPhase("residual1", (Stream("x", "f32", D, pitch=D), Stream("c", acc, D + T, pitch=D + T)),
                                       (Stream("x1", "f32", D + T, pitch=D + T), Stream("h", op, D, pitch=D)),
                                       params=("vd", 8, D), kept=5, int8=int8))
    run("residual1", x=View("x", 0, "f32", row_d), c=at("co", acc, row_dt), x1=at("x1", "f32", row_dt),
        h=at("h2", op, row_d), vd=vectors("vd", VD_GROUPS["residual1"], D, D, 8 * D))
    # fc1
    run(gemm_device(S, D, F, F), a=at("h2", op, row_d), b=View("w1", 0, op, D * F), c=at("cf", acc, row_f))
    # bias + GELU, in column parts of F / parts values when a whole row's buffers would not fit a core
    f_type = "f32" if int8 else "bf16"
    for parts in (1, 2, 4, 8):
        width = F // parts
        ins = (Stream("c", acc, width, pitch=F),) + ((Stream("scales", "f32", 1, "column", pitch=D + T),) if int8 else ())
        gelu = RowsPhase("gelu", ins, (Stream("f", f_type, width, pitch=F),), params=("vf", 4, F), kept=2, int8=int8)
        try:
            rows_device("gelu", gelu)
            break
        except DesignError:
            if parts == 8 or F % (2 * parts) or (F // (2 * parts)) % VECTOR_BF16:
                raise
    width = devices["gelu"].rows.inputs[0].width
    for part in range(F // width):
        extra = {"scales": column("x1", D + T)} if int8 else {}
        run("gelu", c=at("cf", acc, (S - 1) * F + width, skip=part * width), **extra,
            f=at("f", f_type, (S - 1) * F + width, skip=part * width),
            vf=vectors("vf", VF_GROUPS["gelu"], width, F, 3 * F + width, skip=part * width))
    fc2_input = "f"
    if int8:  # GELU's rows quantized, their scales into c2's trailer
        rows_device("quantize", RowsPhase("quantize", (Stream("f", "f32", F, pitch=F),),
                                          (Stream("q", "i8", F, pitch=F), Stream("scales", "f32", 1, "column", pitch=D + T)),
                                          int8=True))
        run("quantize", f=at("f", "f32", row_f), q=at("f8", "i8", row_f), scales=column("c2", D + T))
        fc2_input = "f8"
    # fc2 and the second residual
    run(gemm_device(S, F, D, D + T), a=at(fc2_input, op, row_f), b=View("w2", 0, op, F * D), c=at("c2", acc, row_dt))
    rows_device("residual2", RowsPhase("residual2", (Stream("x1", "f32", D + T, pitch=D + T), Stream("c", acc, D + T, pitch=D + T)),
                                       (Stream("y", "f32", D, pitch=D),), params=("vd", 4, D), kept=2, int8=int8))
    run("residual2", x1=at("x1", "f32", row_dt), c=at("c2", acc, row_dt), y=View("y", 0, "f32", row_d),
        vd=vectors("vd", VD_GROUPS["residual2"], D + T, D, 4 * D + T))
    return Schedule(devices, tuple(runs), scratch)


def phases(artifact) -> list[tuple[str, Budget]]:
    """Each phase program with its checked budget, in the order the run first configures it."""
    found = schedule(artifact)
    return [(key, found.devices[key].budget) for key in dict.fromkeys(run.device for run in found.runs)]


def plan(artifact) -> Budget:
    """The layer's budget: its largest phase in each memory (each phase owns the array in turn)."""
    found = schedule(artifact)
    budgets = [(key, device.budget) for key, device in found.devices.items()]
    l1_name, l1 = max(budgets, key=lambda p: p[1].l1_bytes)
    l2_name, l2 = max(budgets, key=lambda p: p[1].l2_bytes)
    budget = Budget(artifact.identity)
    budget.l1 = [(f"{l1_name}: {item}", size, arithmetic) for item, size, arithmetic in l1.l1]
    budget.l2 = [(f"{l2_name}: {item}", size, arithmetic) for item, size, arithmetic in l2.l2]
    budget.loops = {"phase programs": len(found.devices), "runs": len(found.runs),
                    "configurations": found.configurations}
    return budget.check()


def kernel_objects(artifact) -> list[tuple[str, list[str], str]]:
    """(source, flags, object) of every phase program's core kernel, each once."""
    found = {}
    for device in schedule(artifact).devices.values():
        if device.rows is not None:
            made = layer_rows.kernel_object(device.rows, device.r)
        elif device.artifact.design.kind == "gemm":
            made = gemm.kernel_object(device.artifact)
        else:
            made = attention.kernel_object(device.artifact, scaled=False)
        found[made[2]] = made
    return list(found.values())


def program(artifact):
    """The layer's MLIR module: every phase program as an aie.device and the main sequence that
    configures and runs them on views of the layer's buffers (imports mlir-aie)."""
    import numpy as np
    from aie import ir
    from aie.dialects import aie as aie_dialect
    from aie.dialects import aiex, arith, memref
    from aie.extras.context import mlir_mod_ctx

    found = schedule(artifact)
    design = artifact.design
    S = artifact.shape[0]
    texts = {}
    for key, device in found.devices.items():
        run = next(r for r in found.runs if r.device == key)
        args = [(arg, view.dtype, view.values) for arg, view in run.views]
        if device.rows is not None:
            module = layer_rows.program(device.rows, S, device.r, device.c, design.device, design.cols, args)
        elif device.artifact.design.kind == "gemm":
            module = gemm.program(device.artifact, ldc=device.ldc)
        else:
            module = attention.program(device.artifact, scaled=False)
        (op,) = [o for o in module.body.operations if isinstance(o, aie_dialect.DeviceOp)]
        texts[key] = str(op)

    element = {"bf16": lambda: ir.BF16Type.get(), "f32": lambda: ir.F32Type.get(),
               "i8": lambda: ir.IntegerType.get_signless(8), "i32": lambda: ir.IntegerType.get_signless(32)}
    buffers = [arg for arg, _ in design.args]
    with mlir_mod_ctx() as ctx:
        for key, text in texts.items():
            op = aie_dialect.DeviceOp.parse(text)
            op.sym_name = ir.StringAttr.get(key)
            ctx.module.body.append(op)
        kind = aie_dialect.AIEDevice.npu1 if design.device == "npu1" else aie_dialect.AIEDevice.npu2

        @aie_dialect.device(kind, sym_name="main")
        def main():
            # The layer's buffers as bytes: each phase's arguments are typed views of them.
            @aiex.runtime_sequence(*[np.ndarray[(artifact.nbytes(arg),), np.dtype[np.int8]] for arg in buffers])
            def sequence(*handles):
                by_name = dict(zip(buffers, handles))
                body = None
                for index, run in enumerate(found.runs):
                    if index == 0 or run.device != found.runs[index - 1].device:
                        configure = aiex.ConfigureOp(ir.FlatSymbolRefAttr.get(run.device))
                        body = configure.body.blocks.append()
                    with ir.InsertionPoint(body):
                        views = [memref.view(ir.MemRefType.get([view.values], element[view.dtype]()), by_name[view.buffer],
                                             arith.constant(ir.IndexType.get(), view.offset), [])
                                 for _, view in run.views]
                        aiex.RunOp(ir.FlatSymbolRefAttr.get("sequence"), views)
    return ctx.module
