"""Runs offloaded GEMMs on an XDNA NPU through pyxrt, or on the emulated device: one code path.

Per session: the device is opened once, each kernel's xclbin registered once, each node's weight
converted and uploaded once (then resident), and per activation shape one set of buffers, one
instruction buffer and one prepared run is built and reused. A call then is: pack the activation
into the mapped input buffer, sync it, start the run, wait, sync the output back, return a view.
One dispatch per node call, whatever the size (the kernel tiles on the device).

Anything that goes wrong (no device, device busy, xclbin that does not load, a run ending in
ERROR/TIMEOUT) sends that node to the CPU for the rest of the session with one warning naming the
cause; the caller's `cpu` function gives the CPU result.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from npu_ep.provider import bf16, kernels
from npu_ep.provider.device import xrt_module
from npu_ep.provider.kernels import DTYPES, KernelEntry

RUN_TIMEOUT_MS = 10_000
emitted: set[str] = set()  # fallback warnings already shown in this process (each cause once)


class NpuFallbackWarning(UserWarning):
    """An offloaded node ran on the CPU instead of the NPU."""


class NpuFault(RuntimeError):
    """The NPU path failed for a node; the message names the cause."""


@dataclass
class _Kernel:
    entry: KernelEntry
    context: object
    handle: object
    insts: dict = field(default_factory=dict)  # (Mp, Kp, Np) -> (bo, word count)


@dataclass
class _Shape:
    a: np.ndarray        # mapped input buffer viewed as [Mp, Kp] of the kernel's input type
    c: np.ndarray        # mapped output buffer viewed as [Mp, Np] of the kernel's output type
    a_bo: object
    c_bo: object
    run: object


@dataclass
class _Node:
    kernel: _Kernel
    K: int
    N: int
    Kp: int
    Np: int
    fingerprint: bytes
    weight_bo: object
    colsum: np.ndarray | None = None  # int8: column sums of the weight, for the activation zero point
    shapes: dict = field(default_factory=dict)


def fingerprint(weight: np.ndarray) -> bytes:
    """A cheap identity check for a weight ORT hands over again on every call (64 sampled values)."""
    flat = weight.reshape(-1)
    step = max(1, flat.size // 64)
    return str(weight.shape).encode() + flat[::step][:64].tobytes()


class Backend:
    """The device state of one session (or of the process default for `session_options`)."""

    def __init__(self, device: str) -> None:
        self.device = device
        self._xrt = None
        self._device = None
        self._unavailable: str | None = None
        self._kernels: dict[str, _Kernel] = {}
        self._nodes: dict[str, _Node] = {}
        self._cpu_nodes: dict[str, str] = {}
        self.warnings: list[str] = []
        self.weight_uploads = 0

    # -- public ---------------------------------------------------------------------------------
    def gemm(self, key: str, kernel_name: str, a: np.ndarray, w: Callable[[], np.ndarray], w_id: bytes,
             cpu: Callable[[], np.ndarray], a_zero: int = 0,
             finish: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:
        """a[..., K] @ W[K, N] on the node's kernel, then `finish` (bias, scales) on the host.

        `w` converts the weight (float32, or int8 with zero point 0) and is called only when the
        node's weight is not resident yet; `w_id` is its fingerprint. For int8 kernels `a` is int8
        or uint8 with zero point `a_zero`. `cpu` gives the whole node's CPU result, used on any fault.
        The result may be a view of a device buffer: valid until this node's next call.
        """
        def npu() -> np.ndarray:
            out = self._gemm(key, kernel_name, a, w, w_id, a_zero)
            return finish(out) if finish else out

        return self._offload(key, cpu, npu)

    # -- internals ------------------------------------------------------------------------------
    def _offload(self, key: str, cpu: Callable[[], np.ndarray], npu: Callable[[], np.ndarray]) -> np.ndarray:
        if self._unavailable is not None or key in self._cpu_nodes:
            return cpu()
        try:
            return npu()
        except NpuFault as fault:
            self._cpu_nodes[key] = str(fault)
            self._warn(f"NPU run failed for {key.split('#')[0]} ({fault}); this node runs on the CPU from now on")
        except Exception as error:  # opening the device or loading a kernel: nothing can run there
            self._unavailable = f"{type(error).__name__}: {error}"
            self._warn(f"NPU unavailable ({self._unavailable}); offloaded MatMuls run on the CPU")
        return cpu()

    def _warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)
        if message not in emitted:
            emitted.add(message)
            # No source line in the output: the cause is the whole message.
            warnings.warn_explicit(message, NpuFallbackWarning, "npu-ep", 0)

    def _open(self):
        if self._device is None:
            self._xrt = xrt_module(self.device)
            self._device = self._xrt.device(0)
            # The emulator makes its own instruction sequences; real devices read the ones built into kernels/.
            self._instructions = getattr(self._xrt, "build_instructions", kernels.read_instructions)
        return self._xrt

    def _kernel(self, name: str) -> _Kernel:
        kernel = self._kernels.get(name)
        if kernel is None:
            xrt = self._open()
            entry = kernels.manifest()[name]
            xclbin = xrt.xclbin(str(kernels.kernels_dir() / entry.xclbin))
            self._device.register_xclbin(xclbin)
            context = xrt.hw_context(self._device, xclbin.get_uuid())
            kernel = self._kernels[name] = _Kernel(entry, context, xrt.kernel(context, entry.kernel_name))
        return kernel

    def _node(self, key: str, kernel_name: str, w: Callable[[], np.ndarray], w_id: bytes) -> _Node:
        node = self._nodes.get(key)
        if node is not None and node.fingerprint == w_id:
            return node
        kernel = self._kernel(kernel_name)
        entry, xrt = kernel.entry, self._xrt
        weight = w()
        K, N = weight.shape
        _, Kp, Np = entry.padded(1, K, N)
        dtype = DTYPES[entry.dtype_in]
        bo = xrt.bo(self._device, Kp * Np * np.dtype(dtype).itemsize, xrt.bo.flags.host_only,
                    kernel.handle.group_id(entry.group_ids["b"]))
        view = np.frombuffer(bo.map(), dtype=dtype).reshape(Kp, Np)
        view[...] = 0
        if entry.dtype_in == "bf16":
            bf16.pack(weight, view)
        else:
            view[:K, :N] = weight
        bo.sync(xrt.xclBOSyncDirection.XCL_BO_SYNC_BO_TO_DEVICE)
        self.weight_uploads += 1
        colsum = weight.astype(np.int64).sum(axis=0).astype(np.int32) if entry.dtype_in == "i8" else None
        node = self._nodes[key] = _Node(kernel, K, N, Kp, Np, w_id, bo, colsum)
        return node

    def _shape(self, node: _Node, M: int) -> tuple[_Shape, int]:
        entry, xrt = node.kernel.entry, self._xrt
        Mp, _, _ = entry.padded(M, node.K, node.N)
        shape = node.shapes.get(Mp)
        if shape is None:
            kernel = node.kernel
            insts = kernel.insts.get((Mp, node.Kp, node.Np))
            if insts is None:
                words = self._instructions(entry, Mp, node.Kp, node.Np)
                if words is None:
                    raise NpuFault(f"instruction sequence {entry.insts_name(Mp, node.Kp, node.Np)} not built "
                                   "(see kernels/README.md)")
                insts_bo = xrt.bo(self._device, words.nbytes, xrt.bo.flags.cacheable,
                                  kernel.handle.group_id(entry.group_ids["insts"]))
                insts_bo.write(words, 0)
                insts_bo.sync(xrt.xclBOSyncDirection.XCL_BO_SYNC_BO_TO_DEVICE)
                insts = kernel.insts[(Mp, node.Kp, node.Np)] = (insts_bo, int(words.size))
            d_in, d_out = DTYPES[entry.dtype_in], DTYPES[entry.dtype_out]
            a_bo = xrt.bo(self._device, Mp * node.Kp * np.dtype(d_in).itemsize, xrt.bo.flags.host_only,
                          kernel.handle.group_id(entry.group_ids["a"]))
            c_bo = xrt.bo(self._device, Mp * node.Np * np.dtype(d_out).itemsize, xrt.bo.flags.host_only,
                          kernel.handle.group_id(entry.group_ids["c"]))
            a = np.frombuffer(a_bo.map(), dtype=d_in).reshape(Mp, node.Kp)
            a[...] = 0  # the K padding must stay zero; rows beyond M only feed discarded output rows
            c = np.frombuffer(c_bo.map(), dtype=d_out).reshape(Mp, node.Np)
            run = xrt.run(kernel.handle)
            for index, arg in enumerate((entry.opcode, insts[0], insts[1], a_bo, node.weight_bo, c_bo)):
                run.set_arg(index, arg)
            shape = node.shapes[Mp] = _Shape(a, c, a_bo, c_bo, run)
        return shape, Mp

    def _gemm(self, key: str, kernel_name: str, a: np.ndarray, w, w_id: bytes, a_zero: int) -> np.ndarray:
        node = self._node(key, kernel_name, w, w_id)
        lead = a.shape[:-1]
        rows = a.reshape(-1, node.K)
        M = rows.shape[0]
        shape, Mp = self._shape(node, M)
        if node.kernel.entry.dtype_in == "bf16":
            bf16.pack(rows, shape.a)
        elif rows.dtype == np.uint8:
            # uint8 becomes the kernel's int8 by flipping the top bit (x - 128), in the same pass as
            # the copy; the zero point follows.
            np.bitwise_xor(rows, np.uint8(0x80), out=shape.a[:M, :node.K].view(np.uint8))
            a_zero -= 128
        else:
            shape.a[:M, :node.K] = rows
        xrt = self._xrt
        # Sync only the rows this call filled: the transfer follows M, not the buffer's capacity.
        in_bytes = M * shape.a.strides[0]
        shape.a_bo.sync(xrt.xclBOSyncDirection.XCL_BO_SYNC_BO_TO_DEVICE, in_bytes, 0)
        shape.run.start()
        state = shape.run.wait(RUN_TIMEOUT_MS)
        if state != xrt.ert_cmd_state.ERT_CMD_STATE_COMPLETED:
            raise NpuFault(f"run ended in {getattr(state, 'name', state)}")
        shape.c_bo.sync(xrt.xclBOSyncDirection.XCL_BO_SYNC_BO_FROM_DEVICE, M * shape.c.strides[0], 0)
        out = shape.c[:M, :node.N]
        if a_zero:  # sum_k (a - z) w = sum_k a w - z colsum, corrected in the output buffer itself
            np.subtract(out, np.int32(a_zero) * node.colsum, out=out)
        return out.reshape(*lead, node.N)
