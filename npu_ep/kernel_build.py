"""`npu-ep kernels build [--device npu1|npu2] [--model M ...] [--plan]`: build the kernel artifacts
(xclbin + instruction sequence) for exactly the shapes the partitioned models use, with mlir-aie.

Shapes come from the placement of each model file for the device's profile (the same plan
`npu-ep partition` and the sessions use). Each artifact's design (`kernels/designs/`) checks its
tiling and memory budget, emits its IRON program, and mlir-aie's compilers build it; with an NPU
present the artifact is run against numpy before it is recorded in the manifest's "artifacts".
"""
from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable

import numpy as np

from npu_ep.errors import NpuEpError
from npu_ep.paths import shipped
from npu_ep import kernels

log = logging.getLogger(__name__)
PROFILE = {"npu1": "xdna1", "npu2": "xdna2"}
INSTALL = ("install mlir-aie's Python wheels with the Peano (llvm-aie) compiler and XRT, as "
           "https://github.com/Xilinx/mlir-aie#getting-started describes, then run this again")


def designs():
    """kernels/designs/ as a package (it ships as data beside the manifest, not as npu_ep code)."""
    name = "npu_ep_kernel_designs"
    if name not in sys.modules:
        folder = shipped("kernels") / "designs"
        spec = importlib.util.spec_from_file_location(name, folder / "__init__.py",
                                                      submodule_search_locations=[str(folder)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


# -- which artifacts --------------------------------------------------------------------------------
def select(model_dirs: list[Path], device: str) -> list[kernels.Artifact]:
    """The artifacts the offloaded nodes of these models run on `device`, each once, in plan order."""
    from npu_ep import calibrate
    from npu_ep.partition.planner import plan
    from npu_ep.whisper.spec import ONNX_FILES

    # The placement a device session makes once every artifact is built.
    chosen: dict[str, kernels.Artifact] = {}
    for folder in model_dirs:
        for name in ONNX_FILES:
            if (folder / name).exists():
                for placement in plan(folder / name, PROFILE[device], calibrate.calibration()).offloaded:
                    artifact = kernels.placed_artifact(placement.kernel, placement.candidate)
                    chosen.setdefault(artifact.identity, artifact)
    return list(chosen.values())


# -- the toolchain ----------------------------------------------------------------------------------
def missing_toolchain() -> list[str]:
    """What of mlir-aie's toolchain this machine lacks (empty when a build can run)."""
    missing = []
    if importlib.util.find_spec("aie") is None:
        missing.append("the mlir-aie Python package (aie)")
    if not shutil.which("aiecc.py") and not shutil.which("aiecc"):
        missing.append("its compiler driver (aiecc.py)")
    if not os.environ.get("PEANO_INSTALL_DIR") and importlib.util.find_spec("llvm_aie") is None:
        missing.append("the Peano compiler (llvm-aie, or PEANO_INSTALL_DIR)")
    if not shutil.which("xclbinutil"):
        missing.append("XRT's xclbinutil")
    return missing


def compile_artifact(artifact: kernels.Artifact, workdir: Path) -> tuple[Path, ...]:
    """Build the artifact with mlir-aie: core kernel objects (Peano), IRON program -> MLIR, aiecc ->
    xclbin + instruction sequence, or (format elf) one full ELF. Returns its files in `workdir`."""
    module = designs().DESIGNS[artifact.design.kind]
    workdir.mkdir(parents=True, exist_ok=True)
    elf = artifact.design.format == "elf"
    objects = module.kernel_objects(artifact) if elf else [module.kernel_object(artifact)]
    import aie  # noqa: F401 - present (missing_toolchain checked)
    aie_root = Path(sys.modules["aie"].__file__).resolve().parents[2]
    peano = Path(os.environ.get("PEANO_INSTALL_DIR") or Path(importlib.util.find_spec("llvm_aie").origin).parent)
    target = "aie2-none-unknown-elf" if artifact.design.device == "npu1" else "aie2p-none-unknown-elf"
    for source, flags, obj in objects:
        source_path = aie_root / source if source.startswith("aie_kernels/") else shipped("kernels") / "designs" / source
        _tool([str(peano / "bin" / "clang++"), f"--target={target}", "-O2", "-std=c++20", "-fno-exceptions",
               f"-I{aie_root / 'include'}", f"-I{shipped('kernels') / 'designs'}", f"-I{aie_root / 'aie_runtime_lib' / ('AIE2' if target.startswith('aie2-') else 'AIE2P')}",
               *flags, "-c", str(source_path), "-o", obj], workdir)
    (workdir / "aie.mlir").write_text(str(module.program(artifact)))
    files = tuple(workdir / name for name in artifact.files)
    aiecc = shutil.which("aiecc.py") or shutil.which("aiecc")
    if elf:  # every phase's configuration and the main sequence in one ELF (mlir-aie's full-ELF flow)
        _tool([aiecc, "--no-xchesscc", "--no-xbridge", "--get-full-elf", f"--full-elf-name={files[0].name}",
               f"--peano={peano}", "aie.mlir"], workdir)
    else:
        _tool([aiecc, "--no-aiesim", "--no-compile-host", "--aie-generate-xclbin", f"--xclbin-name={files[0].name}",
               "--aie-generate-npu-insts", f"--npu-insts-name={files[1].name}", f"--peano={peano}", "aie.mlir"], workdir)
    return files


def _tool(command: list[str], cwd: Path) -> None:
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if done.returncode:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise NpuEpError(f"{Path(command[0]).name} failed in {cwd} ({tail[0]})")


# -- verification -----------------------------------------------------------------------------------
def _bf16(values: np.ndarray) -> np.ndarray:
    from npu_ep.provider import bf16

    return bf16.to_f32(bf16.from_f32(values))


def verify(artifact: kernels.Artifact, device: str) -> dict:
    """Run the artifact on `device` with random inputs against numpy on the same bf16/int8 inputs;
    returns {"max_abs_error", "tolerance", "device"} or raises NpuEpError when it does not match."""
    from npu_ep.provider.xrt_backend import Backend

    design, rng = artifact.design, np.random.default_rng(0)
    backend = Backend(device)

    def failed() -> np.ndarray:  # the Backend's CPU fallback: here, the verification's failure
        raise NpuEpError(f"{artifact.identity}: did not run on the {device} ({'; '.join(backend.warnings)})")
    if design.kind == "encoder_layer":
        return _verify_layer(artifact, backend, failed, device)
    if design.kind == "gemm":
        M, K, N = artifact.shape
        if design.dtype_in == "i8":
            a, w = rng.integers(-128, 128, (M, K), dtype=np.int8), rng.integers(-128, 128, (K, N), dtype=np.int8)
            expected = a.astype(np.int64) @ w.astype(np.int64)
        else:
            a, w = rng.standard_normal((M, K), dtype=np.float32), rng.standard_normal((K, N), dtype=np.float32)
            expected = _bf16(a).astype(np.float64) @ _bf16(w).astype(np.float64)
        got = backend.gemm("verify", design.name, a, lambda: w, b"verify", failed)
    else:
        inputs, expected = _reference(artifact, rng)
        got = backend.run("verify", design.name, artifact.shape, inputs, failed)
    error = float(np.abs(np.asarray(got, np.float64) - expected).max())
    # fp32 accumulation of exact bf16 products: a few units of fp32 rounding of the largest sums.
    tolerance = 0.0 if design.dtype_in == "i8" else 1e-5 * max(1.0, float(np.abs(expected).max())) * 8
    if design.dtype_out == "bf16":
        tolerance = 2.0 ** -8 * max(1.0, float(np.abs(expected).max()))
    if error > tolerance:
        raise NpuEpError(f"{artifact.identity}: max |error| {error:.3g} against numpy exceeds {tolerance:.3g}")
    return {"max_abs_error": error, "tolerance": tolerance, "device": device}


def _verify_layer(artifact: kernels.Artifact, backend, failed, device: str) -> dict:
    """An encoder layer on random weights against the emulated device's computation of the same
    layer (its number formats: the emulator is the NPU's arithmetic in numpy); within one bf16 step
    (int8: one int8 step) of the largest output, as our own host run of the schedule is
    (tests/test_layer_design.py)."""
    from npu_ep.forms.layer import VD, VD_ROWS, VF, VF_ROWS, EncoderLayerForm

    S, D, F, H, L = artifact.shape
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, L, D), dtype=np.float32)
    weights = [rng.standard_normal(shape, dtype=np.float32) / np.sqrt(shape[0])
               for shape in ((D, D),) * 4 + ((D, F), (F, D))]
    vd, vf = np.zeros((VD_ROWS, D), np.float32), np.zeros((VF_ROWS, F), np.float32)
    vd[[VD["norm1_gamma"], VD["norm2_gamma"], VD["q_scale"], VD["k_scale"], VD["v_scale"], VD["o_scale"],
        VD["fc2_scale"], VD["v_post"]]] = 1
    vd[VD["q_post"]] = vd[VD["k_post"]] = (D // H) ** -0.25
    vd[VD["norm1_eps"]] = vd[VD["norm2_eps"]] = 1e-5
    vf[VF["fc1_scale"]] = 1
    inputs = (x, *weights, vd, vf)
    form = EncoderLayerForm()
    got = form.npu(backend, "verify", artifact.design.name, failed, *inputs, heads=H)
    from npu_ep.provider.xrt_backend import Backend

    reference = Backend("emulator")
    expected = form.npu(reference, "verify", artifact.design.name, failed, *inputs, heads=H)
    error = float(np.abs(np.asarray(got, np.float64) - expected).max())
    tolerance = (2.0 ** -8 if artifact.design.dtype_in == "bf16" else 1 / 127) * float(np.abs(expected).max())
    if error > tolerance:
        raise NpuEpError(f"{artifact.identity}: max |error| {error:.3g} against the emulated layer exceeds {tolerance:.3g}")
    return {"max_abs_error": error, "tolerance": tolerance, "device": device}


def _reference(artifact: kernels.Artifact, rng: np.random.Generator) -> tuple[dict, np.ndarray]:
    kind, shape = artifact.design.kind, artifact.shape
    if kind == "batched_gemm":
        batch, M, K, N = shape
        a, b = rng.standard_normal((batch, M, K), dtype=np.float32), rng.standard_normal((batch, K, N), dtype=np.float32)
        return {"a": a, "b": b}, _bf16(a).astype(np.float64) @ _bf16(b).astype(np.float64)
    if kind == "softmax":
        R, C, L = shape
        x = rng.standard_normal((R, C), dtype=np.float32)
        z = np.exp(_bf16(x)[:, :L].astype(np.float64) - _bf16(x)[:, :L].max(axis=1, keepdims=True))
        expected = np.zeros((R, C))
        expected[:, :L] = z / z.sum(axis=1, keepdims=True)
        return {"x": x}, expected
    B, S, T, D, L = shape
    q, k, v = (rng.standard_normal((B, n, D), dtype=np.float32) for n in (S, T, T))
    scores = _bf16(q).astype(np.float64) @ _bf16(k)[:, :L].astype(np.float64).transpose(0, 2, 1) / np.sqrt(D)
    p = np.exp(scores - scores.max(axis=2, keepdims=True))
    return {"q": q, "k": k, "v": v}, (p / p.sum(axis=2, keepdims=True)) @ _bf16(v)[:, :L].astype(np.float64)


# -- the manifest -----------------------------------------------------------------------------------
def record(artifact: kernels.Artifact, files: tuple[Path, ...], verified: dict | None, toolchain: dict) -> Path:
    """Copy the built files into the kernels folder and record the artifact in its manifest."""
    folder = kernels.kernels_dir()
    path = folder / "manifest.json"
    if not path.exists():  # a fresh $NPU_EP_KERNELS starts from the shipped manifest
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shipped("kernels") / "manifest.json", path)
    for built in files:
        if built.resolve() != (folder / built.name).resolve():
            shutil.copyfile(built, folder / built.name)
    raw = json.loads(path.read_text())
    raw.setdefault("artifacts", {})[artifact.identity] = {
        "design": artifact.design.name, "shape": dict(zip(artifact.design.dims, artifact.shape)),
        "files": [path.name for path in files],
        "built": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "toolchain": toolchain, "verified": verified}
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(raw, indent=2) + "\n")
    temporary.replace(path)
    return path


def build(artifacts: list[kernels.Artifact], workdir: Path,
          compile_step: Callable[[kernels.Artifact, Path], tuple[Path, ...]] = compile_artifact,
          toolchain: dict | None = None) -> list[str]:
    """Check, compile, verify (with an NPU) and record each artifact; returns one line per artifact."""
    from npu_ep.provider.device import npu_present

    present, why = npu_present()
    lines = []
    for artifact in artifacts:
        budget = designs().plan(artifact)
        files = compile_step(artifact, workdir / artifact.identity)
        record(artifact, files, None, toolchain or {})
        verified = verify(artifact, "npu") if present else None
        if verified:
            record(artifact, files, verified, toolchain or {})
        state = (f"verified on the NPU (max |error| {verified['max_abs_error']:.3g})" if verified
                 else f"not verified ({why})")
        lines.append(f"{artifact.identity}: built, L1 {budget.l1_bytes} B, L2 {budget.l2_bytes} B, {state}")
    return lines


# -- the command ------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    command = sub.add_parser("build", help="build xclbin + instructions for the shapes the partitioned models use")
    command.add_argument("--device", choices=tuple(PROFILE), default="npu1", help="NPU family (default: npu1)")
    command.add_argument("--model", nargs="+", default=["tiny.en"], help="models whose placement decides the shapes")
    command.add_argument("--plan", action="store_true",
                         help="only list the artifacts with their tiling and memory budget (no toolchain needed)")
    command.add_argument("--workdir", type=Path, help="build folder (default: NPU_EP_CACHE/kernel-build)")


def run(args: argparse.Namespace) -> int:
    from npu_ep.export import resolve_model
    from npu_ep.paths import cache_dir

    missing = [] if args.plan else missing_toolchain()
    if missing:
        raise NpuEpError(f"kernels build: mlir-aie's toolchain is missing ({', '.join(missing)}): {INSTALL}")
    artifacts = select([resolve_model(model) for model in args.model], args.device)
    if not artifacts:
        print(f"no node of {', '.join(args.model)} is offloaded on {args.device}: nothing to build", file=sys.stderr)
        return 0
    if args.plan:
        for artifact in artifacts:
            print(designs().plan(artifact).table())
        return 0
    import aie

    toolchain = {"mlir-aie": getattr(aie, "__version__", "unknown")}
    for line in build(artifacts, args.workdir or cache_dir() / "kernel-build", toolchain=toolchain):
        print(line)
    return 0
