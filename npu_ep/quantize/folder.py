"""Model folders in and out of quantization: check the source, stage the output, write its manifest."""
from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

from npu_ep.errors import NpuEpError
from npu_ep.model_folder import file_records, read_manifest, scratch_prefix
from npu_ep.paths import models_dir
from npu_ep.whisper.spec import CONFIG_FILES, MANIFEST, ONNX_FILES

ACCURACY = "accuracy.json"


def source_model(model: str) -> tuple[Path, dict]:
    """The float model folder named by `model` (a folder, or a known name exported on first use)."""
    folder = Path(model).expanduser()
    if folder.is_dir():
        manifest = read_manifest(folder)
        if manifest is None:
            raise NpuEpError(f"{folder}: not an npu-ep model folder, no valid {MANIFEST} "
                             "(export one with: npu-ep export --model tiny.en)")
    elif folder.exists() or len(folder.parts) > 1:
        raise NpuEpError(f"{model}: no such model folder (export one with: npu-ep export --model tiny.en)")
    else:
        from npu_ep.export import resolve_model

        folder = resolve_model(model)
        manifest = read_manifest(folder)
    if "quantization" in manifest:
        how = manifest["quantization"].get("mode", "int8")
        raise NpuEpError(f"{folder}: already quantized ({how}); quantize its float source "
                         f"{manifest['quantization'].get('source', '')} instead".rstrip())
    missing = [name for name in ONNX_FILES if not (folder / name).is_file()]
    if missing:
        raise NpuEpError(f"{folder}: missing {', '.join(missing)} (re-export with: npu-ep export --force)")
    return folder, manifest


def default_output(manifest: dict, mode: str) -> Path:
    return models_dir() / f"{manifest['name']}-int8-{mode}"


def staging_folder(out: Path, force: bool) -> Path:
    """An empty sibling of `out` to build in, so a refused or interrupted run leaves `out` untouched.
    Call with `model_folder.exclusive(out, ...)` held, which also removes what a killed run left."""
    if out.exists() and not force:
        raise NpuEpError(f"{out}: output folder exists (pass --force to replace it, or --out another folder)")
    try:
        staging = Path(tempfile.mkdtemp(prefix=scratch_prefix(out, "partial"), dir=out.parent))
        staging.chmod(0o755)  # mkdtemp's 0700 would carry over to the installed folder
    except OSError as error:
        raise NpuEpError(f"{out.parent}: cannot write the output folder ({error.strerror}; choose --out)") from None
    return staging


def copy_support_files(source: Path, staging: Path) -> None:
    """Tokenizer and configs: everything the pipeline reads besides the ONNX graphs and the manifest."""
    for name in CONFIG_FILES:
        if (source / name).is_file():
            shutil.copy2(source / name, staging / name)


def write_manifest(source_manifest: dict, staging: Path, name: str, quantization: dict) -> dict:
    """Write the staged model's manifest, hashing every file in `staging`; returns it for `add_report`."""
    # The export's own check and timing describe the float model, not this one.
    kept = {k: v for k, v in source_manifest.items() if k not in ("check", "export_seconds")}
    manifest = dict(kept, name=name, quantization=quantization,
                    created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **file_records(staging))
    _save(manifest, staging)
    return manifest


def add_report(manifest: dict, staging: Path, report: dict) -> None:
    """Write accuracy.json and record it, and its summary, in `manifest`. Only the new file is hashed:
    the graphs, hundreds of MB, were hashed once by `write_manifest`."""
    (staging / ACCURACY).write_text(json.dumps(report, indent=2) + "\n")
    for key, entries in file_records(staging, [ACCURACY]).items():
        manifest[key] = dict(sorted({**manifest[key], **entries}.items()))
    summary = {k: v for k, v in report.items() if k != "per_clip"}
    manifest["quantization"] = dict(manifest["quantization"], accuracy=summary)
    _save(manifest, staging)


def _save(manifest: dict, staging: Path) -> None:
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
