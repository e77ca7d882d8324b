"""One adapter per engine, behind one interface, so the runner treats them all alike.

An engine is looked up in the parent process (`locate`: which folder it would load, or why it
cannot run, without importing anything heavy) and loaded in its own worker process (`load`,
then `transcribe` per file), so each engine's memory and imports stay its own.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from npu_ep.whisper.audio import SAMPLE_RATE
from npu_ep.whisper.decoding import TEMPERATURES, DecodeOptions
from npu_ep.whisper.formats import transcript_text

# Our pipeline's decoding settings (Whisper's reference ones), given explicitly to every engine that exposes them.
LOGPROB_THRESHOLD = DecodeOptions.logprob_threshold
NO_SPEECH_THRESHOLD = DecodeOptions.no_speech_threshold
COMPRESSION_RATIO_THRESHOLD = DecodeOptions.compression_ratio_threshold
# Our pipeline's stage split, from the timing it returns.
STAGES = ("features", "encoder", "decoder")


class EngineUnavailable(Exception):
    """The engine cannot run here; the message is the note printed in place of its row."""


class Engine:
    """Common interface: `locate` (parent side, cheap), then `load` and `transcribe` (worker side)."""

    name = ""
    description = ""
    batch_size = 1  # windows decoded together by a batched engine (the worker sets it from --batch-size)

    def locate(self, model: str, fp32_dir: Path) -> Path:
        """The folder this engine loads for `model` (whose exported fp32 folder is `fp32_dir`)."""
        raise NotImplementedError

    def load(self, source: Path, threads: int) -> None:
        raise NotImplementedError

    def transcribe(self, audio: np.ndarray, beam_size: int) -> tuple[str, dict[str, float]]:
        """(text, stage seconds) for 16 kHz mono float32 `audio`; stages may be empty."""
        raise NotImplementedError


def _require_module(module: str, install: str) -> None:
    from npu_ep.export.resolve import has_module

    if not has_module(module):
        raise EngineUnavailable(f"{module} is not installed (install it with: {install})")


class OursEngine(Engine):
    """npu_ep's own pipeline on a model folder and a device."""

    def __init__(self, name: str, device: str, quantization: str | None, description: str, batched: bool = False) -> None:
        self.name, self.device, self.quantization, self.description = name, device, quantization, description
        self.batched = batched
        self.pipeline: Any = None

    def locate(self, model: str, fp32_dir: Path) -> Path:
        if not self.quantization:
            return fp32_dir
        from npu_ep.model_folder import read_manifest
        from npu_ep.whisper.spec import MANIFEST
        from npu_ep.paths import models_dir
        from npu_ep.quantize.folder import default_output

        manifest = read_manifest(fp32_dir)
        if manifest is None:
            raise EngineUnavailable(f"{fp32_dir}: no valid {MANIFEST} (re-export it with: npu-ep export --force)")
        # Where `npu-ep quantize` writes its output by default.
        variant = default_output(manifest, self.quantization)
        if not (variant / MANIFEST).is_file():
            named = fp32_dir == models_dir() / model
            raise EngineUnavailable(
                f"{variant} does not exist (make it with: npu-ep quantize --model {model if named else fp32_dir} "
                f"--mode {self.quantization})"
            )
        return variant

    def load(self, source: Path, threads: int) -> None:
        from npu_ep.whisper.pipeline import Pipeline

        self.pipeline = Pipeline(source, device=self.device, threads=threads)

    def transcribe(self, audio: np.ndarray, beam_size: int) -> tuple[str, dict[str, float]]:
        # Batched: VAD chunks joined up to 30 s, as faster-whisper's BatchedInferencePipeline decodes them.
        batched = {"batch_size": self.batch_size, "vad_filter": True} if self.batched else {}
        segments, info = self.pipeline.transcribe(
            audio,
            **batched,
            beam_size=beam_size,
            condition_on_previous_text=True,
            temperature=TEMPERATURES,
            compression_ratio_threshold=COMPRESSION_RATIO_THRESHOLD,
            logprob_threshold=LOGPROB_THRESHOLD,
            no_speech_threshold=NO_SPEECH_THRESHOLD,
            progress=False,
        )
        stages = {stage: getattr(info.timing, stage) for stage in STAGES}
        return transcript_text(segments), stages


class FasterWhisperEngine(Engine):
    """faster-whisper (CTranslate2) on the same CTranslate2 weights our export converts."""

    def __init__(self, compute_type: str, batched: bool = False) -> None:
        self.compute_type = compute_type
        self.batched = batched
        self.name = f"faster-whisper-{'fp32' if compute_type == 'float32' else compute_type}{'-batched' if batched else ''}"
        self.description = (f"faster-whisper{' BatchedInferencePipeline' if batched else ''}, CTranslate2 "
                            f"compute_type={compute_type}")
        self.model: Any = None

    def locate(self, model: str, fp32_dir: Path) -> Path:
        _require_module("faster_whisper", 'pip install -e ".[bench]"')
        return ct2_weights_dir(model)

    def load(self, source: Path, threads: int) -> None:
        from faster_whisper import WhisperModel

        self.model = WhisperModel(
            str(source), device="cpu", compute_type=self.compute_type, cpu_threads=threads, num_workers=1
        )
        if self.batched:
            from faster_whisper import BatchedInferencePipeline

            self.model = BatchedInferencePipeline(self.model)

    def transcribe(self, audio: np.ndarray, beam_size: int) -> tuple[str, dict[str, float]]:
        if self.batched:  # its own defaults (VAD chunks up to 30 s, text without timestamps) but the beam
            segments, _ = self.model.transcribe(audio, batch_size=self.batch_size, beam_size=beam_size, log_progress=False)
            return transcript_text(list(segments)), {}
        segments, _ = self.model.transcribe(
            audio,
            beam_size=beam_size,
            vad_filter=False,
            condition_on_previous_text=True,
            temperature=list(TEMPERATURES),
            compression_ratio_threshold=COMPRESSION_RATIO_THRESHOLD,
            log_prob_threshold=LOGPROB_THRESHOLD,
            no_speech_threshold=NO_SPEECH_THRESHOLD,
        )
        # Segments are a lazy generator: the decoding happens while listing them.
        return transcript_text(list(segments)), {}


class OptimumEngine(Engine):
    """optimum's ORTModelForSpeechSeq2Seq with transformers' WhisperProcessor, on our exported fp32 folder."""

    name = "optimum-ort"
    description = "optimum ORTModelForSpeechSeq2Seq + transformers generate, on our fp32 ONNX export"

    def __init__(self) -> None:
        self.model: Any = None
        self.processor: Any = None

    def locate(self, model: str, fp32_dir: Path) -> Path:
        _require_module("optimum.onnxruntime", 'pip install -e ".[export]"')
        return fp32_dir

    def load(self, source: Path, threads: int) -> None:
        import onnxruntime as ort
        import torch
        from optimum.onnxruntime import ORTModelForSpeechSeq2Seq
        from transformers import WhisperProcessor

        # torch only runs the glue (features, logits processors): a second pool of `threads` spinning threads
        # beside ONNX Runtime's made transformers' tiny per-token ops slow (docs/measurements.md), so one thread.
        torch.set_num_threads(1)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        self.model = ORTModelForSpeechSeq2Seq.from_pretrained(
            source, session_options=options, provider="CPUExecutionProvider", use_cache=True
        )
        self.processor = WhisperProcessor.from_pretrained(source)

    def transcribe(self, audio: np.ndarray, beam_size: int) -> tuple[str, dict[str, float]]:
        n_samples = self.processor.feature_extractor.n_samples
        if len(audio) > n_samples:
            # transformers' sequential long-form decoding wants the unpadded features and their mask.
            inputs = self.processor(
                audio, sampling_rate=SAMPLE_RATE, return_tensors="pt",
                truncation=False, padding="longest", return_attention_mask=True,
            )
        else:
            inputs = self.processor(audio, sampling_rate=SAMPLE_RATE, return_tensors="pt", return_attention_mask=True)
        ids = self.model.generate(
            inputs.input_features,
            attention_mask=inputs.attention_mask,
            num_beams=beam_size,
            return_timestamps=True,
            condition_on_prev_tokens=True,
            temperature=TEMPERATURES,
            logprob_threshold=LOGPROB_THRESHOLD,
            no_speech_threshold=NO_SPEECH_THRESHOLD,
            # transformers measures compression on token ids; 1.35 is its documented equivalent of 2.4.
            compression_ratio_threshold=1.35,
        )
        return self.processor.batch_decode(ids, skip_special_tokens=True)[0].strip(), {}


def ct2_weights_dir(model: str) -> Path:
    """The CTranslate2 folder (model.bin, tokenizer.json) holding `model`'s original weights."""
    from npu_ep.errors import NpuEpError
    from npu_ep.export import ct2_model_dir

    try:
        return ct2_model_dir(model)
    except NpuEpError as error:
        raise EngineUnavailable(f"no CTranslate2 weights for {model}: {error}") from None


ENGINES: dict[str, Engine] = {
    engine.name: engine
    for engine in (
        OursEngine("ours-fp32", "cpu", None, "npu_ep pipeline, fp32 model, CPU"),
        OursEngine("ours-int8", "cpu", "dynamic", "npu_ep pipeline, dynamic INT8 model, CPU"),
        OursEngine("ours-emulator", "emulator", None, "npu_ep pipeline, fp32 model, MatMuls on the emulated NPU device"),
        FasterWhisperEngine("int8"),
        FasterWhisperEngine("float32"),
        OptimumEngine(),
        OursEngine("ours-int8-batched", "cpu", "dynamic", "npu_ep pipeline, dynamic INT8 model, batched VAD chunks", True),
        OursEngine("ours-fp32-batched", "cpu", None, "npu_ep pipeline, fp32 model, batched VAD chunks", True),
        FasterWhisperEngine("int8", batched=True),
        FasterWhisperEngine("float32", batched=True),
    )
}
