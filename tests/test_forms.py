"""The op forms (npu_ep.forms) on the emulated device: every node tiny.en's encoder offloads within
its bf16 error bound on jfk's features, and the forms beyond plain MatMuls (Conv as GEMM, fused
attention, attention's batched MatMuls and Softmax) falling back to the CPU result on every fault.

The bound, per output element of a GEMM C = A @ B whose operands are rounded to bf16 (8
significant bits, relative error <= u = 2**-8 each) and accumulated in fp32 over K terms:
|Δc_ij| <= ((1 + u)**2 - 1 + 2 K 2**-24) * (|A| @ |B|)_ij, the second term both sides' fp32
summation. For fused attention: each score S_j = (Q Kᵀ)_j is off by at most E_j (the GEMM bound);
to first order a softmax then moves by ΔP_j = P_j (ΔS_j - Σ_k P_k ΔS_k), so
|ΔP_j| <= P_j E_j + P_j Σ_k P_k E_k; the probabilities are rounded to bf16 (u) before P @ V, whose V
is rounded too (u): |ΔO| <= (P∘E) @ |V| + Σ_k P_k E_k (P @ |V|) + ((1 + u)**2 - 1 + 2 T 2**-24)
(P @ |V|), with 10 % added for the second-order terms. That bound is loose (|Q| |K| far exceeds
|Q Kᵀ|), so each node's max |Δ| must also stay within 2 u of its largest output value.
A whole encoder layer chains seven bf16 roundings on two residual branches: the norm's output into
q/k/v, q/k/v into the scores and P V, P itself, the attention into the out projection, the second
norm into fc1, GELU's output into fc2. The norms and the softmax renormalise, so each rounding adds
at most about u of its stage's scale, and the branches add to x: its max |Δ| must stay within 4 u of
its largest output (the bound the whole encoder is held to), and its RMS error within u of its RMS. Each check is element-wise and would fail for an error a few bf16 steps
larger, or for a result in another number format.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import npu_ep
from npu_ep.forms.gemm import im2col
from npu_ep import calibrate, kernels
from npu_ep.partition import planner
from npu_ep.provider import cpu_ops, emulator, ops
from npu_ep.provider.xrt_backend import Backend

pytestmark = pytest.mark.usefixtures("reference_cpu", "clean_emulator")
U = 2.0 ** -8  # bf16: 8 significant bits, round to nearest -> unit roundoff 2**-8


def _gemm_bound(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    K = A.shape[-1]
    return ((1 + U) ** 2 - 1 + 2 * K * 2.0 ** -24) * np.matmul(np.abs(A), np.abs(B))


def _attention_bound(q: np.ndarray, kt: np.ndarray, v: np.ndarray) -> np.ndarray:
    scores = np.matmul(q, kt)
    p = np.exp(scores - scores.max(axis=-1, keepdims=True))
    p /= p.sum(axis=-1, keepdims=True)
    pe = p * _gemm_bound(q, kt)          # P_j |ΔS_j|
    pv = np.matmul(p, np.abs(v))
    T = kt.shape[-1]
    first_order = np.matmul(pe, np.abs(v)) + pe.sum(axis=-1, keepdims=True) * pv
    return 1.1 * (first_order + ((1 + U) ** 2 - 1 + 2 * T * 2.0 ** -24) * pv)  # 10 %: the second-order terms


def _bound(form: str, inputs: list[np.ndarray], attrs: dict) -> np.ndarray:
    if form == "matmul":
        a, w = inputs
        return _gemm_bound(a, w)
    if form == "conv_gemm":
        x, w, _ = inputs
        c_out, c_in, k = w.shape
        rows = im2col(x, k, attrs["stride"], attrs["pad"])
        return _gemm_bound(rows, w.reshape(c_out, c_in * k).T).reshape(x.shape[0], -1, c_out).transpose(0, 2, 1)
    if form == "attention":
        return _attention_bound(*inputs)
    raise AssertionError(f"no bound for {form}")


def _tensors(model: onnx.ModelProto, names: list[str], feeds: dict) -> dict[str, np.ndarray]:
    """The values of `names` (activations and initializers) in one CPU run of `model`."""
    constants = {i.name: numpy_helper.to_array(i).copy() for i in model.graph.initializer if i.name in names}
    wanted = [n for n in dict.fromkeys(names) if n not in constants]
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.extend(onnx.ValueInfoProto(name=n) for n in wanted)
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    return {**constants, **dict(zip(wanted, session.run(wanted, feeds)))}


def _int_attrs(node: onnx.NodeProto) -> dict:
    return {a.name: a.i for a in node.attribute if a.type == onnx.AttributeProto.INT}


def _node_inputs(model: onnx.ModelProto, placement, values: dict) -> tuple[list[np.ndarray], dict]:
    """The custom node's inputs and int attributes as the rewrite makes them (an encoder layer's
    vectors are made by its rewrite)."""
    c = placement.candidate
    graph = onnx.GraphProto()
    graph.initializer.extend(model.graph.initializer)
    node = c.form.rewrite(c, placement.kernel, c.name, graph)
    made = {i.name: numpy_helper.to_array(i) for i in graph.initializer[len(model.graph.initializer):]}
    return [made[n] if n in made else values[n] for n in node.input], _int_attrs(node)


def test_every_offloaded_tiny_en_node_is_within_its_bf16_bound(tiny_en_dir, jfk_features):
    path = tiny_en_dir / "encoder_model.onnx"
    model = onnx.load(str(path))
    chosen = planner.plan(model, "emulator", calibrate.calibration()).offloaded
    assert {p.candidate.form.name for p in chosen} == {"conv_gemm", "encoder_layer"}
    wanted = [n for p in chosen for n in p.candidate.inputs] + [p.candidate.node.output[0] for p in chosen]
    values = _tensors(model, wanted, {"input_features": jfk_features})
    backend = Backend("emulator")
    worst = {}
    for placement in chosen:
        c = placement.candidate
        inputs, attrs = _node_inputs(model, placement, values)
        ref = c.form.cpu(cpu_ops.run, *inputs, **attrs)
        dispatched = emulator.stats.dispatches
        out = c.form.npu(backend, c.name, placement.kernel, lambda: None, *inputs, **attrs)
        assert emulator.stats.dispatches == dispatched + 1, c.name  # one run per node, no CPU fallback
        delta = np.abs(out - ref)
        if c.form.name == "encoder_layer":
            # ORT's own kernels, op by op, give the graph's value of the layer (up to summation order).
            np.testing.assert_allclose(ref, values[c.node.output[0]], rtol=1e-4, atol=1e-4)
            assert delta.max() <= 4 * U * np.abs(ref).max(), f"{c.name}: max |Δ| {delta.max():.3g}"
            assert np.sqrt(np.mean(delta ** 2)) <= U * np.sqrt(np.mean(ref ** 2)), c.name
            worst[c.form.name] = max(worst.get(c.form.name, 0.0), float(delta.max() / (4 * U * np.abs(ref).max())))
            continue
        bound = _bound(c.form.name, inputs, attrs)
        assert (delta <= bound + 1e-30).all(), f"{c.name}: max |Δ| {delta.max():.3g}, over its bound at " \
                                               f"{np.argwhere(delta > bound)[:3].tolist()}"
        ratio = float((delta / np.maximum(bound, 1e-30)).max())
        worst[c.form.name] = max(worst.get(c.form.name, 0.0), ratio)
        # The GEMM bounds are tight enough to catch an error of a few bf16 steps; attention's is not
        # (|Q| |K| far exceeds |Q Kᵀ|), so every node must also stay within 2 u of its largest value.
        if c.form.name != "attention":
            assert bound.max() < 2 ** -5 * np.abs(ref).max(), c.name
        assert delta.max() <= 2 * U * np.abs(ref).max(), c.name
    print("largest |Δ| / bound per form:", {k: round(v, 3) for k, v in worst.items()})
    assert backend.warnings == []


def block_model(seed: int = 0) -> onnx.ModelProto:
    """x[1, 128, 1500] -> Conv(384, k 3, pad 1) -> [1, 1500, 6 heads, 64] -> softmax(Q Qᵀ) Q: an
    encoder-sized convolution and attention block, small enough to build in the test."""
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((384, 128, 3)) / np.sqrt(128 * 3)).astype(np.float32)
    b = rng.standard_normal(384).astype(np.float32)
    scale = np.array(64 ** -0.25, np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", kernel_shape=[3], pads=[1, 1], strides=[1]),
        helper.make_node("Transpose", ["c"], ["t"], perm=[0, 2, 1]),
        helper.make_node("Reshape", ["t", "heads"], ["h"]),
        helper.make_node("Transpose", ["h"], ["q0"], perm=[0, 2, 1, 3]),
        helper.make_node("Mul", ["q0", "scale"], ["q"]),
        helper.make_node("Transpose", ["q"], ["kt"], perm=[0, 1, 3, 2]),
        helper.make_node("MatMul", ["q", "kt"], ["s"], name="qk"),
        helper.make_node("Softmax", ["s"], ["p"], name="softmax", axis=-1),
        helper.make_node("MatMul", ["p", "q0"], ["y"], name="av"),
    ]
    graph = helper.make_graph(
        nodes, "block", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 128, 1500])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6, 1500, 64])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b"), numpy_helper.from_array(scale, "scale"),
         numpy_helper.from_array(np.array([1, 1500, 6, 64], np.int64), "heads")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(model: onnx.ModelProto, x: np.ndarray, device: str | None) -> np.ndarray:
    options = npu_ep.session_options(device=device) if device else ort.SessionOptions()
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


@pytest.fixture
def without_fused_attention(monkeypatch, reference_calibration):
    """No attention kernel, and a CPU slow enough at Softmax (0.2 G elements/s) that the cost model
    sends the block's three parts to the device separately, so each of their forms runs."""
    real = kernels.find
    monkeypatch.setattr(kernels, "find", lambda profile, dtype, kind="gemm": None if kind == "attention"
                        else real(profile, dtype, kind))
    slow = dataclasses.replace(reference_calibration, cpu_softmax_gelems=0.2)
    monkeypatch.setattr(calibrate, "calibration", lambda refresh=False: slow)


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("fault", [None, "error", "bad_xclbin"])
def test_conv_and_attention_forms_run_on_the_device_and_fall_back_on_faults(fused, fault, request):
    if not fused:
        request.getfixturevalue("without_fused_attention")
    model = block_model()
    partitioned = planner.partition(model, "emulator", calibrate.calibration())
    forms = sorted(n.op_type for n in partitioned.graph.node if n.domain == "ai.onnx.contrib")
    assert forms == (["NpuAttention", "NpuConv"] if fused else ["NpuBatchedMatMul", "NpuBatchedMatMul", "NpuConv",
                                                                 "NpuSoftmax"])
    x = np.random.default_rng(1).standard_normal((1, 128, 1500), dtype=np.float32)
    ref = _run(model, x, None)
    if fault:
        emulator.inject_fault(fault)
    out = _run(partitioned, x, "emulator")
    backend = ops._default["backend"]
    if fault is None:
        assert emulator.stats.dispatches == len(forms) and backend.warnings == []
        # End to end through bf16 operands: within a few bf16 steps of the largest output.
        assert np.abs(out - ref).max() <= 8 * U * np.abs(ref).max()
    else:
        # Every node's CPU reference is ORT's own kernels: the CPU result up to summation order.
        np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
        cause = "ERT_CMD_STATE_ERROR" if fault == "error" else "not a valid xclbin"
        assert backend.warnings and all(cause in m for m in backend.warnings)
    npu_ep.session_options(device="cpu")  # the next test starts with a fresh process default


@pytest.mark.parametrize("fault", ["error", "timeout"])
def test_an_encoder_layer_falls_back_to_its_cpu_result_on_a_fault(tiny_en_dir, jfk_features, fault):
    model = onnx.load(str(tiny_en_dir / "encoder_model.onnx"))
    layer = next(p for p in planner.plan(model, "emulator", calibrate.calibration()).offloaded
                 if p.candidate.form.name == "encoder_layer")
    c = layer.candidate
    values = _tensors(model, [*c.inputs, c.node.output[0]], {"input_features": jfk_features})
    inputs, attrs = _node_inputs(model, layer, values)
    backend = Backend("emulator")
    emulator.inject_fault(fault, count=1)
    out = c.form.npu(backend, c.name, layer.kernel, lambda: c.form.cpu(cpu_ops.run, *inputs, **attrs), *inputs, **attrs)
    np.testing.assert_allclose(out, values[c.node.output[0]], rtol=1e-4, atol=1e-4)
    assert len(backend.warnings) == 1 and "this node runs on the CPU" in backend.warnings[0]
