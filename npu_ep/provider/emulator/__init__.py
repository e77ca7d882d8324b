"""An emulated XDNA NPU behind the same names and call signatures as pyxrt's NPU subset.

"xclbins" are entries of kernels/manifest.json (looked up by file name, no file needed), and the
GEMM kernels compute like the NPU: bf16 inputs with fp32 accumulation, or int8 x int8 with int32
accumulation, then the kernel's output type. `stats` counts dispatches and bytes synced each way
and keeps the kernel's own compute time separate (`compute_seconds`) so host-side overhead can be
measured without it. `inject_fault` makes the next operations fail the way real hardware can.

Emulator-only additions: `stats`, `inject_fault`, `clear_faults`, `build_instructions` (stands in
for mlir-aie's build of an instruction sequence for one problem size), `without_compute`.
"""
from __future__ import annotations

import enum
import time
from contextlib import contextmanager
import uuid as _uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from npu_ep.provider import bf16
from npu_ep.provider.kernels import DTYPES, KernelEntry, manifest

_INSTS_MAGIC = 0x4E505545  # "NPUE": an emulated instruction sequence is [magic, M, K, N]
FAULTS = ("no_device", "busy", "bad_xclbin", "error", "timeout")


@dataclass
class Stats:
    dispatches: int = 0
    bytes_to_device: int = 0
    bytes_from_device: int = 0
    compute_seconds: float = 0.0

    def reset(self) -> None:
        self.dispatches = self.bytes_to_device = self.bytes_from_device = 0
        self.compute_seconds = 0.0


stats = Stats()
_faults: dict[str, int | None] = {}
_computing = True


@contextmanager
def without_compute():
    """Runs check their arguments and complete, but the kernel computes nothing (the output buffer
    keeps its old contents): for timing the host work around a run. The emulated kernel's numpy
    BLAS threads and temporaries would otherwise slow that host work, which an NPU does not do."""
    global _computing
    _computing = False
    try:
        yield
    finally:
        _computing = True


def inject_fault(kind: str, count: int | None = None) -> None:
    """Make `kind` happen on the next `count` occasions (None: until `clear_faults`)."""
    if kind not in FAULTS:
        raise ValueError(f"unknown fault {kind!r} (one of {', '.join(FAULTS)})")
    _faults[kind] = count


def clear_faults() -> None:
    _faults.clear()


def _fault(kind: str) -> bool:
    if kind not in _faults:
        return False
    remaining = _faults[kind]
    if remaining is not None:
        if remaining <= 1:
            del _faults[kind]
        else:
            _faults[kind] = remaining - 1
    return True


def build_instructions(entry: KernelEntry, M: int, K: int, N: int) -> np.ndarray:
    """The emulated counterpart of the insts.bin mlir-aie builds for one (M, K, N)."""
    return np.array([_INSTS_MAGIC, M, K, N], dtype=np.uint32)


class xclBOSyncDirection(enum.IntEnum):
    XCL_BO_SYNC_BO_TO_DEVICE = 0
    XCL_BO_SYNC_BO_FROM_DEVICE = 1


class ert_cmd_state(enum.IntEnum):
    ERT_CMD_STATE_NEW = 1
    ERT_CMD_STATE_QUEUED = 2
    ERT_CMD_STATE_RUNNING = 3
    ERT_CMD_STATE_COMPLETED = 4
    ERT_CMD_STATE_ERROR = 5
    ERT_CMD_STATE_ABORT = 6
    ERT_CMD_STATE_SUBMITTED = 7
    ERT_CMD_STATE_TIMEOUT = 8


class uuid:
    def __init__(self, text: str) -> None:
        self._text = text

    def to_string(self) -> str:
        return self._text


class device:
    def __init__(self, index: int = 0) -> None:
        if index != 0 or _fault("no_device"):
            raise RuntimeError(f"No such device: {index} (emulated NPU has one device, index 0)")
        self._registered: dict[str, KernelEntry] = {}

    def register_xclbin(self, xclbin_: "xclbin") -> uuid:
        self._registered[xclbin_.get_uuid().to_string()] = xclbin_._entry
        return xclbin_.get_uuid()

    def load_xclbin(self, path) -> None:
        raise RuntimeError("load_xclbin: Operation not supported (NPUs use register_xclbin + hw_context)")


class _xclbin_kernel:
    def __init__(self, name: str) -> None:
        self._name = name

    def get_name(self) -> str:
        return self._name


class xclbin:
    def __init__(self, path: str) -> None:
        name = Path(path).name
        entry = next((e for e in manifest().values() if e.xclbin == name), None)
        if entry is None or _fault("bad_xclbin"):
            raise RuntimeError(f"{path}: not a valid xclbin (no such kernel in kernels/manifest.json)")
        self._entry = entry
        self._uuid = uuid(str(_uuid.uuid5(_uuid.NAMESPACE_URL, entry.name)))

    def get_uuid(self) -> uuid:
        return self._uuid

    def get_kernels(self) -> list[_xclbin_kernel]:
        return [_xclbin_kernel(self._entry.kernel_name)]


class hw_context:
    def __init__(self, device_: device, uuid_: uuid) -> None:
        if uuid_.to_string() not in device_._registered:
            raise RuntimeError("hw_context: xclbin not registered on this device")
        if _fault("busy"):
            raise RuntimeError("hw_context: device busy (no free AIE partition)")
        self._entry = device_._registered[uuid_.to_string()]


class bo:
    class flags(enum.IntEnum):
        normal = 0
        cacheable = 1
        device_only = 2
        host_only = 3
        p2p = 4
        svm = 5

    def __init__(self, device_: device, size: int, flags: "bo.flags", group_id: int) -> None:
        # One buffer stands for host and device memory: the NPU shares DRAM with the host
        # (host_only bos), and sync is where transfers are counted.
        self._data = np.zeros(size, dtype=np.uint8)
        self._group = group_id

    def write(self, buffer, offset: int) -> None:
        raw = np.frombuffer(buffer, dtype=np.uint8)
        self._data[offset:offset + raw.size] = raw

    def read(self, size: int, offset: int) -> np.ndarray:
        return self._data[offset:offset + size].view(np.int8).copy()

    def map(self) -> memoryview:
        return memoryview(self._data)

    def sync(self, direction: xclBOSyncDirection, size: int | None = None, offset: int = 0) -> None:
        nbytes = self._data.size if size is None else size
        if direction == xclBOSyncDirection.XCL_BO_SYNC_BO_TO_DEVICE:
            stats.bytes_to_device += nbytes
        else:
            stats.bytes_from_device += nbytes

    def size(self) -> int:
        return self._data.size

    def address(self) -> int:
        return self._data.ctypes.data


class kernel:
    def __init__(self, context: hw_context, name: str) -> None:
        if name != context._entry.kernel_name:
            raise RuntimeError(f"kernel {name!r} not found in the xclbin")
        self._entry = context._entry

    def group_id(self, index: int) -> int:
        return index

    def __call__(self, *args) -> "run":
        started = run(self)
        for index, arg in enumerate(args):
            started.set_arg(index, arg)
        started.start()
        return started


class run:
    def __init__(self, kernel_: kernel | None = None) -> None:
        self._kernel = kernel_
        self._args: dict[int, object] = {}
        self._state = ert_cmd_state.ERT_CMD_STATE_NEW

    def set_arg(self, index: int, arg) -> None:
        self._args[index] = arg

    def start(self) -> None:
        stats.dispatches += 1
        if _fault("error"):
            self._state = ert_cmd_state.ERT_CMD_STATE_ERROR
        elif _fault("timeout"):
            self._state = ert_cmd_state.ERT_CMD_STATE_TIMEOUT
        else:
            started = time.perf_counter()
            self._state = self._execute()
            stats.compute_seconds += time.perf_counter() - started

    def wait(self, timeout_ms: int = 0) -> ert_cmd_state:
        return self._state

    def state(self) -> ert_cmd_state:
        return self._state

    def _execute(self) -> ert_cmd_state:
        entry = self._kernel._entry
        opcode, insts, n_words, a, b, c = (self._args.get(i) for i in range(6))
        if opcode != entry.opcode or not isinstance(insts, bo) or n_words != 4:
            return ert_cmd_state.ERT_CMD_STATE_ERROR
        magic, M, K, N = insts._data[:16].view(np.uint32).tolist()
        if magic != _INSTS_MAGIC:
            return ert_cmd_state.ERT_CMD_STATE_ERROR
        dtype_in, dtype_out = DTYPES[entry.dtype_in], DTYPES[entry.dtype_out]
        size_in = np.dtype(dtype_in).itemsize
        if a._data.size < M * K * size_in or b._data.size < K * N * size_in or c._data.size < M * N * np.dtype(dtype_out).itemsize:
            return ert_cmd_state.ERT_CMD_STATE_ERROR
        if not _computing:
            return ert_cmd_state.ERT_CMD_STATE_COMPLETED
        A = a._data[:M * K * size_in].view(dtype_in).reshape(M, K)
        B = b._data[:K * N * size_in].view(dtype_in).reshape(K, N)
        C = c._data[:M * N * np.dtype(dtype_out).itemsize].view(dtype_out).reshape(M, N)
        if entry.dtype_in == "bf16":
            # bf16 widened exactly to fp32; numpy's sgemm accumulates in fp32 like the AIE cores.
            product = np.matmul(bf16.to_f32(A), bf16.to_f32(B))
            if entry.dtype_out == "bf16":
                C[...] = bf16.from_f32(product)
            else:
                C[...] = product
        else:
            # int8 products summed in float64 are exact (|sum| < 2**53), matching int32 accumulation.
            C[...] = np.matmul(A.astype(np.float64), B.astype(np.float64)).astype(dtype_out)
        return ert_cmd_state.ERT_CMD_STATE_COMPLETED
