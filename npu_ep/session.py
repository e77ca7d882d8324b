"""Opening ONNX files for a device: the layer above the partition pass and the NPU provider.

`create_session` is the one door the pipeline, quantize and bench use to open an ONNX file
(`create_merged_decoder` opens a folder's two decoders as one, on the CPU).
For "npu"/"emulator" it partitions the file once (a cached copy beside it, e.g.
encoder_model.xdna1.onnx) and opens that copy with the provider's custom ops registered and bound to
a device state owned by the session; a file with nothing worth the NPU runs as it is. "auto" is the
NPU when pyxrt sees one, else the CPU.
"""
from __future__ import annotations

import functools
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
import onnxruntime as ort

from npu_ep.errors import NpuEpError
from npu_ep.machine import cpu
from npu_ep.provider.device import resolve_device

if TYPE_CHECKING:
    import onnx

DEVICES = ("auto", "cpu", "npu", "emulator")
# Without VNNI or AMX, ONNX Runtime's u8 x s8 GEMM (MLAS) multiplies with vpmaddubsw, which adds each pair of
# products in int16 with saturation: 2 * 255 * 127 overflows it, so full-range int8 weights lose accuracy. Its
# u8 x u8 GEMM widens both operands to int16 first (vpmaddwd) and is exact. A model whose int8 must be exact
# runs there with its MatMulInteger weights shifted to uint8 (w + 128, zero point 128: the same products),
# and with QDQ nodes computed as the graph defines them (dequantize, float MatMul), not by fused int8 kernels.
DISABLE_QDQ_FUSION = "session.disable_quant_qdq"
# Each session has its own pool of intra-op threads, which by default spin (busy-wait) for a while after a run
# ends: the encoder's pool then takes cores from the decoder's steps, and each decoder's from the other's. The
# pools keep spinning between the nodes of a run, for quick hand-offs, and stop when it ends.
STOP_SPINNING = "session.force_spinning_stop"
# Bump when CPU graphs are made differently (`cpu_graph`), so cached ones are made again.
CPU_GRAPH_VERSION = 2
# The CPU graph of a folder's two decoders merged into one (`create_merged_decoder`), beside them: not
# `decoder*merged*.onnx`, the name optimum would load as its own merged decoder.
MERGED_DECODER_FILE = "decoders.cpu.onnx"

log = logging.getLogger(__name__)


def cpu_cores() -> int:
    """The cores this process may run on (its affinity mask, which containers and taskset narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def intra_op_threads(threads: int | None) -> int | None:
    """ONNX Runtime's intra-op thread count for `threads` (None: ORT's default, all cores): more threads
    than cores only oversubscribe them, each ORT thread spinning against the others, so it is capped."""
    if threads is None:
        return None
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise NpuEpError(f"threads {threads!r}: must be a whole number of at least 1 (or leave it unset for all cores)")
    cores = cpu_cores()
    if threads > cores:
        _say_capped(threads, cores)
        return cores
    return threads


@functools.cache
def _say_capped(threads: int, cores: int) -> None:
    # Once per process: a pipeline opens three sessions with the same count.
    log.warning("--threads %d is more than the %d CPU cores here; using %d", threads, cores, cores)


def _check(device: str) -> None:
    if device not in DEVICES:
        raise NpuEpError(f"--device {device}: unknown device (use one of: {', '.join(DEVICES)})")


def session_options(device: str = "auto", threads: int | None = None) -> ort.SessionOptions:
    """SessionOptions with the provider's custom ops registered; partitioned nodes of sessions
    opened with them run on `device` ("npu", "emulator", "cpu" or "auto")."""
    _check(device)
    from npu_ep.provider import ops

    threads = intra_op_threads(threads)
    ops.set_default_device(resolve_device(device), threads)
    options = ort.SessionOptions()
    options.register_custom_ops_library(ops.library_path())
    if threads:
        options.intra_op_num_threads = threads
    return options


def npu_profile() -> str:
    """The partition profile of the NPU pyxrt sees: npu2-class names are XDNA2, the rest XDNA1
    (also when no device opens: the backend then falls back to the CPU and says why)."""
    try:
        import pyxrt

        name = pyxrt.device(0).get_info(pyxrt.xrt_info_device.name).lower()
    except Exception:
        return "xdna1"
    return "xdna2" if any(tag in name for tag in ("strix", "krackan", "npu4", "npu5", "npu2")) else "xdna1"


def create_session(onnx_path: str | Path, device: str = "cpu", threads: int | None = None,
                   exact_int8: bool = False, attention_heads: int | None = None) -> ort.InferenceSession:
    """Open `onnx_path` for `device` ("cpu", "npu", "emulator" or "auto").

    `exact_int8`: on a CPU whose int8 kernels saturate (no VNNI or AMX), compute the file's int8 exactly
    another way (see `unsigned_weights`), at about float speed. On the CPU otherwise, the file opens as its
    saved optimized graph (see `cpu_graph`); `attention_heads`, the file's attention head count, has its
    attention blocks run fused there.
    """
    _check(device)
    device = resolve_device(device)
    threads = intra_op_threads(threads)
    options = _options(threads)
    onnx_path = Path(onnx_path)
    source: str | bytes = str(onnx_path)
    computed_exactly = exact_int8 and not cpu().exact_int8
    if computed_exactly:
        options.add_session_config_entry(DISABLE_QDQ_FUSION, "1")
        if device == "cpu":  # the NPU's int8 kernels take the int8 weights as they are
            unsigned = unsigned_weights(onnx_path)
            source = source if unsigned is None else unsigned.SerializeToString()
    if device == "cpu":
        if not computed_exactly:  # a saved CPU graph is optimized with the default session options
            source = str(cpu_graph(onnx_path, attention_heads))
        return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])

    import onnx

    from npu_ep import calibrate
    from npu_ep.partition.planner import partition_file

    profile = "emulator" if device == "emulator" else npu_profile()
    partitioned, _ = partition_file(onnx_path, profile, calibrate.calibration, real_device=device != "emulator")
    if partitioned == onnx_path:  # nothing worth the NPU here (e.g. one-token decoder steps)
        return ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    model = onnx.load(str(partitioned))
    from npu_ep.provider import ops

    tag, backend = ops.bind(device, threads)
    for node in model.graph.node:
        for attribute in node.attribute:
            if attribute.name == "node_key":
                attribute.s = attribute.s + f"@{tag}".encode()
    options.register_custom_ops_library(ops.library_path())
    # ORT's pool threads otherwise spin (busy-wait) through every offloaded node while the NPU works:
    # CPU time the NPU is there to free (bench's host CPU figures measure both settings).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    session.npu_backend = backend  # the device state lives exactly as long as the session
    # Open every kernel artifact and run it before the first pass: the first run after an idle gap
    # is slow while the NPU clock ramps up (the cost model prices the warm device).
    summary = json.loads({p.key: p.value for p in model.metadata_props}.get("npu_ep.partition", "{}"))
    backend.warm_up(summary.get("artifacts", []))
    return session


def create_merged_decoder(first_path: Path, past_path: Path, device: str = "cpu", threads: int | None = None,
                          exact_int8: bool = False) -> ort.InferenceSession | None:
    """One CPU session running both decoder graphs, their weights held once (see `decoder_merge`): its
    USE_CACHE_BRANCH input picks the graph. None where the two open as sessions of their own: on an NPU,
    whose partition is made per graph; where the int8 is computed exactly (`create_session`); where the
    folder cannot hold the merged graph."""
    _check(device)
    if resolve_device(device) != "cpu" or (exact_int8 and not cpu().exact_int8):
        return None
    threads = intra_op_threads(threads)
    target = first_path.with_name(MERGED_DECODER_FILE)
    stamp = f"{_stamp(first_path)}+{_stamp(past_path)}"
    if not _saved_optimized(target, stamp, lambda scratch: _merged(first_path, past_path, scratch)):
        return None
    return ort.InferenceSession(str(target), _options(threads), providers=["CPUExecutionProvider"])


def _options(threads: int | None) -> ort.SessionOptions:
    options = ort.SessionOptions()
    # The arena keeps every peak a new prompt length or fallback batch asks for, so peak memory grows
    # over long audio; without it, it stays nearly flat at the same speed (docs/measurements.md).
    options.enable_cpu_mem_arena = False
    # ORT warns at load that an initializer listed as an input (LOGITS_START's default, the merged decoder's
    # empty ones) is not folded as a constant: that is what makes it a default. Its errors still show.
    options.log_severity_level = 3
    options.add_session_config_entry(STOP_SPINNING, "1")
    _return_large_buffers()
    if threads:
        options.intra_op_num_threads = threads
    return options


# Without the arena, ONNX Runtime's tensors come from malloc. glibc raises its mmap threshold to the size of
# each mapped block freed (up to 32 MB), so after the first pass the encoder's multi-MB activations and the
# opening pass's logits land on the heap, whose freed space is kept and fragments: peak memory creeps up
# window by window. A fixed threshold keeps blocks this large mapped, returned to the system when freed.
MMAP_THRESHOLD_BYTES = 8 << 20
_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter


@functools.cache
def _return_large_buffers() -> None:
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError):  # not glibc: its allocator has its own policy
        return
    mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)


def _stamp(onnx_path: Path) -> str:
    # ONNX Runtime's optimizer output may differ between its versions and between CPUs (its int8 fusions).
    stat = onnx_path.stat()
    return (f"{stat.st_size}:{stat.st_mtime_ns}:{CPU_GRAPH_VERSION}:{ort.__version__}:"
            f"{','.join(sorted(cpu().features))}")


def cpu_graph(onnx_path: Path, heads: int | None = None) -> Path:
    """The file to open on the CPU EP: `onnx_path` as ONNX Runtime's graph optimizer leaves it, saved once
    (`<stem>.cpu.onnx` beside it, its weights mapped from `<stem>.cpu.onnx.data`), so opening a session
    does not optimize the graph again: that was most of the time a session took to open. With `heads`
    (the graph's attention head count), its attention blocks are first fused into one kernel each (see
    `cpu_attention`).

    Made again when the source, ONNX Runtime or the CPU changes (a small `<stem>.cpu.json` record holds the
    stamp), so opening a session neither imports onnx nor parses the graph. Where the folder is read-only,
    the graph runs as it is.
    """
    target = onnx_path.with_name(f"{onnx_path.stem}.cpu.onnx")
    made = _saved_optimized(target, f"{_stamp(onnx_path)}:{heads or 0}", lambda scratch: _fused(onnx_path, heads, scratch))
    return target if made else onnx_path


def _saved_optimized(target: Path, stamp: str, source: Callable[[Path], Path]) -> bool:
    """Whether `target` holds the optimized graph of `source(scratch)` (a function writing the graph to optimize,
    given a scratch path it may use) for `stamp`, making it when its record says otherwise. False when the
    folder cannot be written."""
    record = target.with_suffix(".json")
    try:
        known = json.loads(record.read_text())
        if known.get("source") == stamp and target.is_file():
            return True
    except (OSError, ValueError, AttributeError):
        pass  # no record yet, or a damaged one: make it again
    try:
        _optimize(source, target)
        record.write_text(json.dumps({"source": stamp}))
    except OSError as error:
        log.debug("%s: cannot write the CPU graph (%s); running the graphs as they are", target, error)
        return False
    return True


def _fused(onnx_path: Path, heads: int | None, scratch: Path) -> Path:
    """`onnx_path` with its attention blocks fused (written to `scratch`), or itself when there are none."""
    if not heads:
        return onnx_path
    import onnx

    from npu_ep.cpu_attention import fuse_attention

    model = onnx.load(str(onnx_path), load_external_data=False)  # its weights stay in the source's file
    if not fuse_attention(model, heads):
        return onnx_path
    onnx.save(model, str(scratch))
    return scratch


def _merged(first_path: Path, past_path: Path, scratch: Path) -> Path:
    import onnx

    from npu_ep.decoder_merge import merge_decoders
    from npu_ep.model_folder import weights_file

    merged = merge_decoders(onnx.load(str(first_path)), onnx.load(str(past_path)))
    onnx.save(merged, str(scratch), save_as_external_data=True, location=weights_file(scratch).name)
    return scratch


def _optimize(source: Callable[[Path], Path], target: Path) -> None:
    import onnx

    from npu_ep.model_folder import save_mapped, weights_file

    scratch = [target.with_name(f".{target.stem}.{os.getpid()}.{part}.onnx") for part in ("source", "optimized")]
    made, optimized = scratch
    try:
        optimized.touch()  # an OSError here, not a failing ORT session below, for a folder that cannot be written
        options = ort.SessionOptions()
        # Extended, not all: the layout changes of the last level are specific to this CPU's kernels, and
        # the session opening the file applies them, quickly.
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.optimized_model_filepath = str(optimized)
        options.add_session_config_entry("session.optimized_model_external_initializers_file_name",
                                         weights_file(optimized).name)
        options.log_severity_level = 3
        ort.InferenceSession(str(source(made)), options, providers=["CPUExecutionProvider"])
        # ORT writes its weights unaligned, which it then copies onto the heap: rewrite them mappable.
        save_mapped(onnx.load(str(optimized)), target)
    finally:
        for path in scratch:
            path.unlink(missing_ok=True)
            weights_file(path).unlink(missing_ok=True)


def unsigned_weights(onnx_path: Path) -> onnx.ModelProto | None:
    """`onnx_path` as a ModelProto whose MatMulInteger nodes take uint8 weights (w + 128, zero point 128),
    or None when it has no MatMulInteger with a constant int8 weight."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(onnx_path))
    graph = model.graph
    inits = {init.name: init for init in graph.initializer}
    shifted_names: set[str] = set()
    for node in graph.node:
        if node.op_type != "MatMulInteger" or len(node.input) < 4 or node.input[1] not in inits:
            continue
        weight, zero = inits[node.input[1]], inits.get(node.input[3])
        if weight.data_type != onnx.TensorProto.INT8 or zero is None or zero.data_type != onnx.TensorProto.INT8:
            continue
        for init in (weight, zero):
            if init.name not in shifted_names:  # an initializer two nodes share is shifted once
                shifted = (numpy_helper.to_array(init).astype(np.int16) + 128).astype(np.uint8)
                init.CopyFrom(numpy_helper.from_array(shifted, init.name))
                shifted_names.add(init.name)
    return model if shifted_names else None
