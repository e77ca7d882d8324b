"""Row-wise softmax, Y[R,C] = softmax(X[R,C]) over each row's first L values, on every core.

Tiling. Rows go out in blocks of r: column j's shim and memory tile split each group of rows*r
rows between the column's four cores, which take every (rows*cols)-th block. A row is held whole
in the core (C values, the C - L padded ones ignored and written as 0), so one pass computes the
max, a second the exponentials and their sum, a third the scaling, all in the core's own memory.

Compile-time constants: blocks per core R / (r * rows * cols), the row length C and the valid
length L (why an xclbin is built per padded shape).

Core kernel: `softmax_rows.cc` here (ours; scalar float arithmetic on bf16 data, not vectorised).
"""
from __future__ import annotations

from .limits import CORE_STACK, DEPTH, ITEMSIZE, ROWS, VECTOR_BF16, Budget, check_array, require


def plan(artifact) -> Budget:
    design = artifact.design
    check_array(artifact)
    r, rows, cols = design.t["r"], design.rows, design.cols
    R, C, L = artifact.shape
    name = artifact.identity
    require(design.dtype_in == design.dtype_out == "bf16", f"{name}: softmax runs on bf16 in and out")
    require(R % (r * rows * cols) == 0, f"{name}: R = {R} must be a multiple of r*cores = {r * rows * cols}")
    require(C % VECTOR_BF16 == 0, f"{name}: C = {C} must be a multiple of the {VECTOR_BF16}-lane vector")
    require(0 < L <= C, f"{name}: valid length L = {L} must be in 1..C = {C}")
    size = ITEMSIZE["bf16"]
    budget = Budget(name)
    budget.l1 = [
        ("X rows", DEPTH * r * C * size, f"{DEPTH} x {r}x{C} x {size} B"),
        ("Y rows", DEPTH * r * C * size, f"{DEPTH} x {r}x{C} x {size} B"),
        ("core stack", CORE_STACK, "mlir-aie default"),
    ]
    budget.l2 = [
        ("X split", DEPTH * ROWS * r * C * size, f"{DEPTH} x {ROWS} x {r}x{C} x {size} B"),
        ("Y join", DEPTH * ROWS * r * C * size, f"{DEPTH} x {ROWS} x {r}x{C} x {size} B"),
    ]
    budget.loops = {"blocks per core": R // (r * rows * cols), "row length": C, "valid length": L}
    return budget.check()


def kernel_object(artifact) -> tuple[str, list[str], str]:
    """(kernel source, compile flags, object name) of the core kernel."""
    r = artifact.design.t["r"]
    R, C, L = artifact.shape
    return "softmax_rows.cc", [f"-DROWS={r}", f"-DCOLS={C}", f"-DVALID={L}"], f"softmax_{r}x{C}_{L}.o"


def program(artifact):
    """The IRON program of the artifact (imports mlir-aie)."""
    import numpy as np
    from aie.helpers.taplib import TensorAccessPattern
    from aie.iron import Kernel, ObjectFifo, Program, Runtime, Worker
    from aie.iron.controlflow import range_
    from aie.iron.device import NPU1, NPU2, Tile
    from aie.iron.placers import SequentialPlacer
    from ml_dtypes import bfloat16

    budget = plan(artifact)
    design = artifact.design
    r, rows, cols = design.t["r"], design.rows, design.cols
    R, C, _ = artifact.shape
    bf = np.dtype[bfloat16]
    block, group = np.ndarray[(r, C), bf], np.ndarray[(rows * r, C), bf]
    _, _, obj = kernel_object(artifact)
    softmax = Kernel("softmax_rows", obj, [block, block])

    x_in = [ObjectFifo(group, name=f"x_l3l2_{j}", depth=DEPTH) for j in range(cols)]
    x_core = [x_in[j].cons().split([i * r * C for i in range(rows)], obj_types=[block] * rows,
                                   names=[f"x_l2l1_{j}_{i}" for i in range(rows)], placement=Tile(j, 1))
              for j in range(cols)]
    y_out = [ObjectFifo(group, name=f"y_l2l3_{j}", depth=DEPTH) for j in range(cols)]
    y_core = [y_out[j].prod().join([i * r * C for i in range(rows)], obj_types=[block] * rows,
                                   names=[f"y_l1l2_{j}_{i}" for i in range(rows)], placement=Tile(j, 1))
              for j in range(cols)]
    blocks = budget.loops["blocks per core"]

    def core(x, y, softmax_fn):
        for _ in range_(blocks):
            softmax_fn(x.acquire(1), y.acquire(1))
            x.release(1)
            y.release(1)

    workers = [Worker(core, [x_core[j][i].cons(), y_core[j][i].prod(), softmax], placement=Tile(j, 2 + i))
               for i in range(rows) for j in range(cols)]
    runtime = Runtime()
    with runtime.sequence(np.ndarray[(R * C,), bf], np.ndarray[(R * C,), bf]) as (X, Y):
        runtime.start(*workers)
        for j in range(cols):
            # Column j: every cols-th group of rows*r rows.
            tap = TensorAccessPattern((R, C), j * rows * r * C, [blocks, rows * r, C], [cols * rows * r * C, C, 1])
            runtime.fill(x_in[j].prod(), X, tap=tap, placement=Tile(j, 0))
            runtime.drain(y_out[j].cons(), Y, tap=tap, wait=True, placement=Tile(j, 0))
    device = NPU1() if design.device == "npu1" else NPU2()
    return Program(device, runtime).resolve_program(SequentialPlacer())
