"""Whole-array GEMM, C[M,N] = A[M,K] @ B[K,N], and its batched form (kind batched_gemm: B[b] differs
per batch entry, e.g. one attention head each), in one run on every core of the array.

Tiling. Core (row r, column c) owns output tiles of m x n. An M-block is m*rows rows of A: row r of
the array takes its r-th m x k slice, broadcast along the row to every column. Column c takes every
cols-th n-wide slice of B, broadcast down the column. K is walked in k-blocks; each core keeps its
m x n accumulator in its own memory until K is done, then the memory tile of its column joins the
four rows' tiles and the shim writes them out. A enters through the shims of the first `rows`
columns (one row's slice each), B and C through every column's shim.

Compile-time loop counts (why an xclbin is built per padded shape): each core computes
batch * (M / (m*rows)) * (N / (n*cols)) output tiles, each over K / k blocks.

Core kernels: mlir-aie's vectorised matmul microkernel (`aie_kernels/aie2/mm.cc` for npu1,
`aie_kernels/aie2p/mm.cc` for npu2, built with -DDIM_M/-DDIM_K/-DDIM_N for the tile), which reads
A, B in (r x s) / (s x t) blocks: the memory tiles reorder each tile into that layout on the way
to the core, and back to row-major on the way out.
"""
from __future__ import annotations

from .limits import CORE_STACK, DEPTH, ITEMSIZE, MMUL, ROWS, Budget, check_array, require

FUNCTIONS = {("bf16", "f32"): ("matmul_bf16_f32", "zero_f32"), ("i8", "i32"): ("matmul_i8_i32", "zero_i32")}


def shape_of(artifact) -> tuple[int, int, int, int]:
    """(batch, M, K, N) of a gemm or batched_gemm artifact."""
    return (1, *artifact.shape) if artifact.design.kind == "gemm" else tuple(artifact.shape)


def plan(artifact) -> Budget:
    design = artifact.design
    check_array(artifact)
    t = design.t
    m, k, n, rows, cols = t["m"], t["k"], t["n"], design.rows, design.cols
    batch, M, K, N = shape_of(artifact)
    name = artifact.identity
    require((design.dtype_in, design.dtype_out) in FUNCTIONS,
            f"{name}: {design.dtype_in} -> {design.dtype_out} has no microkernel (bf16 -> f32 or i8 -> i32)")
    r, s, tt = MMUL[(design.device, design.dtype_in)]
    require(m % r == 0 and k % s == 0 and n % tt == 0,
            f"{name}: tile {m}x{k}x{n} must be a multiple of the {design.dtype_in} mmul shape {r}x{s}x{tt}")
    require(M % (m * rows) == 0, f"{name}: M = {M} must be a multiple of m*rows = {m * rows} (whole M-blocks)")
    require(K % k == 0, f"{name}: K = {K} must be a multiple of k = {k}")
    require(N % (n * cols) == 0, f"{name}: N = {N} must be a multiple of n*cols = {n * cols} (every column busy)")
    require(cols >= rows, f"{name}: A needs one shim per array row ({rows}), the array has {cols} columns")
    size_in, size_out = ITEMSIZE[design.dtype_in], ITEMSIZE[design.dtype_out]
    budget = Budget(name)
    budget.l1 = [
        ("A tiles", DEPTH * m * k * size_in, f"{DEPTH} x {m}x{k} x {size_in} B"),
        ("B tiles", DEPTH * k * n * size_in, f"{DEPTH} x {k}x{n} x {size_in} B"),
        ("C tiles", DEPTH * m * n * size_out, f"{DEPTH} x {m}x{n} x {size_out} B"),
        ("core stack", CORE_STACK, "mlir-aie default"),
    ]
    # Memory tile of a column < rows: forwards its row's A slice; every column: its B slice and the
    # join of its four cores' C tiles.
    budget.l2 = [
        ("A slice", DEPTH * m * k * size_in, f"{DEPTH} x {m}x{k} x {size_in} B"),
        ("B slice", DEPTH * k * n * size_in, f"{DEPTH} x {k}x{n} x {size_in} B"),
        ("C join", DEPTH * ROWS * m * n * size_out, f"{DEPTH} x {ROWS} x {m}x{n} x {size_out} B"),
    ]
    budget.loops = {"output tiles per core": batch * (M // (m * rows)) * (N // (n * cols)), "K blocks": K // k,
                    "M-blocks": batch * (M // (m * rows))}
    return budget.check()


def kernel_object(artifact) -> tuple[str, list[str], str]:
    """(mlir-aie kernel source, compile flags, object name) of the core microkernel."""
    design = artifact.design
    t = design.t
    source = "aie_kernels/aie2/mm.cc" if design.device == "npu1" else "aie_kernels/aie2p/mm.cc"
    flags = [f"-DDIM_M={t['m']}", f"-DDIM_K={t['k']}", f"-DDIM_N={t['n']}", f"-D{design.dtype_in}_{design.dtype_out}_ONLY"]
    return source, flags, f"mm_{t['m']}x{t['k']}x{t['n']}_{design.dtype_in}.o"


def program(artifact, ldc: int | None = None):
    """The IRON program of the artifact (imports mlir-aie). `ldc`: values between the starts of C's
    rows (default N); an encoder layer's GEMM phases leave a trailer after each row's N values."""
    import numpy as np
    from aie.helpers.taplib import TensorAccessPattern
    from aie.iron import Kernel, ObjectFifo, Program, Runtime, Worker
    from aie.iron.controlflow import range_
    from aie.iron.device import NPU1, NPU2, Tile
    from aie.iron.placers import SequentialPlacer
    from ml_dtypes import bfloat16

    budget = plan(artifact)
    design = artifact.design
    t = design.t
    m, k, n, rows, cols = t["m"], t["k"], t["n"], design.rows, design.cols
    batch, M, K, N = shape_of(artifact)
    ldc = ldc or N
    r, s, tt = MMUL[(design.device, design.dtype_in)]
    types = {"bf16": bfloat16, "i8": np.int8, "f32": np.float32, "i32": np.int32}
    d_in, d_out = np.dtype[types[design.dtype_in]], np.dtype[types[design.dtype_out]]
    a_l1, b_l1, c_l1 = np.ndarray[(m, k), d_in], np.ndarray[(k, n), d_in], np.ndarray[(m, n), d_out]
    c_l2 = np.ndarray[(rows * m, n), d_out]
    matmul_name, zero_name = FUNCTIONS[(design.dtype_in, design.dtype_out)]
    _, _, obj = kernel_object(artifact)
    matmul = Kernel(matmul_name, obj, [a_l1, b_l1, c_l1])
    zero = Kernel(zero_name, obj, [c_l1])

    # A: row i's slice through column i's shim and memory tile, blocked (r x s) for the microkernel,
    # to every core of array row i. B: column j's slice, blocked (s x t), to the column's cores.
    a_in = [ObjectFifo(a_l1, name=f"a_l3l2_{i}", depth=DEPTH) for i in range(rows)]
    a_core = [a_in[i].cons().forward(obj_type=a_l1, name=f"a_l2l1_{i}", placement=Tile(i, 1),
                                     dims_to_stream=[(m // r, r * k), (k // s, s), (r, k), (s, 1)])
              for i in range(rows)]
    b_in = [ObjectFifo(b_l1, name=f"b_l3l2_{j}", depth=DEPTH) for j in range(cols)]
    b_core = [b_in[j].cons().forward(obj_type=b_l1, name=f"b_l2l1_{j}", placement=Tile(j, 1),
                                     dims_to_stream=[(k // s, s * n), (n // tt, tt), (s, n), (tt, 1)])
              for j in range(cols)]
    # C: the four cores of a column joined in its memory tile, back to row-major on the way out.
    c_out = [ObjectFifo(c_l2, name=f"c_l2l3_{j}", depth=DEPTH,
                        dims_to_stream=[(m // r, r * n), (r, tt), (n // tt, r * tt), (tt, 1)]) for j in range(cols)]
    c_core = [c_out[j].prod().join([i * m * n for i in range(rows)], obj_types=[c_l1] * rows,
                                   names=[f"c_l1l2_{j}_{i}" for i in range(rows)], placement=Tile(j, 1))
              for j in range(cols)]

    tiles_per_core, k_blocks = budget.loops["output tiles per core"], budget.loops["K blocks"]

    def core(a, b, c, matmul_fn, zero_fn):
        for _ in range_(tiles_per_core):
            acc = c.acquire(1)
            zero_fn(acc)
            for _ in range_(k_blocks):
                matmul_fn(a.acquire(1), b.acquire(1), acc)
                a.release(1)
                b.release(1)
            c.release(1)

    workers = [Worker(core, [a_core[i].cons(), b_core[j].cons(), c_core[j][i].prod(), matmul, zero],
                      placement=Tile(j, 2 + i)) for i in range(rows) for j in range(cols)]

    n_slices = N // (n * cols)  # output tiles per core along N, per M-block
    runtime = Runtime()
    with runtime.sequence(np.ndarray[(batch * M * K,), d_in], np.ndarray[(batch * K * N,), d_in],
                          np.ndarray[(batch * M * ldc,), d_out]) as (A, B, C):
        runtime.start(*workers)
        for block in range(budget.loops["M-blocks"]):  # one task group per M-block: BDs are reused
            h, row0 = divmod(block * rows * m, M)
            group = runtime.task_group()
            for i in range(rows):
                # Row i's m x K slice, once per N-slice of its cores (the core walks K for each).
                offset = h * M * K + (row0 + i * m) * K
                tap = TensorAccessPattern((batch * M, K), offset, [n_slices, K // k, m, k], [0, k, K, 1])
                runtime.fill(a_in[i].prod(), A, tap=tap, task_group=group, placement=Tile(i, 0))
            for j in range(cols):
                # Column j's n-wide slices (every cols-th), each walked over K in k-blocks.
                tap = TensorAccessPattern((batch * K, N), h * K * N + j * n, [n_slices, K // k, k, n],
                                          [n * cols, k * N, N, 1])
                runtime.fill(b_in[j].prod(), B, tap=tap, task_group=group, placement=Tile(j, 0))
                out = TensorAccessPattern((batch * M, ldc), h * M * ldc + row0 * ldc + j * n, [n_slices, rows * m, n],
                                          [n * cols, ldc, 1])
                runtime.drain(c_out[j].cons(), C, tap=out, wait=True, task_group=group, placement=Tile(j, 0))
            runtime.finish_task_group(group)
    device = NPU1() if design.device == "npu1" else NPU2()
    return Program(device, runtime).resolve_program(SequentialPlacer())
