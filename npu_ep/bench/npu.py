"""The provider's figures for `npu-ep bench`: host-side overhead per dispatch and dispatch count
(run on the emulated device), and projected encoder times (projected by the cost model) next to the
measured CPU encoder time."""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np

from npu_ep.forms import BY_NAME
from npu_ep.one_node import one_node_model
from npu_ep.timing import median_ms
from npu_ep.whisper.spec import ENCODER_FILE, ENCODER_FRAMES, INPUT_FEATURES


def _median_ms_on_the_host(fn, repeat: int, before=None) -> float:
    """Median time of `fn` less the emulated device's time executing runs."""
    from npu_ep.provider import emulator

    return median_ms(fn, repeat, before, excluded_seconds=lambda: emulator.stats.compute_seconds)


def _host_overhead(dtype: str, M: int, K: int, N: int, repeat: int) -> dict:
    """Our Python work around one kernel run (packing, sync, run set-up, unpacking). The emulated
    kernel computes nothing (its numpy BLAS threads would slow the host work around it, which an NPU
    does not do) and its run time is subtracted; before each call the activation is written afresh,
    as the op producing it would leave it. `pack_ms` is the packing alone."""
    from npu_ep.provider import bf16, emulator
    from npu_ep.kernels import kernel_for
    from npu_ep.provider.xrt_backend import Backend, fingerprint

    rng = np.random.default_rng(0)
    if dtype == "bf16":
        source = rng.standard_normal((M, K), dtype=np.float32)
        w = rng.standard_normal((K, N), dtype=np.float32)
        packed = np.empty((M, K), np.uint16)
        pack = lambda: bf16.pack(a, packed)  # noqa: E731
    else:  # the static int8 models' activations: uint8 with a zero point, flipped to int8 while copied
        source = rng.integers(0, 256, (M, K), dtype=np.uint8)
        w = rng.integers(-127, 128, (K, N), dtype=np.int8)
        packed = np.empty((M, K), np.int8)
        pack = lambda: np.bitwise_xor(a, np.uint8(0x80), out=packed.view(np.uint8))  # noqa: E731
    a = source.copy()
    backend, kernel, w_id = Backend("emulator"), kernel_for("xdna1", dtype).name, fingerprint(w)

    def call():
        backend.gemm("bench#x", kernel, a, lambda: w, w_id, cpu=lambda: None, a_zero=128 if dtype == "i8" else 0)

    def produce():
        np.copyto(a, source)

    with emulator.without_compute():
        host = _median_ms_on_the_host(call, repeat, produce)
    return {"dtype": dtype, "shape": [M, K, N], "host_ms": host, "pack_ms": _median_ms_on_the_host(pack, repeat, produce)}


def _through_ort(M: int, K: int, N: int, repeat: int) -> dict:
    """One offloaded MatMul in a real ORT session (kernel computing nothing) against the same
    MatMul on the CPU EP: the whole per-dispatch host cost, bridge copies included."""
    import onnxruntime as ort
    from onnx import TensorProto

    from npu_ep.calibrate import host_call_ms

    rng = np.random.default_rng(3)
    w = rng.standard_normal((K, N), dtype=np.float32)
    model = one_node_model("MatMul", [("x", TensorProto.FLOAT, [M, K])], TensorProto.FLOAT, {"w": w}, output_shape=[M, N])
    feed = {"x": rng.standard_normal((M, K), dtype=np.float32)}
    cpu = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    cpu_ms = median_ms(lambda: cpu.run(None, feed), repeat)
    return {"shape": [M, K, N], "offloaded_ms": host_call_ms(M, K, N, repeat), "cpu_ms": cpu_ms}


def _dispatches(M: int, K: int, N: int) -> int:
    from npu_ep.provider import emulator
    from npu_ep.kernels import kernel_for
    from npu_ep.provider.xrt_backend import Backend, fingerprint

    rng = np.random.default_rng(1)
    a = rng.standard_normal((M, K), dtype=np.float32)
    w = rng.standard_normal((K, N), dtype=np.float32)
    backend = Backend("emulator")
    emulator.stats.reset()
    backend.gemm("bench#proj", kernel_for("emulator", "bf16").name, a, lambda: w, fingerprint(w), cpu=lambda: a @ w)
    return emulator.stats.dispatches


def _features(n_mels: int) -> dict[str, np.ndarray]:
    return {INPUT_FEATURES: np.random.default_rng(2).standard_normal((1, n_mels, ENCODER_FRAMES), dtype=np.float32)}


def _cpu_encoder_ms(encoder: Path, repeat: int) -> float:
    from npu_ep.session import create_session

    session = create_session(encoder, "cpu")
    feed = _features(session.get_inputs()[0].shape[1])
    return median_ms(lambda: session.run(None, feed), repeat)


def _host_cpu_per_pass(encoder: Path, passes: int = 3) -> dict:
    """Process CPU time (every thread) per encoder pass, CPU only and offloaded: how much of the CPU
    the NPU frees. Offloaded runs on the emulated device with its kernels computing nothing, and
    its own run time (argument checks) subtracted: what is left is the host's work."""
    from npu_ep.provider import emulator
    from npu_ep.session import create_session

    def per_pass(session) -> float:
        n_mels = session.get_inputs()[0].shape[1]
        feed = _features(n_mels)
        return median_ms(lambda: session.run(None, feed), passes, clock=time.process_time,
                         excluded_seconds=lambda: emulator.stats.compute_cpu_seconds)

    cpu_only = per_pass(create_session(encoder, "cpu"))
    with emulator.without_compute():
        session = create_session(encoder, "emulator")
        before = emulator.stats.dispatches
        session.run(None, {INPUT_FEATURES: np.zeros((1, session.get_inputs()[0].shape[1], ENCODER_FRAMES), np.float32)})
        dispatches = emulator.stats.dispatches - before
        offloaded = per_pass(session)
    return {"cpu_only_ms": cpu_only, "offloaded_ms": offloaded, "share": offloaded / cpu_only,
            "dispatches_per_pass": dispatches}


# What the NPU takes in each configuration of the bytes table: the GEMMs with a weight alone (the
# placement before attention and convolutions were offloaded), with convolutions and attention as
# separate nodes (QKᵀ, Softmax, AV each a round trip), with each attention block fused, and with each
# encoder layer whole (every intermediate on the device). Every eligible node of the configuration is
# offloaded, whatever the cost model would choose: the table is about the traffic each form implies.
_GEMMS = {"matmul", "gemm", "matmul_integer", "qdq_matmul"}
CONFIGURATIONS = {
    "weight GEMMs only": _GEMMS,
    "+ conv, attention as parts": _GEMMS | {"conv_gemm", "batched_matmul", "softmax"},
    "+ conv, fused attention": _GEMMS | {"conv_gemm", "batched_matmul", "softmax", "attention"},
    "+ conv, whole layers": None,
}


def _emulated_pass(proto, chosen, scratch: Path, repeat: int) -> dict:
    """The partitioned encoder run on the emulated device with its kernels computing nothing: the
    host's own time per pass (CPU ops + the provider's work, the emulated runs' time excluded), the
    bytes synced each way and the dispatches of one pass."""
    import onnx
    import onnxruntime as ort

    from npu_ep.partition.planner import PROTO_LIMIT, apply
    from npu_ep.provider import emulator, ops
    from npu_ep.session import session_options

    partitioned = apply(proto, chosen)
    weights = sum(len(t.raw_data) for t in partitioned.graph.initializer)
    if weights < PROTO_LIMIT:
        source = partitioned.SerializeToString()
    else:
        source = str(scratch / "encoder.onnx")
        onnx.save(partitioned, source, save_as_external_data=True, location="encoder.onnx.data")
    del partitioned
    session = ort.InferenceSession(source, session_options("emulator"), providers=["CPUExecutionProvider"])
    feed = _features(session.get_inputs()[0].shape[1])
    try:
        with emulator.without_compute():
            host = _median_ms_on_the_host(lambda: session.run(None, feed), repeat)
            emulator.stats.reset()
            session.run(None, feed)
        return {"host_ms": host, "dispatches": emulator.stats.dispatches,
                "bytes_moved": emulator.stats.bytes_to_device + emulator.stats.bytes_from_device}
    finally:
        del session
        ops.set_default_device("cpu")  # frees the emulated device's resident weights


# The projected placements: each device's default forms (bf16, whole encoder layers), and XDNA1 with
# the opt-in int8 layers (int8 weights and activations in every projection and FFN GEMM).
PLACEMENTS = {"xdna1": ("xdna1", None), "xdna2": ("xdna2", None), "xdna1_int8": ("xdna1", set(BY_NAME))}


def _encoder_row(name: str, encoder: Path, calibration, repeat: int, configurations: bool) -> dict:
    """CPU measured; per device, the projected encoder: the host's measured time with offload (kernel
    compute excluded) plus the offloaded nodes' predicted device time (dispatch, compute, DMA beyond it)."""
    import tempfile

    import onnx

    from npu_ep.partition.planner import plan

    proto = onnx.load(str(encoder))
    row = {"model": name, "cpu_measured_ms": _cpu_encoder_ms(encoder, repeat)}
    with tempfile.TemporaryDirectory(prefix="npu-ep-bench-") as scratch:
        for key, (device, forms_) in PLACEMENTS.items():
            chosen = plan(proto, device, calibration, forms=forms_)
            device_ms = sum(p.estimate.dispatch_ms + p.estimate.compute_ms + p.estimate.transfer_ms for p in chosen.offloaded)
            measured = _emulated_pass(proto, chosen, Path(scratch), repeat)
            forms: dict[str, int] = {}
            for p in chosen.offloaded:
                forms[p.candidate.form.name] = forms.get(p.candidate.form.name, 0) + 1
            row[key] = {**measured, "offloaded": len(chosen.offloaded), "forms": forms, "device_ms": device_ms,
                           "projected_ms": measured["host_ms"] + device_ms,
                           "predicted_cpu_ms": chosen.cpu_ms, "predicted_hybrid_ms": chosen.hybrid_ms}
        if configurations:
            row["configurations"] = {}
            slow_cpu = dataclasses.replace(calibration, cpu_gflops=1e-3, cpu_int8_gops=1e-3, cpu_batched_gflops=1e-3,
                                           cpu_softmax_gelems=1e-6, cpu_mem_gbs=1e-3)
            for label, forms_ in CONFIGURATIONS.items():
                chosen = plan(proto, "xdna1", slow_cpu, forms=forms_)
                row["configurations"][label] = {**_emulated_pass(proto, chosen, Path(scratch), 1),
                                                "offloaded": len(chosen.offloaded)}
    return row


def npu_report(model_dirs: list[Path], shapes: list[str] = ()) -> tuple[str, dict]:
    """Markdown section and data for `npu-ep bench`; each figure says how it was obtained. `shapes`
    adds random-weight models with the encoder dimensions of larger checkpoints (npu_ep.bench.shapes)."""
    from npu_ep import calibrate
    from npu_ep.bench.shapes import shaped_model

    data: dict = {"host_overhead": [_host_overhead("bf16", 1500, 384, 384, 50), _host_overhead("i8", 1500, 384, 384, 50),
                                    _host_overhead("bf16", 1, 384, 384, 50)],
                  "through_ort": _through_ort(1500, 384, 384, 20),
                  "dispatches_1500x512x512": _dispatches(1500, 512, 512), "encoders": []}
    calibration = calibrate.calibration()
    for folder in model_dirs:
        encoder = Path(folder) / ENCODER_FILE
        row = _encoder_row(Path(folder).name, encoder, calibration, repeat=3, configurations=True)
        row["host_cpu"] = _host_cpu_per_pass(encoder)
        data["encoders"].append(row)
    for shape in shapes:
        # One timed run after the warm-up: these encoders take seconds per pass on a laptop CPU.
        data["encoders"].append(_encoder_row(f"{shape}-shaped (random weights)", shaped_model(shape) / ENCODER_FILE,
                                             calibration, repeat=1, configurations=False))

    bf16, int8, single = data["host_overhead"]
    ort_row = data["through_ort"]
    through = f"{ort_row['offloaded_ms']:.3f} ms"
    how = "run on the emulated device, kernel compute excluded; median of 50"
    lines = [
        "## NPU provider",
        "",
        "| figure | value | how obtained |",
        "|---|---:|---|",
        f"| host-side overhead per dispatch, 1500x384 fp32 activation -> bf16 kernel | {bf16['host_ms']:.3f} ms | {how} |",
        f"| of which bf16 packing of the activation | {bf16['pack_ms']:.3f} ms | compiled with numba, this CPU |",
        f"| host-side overhead per dispatch, 1500x384 uint8 activation -> int8 kernel | {int8['host_ms']:.3f} ms | {how} |",
        f"| of which int8 packing (top-bit flip while copying) | {int8['pack_ms']:.3f} ms | numpy, this CPU |",
        f"| host-side overhead per dispatch, 1x384 activation -> bf16 kernel | {single['host_ms']:.3f} ms | {how} |",
        f"| one offloaded 1500x384x384 MatMul through an ORT session (all host work: bridge copies of input, weight "
        f"and output + ours) | {through} | run on the emulated device, kernel compute excluded |",
        f"| the same MatMul on ONNX Runtime's CPU EP | {ort_row['cpu_ms']:.3f} ms | measured, this CPU |",
        f"| dispatches for one (1500x512)@(512x512) projection | {data['dispatches_1500x512x512']} | run on the emulated "
        "device |",
        "",
        "| encoder | CPU measured | XDNA1 projected | speed-up | XDNA2 projected | speed-up | XDNA1, int8 layers, "
        "projected | speed-up | host time per pass (XDNA1 placement) | XDNA1 device time |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in data["encoders"]:
        cpu, x1, x2, i8 = row["cpu_measured_ms"], row["xdna1"], row["xdna2"], row["xdna1_int8"]
        cells = [f"{x['projected_ms']:.0f} ms ({x['offloaded']} nodes) | {cpu / x['projected_ms']:.1f}x" for x in (x1, x2, i8)]
        lines.append(f"| {row['model']} | {cpu:.0f} ms | {' | '.join(cells)} | "
                     f"{x1['host_ms']:.0f} ms ({100 * x1['host_ms'] / cpu:.0f} %) | {x1['device_ms']:.0f} ms |")
    lines += ["", "CPU measured: this machine's CPU EP, one 30 s window. Projected = the host's own time per pass with "
              "the offload, run on the emulated device with its kernels computing nothing (CPU ops + the provider's "
              "host work, measured), plus each offloaded node's device time (dispatch, compute, DMA beyond it) from the "
              "profile: projected by the cost model, not measured on an NPU. Host time per pass is that measured part "
              "(wall time, and its share of the CPU-only encoder's); device time the predicted part. Int8 layers: the "
              "opt-in int8 encoder-layer design (int8 weights and activations, computed in another number format than "
              "the float model). Shaped models have random weights and the real encoder "
              "dimensions (export the real ones online: npu-ep export --model openai/whisper-small).", ""]
    configured = [row for row in data["encoders"] if "configurations" in row]
    if configured:
        lines += ["| encoder (XDNA1 placement) | NPU takes | nodes | dispatches | MB moved per pass |",
                  "|---|---|---:|---:|---:|"]
        for row in configured:
            for label, c in row["configurations"].items():
                lines.append(f"| {row['model']} | {label} | {c['offloaded']} | {c['dispatches']} | "
                             f"{c['bytes_moved'] / 1e6:.1f} |")
        lines += ["", "MB moved: bytes synced to and from the emulated device in one encoder pass after the first "
                  "(weights resident), run on the emulated device, with every eligible node of the row offloaded. A fused attention node keeps the score matrix on "
                  "the device; as parts, it goes out and back once per layer. A whole layer keeps every intermediate there: "
                  "only x goes in and y comes out.", ""]
    lines += ["| encoder | host CPU time per pass, CPU only | with the offload | share (target <= 20 %) | dispatches |",
              "|---|---:|---:|---:|---:|"]
    for row in (row for row in data["encoders"] if "host_cpu" in row):
        host = row["host_cpu"]
        lines.append(f"| {row['model']} | {host['cpu_only_ms']:.0f} ms | {host['offloaded_ms']:.0f} ms | "
                     f"{100 * host['share']:.0f} % | {host['dispatches_per_pass']} |")
    lines += ["", "Host CPU time: process CPU time of every thread per encoder pass, measured on this CPU; the offloaded "
              "pass run on the emulated device, its kernels computing nothing and its own run time subtracted.", ""]
    return "\n".join(lines), data
