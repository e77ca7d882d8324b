"""One whole pre-norm encoder layer in one run, every intermediate staying on the device:

    h = LN1(x); q, k, v = h Wq + bq, h Wk + bk, h Wv + bv; a = attention(q, k, v) over H heads
    x1 = x + a Wo + bo; f = GELU(LN2(x1) W1 + b1); y = x1 + f W2 + b2

Phases. The run is a sequence of configurations of the whole array, each one of our designs: the
rows phases (LayerNorm, and in int8 the per-row quantization of an activation) spread r-row blocks
over every core as softmax does; the GEMM phases are the whole-array GEMM (gemm.py) with an
epilogue in the core applied to each finished m x n tile (bias, the q/k scale, GELU, the residual,
and in int8 the row and column scales); the attention phase is the fused attention (attention.py).
Between phases the array is reconfigured inside the same instruction sequence (mlir-aie's
`aiex.configure`, lowered to load-PDI or write32 instructions: Xilinx/mlir-aie #2775), so the host
dispatches once per layer. Each phase writes its result to the scratch buffer in device memory,
where the next reads it; only x goes in and y comes out.

int8 (design dtype i8): weights int8 per output column (scales in vd / vf), activations quantized
per row on the device (after each LayerNorm, after attention, after GELU), int32 accumulation; the
attention phase stays bf16.

Memory: a phase owns the whole array while it runs, so each phase must fit the tiles on its own;
the layer's budget is its largest phase's. Compile-time constants: every phase's (see their
modules), hence an xclbin per padded shape.

`program` is not written: composing the phases' programs into one instruction sequence with
`aiex.configure` needs mlir-aie's multi-device flow, which could not be run here.
"""
from __future__ import annotations

import dataclasses

from . import attention, gemm
from .limits import CORE_STACK, DEPTH, ITEMSIZE, VECTOR_BF16, Budget, DesignError, check_array, require

GEMM_ARGS = (("a", ("M", "K")), ("b", ("K", "N")), ("c", ("M", "N")))
ATTENTION_ARGS = (("q", ("B", "S", "D")), ("k", ("B", "T", "D")), ("v", ("B", "T", "D")), ("o", ("B", "S", "D")))


def _phase_artifact(artifact, kind: str, shape: tuple[int, ...]):
    """The artifact of one phase's design, on the layer's array with the layer's tile sizes."""
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


def _rows_budget(name: str, r: int, width: int, out_size: int, vectors: int) -> Budget:
    """A rows phase: blocks of rows of `width` f32 in, the same rows out in `out_size` bytes,
    `vectors` f32 vectors of `width` (LayerNorm's gamma and beta) resident in every core. Blocks of
    r rows, halved until they fit a core (rows of a large-v3-sized FFN fit one at a time)."""
    while True:
        try:
            return _rows_block(name, r, width, out_size, vectors)
        except DesignError:
            if r == 1:
                raise
            r //= 2


def _rows_block(name: str, r: int, width: int, out_size: int, vectors: int) -> Budget:
    budget = Budget(f"{name} (blocks of {r} rows)")
    budget.l1 = [
        ("rows in", DEPTH * r * width * 4, f"{DEPTH} x {r}x{width} x 4 B"),
        ("rows out", DEPTH * r * width * out_size, f"{DEPTH} x {r}x{width} x {out_size} B"),
        ("vectors", vectors * width * 4, f"{vectors} x {width} x 4 B"),
        ("row scales", DEPTH * r * 4, f"{DEPTH} x {r} x 4 B"),
        ("core stack", CORE_STACK, "mlir-aie default"),
    ]
    budget.l2 = [
        ("rows split", DEPTH * 4 * r * width * 4, f"{DEPTH} x 4 x {r}x{width} x 4 B"),
        ("rows join", DEPTH * 4 * r * width * out_size, f"{DEPTH} x 4 x {r}x{width} x {out_size} B"),
    ]
    return budget.check()


def _with_epilogue(budget: Budget, m: int, n: int, residual: bool, int8: bool) -> Budget:
    """A GEMM phase's budget plus what its epilogue holds in each core: the bias (and column scales)
    of its n columns, the row scales of its m rows, and the residual tile it adds."""
    extra = [("bias", DEPTH * n * 4, f"{DEPTH} x {n} x 4 B")]
    if int8:
        extra += [("column scales", DEPTH * n * 4, f"{DEPTH} x {n} x 4 B"),
                  ("row scales", DEPTH * m * 4, f"{DEPTH} x {m} x 4 B")]
    if residual:
        extra.append(("residual tile", DEPTH * m * n * 4, f"{DEPTH} x {m}x{n} x 4 B"))
    budget.l1 = budget.l1 + extra
    return budget.check()


def phases(artifact) -> list[tuple[str, Budget]]:
    """Every phase of one run, in order, each with its checked budget."""
    design = artifact.design
    check_array(artifact)
    S, D, F, H, L = artifact.shape
    name = artifact.identity
    require(design.dtype_in in ("bf16", "i8") and design.dtype_out == "f32",
            f"{name}: an encoder layer takes bf16 or int8 weights and gives f32")
    require(D % H == 0 and (D // H) % VECTOR_BF16 == 0,
            f"{name}: head width D/H = {D}/{H} must be a whole multiple of the {VECTOR_BF16}-lane vector")
    require(0 < L <= S, f"{name}: valid positions L = {L} must be in 1..S = {S}")
    require(3 * F >= 5 * D + F, f"{name}: the scratch [3, S, F] must hold q, k, v, the attention, x1 and f (F >= 2.5 D)")
    t, int8 = design.t, design.dtype_in == "i8"
    m, n, r = t["m"], t["n"], t["r"]
    act = ITEMSIZE[design.dtype_in]
    found = [("LayerNorm 1", _rows_budget(f"{name} LayerNorm 1", r, D, act, 2))]
    for proj in ("q", "k", "v"):
        gemm_budget = gemm.plan(_phase_artifact(artifact, "gemm", (S, D, D)))
        found.append((f"{proj} projection", _with_epilogue(gemm_budget, m, n, residual=False, int8=int8)))
    found.append(("attention", attention.plan(_phase_artifact(artifact, "attention", (H, S, S, D // H, L)))))
    if int8:
        found.append(("quantize attention", _rows_budget(f"{name} quantize attention", r, D, 1, 0)))
    found.append(("out projection + residual",
                  _with_epilogue(gemm.plan(_phase_artifact(artifact, "gemm", (S, D, D))), m, n, True, int8)))
    found.append(("LayerNorm 2", _rows_budget(f"{name} LayerNorm 2", r, D, act, 2)))
    found.append(("fc1 + GELU", _with_epilogue(gemm.plan(_phase_artifact(artifact, "gemm", (S, D, F))), m, n, False, int8)))
    if int8:
        found.append(("quantize GELU", _rows_budget(f"{name} quantize GELU", r, F, 1, 0)))
    found.append(("fc2 + residual", _with_epilogue(gemm.plan(_phase_artifact(artifact, "gemm", (S, F, D))), m, n, True, int8)))
    return found


def plan(artifact) -> Budget:
    """The layer's budget: its largest phase in each memory (each phase owns the array in turn)."""
    found = phases(artifact)
    l1_name, l1 = max(found, key=lambda p: p[1].l1_bytes)
    l2_name, l2 = max(found, key=lambda p: p[1].l2_bytes)
    budget = Budget(artifact.identity)
    budget.l1 = [(f"{l1_name}: {item}", size, arithmetic) for item, size, arithmetic in l1.l1]
    budget.l2 = [(f"{l2_name}: {item}", size, arithmetic) for item, size, arithmetic in l2.l2]
    budget.loops = {"phases": len(found), "reconfigurations": len(found) - 1}
    return budget.check()


def kernel_object(artifact) -> tuple[str, list[str], str]:
    raise NotImplementedError(f"{artifact.identity}: the encoder-layer program (its phases joined by aiex.configure) "
                              "is not written yet")


def program(artifact):
    raise NotImplementedError(f"{artifact.identity}: the encoder-layer program (its phases joined by aiex.configure) "
                              "is not written yet")
