"""The emulated device, driven exactly as a pyxrt host program drives an XDNA NPU."""
from __future__ import annotations

import numpy as np
import pytest

from npu_ep.provider import emulator as xrt
from npu_ep import kernels
from npu_ep.provider.bf16 import from_f32


pytestmark = pytest.mark.usefixtures("clean_emulator")


def open_kernel(identity: str):
    """Register an artifact's xclbin and open its hardware context, as a pyxrt host does."""
    device = xrt.device(0)
    xclbin = xrt.xclbin(str(kernels.kernels_dir() / f"{identity}.xclbin"))
    device.register_xclbin(xclbin)
    context = xrt.hw_context(device, xclbin.get_uuid())
    name = kernels.manifest().call.kernel_name
    assert [k.get_name() for k in xclbin.get_kernels()] == [name]
    return kernels.parse(identity), device, xrt.kernel(context, name)


def gemm_identity(design: str, M: int, K: int, N: int) -> str:
    return kernels.design(design).artifact(M, K, N).identity


def run_gemm(identity: str, a: np.ndarray, b: np.ndarray, out_dtype, insts_for: str | None = None,
             ) -> tuple[object, np.ndarray]:
    """The mlir-aie host sequence: insts bo on group 1, data bos on 3/4/5, kernel(3, insts, n, a, b, c).
    `insts_for` uses the instruction sequence of another artifact."""
    artifact, device, kernel = open_kernel(identity)
    M, K = a.shape
    N = b.shape[1]
    words = xrt.build_instructions(kernels.parse(insts_for) if insts_for else artifact)
    insts = xrt.bo(device, words.nbytes, xrt.bo.flags.cacheable, kernel.group_id(1))
    insts.write(words, 0)
    insts.sync(xrt.xclBOSyncDirection.XCL_BO_SYNC_BO_TO_DEVICE)
    bos = []
    for array, group in ((a, 3), (b, 4)):
        bo = xrt.bo(device, array.nbytes, xrt.bo.flags.host_only, kernel.group_id(group))
        np.frombuffer(bo.map(), dtype=array.dtype)[:] = array.reshape(-1)
        bo.sync(xrt.xclBOSyncDirection.XCL_BO_SYNC_BO_TO_DEVICE)
        bos.append(bo)
    c = xrt.bo(device, M * N * np.dtype(out_dtype).itemsize, xrt.bo.flags.host_only, kernel.group_id(5))
    run = kernel(kernels.manifest().call.opcode, insts, int(words.size), bos[0], bos[1], c)
    state = run.wait(1000)
    c.sync(xrt.xclBOSyncDirection.XCL_BO_SYNC_BO_FROM_DEVICE)
    return state, np.frombuffer(c.map(), dtype=out_dtype).reshape(M, N).copy()


def test_bf16_gemm_accumulates_in_fp32():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((256, 64), dtype=np.float32)
    b = rng.standard_normal((64, 128), dtype=np.float32)
    a16, b16 = from_f32(a), from_f32(b)
    state, c = run_gemm(gemm_identity("gemm-bf16-npu1", 256, 64, 128), a16, b16, np.float32)
    assert state == xrt.ert_cmd_state.ERT_CMD_STATE_COMPLETED
    widened = lambda bits: (bits.astype(np.uint32) << 16).view(np.float32)  # noqa: E731
    expected = (widened(a16).astype(np.float64) @ widened(b16).astype(np.float64))
    # fp32 accumulation of exact bf16 products: within fp32 rounding of the float64 result...
    assert np.abs(c - expected).max() < 1e-4
    # ...and visibly different from full float32 inputs (the kernel really rounds to bf16).
    assert np.abs(c - a @ b).max() > 1e-3
    assert xrt.stats.dispatches == 1
    assert xrt.stats.bytes_to_device == 4 * 5 + a16.nbytes + b16.nbytes  # insts: 5 uint32 words
    assert xrt.stats.bytes_from_device == c.nbytes


def test_int8_gemm_is_exact_int32():
    rng = np.random.default_rng(2)
    a = rng.integers(-128, 128, (256, 2048), dtype=np.int8)
    b = rng.integers(-128, 128, (2048, 128), dtype=np.int8)
    state, c = run_gemm(gemm_identity("gemm-i8-npu1", 256, 2048, 128), a, b, np.int32)
    assert state == xrt.ert_cmd_state.ERT_CMD_STATE_COMPLETED
    assert np.array_equal(c, a.astype(np.int64) @ b.astype(np.int64))


def test_npu_calls_that_real_npus_refuse():
    device = xrt.device(0)
    with pytest.raises(RuntimeError, match="Operation not supported"):
        device.load_xclbin(gemm_identity("gemm-bf16-npu1", 256, 64, 128) + ".xclbin")
    with pytest.raises(RuntimeError, match="not a valid xclbin"):
        xrt.xclbin("/nowhere/other.xclbin")
    # An identity whose shape is not padded for its design, or whose tiles are not the design's.
    with pytest.raises(RuntimeError, match="not padded"):
        xrt.xclbin("gemm-bf16-npu1-1500x384x384-t64x64x32-a4x4.xclbin")
    with pytest.raises(RuntimeError, match="tile or array differs"):
        xrt.xclbin("gemm-bf16-npu1-1536x384x384-t32x64x32-a4x4.xclbin")
    with pytest.raises(RuntimeError, match="No such device"):
        xrt.device(1)


@pytest.mark.parametrize("fault, state", [("error", "ERT_CMD_STATE_ERROR"), ("timeout", "ERT_CMD_STATE_TIMEOUT")])
def test_run_faults_end_in_their_state(fault, state):
    xrt.inject_fault(fault, count=1)
    a = np.zeros((256, 64), np.uint16)
    b = np.zeros((64, 128), np.uint16)
    identity = gemm_identity("gemm-bf16-npu1", 256, 64, 128)
    got, _ = run_gemm(identity, a, b, np.float32)
    assert got == getattr(xrt.ert_cmd_state, state)
    again, _ = run_gemm(identity, a, b, np.float32)  # count=1: the next run is fine
    assert again == xrt.ert_cmd_state.ERT_CMD_STATE_COMPLETED


@pytest.mark.parametrize("fault, match", [("no_device", "No such device"), ("busy", "busy"),
                                          ("bad_xclbin", "not a valid xclbin")])
def test_setup_faults_raise_like_pyxrt(fault, match):
    xrt.inject_fault(fault)
    with pytest.raises(RuntimeError, match=match):
        open_kernel(gemm_identity("gemm-bf16-npu1", 256, 64, 128))


def test_unknown_fault_is_refused():
    with pytest.raises(ValueError):
        xrt.inject_fault("meteor")


def test_an_xclbin_built_for_one_shape_refuses_another():
    """The artifact rule of the real designs: tile counts are compiled in, so a run with another
    shape's instructions or buffers ends in ERROR, and says why."""
    small, large = (gemm_identity("gemm-bf16-npu1", M, 64, 128) for M in (256, 512))
    a, b = np.zeros((256, 64), np.uint16), np.zeros((64, 128), np.uint16)
    state, _ = run_gemm(large, a, b, np.float32)  # buffers for 256 rows on the 512-row xclbin
    assert state == xrt.ert_cmd_state.ERT_CMD_STATE_ERROR
    assert "buffer a holds 32768 bytes" in xrt.stats.refusals[-1]
    state, _ = run_gemm(small, a, b, np.float32, insts_for=large)  # the other shape's instructions
    assert state == xrt.ert_cmd_state.ERT_CMD_STATE_ERROR
    assert "instructions built for shape (512, 64, 128), the xclbin for (256, 64, 128)" in xrt.stats.refusals[-1]
    state, _ = run_gemm(small, a, b, np.float32)
    assert state == xrt.ert_cmd_state.ERT_CMD_STATE_COMPLETED


def test_without_compute_nests():
    with xrt.without_compute():
        with xrt.without_compute():  # e.g. a session's warm-up inside a host-time benchmark
            pass
        assert not xrt._computing
    assert xrt._computing
