"""`npu-ep info`: versions, the CPU, exported models, and which NPU devices (real or emulated) are usable."""
from __future__ import annotations

import argparse
import platform
from importlib import metadata
from pathlib import Path

from npu_ep.paths import models_dir


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models-dir", type=Path, help="where to look for exported models (default: models_dir())")


def run(args: argparse.Namespace) -> int:
    print("versions:")
    print(f"  python                  {platform.python_version()}")
    for package in ("npu-ep", "onnxruntime", "onnxruntime-extensions", "onnx", "numpy"):
        print(f"  {package:<23} {_version(package)}")
    print(f"CPU: {cpu_status()}")
    folder = args.models_dir or models_dir()
    print(f"exported models in {folder}:")
    found = exported_models(folder)
    for name, summary in found:
        print(f"  {name:<23} {summary}")
    if not found:
        print("  none (export one with: npu-ep export --model tiny.en)")
    print(f"NPU (pyxrt): {npu_status()}")
    print(f"emulated device: {emulator_status()}")
    return 0


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def exported_models(folder: Path) -> list[tuple[str, str]]:
    """(folder name, one-line summary) of each exported model folder directly under `folder`."""
    from npu_ep.model_folder import read_manifest
    from npu_ep.whisper.spec import ONNX_FILES, ModelDims

    models = []
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        manifest = read_manifest(path) if path.is_dir() else None
        if manifest is None:
            continue
        try:
            dims = ModelDims.from_manifest(manifest).as_dict()
        except (KeyError, TypeError, ValueError):  # a damaged manifest still gets its line
            dims = {}
        # The exported graphs only, from the manifest: partitioned copies beside them are derived.
        size_mb = sum(manifest.get("file_sizes", {}).get(name, 0) for name in ONNX_FILES) / 1e6
        parts = [
            f"d_model {dims.get('n_audio_state', '?')}",
            f"{dims.get('n_audio_layer', '?')}+{dims.get('n_text_layer', '?')} layers",
            "multilingual" if manifest.get("multilingual") else "English only",
            f"{size_mb:.0f} MB of ONNX",
        ]
        if manifest.get("quantization"):
            quantization = manifest["quantization"]
            parts.append(f"quantized: {quantization['mode']}")
        models.append((path.name, ", ".join(parts)))
    return models


def cpu_status() -> str:
    """Model name, the ISA features that pick ONNX Runtime's int8 kernels, and what they mean for int8."""
    from npu_ep.machine import cpu

    here = cpu()
    int8 = ("exact" if here.exact_int8 else "saturating for full-range weights (no VNNI or AMX)")
    return f"{here.describe()}; ONNX Runtime's u8 x s8 int8 GEMM here: {int8}"


def npu_status() -> str:
    """Whether pyxrt imports and opens an NPU (the provider's own probe when it has one)."""
    from npu_ep.provider.device import npu_present

    present, why = npu_present()
    return "device 0 opens: an XDNA NPU is available" if present else f"no NPU devices ({why})"


def emulator_status() -> str:
    try:
        from npu_ep.provider import emulator
        from npu_ep.kernels import manifest
    except ImportError as error:
        return f"not available ({error})"
    try:
        emulator.device(0)
        kernels = manifest()
    except Exception as error:  # a missing kernel manifest or an injected fault: say why, don't fail info
        return f"does not open ({error})"
    names = ", ".join(sorted(kernels.designs))
    return f"device 0 opens (npu_ep.provider.emulator), kernels: {names or 'none'}"
