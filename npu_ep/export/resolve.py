"""Turn what the user names (a known model, a folder, a hub id) into an exported model folder."""
from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from pathlib import Path

from npu_ep.errors import NpuEpError, first_line
from npu_ep.export import onnx_export
from npu_ep.export.weights import KNOWN_MODELS, ct2_model_dir, known_model, package_dir, package_versions
from npu_ep.model_folder import exclusive, read_manifest, scratch_prefix

log = logging.getLogger(__name__)

_EXPORT_EXTRA = "install the export extra: pip install -e '.[export]'"
_HUB_FALLBACK = f"use {', '.join(KNOWN_MODELS)} or a local folder"


def resolve_model(model: str | Path) -> Path:
    """An exported model folder for `model`, exporting a known name on first use.

    A folder whose manifest says npu-ep-model (quantized variants too) is returned as is; a known
    name with an up-to-date export under models_dir() returns that folder; anything else is exported.
    """
    path = Path(model).expanduser()
    if path.is_dir():
        if read_manifest(path) is not None:
            return path
        if not _is_hf_whisper(path) and not _is_ct2_folder(path):
            raise NpuEpError(f"{path}: not an exported model folder (export one with: npu-ep export --model tiny.en)")
    return _export(model, None, None, force=False, on_first_use=True)


def rebuild_command(folder: Path) -> str:
    """The command that rebuilds a damaged model folder in place, from what its manifest says it was
    made from (a known name when the manifest is unreadable and the folder bears that name)."""
    manifest = onnx_export.read_manifest(folder) or {}
    quantization = manifest.get("quantization") or {}
    if quantization.get("source"):
        return (f"npu-ep quantize --model {quantization['source']} --mode {quantization.get('mode', 'dynamic')} "
                f"--out {folder} --force")
    source = manifest.get("source") or {}
    model = source.get("model") or source.get("path") or source.get("id")
    if model is None:
        model = folder.name if folder.name in KNOWN_MODELS else next(iter(KNOWN_MODELS))
    return f"npu-ep export --model {model} --out {folder} --force"


def export_model(source: str | Path, out_dir: str | Path | None = None, opset: int | None = None, force: bool = False) -> Path:
    """Export `source` (known name, Hugging Face or CTranslate2 folder, or hub id) to ONNX; returns the folder.

    A no-op when `out_dir` already holds an export of the same source with the same settings.
    """
    return _export(source, out_dir, opset, force, on_first_use=False)


def _export(source: str | Path, out_dir: str | Path | None, opset: int | None, force: bool, on_first_use: bool) -> Path:
    name, kind, location, source_info = _describe(source)
    out = Path(out_dir).expanduser() if out_dir is not None else onnx_export.default_out_dir(name)
    build_key = {"export_version": onnx_export.EXPORT_VERSION, "source": source_info, "opset": opset}
    if not force and onnx_export.is_up_to_date(out, build_key):
        if not on_first_use:  # resolve_model stays quiet when there is nothing to do
            log.info("%s is up to date (use --force to rebuild)", _display(out))
        return out
    onnx_export.check_writable(out)
    _require_export_extra()
    with exclusive(out, "export"):
        # Another process may have finished the same export while this one waited for the lock.
        if not force and onnx_export.is_up_to_date(out, build_key):
            return out
        try:
            _run_export(name, kind, location, source_info, build_key, out, opset, on_first_use)
        except NpuEpError:
            raise
        except Exception as error:  # damaged configs, tokenizer or weights in the source: one cause, one line
            raise NpuEpError(f"{source}: cannot export ({first_line(error)}) (check the source's files, or give "
                             "tiny.en or base)") from None
    return out


def _run_export(name: str, kind: str, location: str, source_info: dict, build_key: dict, out: Path, opset: int | None, on_first_use: bool) -> None:
    from tqdm import tqdm

    if on_first_use:
        log.info("exporting %s to %s (first use, about a minute)", name, _display(out))
    with tqdm(total=4, desc=f"export {name}", unit="step", file=sys.stderr) as bar:
        with tempfile.TemporaryDirectory(prefix=scratch_prefix(out, "hf"), dir=out.parent) as scratch:
            hf_dir = _prepare_hf_folder(kind, location, Path(scratch))
            bar.update(1)
            bar.set_postfix_str("ONNX export")
            manifest = onnx_export.export_folder(hf_dir, out, name, source_info, build_key, opset, bar)
    check = manifest["check"]
    log.info("exported %s to %s in %.0f s (max |Δ| vs PyTorch: encoder %.1e, logits %.1e)", name, _display(out),
             manifest["export_seconds"], check["encoder_max_abs_diff"], check["logits_max_abs_diff"])


def _describe(source: str | Path) -> tuple[str, str, str, dict]:
    """(name, kind, location, manifest source entry) for what the user gave."""
    path = Path(source).expanduser()
    if path.is_dir():
        path = path.resolve()
        if _is_ct2_folder(path):
            return path.name, "ctranslate2", str(path), {"kind": "ctranslate2-folder", "path": str(path), **_fingerprint(path)}
        if _is_hf_whisper(path):
            _require_weights(path)
            return path.name, "huggingface", str(path), {"kind": "huggingface-folder", "path": str(path), **_fingerprint(path)}
        raise NpuEpError(f"{path}: neither a Hugging Face Whisper folder nor a CTranslate2 one (give tiny.en, base or a hub id)")
    text = str(source)
    if text in KNOWN_MODELS:
        model = known_model(text)
        versions = package_versions(model)
        if None in versions.values():  # install first, so the manifest records the versions used
            for package in model.packages:
                package_dir(package)
            versions = package_versions(model)
        return text, "package", text, {"kind": "ctranslate2-package", "model": text, "packages": versions}
    owner, _, repo = text.partition("/")
    # owner/name is a hub id unless `owner` is a local folder (then it is a mistyped path).
    if owner and repo and "/" not in repo and not text.startswith((".", "~")) and not Path(owner).is_dir():
        return repo, "hub", text, {"kind": "huggingface-hub", "id": text}
    if "/" in text or path.exists():
        raise NpuEpError(f"{text}: no such model folder (give tiny.en, base, a Whisper folder or a hub id)")
    known_model(text)  # raises the "unknown model" message
    raise AssertionError("unreachable")


def _is_ct2_folder(path: Path) -> bool:
    return all((path / file).is_file() for file in ("model.bin", "config.json", "tokenizer.json"))


def _is_hf_whisper(path: Path) -> bool:
    try:
        return json.loads((path / "config.json").read_text()).get("model_type") == "whisper"
    except (OSError, ValueError, AttributeError):
        return False


def _require_weights(path: Path) -> None:
    from npu_ep.export.convert import has_weights

    if not has_weights(path):
        raise NpuEpError(f"{path}: Hugging Face Whisper folder without weights, no *.safetensors or *.bin file "
                         "(save the model into it with model.save_pretrained, or give tiny.en or base)")


def _fingerprint(path: Path) -> dict:
    # Sizes and modification times of the source files: cheap, and they change whenever the weights do.
    files = sorted(p for p in path.iterdir() if p.is_file())
    return {"files": {p.name: [p.stat().st_size, p.stat().st_mtime_ns] for p in files}}


def _prepare_hf_folder(kind: str, location: str, scratch: Path) -> Path:
    from npu_ep.export import convert

    if kind == "package":
        convert.write_hf_folder(ct2_model_dir(location), scratch)
        return scratch
    if kind == "ctranslate2":
        convert.write_hf_folder(Path(location), scratch)
        return scratch
    if kind == "hub":
        location = str(_download(location))
    convert.complete_hf_folder(Path(location), scratch)
    return scratch


def _download(hub_id: str) -> Path:
    """The hub repository's configs, tokenizer and weights: its safetensors, else its *.bin."""
    from npu_ep.export.convert import has_weights

    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on"):
        raise NpuEpError(f"{hub_id}: a hub id needs the network but HF_HUB_OFFLINE is set ({_HUB_FALLBACK})")
    folder = _snapshot(hub_id, ["*.json", "*.txt", "*.safetensors"])
    # Checked before any *.bin comes down: a CTranslate2 repository's model.bin is no use here.
    if not _is_hf_whisper(folder):
        raise NpuEpError(f"{hub_id}: not a Whisper model (its config.json has no model_type whisper)")
    if not has_weights(folder):
        # Older checkpoints ship only pytorch_model.bin. Asking for *.bin in the first call would download
        # both formats of every repository that has safetensors too.
        folder = _snapshot(hub_id, ["*.bin"])
    if not has_weights(folder):
        raise NpuEpError(f"{hub_id}: the hub repository has no *.safetensors or *.bin weights "
                         f"(give one with PyTorch weights, or {_HUB_FALLBACK})")
    return folder


def _snapshot(hub_id: str, patterns: list[str]) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        return Path(snapshot_download(hub_id, allow_patterns=patterns, etag_timeout=10))
    except HFValidationError:
        raise NpuEpError(f"{hub_id}: not a valid hub id ({_HUB_FALLBACK})") from None
    except RepositoryNotFoundError:
        raise NpuEpError(f"{hub_id}: no such model on the Hugging Face hub (check the id, or {_HUB_FALLBACK})") from None
    except LocalEntryNotFoundError:
        # huggingface_hub's way of saying: the hub was unreachable and nothing is cached.
        raise NpuEpError(f"{hub_id}: cannot reach the Hugging Face hub, are we offline? ({_HUB_FALLBACK})") from None
    except OSError as error:  # other network failures (requests' errors are OSErrors)
        raise NpuEpError(f"{hub_id}: download from the Hugging Face hub failed: {type(error).__name__} "
                         f"({_HUB_FALLBACK})") from None


def _require_export_extra() -> None:
    missing = [module for module in ("torch", "transformers", "optimum.exporters.onnx") if not has_module(module)]
    if missing:
        raise NpuEpError(f"exporting needs {', '.join(missing)} ({_EXPORT_EXTRA})")


def has_module(module: str) -> bool:
    """Whether `module` is installed, without importing it."""
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)
