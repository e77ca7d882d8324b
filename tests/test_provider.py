"""The NPU provider on the emulated device: custom ops in real ORT sessions, resident weights, one
dispatch per node, CPU fallback on every fault, int8 forms, and the tiny.en acceptance checks."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import npu_ep
from npu_ep.partition.planner import offloaded_count
from npu_ep.provider import emulator, xrt_backend
from npu_ep.provider import device as device_choice
from npu_ep.provider.xrt_backend import Backend, NpuFallbackWarning, fingerprint
from npu_ep.session import create_session

M, D = 1500, 384
# bf16 keeps 8 significant bits: unit roundoff u = 2**-8. A GEMM of bf16-rounded operands with fp32
# accumulation is off by about u relative to its largest terms; through a few stacked GEMMs with
# residuals and layer norms the error stays a few u of the largest output value.
BF16_U = 2.0 ** -8
ROOT = Path(__file__).resolve().parent.parent


# Placement by fixed CPU figures (these tests are about running offloaded nodes), on a clean device.
pytestmark = pytest.mark.usefixtures("reference_cpu", "clean_emulator")


def mlp_model(seed: int = 0) -> onnx.ModelProto:
    """x[1, 1500, 384] -> MatMul + bias -> Relu -> MatMul -> y, and a Gemm on the 2-D view."""
    rng = np.random.default_rng(seed)
    w1, w2, w3 = (rng.standard_normal((D, D), dtype=np.float32) / np.float32(np.sqrt(D)) for _ in range(3))
    bias = rng.standard_normal(D, dtype=np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h1"], name="fc1"),
        helper.make_node("Add", ["h1", "bias"], ["h2"]),
        helper.make_node("Relu", ["h2"], ["h3"]),
        helper.make_node("MatMul", ["h3", "w2"], ["h4"], name="fc2"),
        helper.make_node("Reshape", ["h4", "flat"], ["h5"]),
        helper.make_node("Gemm", ["h5", "w3", "bias"], ["y"], name="proj", transB=1),
    ]
    graph = helper.make_graph(
        nodes, f"mlp{seed}", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, M, D])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [M, D])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2"), numpy_helper.from_array(w3, "w3"),
         numpy_helper.from_array(bias, "bias"), numpy_helper.from_array(np.array([M, D], np.int64), "flat")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def features(seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((1, M, D), dtype=np.float32)


def cpu_output(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def test_public_api_partition_and_session_options():
    model = mlp_model()
    partitioned = npu_ep.partition(model, device="xdna1")
    assert offloaded_count(partitioned) == 3
    so = npu_ep.session_options(device="emulator")
    sess = ort.InferenceSession(partitioned.SerializeToString(), so, providers=["CPUExecutionProvider"])
    x = features()
    out = sess.run(None, {"x": x})[0]
    ref = cpu_output(model, x)
    delta = np.abs(out - ref).max()
    print(f"synthetic MLP on the emulated device: max |delta| = {delta:.4g} (max |ref| {np.abs(ref).max():.3g})")
    assert 0 < delta <= 4 * BF16_U * np.abs(ref).max()  # nonzero: it really ran in bf16
    assert emulator.stats.dispatches == 3


def test_one_dispatch_per_projection_and_resident_weights():
    rng = np.random.default_rng(3)
    a = rng.standard_normal((1500, 512), dtype=np.float32)
    w = rng.standard_normal((512, 512), dtype=np.float32)
    backend = Backend("emulator")
    activation_bytes = 1500 * 512 * 2  # bf16, the 1500 filled rows
    for call in range(3):
        emulator.stats.reset()
        out = backend.gemm("proj#x", "gemm-bf16-npu1", a, lambda: w, fingerprint(w), cpu=lambda: a @ w)
        assert emulator.stats.dispatches == 1
        # The first call also uploads the bf16 weight and the 5-word instruction sequence; later
        # calls send only the activation: the weight stays resident on the device.
        assert emulator.stats.bytes_to_device == activation_bytes + (512 * 512 * 2 + 20 if call == 0 else 0)
    assert backend.weight_uploads == 1
    assert np.abs(out - a @ w).max() <= 4 * BF16_U * np.abs(a @ w).max()


def test_a_different_weight_under_the_same_key_is_uploaded_again():
    rng = np.random.default_rng(4)
    a = rng.standard_normal((256, 384), dtype=np.float32)
    w1, w2 = (rng.standard_normal((384, 384), dtype=np.float32) for _ in range(2))
    backend = Backend("emulator")
    first = backend.gemm("k", "gemm-bf16-npu1", a, lambda: w1, fingerprint(w1), cpu=lambda: a @ w1).copy()
    second = backend.gemm("k", "gemm-bf16-npu1", a, lambda: w2, fingerprint(w2), cpu=lambda: a @ w2)
    assert backend.weight_uploads == 2
    assert np.abs(second - a @ w2).max() < np.abs(first - a @ w2).max()


def test_two_sessions_in_one_process_keep_their_own_weights(tmp_path):
    paths = []
    for seed in (0, 5):
        path = tmp_path / f"mlp{seed}.onnx"
        onnx.save(mlp_model(seed), str(path))
        paths.append(path)
    sessions = [create_session(p, "emulator") for p in paths]
    x = features()
    for _ in range(2):  # interleaved runs: each session's nodes stay bound to its own resident state
        for path, session in zip(paths, sessions):
            ref = cpu_output(onnx.load(str(path)), x)
            assert np.abs(session.run(None, {"x": x})[0] - ref).max() <= 4 * BF16_U * np.abs(ref).max()
    assert [s.npu_backend.weight_uploads for s in sessions] == [3, 3]
    assert (tmp_path / "mlp0.emulator.onnx").exists()  # the partitioned copy sits beside the original


@pytest.mark.parametrize("fault", ["no_device", "busy", "bad_xclbin", "error", "timeout"])
def test_each_fault_gives_the_cpu_result(tmp_path, fault):
    path = tmp_path / "mlp.onnx"
    onnx.save(mlp_model(), str(path))
    setup = fault in ("no_device", "busy", "bad_xclbin")
    if setup:  # the device is opened, and the kernels loaded, when the session opens (warm-up)
        emulator.inject_fault(fault)
    session = create_session(path, "emulator")
    x = features()
    if not setup:
        emulator.inject_fault(fault)
    out = session.run(None, {"x": x})[0]
    session.run(None, {"x": x})
    # ORT's own CPU kernel for each node: the CPU result up to float32 summation order (the
    # fallback's one-node session does not prepack the weight as the full model does).
    np.testing.assert_allclose(out, cpu_output(onnx.load(str(path)), x), rtol=1e-5, atol=1e-5)
    messages = session.npu_backend.warnings
    print(messages)
    cause = {"no_device": "No such device", "busy": "busy", "bad_xclbin": "not a valid xclbin",
             "error": "ERT_CMD_STATE_ERROR", "timeout": "ERT_CMD_STATE_TIMEOUT"}[fault]
    assert all(cause in m for m in messages)
    # One warning per cause: setup faults stop the whole session's offload, run faults each node.
    assert len(messages) == (1 if setup else 3)
    assert set(messages) <= xrt_backend.emitted  # shown once per process


def test_fallback_warning_is_a_python_warning(monkeypatch):
    monkeypatch.setattr(xrt_backend, "emitted", set())  # as in a fresh process
    backend = Backend("emulator")
    emulator.inject_fault("busy")
    a = np.ones((4, 8), np.float32)
    with pytest.warns(NpuFallbackWarning, match="busy"):
        out = backend.gemm("warned#k", "gemm-bf16-npu1", a, lambda: a.T, b"id", cpu=lambda: a @ a.T)
    assert np.array_equal(out, a @ a.T)


def test_auto_without_an_npu_is_the_cpu_path_and_says_so(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(device_choice, "_said", set())  # as in a fresh process
    path = tmp_path / "mlp.onnx"
    onnx.save(mlp_model(), str(path))
    with caplog.at_level(logging.INFO, logger="npu_ep"):
        session = create_session(path, "auto")
    assert [r.getMessage() for r in caplog.records if r.name.startswith("npu_ep")] == ["device auto -> cpu (pyxrt is not installed)"]
    assert not hasattr(session, "npu_backend") and not (tmp_path / "mlp.xdna1.onnx").exists()


def test_cpu_device_runs_partitioned_models_exactly():
    model = mlp_model()
    sess = ort.InferenceSession(npu_ep.partition(model).SerializeToString(), npu_ep.session_options(device="cpu"),
                                providers=["CPUExecutionProvider"])
    x = features()
    np.testing.assert_allclose(sess.run(None, {"x": x})[0], cpu_output(model, x), rtol=1e-5, atol=1e-5)
    assert emulator.stats.dispatches == 0


# -- int8 forms -------------------------------------------------------------------------------------
def _quantized(tmp_path, static: bool) -> tuple[onnx.ModelProto, onnx.ModelProto]:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_dynamic, quantize_static

    source, target = tmp_path / "float.onnx", tmp_path / "int8.onnx"
    onnx.save(mlp_model(), str(source))
    if static:
        class Reader(CalibrationDataReader):
            def __init__(self):
                self.feeds = iter([{"x": features(seed)} for seed in range(4)])

            def get_next(self):
                return next(self.feeds, None)

        quantize_static(str(source), str(target), Reader(), quant_format=QuantFormat.QDQ, op_types_to_quantize=["MatMul"])
    else:
        quantize_dynamic(str(source), str(target), op_types_to_quantize=["MatMul"])
    quantized = onnx.load(str(target))
    return quantized, npu_ep.partition(quantized, device="xdna1")


def _run(model: onnx.ModelProto, device: str | None) -> np.ndarray:
    options = npu_ep.session_options(device) if device else ort.SessionOptions()
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, {"x": features()})[0]


def test_matmul_integer_runs_exactly_on_the_int8_kernel(tmp_path):
    _, partitioned = _quantized(tmp_path, static=False)
    ops = [n.op_type for n in partitioned.graph.node]
    assert ops.count("NpuMatMulInteger") == 3 and "MatMulInteger" not in ops  # the Gemm became one too
    kernels = [n for n in partitioned.graph.node if n.op_type == "NpuMatMulInteger"]
    consts = {i.name: numpy_helper.to_array(i) for i in partitioned.graph.initializer}
    consumer = {name: n for n in partitioned.graph.node for name in n.input}
    cast = consumer[kernels[-1].output[0]]
    last_scale = consumer[cast.output[0]].input[1]  # Cast -> Mul(scale) -> Add(bias) -> y
    assert (cast.op_type, consumer[cast.output[0]].op_type) == ("Cast", "Mul")
    # Every kernel's activation, its zero point and its int32 result, plus the last one's dequantization scale.
    probes = [name for n in kernels for name in (n.input[0], n.input[2], n.output[0])] + [last_scale]
    partitioned.graph.output.extend(helper.make_empty_tensor_value_info(name) for name in probes)
    session = ort.InferenceSession(partitioned.SerializeToString(), npu_ep.session_options("emulator"),
                                   providers=["CPUExecutionProvider"])
    y, *seen = session.run(None, {"x": features()})
    seen = dict(zip(probes, seen))
    assert emulator.stats.dispatches == 3
    for node in kernels:
        a, a_zero, acc = (seen[name] for name in (node.input[0], node.input[2], node.output[0]))
        w, w_zero = consts[node.input[1]], consts[node.input[3]]
        # Integer arithmetic, so the reference is the exact product, tolerance 0: each int32 sums K = 384
        # products |(a - a_zero) * w| <= 255 * 127, far below 2**31, exact in any order. (ORT's CPU kernel is
        # not a reference: without VNNI or AMX it adds pairs of u8 x s8 products in int16 with saturation.)
        exact = (a.astype(np.int64) - a_zero) @ (w.astype(np.int64) - w_zero)
        assert acc.dtype == np.int32 and np.array_equal(acc, exact), node.name
    # The float graph around the kernel: y = float(acc) * scale + bias. The cast is exact (|acc| < 2**24);
    # the multiply and the add each round once, by at most u = 2**-24 of their result, so
    # |y - reference| <= u * |acc * scale| + u * |y| elementwise (with float32's own rounding of the reference).
    acc = seen[kernels[-1].output[0]].astype(np.float64).reshape(y.shape)
    reference = acc * np.float64(seen[last_scale]) + consts["bias"]
    u = 2.0 ** -24
    assert np.all(np.abs(y - reference) <= 2 * u * (np.abs(acc * seen[last_scale]) + np.abs(reference)))


def test_qdq_matmul_runs_on_the_int8_kernel(tmp_path):
    quantized, partitioned = _quantized(tmp_path, static=True)
    ops = [n.op_type for n in partitioned.graph.node]
    assert ops.count("NpuQdqMatMul") + ops.count("NpuQdqMatMulU8") == 2 and "MatMul" not in ops
    assert ops.count("NpuGemm") == 1  # left in float by quantize_static: the bf16 kernel takes it
    out, ref = _run(partitioned, "emulator"), _run(quantized, None)
    assert emulator.stats.dispatches == 3
    # The CPU fuses the same int32 products into QLinearMatMul; only the requantization rounding
    # of the output may differ, by one step of the final output's quantization scale.
    step = max(numpy_helper.to_array(i).max() for i in quantized.graph.initializer if i.name.endswith("_scale"))
    print(f"QDQ on the emulated device: max |delta| = {np.abs(out - ref).max():.4g}, output scale step <= {step:.4g}")
    assert np.abs(out - ref).max() <= 1.01 * step


# -- tiny.en acceptance -----------------------------------------------------------------------------
def test_tiny_en_encoder_on_the_emulated_xdna1(tiny_en_dir, jfk_features):
    encoder = tiny_en_dir / "encoder_model.onnx"
    session = create_session(encoder, "emulator")
    offloaded = offloaded_count(onnx.load(str(tiny_en_dir / "encoder_model.emulator.onnx")))
    assert offloaded == 6  # each of the 4 layers whole (one run each) and the 2 convolutions
    ref = create_session(encoder, "cpu").run(None, {"input_features": jfk_features})[0]
    to_device = []
    for _ in range(2):
        emulator.stats.reset()
        out = session.run(None, {"input_features": jfk_features})[0]
        assert emulator.stats.dispatches == offloaded
        to_device.append(emulator.stats.bytes_to_device)
    assert session.npu_backend.weight_uploads == offloaded  # once per session, not per run
    weights = sum(4 * np.prod(i.dims) for i in onnx.load(str(encoder)).graph.initializer if len(i.dims) == 2
                  and i.dims[0] in (384, 1536) and i.dims[1] in (384, 1536)) // 2  # bf16 on the device
    assert to_device[0] - to_device[1] >= weights  # the first run carried the weights, the second did not
    delta = np.abs(out - ref)
    print(f"tiny.en encoder, jfk, emulated XDNA1 vs CPU: max |delta| = {delta.max():.4g}, "
          f"mean {delta.mean():.3g}, max |ref| = {np.abs(ref).max():.3g}")
    assert delta.max() <= 4 * BF16_U * np.abs(ref).max()


def test_jfk_transcript_on_the_emulated_device_equals_cpu(tiny_en_dir, jfk_path):
    cpu, _ = npu_ep.transcribe(jfk_path, tiny_en_dir, device="cpu")
    npu, _ = npu_ep.transcribe(jfk_path, tiny_en_dir, device="emulator")
    cpu_text = " ".join(s.text.strip() for s in cpu)
    print(f"CPU: {cpu_text}")
    assert "ask not what your country can do for you" in cpu_text.lower()
    assert [s.text for s in npu] == [s.text for s in cpu]
    # The one-token decoder offloads nothing: it runs from the exported file, with no partitioned copy
    # repeating its weights on disk. The encoder and the first decoder pass (cross-attention keys and
    # values over 1500 positions) have offloaded nodes and their copies.
    assert not (tiny_en_dir / "decoder_with_past_model.emulator.onnx").exists()
    assert json.loads((tiny_en_dir / "decoder_with_past_model.emulator.json").read_text())["offloaded"] == 0
    assert all((tiny_en_dir / f"{name}.emulator.onnx").exists() for name in ("encoder_model", "decoder_model"))


@pytest.mark.parametrize("model", ["tiny.en", "base"])
def test_jfk_and_the_samples_transcribe_on_the_emulated_device_as_on_the_cpu(model, tiny_en_dir, base_dir, jfk_path):
    """Whole encoder layers and both convolutions offloaded (bf16 on the emulated device), every
    clip's transcript equals the CPU path's word for word."""
    folder = {"tiny.en": tiny_en_dir, "base": base_dir}[model]
    clips = [jfk_path, *sorted((ROOT / "samples").glob("*.flac"))]
    cpu, npu = npu_ep.Pipeline(folder, device="cpu"), npu_ep.Pipeline(folder, device="emulator")
    emulator.stats.reset()
    for clip in clips:
        expected = [s.text for s in cpu.transcribe(clip)[0]]
        assert [s.text for s in npu.transcribe(clip)[0]] == expected, clip.name
    forms = {n.op_type for n in onnx.load(str(folder / "encoder_model.emulator.onnx")).graph.node
             if n.domain == "ai.onnx.contrib"}
    assert forms == {"NpuEncoderLayer", "NpuConv"}
    assert emulator.stats.dispatches > 0 and not emulator.stats.refusals


def test_transcription_never_imports_torch(random_model_dir, jfk_path):
    # onnxruntime-extensions' package imports transformers and torch when installed (~300 MB, ~3 s);
    # the CPU path must not import the NPU provider's parts at all, the NPU path must keep torch out.
    import subprocess
    import sys

    script = (
        "import sys; import npu_ep\n"
        f"pipeline = npu_ep.Pipeline({str(random_model_dir)!r}, device='cpu')\n"
        f"pipeline.transcribe({str(jfk_path)!r})\n"
        "assert 'onnxruntime_extensions' not in sys.modules and 'numba' not in sys.modules, 'cpu path imported NPU parts'\n"
        "sess = npu_ep.session_options(device='emulator')  # what the NPU path registers\n"
        "assert 'onnxruntime_extensions' in sys.modules\n"
        "print(sorted(name for name in ('torch', 'transformers') if name in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_bf16_packing_rounds_to_nearest_even_into_a_padded_buffer():
    import ml_dtypes  # onnx's own dependency: an independent float32 -> bf16 conversion

    from npu_ep.provider import bf16

    rng = np.random.default_rng(5)
    values = rng.standard_normal((37, 70), dtype=np.float32) * np.float32(1e3)
    edge = np.array([0.0, -0.0, np.inf, -np.inf, 1e-40, -1e-42, 3.4e38, 1.0 + 2.0 ** -8, 1.0 + 3 * 2.0 ** -8,
                     -(1.0 + 2.0 ** -8)], np.float32)  # zeros, infinities, subnormals, overflow, both kinds of tie
    values[0, :edge.size] = edge
    out = np.full((64, 128), 0xABCD, np.uint16)  # the device buffer, padded past M and K
    bf16.pack(values, out)
    expected = values.astype(ml_dtypes.bfloat16).view(np.uint16)
    assert np.array_equal(out[:37, :70], expected)
    assert (out[37:] == 0xABCD).all() and (out[:, 70:] == 0xABCD).all()  # padding untouched
    assert np.isnan(bf16.to_f32(bf16.from_f32(np.array([np.nan, -np.nan], np.float32)))).all()


def test_bench_section_labels_every_npu_figure(random_model_dir):
    from npu_ep.bench.npu import npu_report

    text, data = npu_report([random_model_dir])
    assert data["dispatches_1500x512x512"] == 1
    bf16, int8, single = data["host_overhead"]
    assert all(figure["host_ms"] > 0 and figure["pack_ms"] > 0 for figure in (bf16, int8, single))
    assert data["through_ort"]["offloaded_ms"] > 0  # offloaded under the fixed CPU figures
    for line in text.splitlines():
        if line.startswith("| host-side") or line.startswith("| one offloaded") or line.startswith("| dispatches"):
            assert "run on the emulated device" in line, line
    assert "projected by the cost model, not measured on an NPU" in text
    host = data["encoders"][0]["host_cpu"]
    assert host["cpu_only_ms"] > 0 and host["offloaded_ms"] > 0 and host["share"] == host["offloaded_ms"] / host["cpu_only_ms"]
    assert "offloaded pass run on the emulated device" in text and "process CPU time" in text
    (row,) = data["encoders"]
    assert row["xdna1"]["host_ms"] > 0 and row["xdna1"]["projected_ms"] > row["xdna1"]["host_ms"]
    assert row["xdna1"]["forms"].get("attention") == 2  # the random model's two layers, fused
    moved = {label: c["bytes_moved"] for label, c in row["configurations"].items()}
    # Fused attention keeps each layer's score matrix on the device; as parts it crosses twice.
    assert moved["+ conv, fused attention"] < moved["+ conv, attention as parts"]
    assert "MB moved per pass" in text and "run on the emulated device" in text


def test_activation_kinds_run_with_padded_buffers_and_stale_padding_cleared():
    """Backend.run: both operands activations (batched GEMM, batch = heads), each in the corner of its
    zero-padded buffer; a smaller shape on the same artifact must not see the previous call's data."""
    rng = np.random.default_rng(6)
    backend = Backend("emulator")
    for T in (300, 290):  # both pad to the same K = 320: one artifact, one prepared run
        p = rng.random((6, 200, T), dtype=np.float32)
        v = rng.standard_normal((6, T, 64), dtype=np.float32)
        out = backend.run("attn#av", "batched_gemm-bf16-npu1", (6, 200, T, 64), {"a": p, "b": v}, cpu=lambda: p @ v)
        assert out.shape == (6, 200, 64)
        assert np.abs(out - p @ v).max() <= 4 * BF16_U * np.abs(p @ v).max()
    assert len(backend._kernels) == 1 and emulator.stats.dispatches == 2


def test_a_device_without_the_built_artifact_sends_that_node_to_the_cpu(monkeypatch):
    # Without the emulator's on-demand build the backend behaves as on real hardware: it runs only
    # artifacts `npu-ep kernels build` recorded, and any other shape falls back with a clear cause.
    monkeypatch.delattr(emulator, "build_instructions")
    monkeypatch.setattr(xrt_backend, "emitted", set())
    backend = Backend("emulator")
    a = np.ones((1500, 384), np.float32)
    with pytest.warns(NpuFallbackWarning, match="kernel gemm-bf16-npu1-1536x384x384-t64x64x32-a4x4 not built"):
        out = backend.gemm("fc#k", "gemm-bf16-npu1", a, lambda: a[:384], b"id", cpu=lambda: a @ a[:384])
    assert np.array_equal(out, a @ a[:384]) and emulator.stats.dispatches == 0


def test_warm_up_opens_each_artifact_and_runs_it_before_the_first_call():
    backend = Backend("emulator")
    design = npu_ep.kernels.design("gemm-bf16-npu1")
    identities = [design.artifact(1500, 384, n).identity for n in (384, 1536)]
    seconds = backend.warm_up(identities, runs=3)
    assert seconds > 0 and emulator.stats.dispatches == 6 and not backend.warnings
    assert sorted(backend._kernels) == sorted(identities)


def test_a_session_warms_up_its_kernels_before_the_first_pass(tmp_path):
    path = tmp_path / "mlp.onnx"
    onnx.save(mlp_model(), str(path))
    session = create_session(path, "emulator")
    summary = json.loads({p.key: p.value for p in onnx.load(str(tmp_path / "mlp.emulator.onnx")).metadata_props}
                         ["npu_ep.partition"])
    # fc1, fc2 and proj share one padded shape: one artifact, opened and run before any input arrives.
    assert summary["artifacts"] == ["gemm-bf16-npu1-1536x384x384-t64x64x32-a4x4"]
    assert sorted(session.npu_backend._kernels) == summary["artifacts"]
    assert emulator.stats.dispatches == xrt_backend.WARM_RUNS
    emulator.stats.reset()
    session.run(None, {"x": features()})
    assert emulator.stats.dispatches == 3 and not session.npu_backend.warnings
