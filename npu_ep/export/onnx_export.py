"""Export a Whisper checkpoint to ONNX (encoder, decoder, decoder with past), check it, write the manifest.

A finished folder is swapped in whole by rename, so a reader never sees a half-written export.
"""
from __future__ import annotations

import json
import logging
import platform
import shutil
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

from npu_ep.errors import NpuEpError
from npu_ep.export.alignment_heads import add_alignment_output, alignment_heads
from npu_ep.export.logits_start import add_logits_start
from npu_ep.model_folder import FORMAT, file_records, map_weights, read_manifest, replace_folder, scratch_prefix
from npu_ep.paths import models_dir
from npu_ep.whisper.spec import (CONFIG_FILE, CONFIG_FILES, DECODER_FILE, ENCODER_FILE, ENCODER_HIDDEN_STATES,
                                 ENCODER_OUTPUT, GENERATION_CONFIG_FILE, INPUT_FEATURES, INPUT_IDS, LOGITS, MANIFEST,
                                 ONNX_FILES, TOKENIZER_FILE, ModelDims)

if TYPE_CHECKING:  # numpy loads inside functions, with the rest of the export stack
    import numpy as np

log = logging.getLogger(__name__)

# Bump when the conversion or the folder layout changes, so older exports are rebuilt.
EXPORT_VERSION = 3  # 2: the decoder outputs the alignment heads' attention (word timestamps); 3: LOGITS_START
TOLERANCE = 1e-3
_TOOLS = ("torch", "transformers", "optimum", "optimum-onnx", "onnx", "onnxruntime", "npu-ep")


def is_up_to_date(folder: Path, build_key: dict) -> bool:
    """True when `folder` was exported from the same source with the same settings and no file is missing.

    Sizes, not hashes, are compared so the check stays well under a second.
    """
    manifest = read_manifest(folder)
    if manifest is None or manifest.get("build_key") != build_key:
        return False
    sizes = manifest.get("file_sizes", {})
    return bool(sizes) and all((folder / name).is_file() and (folder / name).stat().st_size == size for name, size in sizes.items())


def check_writable(out_dir: Path) -> None:
    """Fail early, in one line, when the export could not be written to `out_dir`'s parent, or would
    replace a folder that is not an export (the old folder is replaced whole)."""
    if out_dir.is_file() or (out_dir.is_dir() and any(out_dir.iterdir()) and read_manifest(out_dir) is None):
        raise NpuEpError(f"{out_dir}: exists and is not an exported model folder (choose a new or empty folder with --out)")
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out_dir.parent):
            pass
    except OSError as error:
        raise NpuEpError(
            f"{out_dir}: cannot write the export there ({error.strerror or error}) (choose another folder with --out)"
        ) from None


def export_folder(hf_dir: Path, out_dir: Path, name: str, source: dict, build_key: dict, opset: int | None, bar) -> dict:
    """Run optimum's exporter on the transformers folder `hf_dir`, check it, and install it at `out_dir`.

    `bar` is the caller's tqdm bar; each of the three stages advances it by one.
    """
    staging = Path(tempfile.mkdtemp(prefix=scratch_prefix(out_dir, "partial"), dir=out_dir.parent))
    staging.chmod(0o755)  # mkdtemp's 0700 would carry over to the installed folder
    try:
        started = time.perf_counter()
        _run_exporter(hf_dir, staging, opset)
        for file in CONFIG_FILES:
            if (hf_dir / file).is_file():
                shutil.copyfile(hf_dir / file, staging / file)
        add_alignment_output(staging / DECODER_FILE, alignment_heads(staging))
        add_logits_start(staging / DECODER_FILE)
        bar.update(1)
        bar.set_postfix_str("check vs PyTorch")
        check = compare_with_pytorch(hf_dir, staging)
        for file in ONNX_FILES:
            map_weights(staging / file)
        bar.update(1)
        bar.set_postfix_str("manifest")
        manifest = _manifest(staging, name, source, build_key, check, time.perf_counter() - started)
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        replace_folder(staging, out_dir)
        bar.update(1)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest


def _run_exporter(hf_dir: Path, output: Path, opset: int | None) -> None:
    import warnings

    import transformers
    from optimum.exporters.onnx import main_export

    # The tracer's and transformers' warnings are about their internals, not the user's input;
    # our own PyTorch-vs-ONNX check below is what tells whether the export is right.
    logging.getLogger("optimum").setLevel(logging.ERROR)
    transformers.logging.set_verbosity_error()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        main_export(
            str(hf_dir),
            output=output,
            task="automatic-speech-recognition-with-past",
            opset=opset,
            # Without post-processing optimum stops at the three graphs and skips merging the two decoders.
            no_post_process=True,
            do_validation=False,
            local_files_only=True,
        )
    missing = [file for file in ONNX_FILES if not (output / file).is_file()]
    if missing:
        raise NpuEpError(f"{output}: optimum's exporter did not write {', '.join(missing)} "
                         "(check the optimum-onnx and transformers versions: pip install -e '.[export]')")


def _check_features(feature_extractor) -> "np.ndarray":
    """Log-mel features of a made-up 5 s signal (tones + noise), so the check sees speech-like ranges."""
    import numpy as np

    rate = feature_extractor.sampling_rate
    t = np.arange(5 * rate) / rate
    signal = 0.3 * np.sin(2 * np.pi * 220 * t) * np.sin(2 * np.pi * 3 * t) + 0.2 * np.sin(2 * np.pi * 1250 * t)
    signal += 0.05 * np.random.default_rng(0).standard_normal(t.size)
    return feature_extractor(signal.astype(np.float32), sampling_rate=rate, return_tensors="np").input_features


def compare_with_pytorch(hf_dir: Path, onnx_dir: Path) -> dict:
    """Max |Δ| between PyTorch and ONNX Runtime for the encoder output and the first-step logits."""
    import numpy as np
    import onnxruntime as ort
    import torch
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration

    from npu_ep.export.convert import prompt_ids

    model = WhisperForConditionalGeneration.from_pretrained(hf_dir).eval()
    features = _check_features(WhisperFeatureExtractor.from_pretrained(hf_dir))
    prompt = prompt_ids(hf_dir / TOKENIZER_FILE, model.config.vocab_size)
    input_ids = np.array([prompt], dtype=np.int64)
    with torch.no_grad():
        torch_encoded = model.model.encoder(torch.from_numpy(features)).last_hidden_state
        torch_logits = model(encoder_outputs=(torch_encoded,), decoder_input_ids=torch.from_numpy(input_ids)).logits
    options = ort.SessionOptions()
    options.log_severity_level = 3
    encoder = ort.InferenceSession(str(onnx_dir / ENCODER_FILE), options, providers=["CPUExecutionProvider"])
    decoder = ort.InferenceSession(str(onnx_dir / DECODER_FILE), options, providers=["CPUExecutionProvider"])
    encoded = encoder.run([ENCODER_OUTPUT], {INPUT_FEATURES: features})[0]
    logits = decoder.run([LOGITS], {INPUT_IDS: input_ids, ENCODER_HIDDEN_STATES: encoded})[0]
    check = {
        "encoder_max_abs_diff": float(np.abs(encoded - torch_encoded.numpy()).max()),
        "logits_max_abs_diff": float(np.abs(logits - torch_logits.numpy()).max()),
        "tolerance": TOLERANCE,
    }
    log.info("ONNX vs PyTorch max |Δ|: encoder output %.2e, first-step logits %.2e (tolerance %g)",
             check["encoder_max_abs_diff"], check["logits_max_abs_diff"], TOLERANCE)
    if max(check["encoder_max_abs_diff"], check["logits_max_abs_diff"]) > TOLERANCE:
        raise NpuEpError(
            f"{onnx_dir}: exported model differs from PyTorch by more than {TOLERANCE:g} "
            "(report this with the versions from `npu-ep info`)"
        )
    return check


def _tool_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for tool in _TOOLS:
        try:
            versions[tool] = metadata.version(tool)
        except metadata.PackageNotFoundError:
            pass
    return versions


def _manifest(folder: Path, name: str, source: dict, build_key: dict, check: dict, seconds: float) -> dict:
    import onnx

    config = json.loads((folder / CONFIG_FILE).read_text())
    generation = json.loads((folder / GENERATION_CONFIG_FILE).read_text())
    multilingual = bool(generation.get("is_multilingual"))
    languages = sorted(token.strip("<|>") for token in generation.get("lang_to_id", {})) if multilingual else ["en"]
    opset = next(o.version for o in onnx.load(folder / ONNX_FILES[0], load_external_data=False).opset_import if o.domain in ("", "ai.onnx"))
    return {
        "format": FORMAT,
        "export_version": EXPORT_VERSION,
        "name": name,
        "source": source,
        "dims": ModelDims.from_config(config).as_dict(),
        "multilingual": multilingual,
        "languages": languages,
        "opset": opset,
        "check": check,
        "export_seconds": round(seconds, 1),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "tools": _tool_versions(),
        "build_key": build_key,
        **file_records(folder),
    }


def default_out_dir(name: str) -> Path:
    return models_dir() / name
