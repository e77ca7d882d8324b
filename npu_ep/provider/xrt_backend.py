"""Runs offloaded GEMMs on an XDNA NPU through pyxrt, or on the emulated device: one code path.

Per session: the device is opened once; each artifact (a kernel design built for one padded shape:
kernels.Artifact) gets its xclbin registered, its hardware context and its instruction buffer
once; each node's weight is converted and uploaded once (then resident); per node and artifact one
set of buffers and one prepared run is built and reused. A call then is: pack the activation
into the mapped input buffer, sync it, start the run, wait, sync the output back, return a view.
One dispatch per node call, whatever the size (the kernel tiles on the device).

Anything that goes wrong (no device, device busy, xclbin that does not load, a run ending in
ERROR/TIMEOUT) sends that node to the CPU for the rest of the session with one warning naming the
cause; the caller's `cpu` function gives the CPU result.
"""
from __future__ import annotations

import contextlib
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from npu_ep import kernels
from npu_ep.errors import NpuEpError
from npu_ep.provider import bf16, cpu_ops
from npu_ep.provider.device import xrt_module
from npu_ep.kernels import Artifact, Design, manifest

RUN_TIMEOUT_MS = 10_000
# Runs per artifact at warm-up: the first run after an idle gap is slow while the NPU clock ramps up
# (mlir-aie #2944: 120-136 ms instead of ~0.12 ms), later ones are not.
WARM_RUNS = 3
emitted: set[str] = set()  # fallback warnings already shown in this process (each cause once)


class NpuFallbackWarning(UserWarning):
    """An offloaded node ran on the CPU instead of the NPU."""


class NpuFault(RuntimeError):
    """The NPU path failed for a node; the message names the cause."""


# What a device, its driver or its files raise: pyxrt's C++ errors arrive as RuntimeError (MemoryError
# for a failed allocation), a missing pyxrt as ImportError, unreadable files as OSError, a missing or
# damaged kernel manifest as NpuEpError. These send work to the CPU; anything else (TypeError,
# ValueError, KeyError, ...) is a bug in this code and propagates rather than hiding behind a fallback.
DEVICE_FAULTS = (RuntimeError, MemoryError, ImportError, OSError, NpuEpError)


@dataclass
class _Kernel:
    """One artifact opened: its hardware context, kernel handle and instruction buffer."""
    artifact: Artifact
    context: object
    handle: object
    insts_bo: object     # None for an ELF artifact (its sequence is in the ELF)
    n_words: int


@dataclass
class _Run:
    """One node's prepared run on one artifact: mapped buffers (padded shapes) and the run object."""
    views: dict          # arg -> mapped buffer viewed with its padded shape and type
    bos: dict            # arg -> bo
    run: object
    filled: tuple = ()   # the logical shape last written (activation kinds: padding re-zeroed on change)


@dataclass
class _Node:
    design: Design
    fingerprint: bytes
    K: int = 0
    N: int = 0
    weight_bo: object = None
    colsum: np.ndarray | None = None  # int8: column sums of the weight, for the activation zero point
    runs: dict = field(default_factory=dict)  # artifact identity -> _Run
    by_rows: dict = field(default_factory=dict)  # gemm: M -> its _Run (no artifact lookup per call)
    resident: dict = field(default_factory=dict)  # run_resident: arg -> its resident bo


def fingerprint(weight: np.ndarray) -> bytes:
    """A cheap identity check for a weight ORT hands over again on every call (64 sampled values)."""
    flat = weight.reshape(-1)
    step = max(1, flat.size // 64)
    return str(weight.shape).encode() + flat[::step][:64].tobytes()


class Backend:
    """The device state of one session (or of the process default for `session_options`)."""

    def __init__(self, device: str, threads: int | None = None) -> None:
        self.device = device
        self.threads = threads  # the session's intra-op threads, for the CPU results of its nodes
        self._xrt = None
        self._device = None
        self._unavailable: str | None = None
        self._kernels: dict[str, _Kernel] = {}   # artifact identity -> opened artifact
        self._designs: dict[str, Design] = {}    # design name -> Design, looked up once per session
        self._nodes: dict[str, _Node] = {}
        self._cpu_nodes: dict[str, str] = {}
        self._shared: dict[tuple[str, str], object] = {}  # (artifact, device-only arg) -> its one bo
        self.warnings: list[str] = []
        self.weight_uploads = 0

    # -- public ---------------------------------------------------------------------------------
    def gemm(self, key: str, design: str, a: np.ndarray, w: Callable[[], np.ndarray], w_id: bytes,
             cpu: Callable[[], np.ndarray], a_zero: int = 0,
             finish: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:
        """a[..., K] @ W[K, N] on the node's `design` (a gemm), then `finish` (bias, scales) on the host.

        `w` converts the weight (float32, or int8 with zero point 0) and is called only when the
        node's weight is not resident yet; `w_id` is its fingerprint. For int8 kernels `a` is int8
        or uint8 with zero point `a_zero`. `cpu` gives the whole node's CPU result, used on any fault.
        The result may be a view of a device buffer: valid until this node's next call.
        """
        def npu() -> np.ndarray:
            out = self._gemm(key, design, a, w, w_id, a_zero)
            return finish(out) if finish else out

        return self._offload(key, cpu, npu)

    def run(self, key: str, design: str, shape: tuple[int, ...], inputs: dict[str, np.ndarray],
            cpu: Callable[[], np.ndarray]) -> np.ndarray:
        """One run of an activation-only `design` (batched_gemm, softmax, attention) on `shape`
        (its logical dims, e.g. (B, M, K, N)): `inputs` by argument name, float32 for bf16 designs,
        each filling the corner of its zero-padded buffer. Returns the output's logical part (a view
        valid until this node's next call; bf16 outputs widened to a float32 copy); `cpu` gives the
        result on any fault."""
        return self._offload(key, cpu, lambda: self._run_activations(key, design, tuple(shape), inputs))

    def run_resident(self, key: str, design: str, shape: tuple[int, ...], inputs: dict[str, np.ndarray],
                     resident: Callable[[str], dict[str, np.ndarray]], w_id: bytes,
                     cpu: Callable[[], np.ndarray]) -> np.ndarray:
        """One run of a `design` with several resident buffers (an encoder layer's weights and
        vectors): `resident(dtype_in)` gives them in the design's form (float32 for bf16 buffers,
        packed here) and is called only when they are not on the device yet (`w_id`: their
        fingerprint). `inputs` fill the corner of their buffers each call; the design's device-only
        buffers (scratch) are shared by every node on the same artifact. Returns the output's
        logical part (a view valid until this node's next call)."""
        return self._offload(key, cpu, lambda: self._run_resident(key, design, tuple(shape), inputs, resident, w_id))

    fingerprint = staticmethod(fingerprint)  # for callers that hand a weight to `gemm`

    def warm_up(self, identities: list[str], runs: int = WARM_RUNS) -> float:
        """Open each artifact and run it `runs` times on zeros, so the first real call pays neither
        the hardware-context set-up nor the NPU clock's ramp from its idle level; seconds spent.
        Artifacts not built are skipped (their nodes say so when called); a device fault here
        stops the offload as it would on a real call."""
        started = time.perf_counter()

        def warm() -> None:
            xrt = self._open()
            # The emulated device has no clock to ramp: its warm-up runs skip the kernels' math.
            with getattr(xrt, "without_compute", contextlib.nullcontext)():
                for identity in identities:
                    artifact = kernels.parse(identity)
                    if not self._emulated and kernels.built(artifact) is None:
                        continue
                    kernel = self._kernel(artifact)
                    run = self._prepare(_Node(artifact.design, b""), kernel, {}).run
                    for _ in range(runs):
                        self._start(run)

        self._offload("warm-up", lambda: None, warm)
        return time.perf_counter() - started

    # -- internals ------------------------------------------------------------------------------
    def _offload(self, key: str, cpu: Callable[[], np.ndarray], npu: Callable[[], np.ndarray]) -> np.ndarray:
        if self._unavailable is None and key not in self._cpu_nodes:
            try:
                return npu()
            except NpuFault as fault:
                self._cpu_nodes[key] = str(fault)
                self._warn(f"NPU run failed for {key.split('#')[0]} ({fault}); this node runs on the CPU from now on")
            except DEVICE_FAULTS as error:  # opening the device or loading a kernel: nothing can run there
                self._unavailable = f"{type(error).__name__}: {error}"
                self._warn(f"NPU unavailable ({self._unavailable}); offloaded nodes run on the CPU")
        with cpu_ops.threads(self.threads):
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
            # The emulated device builds any artifact on demand; a real one runs only what was built.
            self._emulated = getattr(self._xrt, "build_instructions", None)
        return self._xrt

    def _kernel(self, artifact: Artifact) -> _Kernel:
        """The artifact opened: its xclbin registered with its hardware context, kernel and instructions
        on the device, or (format elf) the hardware context its ELF makes and the ELF's kernel."""
        kernel = self._kernels.get(artifact.identity)
        if kernel is None:
            xrt = self._open()
            call = manifest().call
            elf = artifact.design.format == "elf"
            if self._emulated:
                files = [kernels.kernels_dir() / name for name in artifact.files]
            else:
                files = kernels.built(artifact)
                if files is None:
                    raise NpuFault(f"kernel {artifact.identity} not built (npu-ep kernels build, see kernels/README.md)")
            if elf:
                context = xrt.hw_context(self._device, xrt.elf(str(files[0])))
                kernel = _Kernel(artifact, context, xrt.ext.kernel(context, call.elf_kernel), None, 0)
            else:
                words = self._emulated(artifact) if self._emulated else np.fromfile(files[1], dtype=np.uint32)
                xclbin = xrt.xclbin(str(files[0]))
                self._device.register_xclbin(xclbin)
                context = xrt.hw_context(self._device, xclbin.get_uuid())
                handle = xrt.kernel(context, call.kernel_name)
                insts_bo = xrt.bo(self._device, words.nbytes, xrt.bo.flags.cacheable, handle.group_id(call.insts_group_id))
                insts_bo.write(words, 0)
                insts_bo.sync(xrt.xclBOSyncDirection.XCL_BO_SYNC_BO_TO_DEVICE)
                kernel = _Kernel(artifact, context, handle, insts_bo, int(words.size))
            self._kernels[artifact.identity] = kernel
        return kernel

    def _bo(self, kernel: _Kernel, arg: str):
        """A buffer of exactly the size the artifact's shape gives `arg`: host_only and zeroed, or
        device_only (never mapped nor synced) for the design's scratch; an ELF's are XRT's ext buffers."""
        xrt, design = self._xrt, kernel.artifact.design
        index = [name for name, _ in design.args].index(arg)
        device_only = arg in design.device_only
        size = kernel.artifact.nbytes(arg)
        if kernel.insts_bo is None:
            bo = xrt.ext.bo(self._device, size)
        else:
            bo = xrt.bo(self._device, size, xrt.bo.flags.device_only if device_only else xrt.bo.flags.host_only,
                        kernel.handle.group_id(manifest().call.first_arg_group_id + index))
        if not device_only:
            np.frombuffer(bo.map(), dtype=np.uint8)[:] = 0
        return bo

    def _prepare(self, node: _Node, kernel: _Kernel, given: dict) -> _Run:
        """Buffers and a run for `node` on `kernel`, reusing the `given` bos (a resident weight)."""
        design = kernel.artifact.design
        bos = {arg: given[arg] if arg in given else self._bo(kernel, arg) for arg, _ in design.args}
        views = {arg: np.frombuffer(bo.map(), dtype=design.arg_dtype(arg)).reshape(
            design.arg_shape(arg, kernel.artifact.shape)) for arg, bo in bos.items() if arg not in design.device_only}
        run = self._xrt.run(kernel.handle)
        call = () if kernel.insts_bo is None else (manifest().call.opcode, kernel.insts_bo, kernel.n_words)
        for index, value in enumerate((*call, *bos.values())):
            run.set_arg(index, value)
        prepared = node.runs[kernel.artifact.identity] = _Run(views, bos, run)
        return prepared

    def _start(self, run) -> None:
        run.start()
        state = run.wait(RUN_TIMEOUT_MS)
        if state != self._xrt.ert_cmd_state.ERT_CMD_STATE_COMPLETED:
            raise NpuFault(f"run ended in {getattr(state, 'name', state)}")

    def _node(self, key: str, design: Design, w: Callable[[], np.ndarray] | None, w_id: bytes, M: int) -> _Node:
        node = self._nodes.get(key)
        if node is not None and node.fingerprint == w_id and node.design == design:
            return node
        node = _Node(design, w_id)
        if w is not None:
            xrt = self._open()
            weight = w()
            node.K, node.N = weight.shape
            kernel = self._kernel(design.artifact(M, node.K, node.N))
            node.weight_bo = self._bo(kernel, "b")
            view = np.frombuffer(node.weight_bo.map(), dtype=design.arg_dtype("b")).reshape(
                design.arg_shape("b", kernel.artifact.shape))
            if design.dtype_in == "bf16":
                bf16.pack(weight, view)
            else:
                view[:node.K, :node.N] = weight
                node.colsum = weight.astype(np.int64).sum(axis=0).astype(np.int32)
            node.weight_bo.sync(xrt.xclBOSyncDirection.XCL_BO_SYNC_BO_TO_DEVICE)
            self.weight_uploads += 1
        self._nodes[key] = node
        return node

    def _fill(self, design: Design, arg: str, view: np.ndarray, value: np.ndarray) -> None:
        if design.arg_dtype(arg) == np.uint16:
            bf16.pack(value.reshape(-1, value.shape[-1]), view.reshape(-1, view.shape[-1]))
        else:
            view[tuple(slice(0, size) for size in value.shape)] = value

    def _run_resident(self, key: str, design_name: str, shape: tuple[int, ...], inputs: dict[str, np.ndarray],
                      resident: Callable[[str], dict[str, np.ndarray]], w_id: bytes) -> np.ndarray:
        design = self._design(design_name)
        kernel = self._kernel(design.artifact(*shape))
        identity = kernel.artifact.identity
        xrt = self._xrt
        node = self._nodes.get(key)
        if node is None or node.fingerprint != w_id or node.design != design:
            node = _Node(design, w_id)
            for arg, value in resident(design.dtype_in).items():
                bo = node.resident[arg] = self._bo(kernel, arg)
                view = np.frombuffer(bo.map(), dtype=design.arg_dtype(arg)).reshape(design.arg_shape(arg, kernel.artifact.shape))
                self._fill(design, arg, view, value)
                bo.sync(xrt.xclBOSyncDirection.XCL_BO_SYNC_BO_TO_DEVICE)
            self.weight_uploads += 1
            self._nodes[key] = node
        prepared = node.runs.get(identity)
        if prepared is None:
            shared = {arg: self._shared.get((identity, arg)) or self._shared.setdefault((identity, arg), self._bo(kernel, arg))
                      for arg in design.device_only}
            prepared = self._prepare(node, kernel, {**node.resident, **shared})
        refill = prepared.filled != shape
        for arg, value in inputs.items():
            view = prepared.views[arg]
            if refill:
                view[...] = 0
            self._fill(design, arg, view, value)
            # Only the rows this call wrote go over (the buffers are row-major).
            prepared.bos[arg].sync(xrt.xclBOSyncDirection.XCL_BO_SYNC_BO_TO_DEVICE, value.shape[0] * view.strides[0], 0)
        prepared.filled = shape
        self._start(prepared.run)
        (output,) = design.outputs
        rows = next(iter(inputs.values())).shape[0]
        view = prepared.views[output]
        prepared.bos[output].sync(xrt.xclBOSyncDirection.XCL_BO_SYNC_BO_FROM_DEVICE, rows * view.strides[0], 0)
        return view[:rows, :next(iter(inputs.values())).shape[1]]

    def _design(self, name: str) -> Design:
        found = self._designs.get(name)
        if found is None:
            found = self._designs[name] = kernels.design(name)
        return found

    def _gemm(self, key: str, design_name: str, a: np.ndarray, w, w_id: bytes, a_zero: int) -> np.ndarray:
        design = self._design(design_name)
        lead = a.shape[:-1]
        rows = a.reshape(-1, a.shape[-1])
        M = rows.shape[0]
        node = self._node(key, design, w, w_id, M)
        prepared = node.by_rows.get(M)
        if prepared is None:
            kernel = self._kernel(design.artifact(M, node.K, node.N))
            prepared = node.runs.get(kernel.artifact.identity) or self._prepare(node, kernel, {"b": node.weight_bo})
            node.by_rows[M] = prepared
        a_view, c_view = prepared.views["a"], prepared.views["c"]
        if design.dtype_in == "bf16":
            bf16.pack(rows, a_view)
        elif rows.dtype == np.uint8:
            # uint8 becomes the kernel's int8 by flipping the top bit (x - 128), in the same pass as
            # the copy; the zero point follows.
            np.bitwise_xor(rows, np.uint8(0x80), out=a_view[:M, :node.K].view(np.uint8))
            a_zero -= 128
        else:
            a_view[:M, :node.K] = rows
        # K padding stays zero (buffers start zeroed); rows beyond M only feed discarded output rows.
        # Sync only the rows this call filled: the transfer follows M, not the buffer's capacity.
        xrt = self._xrt
        prepared.bos["a"].sync(xrt.xclBOSyncDirection.XCL_BO_SYNC_BO_TO_DEVICE, M * a_view.strides[0], 0)
        self._start(prepared.run)
        prepared.bos["c"].sync(xrt.xclBOSyncDirection.XCL_BO_SYNC_BO_FROM_DEVICE, M * c_view.strides[0], 0)
        out = c_view[:M, :node.N]
        if a_zero:  # sum_k (a - z) w = sum_k a w - z colsum, corrected in the output buffer itself
            np.subtract(out, np.int32(a_zero) * node.colsum, out=out)
        return out.reshape(*lead, node.N)

    def _run_activations(self, key: str, design_name: str, shape: tuple[int, ...],
                         inputs: dict[str, np.ndarray]) -> np.ndarray:
        design = self._design(design_name)
        node = self._node(key, design, None, b"", 0)
        kernel = self._kernel(design.artifact(*shape))
        prepared = node.runs.get(kernel.artifact.identity) or self._prepare(node, kernel, {})
        xrt = self._xrt
        refill = prepared.filled != shape  # another logical shape on the same artifact: stale padding
        for arg, value in inputs.items():
            view = prepared.views[arg]
            if refill:
                view[...] = 0
            if design.dtype_in == "bf16":  # packed into the corner of each (C-contiguous) 2-D slab
                slabs = value.reshape(-1, *value.shape[-2:])
                for slab, target in zip(slabs, view.reshape(-1, *view.shape[-2:])):
                    bf16.pack(slab, target)
            else:
                view[tuple(slice(0, size) for size in design.arg_shape(arg, shape))] = value
            prepared.bos[arg].sync(xrt.xclBOSyncDirection.XCL_BO_SYNC_BO_TO_DEVICE)
        prepared.filled = shape
        self._start(prepared.run)
        (output,) = design.outputs
        prepared.bos[output].sync(xrt.xclBOSyncDirection.XCL_BO_SYNC_BO_FROM_DEVICE)
        out = prepared.views[output][tuple(slice(0, size) for size in design.arg_shape(output, shape))]
        return bf16.to_f32(out) if design.dtype_out == "bf16" else out
