"""Fused attention, O[b] = softmax(Q[b] K[b]^T / sqrt(D)) V[b] over the first L keys, per head b, with
the score matrix never leaving the compute tiles.

Tiling. All cores work on one head at a time. Each core owns query blocks of sq rows (column j,
row i: every (rows*cols)-th block). K and V are streamed in key blocks of tk rows, broadcast down
each column from its memory tile; for every key block a core computes its sq x tk scores, folds them
into a running row max and sum and rescales its sq x D output accumulator (online softmax), so a
score is used where it is made and only O (sq x D per block) goes back out.

Compile-time constants: query blocks per core B * S / (sq * cores), key blocks T / tk, the head
dimension D and the valid key count L (keys past L are masked), hence an xclbin per padded shape.

Core kernel: `attention_block.cc` here (ours; scalar float arithmetic on bf16 data, not vectorised).
"""
from __future__ import annotations

from .limits import CORE_STACK, DEPTH, ITEMSIZE, ROWS, VECTOR_BF16, Budget, check_array, require


def plan(artifact) -> Budget:
    design = artifact.design
    check_array(artifact)
    sq, tk, rows, cols = design.t["sq"], design.t["tk"], design.rows, design.cols
    B, S, T, D, L = artifact.shape
    name = artifact.identity
    require(design.dtype_in == "bf16" and design.dtype_out == "f32", f"{name}: attention takes bf16, gives f32")
    require(S % (sq * rows * cols) == 0, f"{name}: S = {S} must be a multiple of sq*cores = {sq * rows * cols}")
    require(T % tk == 0, f"{name}: T = {T} must be a multiple of the key block tk = {tk}")
    require(D % VECTOR_BF16 == 0, f"{name}: D = {D} must be a multiple of the {VECTOR_BF16}-lane vector")
    require(0 < L <= T, f"{name}: valid key count L = {L} must be in 1..T = {T}")
    size, f32 = ITEMSIZE["bf16"], ITEMSIZE["f32"]
    budget = Budget(name)
    budget.l1 = [
        ("Q block", DEPTH * sq * D * size, f"{DEPTH} x {sq}x{D} x {size} B"),
        ("K block", DEPTH * tk * D * size, f"{DEPTH} x {tk}x{D} x {size} B"),
        ("V block", DEPTH * tk * D * size, f"{DEPTH} x {tk}x{D} x {size} B"),
        ("O block", DEPTH * sq * D * f32, f"{DEPTH} x {sq}x{D} x {f32} B"),
        ("scores", sq * tk * f32, f"{sq}x{tk} x {f32} B"),
        ("accumulator", sq * D * f32, f"{sq}x{D} x {f32} B"),
        ("row max and sum", 2 * sq * f32, f"2 x {sq} x {f32} B"),
        ("core stack", CORE_STACK, "mlir-aie default"),
    ]
    budget.l2 = [
        ("Q split", DEPTH * ROWS * sq * D * size, f"{DEPTH} x {ROWS} x {sq}x{D} x {size} B"),
        ("K broadcast", DEPTH * tk * D * size, f"{DEPTH} x {tk}x{D} x {size} B"),
        ("V broadcast", DEPTH * tk * D * size, f"{DEPTH} x {tk}x{D} x {size} B"),
        ("O join", DEPTH * ROWS * sq * D * f32, f"{DEPTH} x {ROWS} x {sq}x{D} x {f32} B"),
    ]
    budget.loops = {"query blocks per core": B * S // (sq * rows * cols), "key blocks": T // tk,
                    "head dim": D, "valid keys": L}
    return budget.check()


def kernel_object(artifact, scaled: bool = True) -> tuple[str, list[str], str]:
    """(kernel source, compile flags, object name) of the core kernel. `scaled` False: the scores
    are not divided by sqrt(D) (an encoder layer's q and k come scaled already)."""
    sq, tk = artifact.design.t["sq"], artifact.design.t["tk"]
    B, S, T, D, L = artifact.shape
    flags = [f"-DSQ={sq}", f"-DTK={tk}", f"-DHEAD_DIM={D}", f"-DVALID={L}"] + ([] if scaled else ["-DSCORE_SCALE=1.0f"])
    return "attention_block.cc", flags, f"attention_{sq}x{tk}x{D}_{L}{'' if scaled else '_unscaled'}.o"


def program(artifact, scaled: bool = True):
    """The IRON program of the artifact (imports mlir-aie); `scaled` as for `kernel_object`."""
    import numpy as np
    from aie.helpers.taplib import TensorAccessPattern
    from aie.iron import Kernel, ObjectFifo, Program, Runtime, Worker
    from aie.iron.controlflow import range_
    from aie.iron.device import NPU1, NPU2, Tile
    from aie.iron.placers import SequentialPlacer
    from ml_dtypes import bfloat16

    budget = plan(artifact)
    design = artifact.design
    sq, tk, rows, cols = design.t["sq"], design.t["tk"], design.rows, design.cols
    B, S, T, D, _ = artifact.shape
    bf, f32 = np.dtype[bfloat16], np.dtype[np.float32]
    q_l1, kv_l1, o_l1 = np.ndarray[(sq, D), bf], np.ndarray[(tk, D), bf], np.ndarray[(sq, D), f32]
    q_l2, o_l2 = np.ndarray[(rows * sq, D), bf], np.ndarray[(rows * sq, D), f32]
    _, _, obj = kernel_object(artifact, scaled)
    begin = Kernel("attention_begin", obj, [])
    step = Kernel("attention_step", obj, [q_l1, kv_l1, kv_l1])
    end = Kernel("attention_end", obj, [o_l1])

    q_in = [ObjectFifo(q_l2, name=f"q_l3l2_{j}", depth=DEPTH) for j in range(cols)]
    q_core = [q_in[j].cons().split([i * sq * D for i in range(rows)], obj_types=[q_l1] * rows,
                                   names=[f"q_l2l1_{j}_{i}" for i in range(rows)], placement=Tile(j, 1))
              for j in range(cols)]
    k_in = [ObjectFifo(kv_l1, name=f"k_l3l2_{j}", depth=DEPTH) for j in range(cols)]
    v_in = [ObjectFifo(kv_l1, name=f"v_l3l2_{j}", depth=DEPTH) for j in range(cols)]
    k_core = [k_in[j].cons().forward(obj_type=kv_l1, name=f"k_l2l1_{j}", placement=Tile(j, 1)) for j in range(cols)]
    v_core = [v_in[j].cons().forward(obj_type=kv_l1, name=f"v_l2l1_{j}", placement=Tile(j, 1)) for j in range(cols)]
    o_out = [ObjectFifo(o_l2, name=f"o_l2l3_{j}", depth=DEPTH) for j in range(cols)]
    o_core = [o_out[j].prod().join([i * sq * D for i in range(rows)], obj_types=[o_l1] * rows,
                                   names=[f"o_l1l2_{j}_{i}" for i in range(rows)], placement=Tile(j, 1))
              for j in range(cols)]
    q_blocks, k_blocks = budget.loops["query blocks per core"], budget.loops["key blocks"]

    def core(q, k, v, o, begin_fn, step_fn, end_fn):
        for _ in range_(q_blocks):
            query = q.acquire(1)
            begin_fn()
            for _ in range_(k_blocks):
                step_fn(query, k.acquire(1), v.acquire(1))
                k.release(1)
                v.release(1)
            end_fn(o.acquire(1))
            o.release(1)
            q.release(1)

    workers = [Worker(core, [q_core[j][i].cons(), k_core[j].cons(), v_core[j].cons(), o_core[j][i].prod(),
                             begin, step, end], placement=Tile(j, 2 + i)) for i in range(rows) for j in range(cols)]
    per_head = S // (sq * rows * cols)  # query blocks per core and head
    runtime = Runtime()
    with runtime.sequence(np.ndarray[(B * S * D,), bf], np.ndarray[(B * T * D,), bf], np.ndarray[(B * T * D,), bf],
                          np.ndarray[(B * S * D,), f32]) as (Q, K, V, O):
        runtime.start(*workers)
        for j in range(cols):
            rows_tap = TensorAccessPattern((B * S, D), j * rows * sq * D, [B, per_head, rows * sq * D],
                                           [S * D, cols * rows * sq * D, 1])
            # Every query block of a head reads all of the head's keys and values again.
            keys_tap = TensorAccessPattern((B * T, D), 0, [B, per_head, T * D], [T * D, 0, 1])
            runtime.fill(q_in[j].prod(), Q, tap=rows_tap, placement=Tile(j, 0))
            runtime.fill(k_in[j].prod(), K, tap=keys_tap, placement=Tile(j, 0))
            runtime.fill(v_in[j].prod(), V, tap=keys_tap, placement=Tile(j, 0))
            runtime.drain(o_out[j].cons(), O, tap=rows_tap, wait=True, placement=Tile(j, 0))
    device = NPU1() if design.device == "npu1" else NPU2()
    return Program(device, runtime).resolve_program(SequentialPlacer())
