"""The partition pass and cost model on real exported Whisper models, and `npu-ep partition`."""
from __future__ import annotations

import dataclasses
import json

import onnx
import pytest

from npu_ep import calibrate, forms
from npu_ep.cli import main
from npu_ep.partition import cost, planner
from npu_ep.partition.profiles import PROFILES
from npu_ep.partition.rewrite import DOMAIN

FILES = ("encoder_model.onnx", "decoder_model.onnx", "decoder_with_past_model.onnx")
# Every form but the whole encoder layers: the placement of a layer's parts, as without a layer kernel.
PARTS = {name for name, form in forms.BY_NAME.items() if form.kernel_kind != "encoder_layer"}


@pytest.fixture(scope="module")
def calibration() -> cost.Calibration:
    return calibrate.calibration()


@pytest.fixture(scope="module")
def tiny_plans(tiny_en_dir, reference_calibration) -> dict:
    return {(name, device): planner.plan(tiny_en_dir / name, device, reference_calibration, forms=PARTS)
            for name in FILES for device in ("xdna1", "xdna2")}


@pytest.mark.parametrize("device", ["xdna1", "xdna2"])
def test_each_encoder_layer_goes_whole_to_the_npu_in_bf16_unless_int8_is_asked_for(tiny_en_dir, reference_calibration,
                                                                                 device):
    encoder = planner.plan(tiny_en_dir / "encoder_model.onnx", device, reference_calibration)
    assert sorted(p.candidate.form.name for p in encoder.offloaded) == ["conv_gemm"] * 2 + ["encoder_layer"] * 4
    layer = next(p for p in encoder.offloaded if p.candidate.form.name == "encoder_layer")
    assert layer.kernel == f"encoder_layer-bf16-{'npu1' if device == 'xdna1' else 'npu2'}"
    assert layer.candidate.work.dims == (1500, 384, 1536, 6, 1500) and layer.estimate.npu_ms < layer.estimate.cpu_ms
    # Its 71 nodes: norms, projections, attention, GELU, residuals and the reshapes' shape arithmetic.
    assert len(layer.candidate.replaced) == 71 and layer.candidate.node.name == "/layers.0/Add_1"
    assert encoder.hybrid_ms < planner.plan(tiny_en_dir / "encoder_model.onnx", device, reference_calibration,
                                            forms=PARTS).hybrid_ms
    int8 = planner.plan(tiny_en_dir / "encoder_model.onnx", device, reference_calibration, forms=set(forms.BY_NAME))
    assert sorted(p.candidate.form.name for p in int8.offloaded) == ["conv_gemm"] * 2 + ["encoder_layer_int8"] * 4
    assert int8.hybrid_ms < encoder.hybrid_ms <= encoder.cpu_ms


def test_a_layer_beats_its_parts_once_their_cpu_leftovers_are_priced(tiny_en_dir, reference_calibration):
    """The parts of a layer leave its norms, GELU and residual adds on the CPU: on a very slow CPU those
    alone outweigh the whole layer on the device, so the layer must win. With free host copies the parts'
    device time alone is below the layer's (it reconfigures the array between phases): the layer lost
    while the leftovers cost nothing."""
    slow = dataclasses.replace(reference_calibration, cpu_gflops=1e-3, cpu_int8_gops=1e-3, cpu_batched_gflops=1e-3,
                               cpu_softmax_gelems=1e-6, cpu_mem_gbs=1e-3, host_gbs=1e6, op_fixed_ms=0.0)
    encoder = planner.plan(tiny_en_dir / "encoder_model.onnx", "xdna1", slow)
    assert sorted(p.candidate.form.name for p in encoder.offloaded) == ["conv_gemm"] * 2 + ["encoder_layer"] * 4


def test_calibration_is_cached_per_machine(calibration):
    path = calibrate.cache_dir() / "cpu_calibration.json"
    assert json.loads(path.read_text())["machine"] == cost.machine_id()
    assert calibrate.calibration() == calibration  # read back, not measured again
    assert calibration.cpu_gflops > 0 and calibration.cpu_mem_gbs > 0 and calibration.host_gbs > 0


def test_shapes_follow_real_use(tiny_plans):
    encoder = {p.candidate.name: p.candidate for p in tiny_plans[("encoder_model.onnx", "xdna1")].placements}
    q = encoder["/layers.0/self_attn/q_proj/MatMul"].gemm
    fc1 = encoder["/layers.0/fc1/MatMul"].gemm
    assert (q.M, q.K, q.N) == (1500, 384, 384)      # 3000 mel frames -> 1500 positions
    assert (fc1.M, fc1.K, fc1.N) == (1500, 384, 1536)
    conv1, conv2 = encoder["/conv1/Conv"].gemm, encoder["/conv2/Conv"].gemm
    assert (conv1.M, conv1.K, conv1.N) == (3000, 80 * 3, 384)   # im2col rows: one per output frame
    assert (conv2.M, conv2.K, conv2.N) == (1500, 384 * 3, 384)  # stride 2
    attention = encoder["/layers.0/self_attn/MatMul_1"]
    assert attention.form.name == "attention"
    assert [(g.batch, g.M, g.K, g.N) for g in attention.work.gemms] == [(6, 1500, 64, 1500), (6, 1500, 1500, 64)]
    with_past = tiny_plans[("decoder_with_past_model.onnx", "xdna1")].placements
    assert {p.candidate.gemm.M for p in with_past if p.candidate.weight} == {1}  # one token per step


@pytest.mark.parametrize("device", ["xdna1", "xdna2"])
def test_encoder_projections_go_to_the_npu_and_one_token_steps_stay(tiny_plans, device):
    encoder = tiny_plans[("encoder_model.onnx", device)]
    placed = {p.candidate.name.split("/")[-2]: p.device for p in encoder.placements if p.candidate.weight}
    assert set(placed) == {"q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2", "conv1", "conv2"}
    assert set(placed.values()) == {"npu"}
    # Each layer's QKᵀ -> Softmax -> AV goes as one fused attention node, in place of its three parts.
    forms = [p.candidate.form.name for p in encoder.offloaded]
    assert forms.count("attention") == 4 and len(encoder.offloaded) == 24 + 2 + 4
    assert not any(p.candidate.form.name in ("batched_matmul", "softmax") for p in encoder.placements)
    assert len(encoder.alternatives) == 0
    with_past = tiny_plans[("decoder_with_past_model.onnx", device)]
    assert with_past.offloaded == []
    assert all("M = 1" in p.reason for p in with_past.placements if p.candidate.weight)


def test_attention_parts_are_placed_when_no_fused_kernel_exists(tiny_en_dir, reference_calibration, monkeypatch):
    from npu_ep import kernels

    real = kernels.find
    monkeypatch.setattr(kernels, "find", lambda profile, dtype, kind="gemm": None if kind == "attention"
                        else real(profile, dtype, kind))
    encoder = planner.plan(tiny_en_dir / "encoder_model.onnx", "xdna1", calibration=reference_calibration, forms=PARTS)
    forms = [p.candidate.form.name for p in encoder.placements]
    assert forms.count("batched_matmul") == 8 and forms.count("softmax") == 4 and "attention" not in forms
    assert [p.reason for p in encoder.alternatives] == ["no attention kernel for xdna1"] * 4
    # The separate parts cost the same CPU time the fused block would: one consistent CPU-only total.
    monkeypatch.undo()
    fused = planner.plan(tiny_en_dir / "encoder_model.onnx", "xdna1", calibration=reference_calibration, forms=PARTS)
    assert abs(encoder.cpu_ms - fused.cpu_ms) < 1e-6 * fused.cpu_ms
    assert fused.hybrid_ms < encoder.hybrid_ms  # the score matrix's round trips cost time


def test_partitioned_time_never_exceeds_cpu_only(random_model_dir, tiny_en_dir, tiny_plans, calibration):
    plans = list(tiny_plans.values())
    plans += [planner.plan(random_model_dir / name, device, calibration)
              for name in FILES for device in PROFILES]
    # Whole encoder layers, bf16 (the default) and int8, under this machine's CPU figures.
    plans += [planner.plan(tiny_en_dir / "encoder_model.onnx", device, calibration, forms=chosen)
              for device in PROFILES for chosen in (None, set(forms.BY_NAME))]
    for plan in plans:
        assert plan.hybrid_ms <= plan.cpu_ms, plan.model_name
        for p in plan.offloaded:
            assert p.estimate.npu_ms < p.estimate.cpu_ms
    assert any(plan.hybrid_ms < plan.cpu_ms for plan in plans)


def test_a_faster_cpu_never_sends_more_to_the_npu(tiny_en_dir, reference_calibration):
    """The placement follows the CPU's speed the right way: as the CPU gets faster the offloaded
    nodes only shrink (each set inside the slower CPU's), a CPU far faster than any NPU keeps every
    node, and the rewritten model carries exactly the offloaded nodes as the provider's ops."""
    encoder = onnx.load(str(tiny_en_dir / "encoder_model.onnx"))
    offloaded = []
    for speed in (0.25, 1.0, 4.0, 1000.0):
        faster = dataclasses.replace(reference_calibration, cpu_gflops=reference_calibration.cpu_gflops * speed,
                                     cpu_int8_gops=reference_calibration.cpu_int8_gops * speed,
                                     cpu_mem_gbs=reference_calibration.cpu_mem_gbs * speed,
                                     cpu_batched_gflops=reference_calibration.cpu_batched_gflops * speed,
                                     cpu_softmax_gelems=reference_calibration.cpu_softmax_gelems * speed)
        plan = planner.plan(encoder, "xdna1", faster)
        offloaded.append({p.candidate.name for p in plan.offloaded})
        assert plan.hybrid_ms <= plan.cpu_ms
        custom = [n.name for n in planner.apply(encoder, plan).graph.node if n.domain == DOMAIN]
        assert sorted(custom) == sorted(offloaded[-1])
    assert all(later <= earlier for earlier, later in zip(offloaded, offloaded[1:]))
    assert len(offloaded[1]) == 6 and offloaded[-1] == set()  # 4 whole layers, 2 convolutions


def test_rewrite_keeps_weights_as_initializers(tiny_en_dir, reference_calibration):
    original = onnx.load(str(tiny_en_dir / "encoder_model.onnx"))
    partitioned = planner.partition(original, "xdna1", reference_calibration, forms=PARTS)
    custom = [n for n in partitioned.graph.node if n.domain == DOMAIN]
    by_type = {t: [n for n in custom if n.op_type == t] for t in {n.op_type for n in custom}}
    assert {t: len(n) for t, n in by_type.items()} == {"NpuMatMul": 24, "NpuConv": 2, "NpuAttention": 4}
    initializers = {i.name for i in partitioned.graph.initializer}
    assert initializers == {i.name for i in original.graph.initializer}
    kernel = {"NpuMatMul": "gemm-bf16-npu1", "NpuConv": "gemm-bf16-npu1", "NpuAttention": "attention-bf16-npu1"}
    for node in custom:
        attrs = {a.name: a.s.decode() for a in node.attribute if a.type == onnx.AttributeProto.STRING}
        assert node.op_type == "NpuAttention" or node.input[1] in initializers
        assert attrs["kernel"] == kernel[node.op_type]
        assert attrs["node_key"].startswith(node.name + "#")
    # A fused attention node replaces its block: no Softmax is left, and nothing reads a removed tensor.
    assert not any(n.op_type == "Softmax" for n in partitioned.graph.node)
    produced = {o for n in partitioned.graph.node for o in n.output} | initializers | {i.name for i in partitioned.graph.input}
    assert all(name in produced for n in partitioned.graph.node for name in n.input if name)
    keys = [a.s for n in custom for a in n.attribute if a.name == "node_key"]
    assert len(set(keys)) == len(keys)
    # Stable: the same model gives the same keys.
    again = planner.partition(original, "xdna1", reference_calibration, forms=PARTS)
    assert keys == [a.s for n in again.graph.node if n.domain == DOMAIN for a in n.attribute if a.name == "node_key"]


def test_a_placement_made_with_other_cpu_figures_is_made_again(random_model_dir, tmp_path, reference_calibration):
    import shutil

    source = tmp_path / "encoder_model.onnx"
    shutil.copy(random_model_dir / "encoder_model.onnx", source)
    if (random_model_dir / "encoder_model.onnx.data").exists():
        shutil.copy(random_model_dir / "encoder_model.onnx.data", tmp_path / "encoder_model.onnx.data")
    _, first = planner.partition_file(source, "xdna1", lambda: reference_calibration)
    _, reused = planner.partition_file(source, "xdna1", lambda: reference_calibration)
    slower = dataclasses.replace(reference_calibration, cpu_gflops=reference_calibration.cpu_gflops / 2)
    _, remade = planner.partition_file(source, "xdna1", lambda: slower)
    assert first is not None and reused is None and remade is not None


def test_cli_writes_partitioned_copies_and_report(random_model_dir, tmp_path):
    report = tmp_path / "report" / "placement.md"
    assert main(["partition", "--model", str(random_model_dir), "--device", "xdna2", "--report", str(report)]) == 0
    data = json.loads(report.with_suffix(".json").read_text())
    for name, placed in zip(FILES, data["models"]):
        copy, record = (random_model_dir / name.replace(".onnx", f".xdna2.{suffix}") for suffix in ("onnx", "json"))
        offloaded = sum(node["decision"] == "npu" for node in placed["nodes"])
        # A copy only where something is offloaded (no second copy of the weights otherwise); a record always.
        assert copy.exists() == bool(offloaded) and json.loads(record.read_text())["offloaded"] == offloaded, name
    text = report.read_text()
    assert "projected by the cost model" in text and "| node | form: [batch x] M x K x N |" in text
    assert [m["model"].split("/")[-1] for m in data["models"]] == [f.removesuffix(".onnx") for f in FILES]
    node = data["models"][0]["nodes"][0]
    assert {"name", "form", "shape", "gemms", "flops", "bytes_in", "bytes_out", "cpu_ms", "npu_ms", "decision", "reason"} <= set(node)
    assert report.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"


def test_cli_bad_input_is_one_line(tmp_path, capsys):
    assert main(["partition", "--model", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("npu-ep: error:")


def test_report_names_the_figures_whose_2x_worse_value_would_move_a_node(tiny_en_dir, reference_calibration):
    from dataclasses import replace

    from npu_ep.partition import report

    # A CPU fast enough that fc1 (1500x384x1536) wins on the NPU by a small factor only: the bf16 rate
    # (compute ~3 ms of ~4 ms) decides it; the dispatch (0.12 ms) and the DMA (overlapped) do not.
    fast = replace(reference_calibration, cpu_gflops=300.0)
    chosen = planner.plan(tiny_en_dir / "encoder_model.onnx", "xdna1", calibration=fast, forms=PARTS)
    fc1 = next(p for p in chosen.placements if p.candidate.name == "/layers.0/fc1/MatMul")
    assert fc1.device == "npu" and report.flips(fc1, chosen, fast) == ["bf16_tflops"]
    # With the reference laptop CPU the projections win by far: no single figure 2x worse moves one.
    slow = planner.plan(tiny_en_dir / "encoder_model.onnx", "xdna1", calibration=reference_calibration)
    assert all(report.flips(p, slow, reference_calibration) == [] for p in slow.offloaded)
    text = report.markdown([chosen], fast)
    assert "| 2x worse moves it |" in text and "adds 136 ms to the first run" in text
    assert report.as_json([chosen], fast)["models"][0]["cold_first_run_ms"] == 136.0
