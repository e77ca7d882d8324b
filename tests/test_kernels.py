"""Our kernel designs and `npu-ep kernels build`: what can be checked without mlir-aie or an NPU.

The designs' memory budgets for every artifact the build would make, shape selection from the
models' placement, the manifest update after a build (the compile step stubbed: it is the only part
that needs mlir-aie's compilers), the real-device path through recorded artifacts, verification
against numpy, the one-line message when the toolchain is missing, and our core kernels' arithmetic
(plain C++, built here for the host) against numpy.
"""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from npu_ep import kernel_build
from npu_ep import kernels
from npu_ep.provider import emulator
from npu_ep.provider.xrt_backend import Backend

pytestmark = pytest.mark.usefixtures("reference_cpu", "clean_emulator")
designs = kernel_build.designs()
LimitError = designs.limits.DesignError

# The two convolutions as GEMMs (im2col rows x C_in*3 -> C_out), each encoder layer whole (1500
# positions padded to 1536, width 384, FFN 1536, 6 heads; one ELF serves all four layers) and the
# decoder's cross-attention projections of the 1500 encoder states.
TINY_EN_ARTIFACTS = {"gemm-bf16-{d}-3072x256x384-t64x64x{n}-a4x{c}", "gemm-bf16-{d}-1536x1152x384-t64x64x{n}-a4x{c}",
                     "gemm-bf16-{d}-1536x384x384-t64x64x{n}-a4x{c}",
                     "encoder_layer-bf16-{d}-1536x384x1536x6x1500-t64x64x{n}x{q}x32x4-a4x{c}"}
# Whisper's shapes beyond tiny.en's (base, small, medium, large-v3: widths 512-1280, FFN 4x, head
# dim 64, 1500 encoder positions), for the kinds the placement may use: each must fit the array.
WIDTHS = (384, 512, 768, 1024, 1280)


@pytest.mark.parametrize("device, n, cols, sq", [("npu1", 32, 4, 32), ("npu2", 16, 8, 16)])
def test_selection_takes_exactly_the_shapes_the_placement_offloads(tiny_en_dir, device, n, cols, sq):
    artifacts = kernel_build.select([tiny_en_dir], device)
    expected = {name.format(d=device, n=n, c=cols, q=sq) for name in TINY_EN_ARTIFACTS}
    assert {a.identity for a in artifacts} == expected
    for artifact in artifacts:  # every artifact the build would make fits the tiles' memory
        budget = designs.plan(artifact)
        assert budget.l1_bytes <= 64 * 1024 and budget.l2_bytes <= 512 * 1024


@pytest.mark.parametrize("device", ["npu1", "npu2"])
def test_every_design_fits_the_memory_of_whisper_sized_problems(device):
    shapes = {"gemm": [(1500, w, f) for w in WIDTHS for f in (w, 4 * w)] + [(1500, 4 * w, w) for w in WIDTHS],
              "batched_gemm": [(w // 64, 1500, 64, 1500) for w in WIDTHS] + [(w // 64, 1500, 1500, 64) for w in WIDTHS],
              "softmax": [(w // 64 * 1500, 1500, 1500) for w in WIDTHS],
              "attention": [(w // 64, 1500, 1500, 64, 1500) for w in WIDTHS],
              "encoder_layer": [(1500, w, 4 * w, w // 64, 1500) for w in WIDTHS]}
    for design in kernels.manifest().designs.values():
        if design.device != device:
            continue
        for shape in shapes[design.kind]:
            budget = designs.plan(design.artifact(*shape))
            print(budget.table())
            assert budget.l1_bytes <= 64 * 1024 and budget.l2_bytes <= 512 * 1024


def test_a_tile_too_large_for_a_core_is_refused_with_the_arithmetic():
    wide = kernels.Design(**{**kernels.design("gemm-bf16-npu1").__dict__, "tile": (("m", 128), ("k", 64), ("n", 64))})
    with pytest.raises(LimitError, match=r"115712 bytes per compute tile exceed its 65536 .*C tiles 2 x 128x64 x 4 B = 65536"):
        designs.plan(wide.artifact(1500, 384, 384))
    attention = kernels.design("attention-bf16-npu1")
    with pytest.raises(LimitError, match="bytes per compute tile exceed"):
        designs.plan(attention.artifact(6, 1500, 1500, 256, 1500))  # a head dim Whisper never has
    long_blocks = kernels.Design(**{**attention.__dict__, "tile": (("sq", 32), ("tk", 64))})
    with pytest.raises(LimitError, match="75008 bytes per compute tile"):  # why the manifest says tk = 32
        designs.plan(long_blocks.artifact(6, 1500, 1500, 64, 1500))


@pytest.mark.parametrize("design", ["encoder_layer-bf16-npu1", "encoder_layer-i8-npu1", "encoder_layer-i8-npu2"])
def test_each_phase_of_an_encoder_layer_fits_the_array_on_its_own(design):
    layer = kernels.design(design)
    artifact = layer.artifact(1500, 1280, 5120, 20, 1500)  # large-v3's widths
    phases = designs.encoder_layer.phases(artifact)
    names = [name for name, _ in phases]
    assert names[:5] == ["norm1", "gemm_1536x1280x1280", "bias", "attention", "attention_rows"]
    assert ("quantize" in names) == ("i8" in design) and names[-1] == "residual2"
    for name, budget in phases:
        assert budget.l1_bytes <= 64 * 1024 and budget.l2_bytes <= 512 * 1024, name
    found = designs.encoder_layer.schedule(artifact)
    # A 5120-wide row of fc1's f32 results does not fit a core with its bias and scales: GELU runs
    # in two column halves on one configuration. Two streams in (int8: GELU's row scales) leave 2
    # cores a column (the memory tile's 6 channels each way), one each way all 4.
    assert [run.device for run in found.runs].count("gelu") == 2
    assert found.devices["gelu"].c == (2 if "i8" in design else 4) and found.devices["bias"].c == 4
    assert found.devices["residual1"].c == 2
    budget = designs.plan(artifact)  # the layer's: its largest phase in each memory
    assert budget.l1_bytes == max(b.l1_bytes for _, b in phases)
    assert budget.loops["configurations"] == (12 if "i8" in design else 11)
    with pytest.raises(LimitError, match="head width"):
        designs.plan(layer.artifact(1536, 1280, 5120, 12, 1500))  # 1280 / 12 heads: not whole 16-lane vectors
    with pytest.raises(ModuleNotFoundError, match="aie"):  # the program needs mlir-aie, the plan does not
        designs.program(artifact)


def test_the_designs_import_without_mlir_aie_and_need_it_only_for_the_program():
    assert "aie" not in sys.modules
    artifact = kernels.design("gemm-bf16-npu1").artifact(1500, 384, 384)
    with pytest.raises(ModuleNotFoundError, match="aie"):
        designs.program(artifact)


def _stub_compile(artifact: kernels.Artifact, workdir):
    """Stands in for mlir-aie's compilers only: files named as the build names them, the instruction
    sequence being the emulated device's own for this artifact."""
    workdir.mkdir(parents=True, exist_ok=True)
    files = tuple(workdir / name for name in artifact.files)
    files[0].write_bytes(b"stub")
    if len(files) == 2:
        emulator.build_instructions(artifact).tofile(files[1])
    return files


def test_build_records_each_artifact_and_a_real_device_path_runs_only_those(tiny_en_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("NPU_EP_KERNELS", str(tmp_path / "kernels"))  # a fresh folder: starts from the shipped manifest
    artifacts = kernel_build.select([tiny_en_dir], "npu1")
    lines = kernel_build.build(artifacts, tmp_path / "work", compile_step=_stub_compile, toolchain={"mlir-aie": "stub"})
    assert len(lines) == len(TINY_EN_ARTIFACTS) and all("built" in line and "not verified (pyxrt is not installed)" in line for line in lines)
    raw = json.loads((tmp_path / "kernels" / "manifest.json").read_text())
    assert set(raw["artifacts"]) == {a.identity for a in artifacts}
    entry = raw["artifacts"]["gemm-bf16-npu1-1536x1152x384-t64x64x32-a4x4"]
    assert entry["shape"] == {"M": 1536, "K": 1152, "N": 384} and entry["verified"] is None
    assert entry["toolchain"] == {"mlir-aie": "stub"} and all((tmp_path / "kernels" / f).exists() for f in entry["files"])
    layer = next(a for a in artifacts if a.design.kind == "encoder_layer")
    assert raw["artifacts"][layer.identity]["files"] == [f"{layer.identity}.elf"]
    assert all(kernels.built(a) for a in artifacts)

    # Without the emulator's on-demand build, the backend is on the real-device path: recorded
    # artifacts run from their files, any other shape falls back to the CPU.
    monkeypatch.delattr(emulator, "build_instructions")
    backend = Backend("emulator")
    rng = np.random.default_rng(0)
    a, w = rng.standard_normal((1500, 1152), dtype=np.float32), rng.standard_normal((1152, 384), dtype=np.float32)
    out = backend.gemm("conv2", "gemm-bf16-npu1", a, lambda: w, b"w", cpu=lambda: None)
    assert emulator.stats.dispatches == 1 and np.abs(out - a @ w).max() <= 2 ** -6 * np.abs(a @ w).max()
    missing = backend.gemm("other", "gemm-bf16-npu1", a[:, :256], lambda: w[:256], b"w2", cpu=lambda: "cpu")
    assert missing == "cpu" and "gemm-bf16-npu1-1536x256x384-t64x64x32-a4x4 not built" in backend.warnings[-1]
    # The layer's recorded ELF opens through the full-ELF flow and runs the whole layer in one dispatch.
    result = kernel_build.verify(layer, "emulator")
    assert emulator.stats.dispatches == 3 and result["max_abs_error"] <= result["tolerance"]


@pytest.mark.parametrize("design, shape", [("gemm-bf16-npu1", (300, 256, 128)), ("gemm-i8-npu1", (256, 384, 128)),
                                           ("batched_gemm-bf16-npu1", (2, 200, 64, 100))])
def test_verification_against_numpy_runs_on_a_device(design, shape):
    result = kernel_build.verify(kernels.design(design).artifact(*shape), "emulator")
    assert result["max_abs_error"] <= result["tolerance"]


@pytest.mark.needs_weights
def test_build_without_the_toolchain_says_what_is_missing_and_exits_2():
    done = subprocess.run([sys.executable, "-m", "npu_ep", "kernels", "build", "--device", "npu2", "--model", "tiny.en"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "mlir-aie's toolchain is missing (the mlir-aie Python package (aie)" in lines[0]
    assert "https://github.com/Xilinx/mlir-aie" in lines[0]


def _core_kernel(tmp_path, source: str, defines: dict) -> "ctypes.CDLL":
    """One of our core kernels built for this host (the same C++ Peano compiles for the AIE cores)."""
    import ctypes

    library = tmp_path / f"{source}.so"
    flags = [f"-D{name}={value}" for name, value in defines.items()]
    subprocess.run(["g++", "-O2", "-shared", "-fPIC", *flags, str(kernel_build.shipped("kernels") / "designs" / source),
                    "-o", str(library)], check=True, capture_output=True)
    return ctypes.CDLL(str(library))


def test_the_softmax_core_kernel_computes_softmax_over_the_valid_length(tmp_path):
    import ctypes

    from npu_ep.provider import bf16

    rows, cols, valid = 4, 48, 37
    lib = _core_kernel(tmp_path, "softmax_rows.cc", {"ROWS": rows, "COLS": cols, "VALID": valid})
    x = bf16.from_f32(np.random.default_rng(0).standard_normal((rows, cols), dtype=np.float32) * 4)
    y = np.full((rows, cols), 0xFFFF, np.uint16)
    lib.softmax_rows(ctypes.c_void_p(x.ctypes.data), ctypes.c_void_p(y.ctypes.data))
    values = bf16.to_f32(x)[:, :valid].astype(np.float64)
    expected = np.exp(values - values.max(axis=1, keepdims=True))
    expected /= expected.sum(axis=1, keepdims=True)
    got = bf16.to_f32(y)
    assert np.abs(got[:, :valid] - expected).max() <= 2.0 ** -8  # bf16 output rounding
    assert (got[:, valid:] == 0).all()


def test_the_attention_core_kernel_matches_softmax_attention_with_masked_keys(tmp_path):
    import ctypes

    from npu_ep.provider import bf16

    sq, tk, d, valid = 8, 16, 32, 40  # three key blocks, the last one partly masked
    lib = _core_kernel(tmp_path, "attention_block.cc", {"SQ": sq, "TK": tk, "HEAD_DIM": d, "VALID": valid})
    rng = np.random.default_rng(1)
    q, k, v = (bf16.from_f32(rng.standard_normal(shape, dtype=np.float32)) for shape in ((sq, d), (48, d), (48, d)))
    out = np.zeros((sq, d), np.float32)
    lib.attention_begin()
    for block in range(3):
        lib.attention_step(ctypes.c_void_p(q.ctypes.data), ctypes.c_void_p(k[block * tk:].ctypes.data),
                           ctypes.c_void_p(v[block * tk:].ctypes.data))
    lib.attention_end(ctypes.c_void_p(out.ctypes.data))
    qf, kf, vf = (bf16.to_f32(t).astype(np.float64) for t in (q, k, v))
    scores = qf @ kf[:valid].T / np.sqrt(d)
    p = np.exp(scores - scores.max(axis=1, keepdims=True))
    expected = (p / p.sum(axis=1, keepdims=True)) @ vf[:valid]
    assert np.abs(out - expected).max() < 1e-4  # fp32 arithmetic on exact bf16 inputs
