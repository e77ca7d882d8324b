"""The reusable transcription pipeline: sessions loaded once, audio of any length in sequential 30 s windows."""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from npu_ep.errors import NpuEpError, first_line
from npu_ep.whisper.audio import SAMPLE_RATE, AudioSource
from npu_ep.whisper.decoding import TEMPERATURES, TIMESTAMP_SECONDS, Decoder, DecodeOptions, DecodeResult
from npu_ep.whisper.features import FRAME_SECONDS, HOP_LENGTH, WINDOW_FRAMES, encoder_features
from npu_ep.whisper.model import WhisperOnnx
from npu_ep.whisper.tokenizer import WhisperTokenizer

# A window decoded above this temperature is too shaky to prompt the next one (openai/whisper's rule).
_PROMPT_RESET_TEMPERATURE = 0.5
_PROGRESS_MIN_SECONDS = 60.0
# A window quieter than -60 dBFS RMS holds no speech; Whisper would still "hear" a word in it (tiny.en says
# " you" to digital silence with a confident enough log-prob to pass the no-speech rule), so it is skipped
# before the encoder runs.
_SILENCE_RMS = 1e-3


# Beams or samples decoded side by side: each holds its own key/value cache, so memory grows with it.
MAX_CANDIDATES = 64


@dataclass
class Segment:
    start: float
    end: float
    text: str
    tokens: list[int]
    avg_logprob: float
    no_speech_prob: float
    temperature: float
    compression_ratio: float


@dataclass
class Timing:
    """Wall seconds per stage of one transcription; `total` excludes `load` (done once per Pipeline)."""

    load: float = 0.0
    features: float = 0.0  # reading, down-mixing, resampling and the log-mel spectrogram
    encoder: float = 0.0
    decoder: float = 0.0  # language detection and every decoding attempt, rules included
    total: float = 0.0
    realtime: float = 0.0  # audio seconds per wall second of `total`


@dataclass
class TranscriptionInfo:
    language: str | None
    language_probability: float
    duration: float
    task: str
    model: str
    device: str
    timing: Timing = field(default_factory=Timing)


class Pipeline:
    """A loaded model: `pipeline.transcribe(file_or_array)` as often as needed, sessions stay open."""

    def __init__(self, model: str | Path = "tiny.en", device: str = "cpu", threads: int | None = None) -> None:
        from npu_ep.export import rebuild_command, resolve_model

        started = time.perf_counter()
        self.model_dir = Path(resolve_model(str(model)))
        self.device = device
        try:
            self.model = WhisperOnnx(self.model_dir, device, threads)
            self.tokenizer = WhisperTokenizer(self.model_dir)
        except NpuEpError:
            raise
        except Exception as error:  # bad JSON, missing keys, unreadable ONNX or tokenizer: one cause, one fix
            raise NpuEpError(f"{self.model_dir}: damaged model folder ({first_line(error)}) "
                             f"(rebuild it with: {rebuild_command(self.model_dir)})") from None
        self.decoder = Decoder(self.model, self.tokenizer)
        self.load_seconds = time.perf_counter() - started

    def transcribe(
        self,
        audio: str | Path | np.ndarray,
        *,
        language: str | None = None,
        task: str = "transcribe",
        beam_size: int = DecodeOptions.beam_size,
        best_of: int = DecodeOptions.best_of,
        patience: float = DecodeOptions.patience,
        temperature: float | tuple[float, ...] = TEMPERATURES,
        compression_ratio_threshold: float | None = DecodeOptions.compression_ratio_threshold,
        logprob_threshold: float | None = DecodeOptions.logprob_threshold,
        no_speech_threshold: float | None = DecodeOptions.no_speech_threshold,
        condition_on_previous_text: bool = True,
        sample_rate: int = SAMPLE_RATE,
        progress: bool = True,
    ) -> tuple[list[Segment], TranscriptionInfo]:
        """Segments (start/end seconds, text, tokens, scores) and info (language, duration, timing).

        `audio` is a file path or a float array of `sample_rate` Hz (mono, or samples x channels).
        A progress bar goes to stderr for audio over a minute unless `progress` is False.
        """
        if task not in ("transcribe", "translate"):
            raise NpuEpError(f"--task {task}: unknown task (use transcribe or translate)")
        if not (1 <= beam_size <= MAX_CANDIDATES and 1 <= best_of <= MAX_CANDIDATES):
            raise NpuEpError(f"--beam-size and best_of must be between 1 and {MAX_CANDIDATES}")
        if not isinstance(temperature, (int, float)) and not tuple(temperature):
            raise NpuEpError("temperature: give at least one value (e.g. 0.0)")
        self.tokenizer.check_language(language, task)
        options = DecodeOptions(
            task=task,
            beam_size=beam_size,
            best_of=best_of,
            patience=patience,
            temperatures=(temperature,) if isinstance(temperature, (int, float)) else tuple(temperature),
            compression_ratio_threshold=compression_ratio_threshold,
            logprob_threshold=logprob_threshold,
            no_speech_threshold=no_speech_threshold,
        )
        timing = Timing(load=self.load_seconds)
        started = time.perf_counter()
        with AudioSource(audio, sample_rate) as source:
            info = TranscriptionInfo(
                # None until detected on the first spoken window (stays None for silence).
                language=language if language or self.tokenizer.multilingual else "en",
                language_probability=1.0,
                duration=source.duration,
                task=task,
                model=self.model_dir.name,
                device=self.device,
                timing=timing,
            )
            timing.features += time.perf_counter() - started
            segments = self._windows(source, options, info, condition_on_previous_text, progress)
        timing.total = time.perf_counter() - started
        timing.realtime = info.duration / timing.total if timing.total > 0 else 0.0
        return segments, info

    def _windows(
        self,
        source: AudioSource,
        options: DecodeOptions,
        info: TranscriptionInfo,
        condition_on_previous_text: bool,
        progress: bool,
    ) -> list[Segment]:
        from tqdm import tqdm

        content_frames = source.n_samples // HOP_LENGTH
        segments: list[Segment] = []
        prompt: list[int] = []
        seek = 0
        bar = tqdm(
            total=round(info.duration, 2),
            unit="s",
            unit_scale=False,
            desc=Path(source.name).name,
            file=sys.stderr,
            disable=not progress or info.duration <= _PROGRESS_MIN_SECONDS,
            bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s [{elapsed}<{remaining}]",
        )
        with bar:
            while seek < content_frames:
                clock = time.perf_counter()
                samples = source.window(seek * HOP_LENGTH, WINDOW_FRAMES * HOP_LENGTH)
                if len(samples) == 0:
                    break  # the file held fewer samples than its header announced
                segment_frames = min(WINDOW_FRAMES, content_frames - seek, -(-len(samples) // HOP_LENGTH))
                samples = samples[: segment_frames * HOP_LENGTH]
                silent = np.sqrt(np.mean(np.square(samples, dtype=np.float64))) < _SILENCE_RMS
                result = None if silent else self._decode_window(samples, options, info, prompt, clock)
                if result is None:  # no sound, or the model's no-speech verdict: skip the window
                    seek += segment_frames
                else:
                    new_segments, advance = self._split(result, seek * FRAME_SECONDS, segment_frames)
                    seek += advance
                    for segment in new_segments:
                        segment.end = min(segment.end, info.duration)
                        segment.start = min(segment.start, segment.end)
                        if segment.text.strip():
                            segments.append(segment)
                    if condition_on_previous_text and result.temperature <= _PROMPT_RESET_TEMPERATURE:
                        # Only the last half-context of tokens can ever be a prompt: keep no more.
                        prompt = [*prompt, *(t for s in new_segments for t in s.tokens)][-(self.decoder.sample_len - 1) :]
                    else:
                        prompt = []
                bar.update(min(round(seek * FRAME_SECONDS, 2), bar.total) - bar.n)
        return segments

    def _decode_window(
        self,
        samples: np.ndarray,
        options: DecodeOptions,
        info: TranscriptionInfo,
        prompt: list[int],
        clock: float,
    ) -> DecodeResult | None:
        """Features, encoder and decoder of one window (timed from `clock`); None when it holds no speech."""
        timing = info.timing
        features = encoder_features(samples, self.model.n_mels)
        timing.features += time.perf_counter() - clock

        clock = time.perf_counter()
        encoder_states = self.model.encode(features)
        timing.encoder += time.perf_counter() - clock

        clock = time.perf_counter()
        if info.language is None:
            # As openai/whisper does: the language of the first spoken window holds for the file.
            info.language, info.language_probability = self.decoder.detect_language(encoder_states)
        sot_sequence = self.tokenizer.sot_sequence(info.language, options.task)
        result = self.decoder.decode(encoder_states, sot_sequence, prompt, options)
        timing.decoder += time.perf_counter() - clock
        return None if result.no_speech else result

    def _split(
        self, result: DecodeResult, time_offset: float, segment_frames: int
    ) -> tuple[list[Segment], int]:
        """Cut a window's tokens into segments at timestamp pairs; the frames to advance (seek)."""
        tb = self.tokenizer.timestamp_begin
        tokens = result.tokens
        is_timestamp = [t >= tb for t in tokens]
        single_timestamp_ending = is_timestamp[-2:] == [False, True]
        cuts = [i + 1 for i in range(len(tokens) - 1) if is_timestamp[i] and is_timestamp[i + 1]]

        def segment(part: list[int], start: float, end: float) -> Segment:
            return Segment(
                start=round(start, 3),
                end=round(end, 3),
                text=self.tokenizer.decode(part),
                tokens=part,
                avg_logprob=result.avg_logprob,
                no_speech_prob=result.no_speech_prob,
                temperature=result.temperature,
                compression_ratio=result.compression_ratio,
            )

        if not cuts:
            # One segment for the window; it ends at its last timestamp if there is one.
            timestamps = [t for t in tokens if t >= tb]
            duration = segment_frames * FRAME_SECONDS
            if timestamps and timestamps[-1] != tb:
                duration = (timestamps[-1] - tb) * TIMESTAMP_SECONDS
            return [segment(tokens, time_offset, time_offset + duration)], segment_frames
        if single_timestamp_ending:
            cuts.append(len(tokens))
        segments, last = [], 0
        for cut in cuts:
            part = tokens[last:cut]
            segments.append(
                segment(part, time_offset + (part[0] - tb) * TIMESTAMP_SECONDS, time_offset + (part[-1] - tb) * TIMESTAMP_SECONDS)
            )
            last = cut
        if single_timestamp_ending:
            return segments, segment_frames  # the window ended on a closed segment: it is all consumed
        # Resume at the last complete segment's end: the text after it may be cut mid-word.
        return segments, max(1, round((tokens[last - 1] - tb) * TIMESTAMP_SECONDS / FRAME_SECONDS))


def transcribe(
    audio: str | Path | np.ndarray,
    model: str | Path = "tiny.en",
    *,
    device: str = "cpu",
    threads: int | None = None,
    **options,
) -> tuple[list[Segment], TranscriptionInfo]:
    """One-off transcription: load `model`, transcribe `audio` (options as Pipeline.transcribe)."""
    return Pipeline(model, device, threads).transcribe(audio, **options)
