"""An emulated XDNA NPU behind the same names and call signatures as pyxrt's NPU subset.

"xclbins" are kernel artifacts of kernels/manifest.json, named by their identity (no file needed:
the emulated device builds any artifact of a listed design on demand, as `npu-ep kernels build`
does for a real one). It keeps the real artifact rule: an xclbin is built for one padded shape, and
a run whose instruction sequence or buffers are for another shape ends in ERROR (the reason in
`stats.refusals`). Kernels compute like the NPU: bf16 inputs with fp32 accumulation, or int8 x
int8 with int32 accumulation, then the kernel's output type. `stats` counts dispatches and bytes
synced each way and keeps the kernels' own compute time separate (`compute_seconds`) so host-side
overhead can be measured without it. `inject_fault` makes the next operations fail the way real
hardware can.

Artifacts of format "elf" (an encoder layer) come as ELF files instead, opened the way XRT's full-ELF
flow opens them (`elf`, `hw_context(device, elf)`, `ext.kernel(context, "main:sequence")`, `ext.bo`),
their runs taking the buffers alone.

Emulator-only additions: `stats`, `inject_fault`, `clear_faults`, `build_instructions` (stands in
for mlir-aie's build of an artifact's instruction sequence), `without_compute`, `COMPUTE` (each
kernel kind's math).
"""
from __future__ import annotations

import enum
import math
import time
from contextlib import contextmanager
import uuid as _uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numba
import numpy as np

from npu_ep.forms.layer import VD, VF
from npu_ep.provider import bf16
from npu_ep.kernels import Artifact, manifest, parse

_INSTS_MAGIC = 0x4E505545  # "NPUE": an emulated instruction sequence is [magic, rank, *padded shape]
FAULTS = ("no_device", "busy", "bad_xclbin", "error", "timeout")


@dataclass
class Stats:
    dispatches: int = 0
    bytes_to_device: int = 0
    bytes_from_device: int = 0
    compute_seconds: float = 0.0   # wall time inside runs
    compute_cpu_seconds: float = 0.0  # process CPU time inside runs (thread_time costs ~25 us a call here)
    refusals: list = field(default_factory=list)  # why runs ended in ERROR (not a fault injected)

    def reset(self) -> None:
        self.dispatches = self.bytes_to_device = self.bytes_from_device = 0
        self.compute_seconds = self.compute_cpu_seconds = 0.0
        self.refusals.clear()


stats = Stats()
_faults: dict[str, int | None] = {}
_computing = True


@contextmanager
def without_compute():
    """Runs check their arguments and complete, but the kernel computes nothing (the output buffer
    keeps its old contents): for timing the host work around a run. The emulated kernel's numpy
    BLAS threads and temporaries would otherwise slow that host work, which an NPU does not do."""
    global _computing
    before, _computing = _computing, False
    try:
        yield
    finally:
        _computing = before  # nested uses (a session's warm-up inside a benchmark) keep the outer one


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


def build_instructions(artifact: Artifact) -> np.ndarray:
    """The emulated counterpart of the insts.bin mlir-aie builds for one artifact (its padded shape)."""
    return np.array([_INSTS_MAGIC, len(artifact.shape), *artifact.shape], dtype=np.uint32)


def _gemm(artifact: Artifact, buffers: dict[str, np.ndarray]) -> None:
    a, b, c = buffers["a"], buffers["b"], buffers["c"]
    if artifact.design.dtype_in == "bf16":
        # bf16 widened exactly to fp32; numpy's sgemm accumulates in fp32 like the AIE cores.
        c[...] = np.matmul(bf16.to_f32(a), bf16.to_f32(b))
    else:
        # int8 products summed in float64 are exact (|sum| < 2**53), matching int32 accumulation.
        c[...] = np.matmul(a.astype(np.float64), b.astype(np.float64)).astype(c.dtype)


def _softmax_f32(scores: np.ndarray, valid: int) -> np.ndarray:
    """Row-wise softmax in fp32 over the first `valid` columns, as the vector units compute it (max
    subtracted, exp, one division); the masked columns come out 0."""
    scores[..., valid:] = -np.inf
    scores -= scores[..., :valid].max(axis=-1, keepdims=True)
    np.exp(scores, out=scores)
    scores /= scores.sum(axis=-1, keepdims=True)
    return scores


def _softmax(artifact: Artifact, buffers: dict[str, np.ndarray]) -> None:
    buffers["y"][...] = bf16.from_f32(_softmax_f32(bf16.to_f32(buffers["x"]), artifact.shape[2]))


def _attention(artifact: Artifact, buffers: dict[str, np.ndarray]) -> None:
    # Scores Q Kᵀ / sqrt(D) in fp32 from bf16 operands; softmax in fp32 over the first L keys; the
    # probabilities rounded to bf16, as they enter the second bf16 GEMM on the cores; P V
    # accumulated in fp32. Zero padding of D changes no score; padded query rows are discarded.
    q, k, v = (bf16.to_f32(buffers[name]) for name in ("q", "k", "v"))
    D, valid = artifact.shape[3], artifact.shape[4]
    scores = np.matmul(q, k.transpose(0, 2, 1))
    scores *= np.float32(1 / np.sqrt(D))
    probabilities = _softmax_f32(scores, valid)
    buffers["o"][...] = np.matmul(bf16.to_f32(bf16.from_f32(probabilities)), v)


@numba.vectorize(["float32(float32)"], cache=True)
def _gelu(x):  # the exact (erf) GELU Whisper uses, in fp32 on the vector units
    return np.float32(0.5) * x * (np.float32(1.0) + np.float32(math.erf(x * 0.7071067811865476)))


def _layer_norm(z: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float) -> np.ndarray:
    mean = z.mean(axis=-1, keepdims=True, dtype=np.float32)
    centred = z - mean
    variance = np.mean(centred * centred, axis=-1, keepdims=True, dtype=np.float32)
    return centred / np.sqrt(variance + np.float32(eps)) * gamma + beta


def quantize_rows(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per row, as the int8 layer's rows phases quantize an activation: (int8, scales)."""
    scale = np.abs(a).max(axis=-1, keepdims=True) / np.float32(127)
    scale[scale == 0] = 1
    return np.clip(np.rint(a / scale), -127, 127).astype(np.int8), scale.astype(np.float32)


def _layer_gemm(a: np.ndarray, w: np.ndarray, col_scale: np.ndarray, int8: bool) -> np.ndarray:
    if not int8:  # operands rounded to bf16, fp32 accumulation
        return np.matmul(bf16.to_f32(bf16.from_f32(a)), bf16.to_f32(w))
    q, row_scale = quantize_rows(a)  # exact int32 sums (in float64), then both scales
    return (np.matmul(q.astype(np.float64), w.astype(np.float64)).astype(np.float32) * row_scale) * col_scale


def _encoder_layer(artifact: Artifact, buffers: dict[str, np.ndarray]) -> None:
    # Over the first L positions only: the kernel masks the padded ones (as keys) and their output rows
    # are discarded. Intermediates are f32 in the scratch; each enters its next GEMM or the attention
    # rounded to the phase's operand type, as the cores read it.
    S, D, F, H, L = artifact.shape
    int8 = artifact.design.dtype_in == "i8"
    vd, vf = buffers["vd"], buffers["vf"]
    row = lambda name: vd[VD[name]]  # noqa: E731
    x = buffers["x"][:L]

    def gemm(a: np.ndarray, name: str, bias: np.ndarray, scale: np.ndarray) -> np.ndarray:
        return _layer_gemm(a, buffers[name], scale, int8) + bias

    h = _layer_norm(x, row("norm1_gamma"), row("norm1_beta"), float(row("norm1_eps")[0]))
    q, k, v = (gemm(h, f"w{p}", row(f"{p}_bias"), row(f"{p}_scale")) * row(f"{p}_post") for p in "qkv")
    heads = [bf16.to_f32(bf16.from_f32(t.reshape(L, H, D // H).transpose(1, 0, 2))) for t in (q, k, v)]
    scores = np.matmul(heads[0], heads[1].transpose(0, 2, 1))
    probabilities = _softmax_f32(scores, L)
    attended = np.matmul(bf16.to_f32(bf16.from_f32(probabilities)), heads[2]).transpose(1, 0, 2).reshape(L, D)
    x1 = x + gemm(attended, "wo", row("o_bias"), row("o_scale"))
    h2 = _layer_norm(x1, row("norm2_gamma"), row("norm2_beta"), float(row("norm2_eps")[0]))
    f = _gelu(gemm(h2, "w1", vf[VF["fc1_bias"]], vf[VF["fc1_scale"]]))
    buffers["y"][:L] = x1 + gemm(f, "w2", row("fc2_bias"), row("fc2_scale"))


# Each kernel kind's math on the artifact's buffers (viewed with their padded shapes and types).
COMPUTE: dict[str, Callable[[Artifact, dict[str, np.ndarray]], None]] = {
    "gemm": _gemm, "batched_gemm": _gemm, "softmax": _softmax, "attention": _attention,
    "encoder_layer": _encoder_layer}


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
        self._registered: dict[str, Artifact] = {}

    def register_xclbin(self, xclbin_: "xclbin") -> uuid:
        self._registered[xclbin_.get_uuid().to_string()] = xclbin_._artifact
        return xclbin_.get_uuid()

    def load_xclbin(self, path) -> None:
        raise RuntimeError("load_xclbin: Operation not supported (NPUs use register_xclbin + hw_context)")


class _xclbin_kernel:
    def __init__(self, name: str) -> None:
        self._name = name

    def get_name(self) -> str:
        return self._name


def _artifact_of(path: str, suffix: str, what: str) -> Artifact:
    name = Path(path).name
    try:
        if not name.endswith(suffix):
            raise ValueError(f"not a {suffix} file")
        found = parse(name[:-len(suffix)])
    except ValueError as why:
        raise RuntimeError(f"{path}: not a valid {what} ({why})") from None
    if found.design.format != suffix[1:]:
        raise RuntimeError(f"{path}: not a valid {what} ({found.design.kind} kernels are built as {found.design.format})")
    if _fault("bad_xclbin"):
        raise RuntimeError(f"{path}: not a valid {what} (damaged)")
    return found


class xclbin:
    def __init__(self, path: str) -> None:
        self._artifact = _artifact_of(path, ".xclbin", "xclbin")
        self._uuid = uuid(str(_uuid.uuid5(_uuid.NAMESPACE_URL, self._artifact.identity)))

    def get_uuid(self) -> uuid:
        return self._uuid

    def get_kernels(self) -> list[_xclbin_kernel]:
        return [_xclbin_kernel(manifest().call.kernel_name)]


class elf:
    """A full ELF (the artifacts of kinds of format "elf"): its configurations and its sequence."""

    def __init__(self, path: str) -> None:
        self._artifact = _artifact_of(path, ".elf", "ELF")


class hw_context:
    def __init__(self, device_: device, config: "uuid | elf") -> None:
        if isinstance(config, elf):
            found = config._artifact
        elif config.to_string() in device_._registered:
            found = device_._registered[config.to_string()]
        else:
            raise RuntimeError("hw_context: xclbin not registered on this device")
        if _fault("busy"):
            raise RuntimeError("hw_context: device busy (no free AIE partition)")
        self._artifact = found
        self._elf = isinstance(config, elf)


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
        self._call = manifest().call
        self._elf = context._elf
        if name != (self._call.elf_kernel if self._elf else self._call.kernel_name):
            raise RuntimeError(f"kernel {name!r} not found in the {'ELF' if self._elf else 'xclbin'}")
        self._artifact = context._artifact
        design, shape = self._artifact.design, self._artifact.shape
        # Each buffer argument's exact size, type and shape, checked on every run.
        self._layout = [(arg, self._artifact.nbytes(arg), design.arg_dtype(arg), design.arg_shape(arg, shape))
                        for arg, _ in design.args]

    def group_id(self, index: int) -> int:
        return index

    def __call__(self, *args) -> "run":
        started = run(self)
        for index, arg in enumerate(args):
            started.set_arg(index, arg)
        started.start()
        return started


class _ext_bo(bo):
    def __init__(self, device_: device, size: int) -> None:
        super().__init__(device_, size, bo.flags.host_only, 0)


class ext:
    """pyxrt's `ext` submodule: the kernel and buffer classes of XRT's full-ELF flow."""
    kernel = kernel
    bo = _ext_bo


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
            # Both CPU-time reads inside the wall-time window: under load they cost ~0.1 ms each here,
            # which is the emulated device's time, not the host's.
            started = time.perf_counter()
            cpu = time.process_time()
            self._state = self._execute()
            stats.compute_cpu_seconds += time.process_time() - cpu
            stats.compute_seconds += time.perf_counter() - started

    def wait(self, timeout_ms: int = 0) -> ert_cmd_state:
        return self._state

    def state(self) -> ert_cmd_state:
        return self._state

    def _execute(self) -> ert_cmd_state:
        artifact = self._kernel._artifact
        design, call = artifact.design, self._kernel._call
        if not self._kernel._elf:  # an ELF holds its own sequence: the run takes the buffers alone
            opcode, insts, n_words = (self._args.get(i) for i in range(3))
            if opcode != call.opcode or not isinstance(insts, bo) or n_words != 2 + len(artifact.shape):
                return self._refuse(f"{artifact.identity}: not called as kernel(opcode, insts, n_words, ...)")
            header = insts._data[:4 * n_words].view(np.uint32).tolist()
            if header[0] != _INSTS_MAGIC:
                return self._refuse(f"{artifact.identity}: the instruction buffer holds no instruction sequence")
            if tuple(header[2:]) != artifact.shape:
                return self._refuse(f"{artifact.identity}: instructions built for shape {tuple(header[2:])}, "
                                    f"the xclbin for {artifact.shape}")
        buffers = {}
        for index, (arg, nbytes, dtype, shape) in enumerate(self._kernel._layout, start=0 if self._kernel._elf else 3):
            buffer = self._args.get(index)
            if not isinstance(buffer, bo) or buffer._data.size != nbytes:
                size = buffer._data.size if isinstance(buffer, bo) else None
                return self._refuse(f"{artifact.identity}: buffer {arg} holds {size} bytes, the xclbin's shape "
                                    f"needs exactly {nbytes}")
            buffers[arg] = buffer._data.view(dtype).reshape(shape)
        if _computing:
            COMPUTE[design.kind](artifact, buffers)
        return ert_cmd_state.ERT_CMD_STATE_COMPLETED

    @staticmethod
    def _refuse(why: str) -> ert_cmd_state:
        stats.refusals.append(why)
        return ert_cmd_state.ERT_CMD_STATE_ERROR
