"""`quantize_model`: a float model folder in, a checked INT8 model folder out."""
from __future__ import annotations

import contextlib
import fnmatch
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from npu_ep.errors import NpuEpError
from npu_ep.model_folder import copy_onnx, exclusive, map_weights, replace_folder
from npu_ep.quantize import folder as folders
from npu_ep.quantize.clips import references, split_clips
from npu_ep.whisper.spec import DECODER_FILE, DECODER_WITH_PAST_FILE, ENCODER_FILE, ModelDims

if TYPE_CHECKING:  # onnxruntime.quantization loads only when a quantization runs
    import numpy as np

    from npu_ep.quantize.calibration import Feeds

MODES = ("dynamic", "static")
PARTS = {"encoder": (ENCODER_FILE,), "decoder": (DECODER_FILE, DECODER_WITH_PAST_FILE)}
# The faster int8 form on the CPU EP, and exact on every x86-64 CPU (README, Quantization).
DEFAULT_FORM = "matmul-integer"
# Static QDQ goes to the NPU's int8 kernels, which only the encoder's 1500-row MatMuls reach: the decoders'
# one-token MatMuls stay on the CPU, where their int8 activations cost accuracy (README, Quantization) for nothing.
DEFAULT_PARTS = {"dynamic": ("encoder", "decoder"), "static": ("encoder",)}


# Dynamic mode's encoder MatMuls kept in float, per model (README, Quantization): an fc2 input (after GELU)
# holds a few values far above its rms, so one uint8 scale for the whole tensor leaves the rest a handful of
# levels. `--sensitivity` ranks base's layers.3/fc2 worst; quantizing its other fc2s still costs base's batched
# long-form WER, and keeping them float costs no measurable speed (docs/measurements.md). Models not listed keep none.
DYNAMIC_EXCLUDE = {"base": ("fc2",)}


def default_exclude(mode: str, manifest: dict) -> list[str]:
    """Nodes kept in float unless --exclude says otherwise.

    Measured per node (`npu-ep quantize --sensitivity`; figures in the README, Quantization). Static mode, on
    tiny.en's encoder: the last layer's fc2 and fc1 are the only MatMuls whose quantization moves the encoder
    output noticeably. Dynamic mode: `DYNAMIC_EXCLUDE`.
    """
    encoder = Path(ENCODER_FILE).stem
    if mode == "dynamic":
        return [f"{encoder}:*/{node}/" for node in DYNAMIC_EXCLUDE.get(manifest.get("name"), ())]
    last = ModelDims.from_manifest(manifest).n_audio_layer - 1
    return [f"{encoder}:*/layers.{last}/fc1/", f"{encoder}:*/layers.{last}/fc2/"]


def matching_nodes(onnx_path: Path, patterns: list[str]) -> list[str]:
    """Names of the MatMul nodes (the only ones quantized) of `onnx_path` that `patterns` pick out.

    A pattern is a glob matched anywhere in "<file stem>:<node name>", e.g. "fc2" or "encoder_model:*layers.3/fc2".
    """
    import onnx

    graph = onnx.load(onnx_path, load_external_data=False).graph
    return [node.name for node in graph.node if node.op_type == "MatMul"
            and any(fnmatch.fnmatchcase(f"{onnx_path.stem}:{node.name}", f"*{p}*") for p in patterns)]


def quantize_model(model: str | Path, mode: str, out: str | Path | None = None, *,
                   calibration: list[str] | None = None, evaluation: list[str] | None = None,
                   method: str = "minmax", exclude: list[str] | None = None, parts: tuple[str, ...] | None = None,
                   form: str = DEFAULT_FORM, per_channel: bool = True, max_wer_increase: float = 1.0,
                   force: bool = False, progress: bool = True) -> tuple[Path, dict]:
    """Quantize `model` (a model folder or known name) into `out`; returns (out, accuracy report).

    Raises NpuEpError, leaving nothing behind, when the WER on the evaluation clips rises by more than
    `max_wer_increase` points, unless `force`.
    """
    if mode not in MODES:
        raise NpuEpError(f"--mode {mode}: unknown mode (one of {', '.join(MODES)})")
    source, manifest = folders.source_model(str(model))
    out = Path(out) if out is not None else folders.default_output(manifest, mode)
    if out.resolve() == source.resolve():
        raise NpuEpError(f"--out {out}: that is the float source itself (choose another output folder)")
    calib_clips, eval_clips = split_clips(calibration, evaluation, static=mode == "static")
    refs = references(eval_clips)  # read now: a malformed file should stop the run before minutes of work
    patterns = default_exclude(mode, manifest) if exclude is None else list(exclude)
    parts = DEFAULT_PARTS[mode] if parts is None else tuple(parts)
    with exclusive(out, "quantize"), quiet_quantizer_logs():
        staging = folders.staging_folder(out, force)
        return _build(source, manifest, mode, out, staging, calib_clips, eval_clips, refs, method, patterns, parts,
                      form, per_channel, max_wer_increase, force, progress)


def _build(source: Path, manifest: dict, mode: str, out: Path, staging: Path, calib_clips: list[Path],
           eval_clips: list[Path], refs: dict[Path, str], method: str, patterns: list[str], parts: tuple[str, ...],
           form: str, per_channel: bool, max_wer_increase: float, force: bool, progress: bool) -> tuple[Path, dict]:
    from npu_ep.quantize.accuracy import accuracy_report
    from npu_ep.whisper.pipeline import Pipeline

    files = {name for part in parts for name in PARTS[part]}
    try:
        folders.copy_support_files(source, staging)
        # One float pipeline serves calibration and the report. Dynamic mode needs it for the report only,
        # so it is loaded after quantizing rather than held in memory beside the quantizer.
        float_pipeline = feeds = None
        if mode == "static":
            from npu_ep.quantize.calibration import FloatModel, collect_feeds

            float_pipeline = Pipeline(source)
            feeds = collect_feeds(FloatModel(float_pipeline), calib_clips, files, progress)
        excluded = _quantize_files(source, staging, mode, feeds, method, patterns, files, form, per_channel, progress)
        del feeds
        quantization = _describe(source, manifest, mode, form, method, per_channel, parts, patterns, excluded, calib_clips)
        # The report's pipeline opens the staged folder, which needs its manifest.
        written = folders.write_manifest(manifest, staging, out.name, quantization)
        report = accuracy_report(float_pipeline or Pipeline(source), staging, eval_clips, refs, progress)
        if report["wer_increase"] > max_wer_increase and not force:
            raise NpuEpError(f"{out}: not written, WER rose {report['wer_increase']:.2f} points "
                             f"({report['wer_float']:.2f}% -> {report['wer_quantized']:.2f}%) on {len(eval_clips)} clip(s), "
                             f"more than --max-wer-increase {max_wer_increase} (keep more nodes in float with --exclude, "
                             "or pass --force to write it anyway)")
        folders.add_report(written, staging, report)
        replace_folder(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out, report


def _quantize_files(source: Path, staging: Path, mode: str, feeds: Feeds | None, method: str, patterns: list[str],
                    files: set[str], form: str, per_channel: bool, progress: bool) -> dict[str, list[str]]:
    """Write each ONNX file of `source` into `staging`, quantized if it is one of `files`, else copied;
    returns the nodes `patterns` kept in float, per quantized file."""
    from tqdm import tqdm

    excluded: dict[str, list[str]] = {}
    for name in tqdm(folders.ONNX_FILES, desc=f"quantize ({mode})", unit="file", disable=not progress):
        if name not in files:
            copy_onnx(source / name, staging / name)
            continue
        excluded[name] = matching_nodes(source / name, patterns)
        quantize_file(source / name, staging / name, mode, excluded[name],
                      feeds=None if feeds is None else feeds.by_file[name], method=method, form=form,
                      per_channel=per_channel)
        map_weights(staging / name)
    return excluded


def quantize_file(source: Path, target: Path, mode: str, exclude_nodes: list[str], *,
                  feeds: list[dict[str, np.ndarray]] | None = None, method: str = "minmax", form: str = DEFAULT_FORM,
                  per_channel: bool = True) -> None:
    """Write `target`: the ONNX file `source` quantized in `mode`, `exclude_nodes` left in float.

    Static mode calibrates on `feeds` (this file's inputs) with `method`; dynamic mode writes `form`.
    """
    if mode == "static":
        from npu_ep.quantize.static import quantize_static_file

        quantize_static_file(source, target, feeds, method, exclude_nodes, per_channel)
    else:
        from npu_ep.quantize.dynamic import quantize_dynamic_file

        quantize_dynamic_file(source, target, form, exclude_nodes, per_channel)


@contextlib.contextmanager
def quiet_quantizer_logs() -> Iterator[None]:
    """ORT's quantizers log every node at INFO and nag about pre-processing through the root logger."""
    loggers = [logging.getLogger("onnxruntime"), logging.getLogger()]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _describe(source: Path, manifest: dict, mode: str, form: str, method: str, per_channel: bool,
              parts: tuple[str, ...], patterns: list[str], excluded: dict[str, list[str]], calib_clips: list[Path]) -> dict:
    """The manifest's record of how the model was made, enough to make it again."""
    import onnxruntime

    how = {"mode": mode, "source": str(source), "source_name": manifest.get("name"),
           "source_files": {name: manifest.get("files", {}).get(name) for name in folders.ONNX_FILES},
           "quantized_parts": list(parts), "weights": "int8, " + ("per channel" if per_channel else "per tensor"),
           "exclude_patterns": patterns, "excluded_nodes": excluded, "onnxruntime": onnxruntime.__version__}
    if mode == "dynamic":
        from npu_ep.quantize.dynamic import NBITS_BLOCK_SIZE, WEIGHT_RANGE

        how["form"] = form
        if form == "matmul-nbits":
            how["weights"] = f"int8, symmetric blocks of {NBITS_BLOCK_SIZE}"
        else:
            how["weights"] = (f"int8 in -{WEIGHT_RANGE}..{WEIGHT_RANGE}, " + ("per channel" if per_channel else "per tensor")
                              + f"; vocabulary projection: int8, symmetric blocks of {NBITS_BLOCK_SIZE}")
        how["activations"] = "uint8, quantized at run time" if form == "matmul-integer" else "int8 blocks at run time (accuracy level 4)"
    else:
        how["form"] = "qdq"
        how["activations"] = f"int8 with zero point, ranges calibrated with {method}"
        how["calibration"] = {"method": method, "clips": [clip.name for clip in calib_clips]}
    # Static QDQ keeps full-range int8, which the NPU computes exactly; the CPU EP only with VNNI or AMX
    # (elsewhere the pipeline computes it exactly at float speed and says so).
    how["needs_vnni"] = mode == "static"
    return how
