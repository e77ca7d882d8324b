"""Voice activity detection: Silero VAD on ONNX Runtime finds the speech, and only that is transcribed.

The speech chunks are joined into one shorter recording; `SpeechMap` maps times in it back to the
original audio. Options and defaults are faster-whisper's. The ONNX model is the one faster-whisper
ships (see pyproject.toml for why that package), found without importing faster-whisper itself.
"""
from __future__ import annotations

import importlib.util
import logging
from bisect import bisect_right
from dataclasses import dataclass, fields, replace
from functools import lru_cache
from pathlib import Path

import numpy as np

from npu_ep.errors import NpuEpError

log = logging.getLogger(__name__)

_RATE = 16000
_WINDOW = 512  # samples per speech probability (32 ms)
_CONTEXT = 64  # samples of the previous window the model sees with each one
_STATE = (1, 1, 128)
_BATCH = 512  # windows per model call


@dataclass(frozen=True)
class VadOptions:
    """faster-whisper's VAD options.

    Attributes:
        threshold: a window is speech when its speech probability is at least this.
        neg_threshold: speech ends below this probability (default: threshold - 0.15, at least 0.01).
        min_speech_duration_ms: speech chunks shorter than this are dropped.
        max_speech_duration_s: longer chunks are split, at a pause of over 98 ms if there is one.
        min_silence_duration_ms: a pause this long ends a speech chunk.
        speech_pad_ms: each chunk is widened by this much on both sides.
    """

    threshold: float = 0.5
    neg_threshold: float | None = None
    min_speech_duration_ms: int = 0
    max_speech_duration_s: float = float("inf")
    min_silence_duration_ms: int = 2000
    speech_pad_ms: int = 400

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise NpuEpError(f"vad threshold {self.threshold}: must be between 0 and 1")
        if self.neg_threshold is not None and not 0.0 < self.neg_threshold <= self.threshold:
            raise NpuEpError(f"vad neg_threshold {self.neg_threshold}: must be between 0 and threshold")
        for name in ("min_speech_duration_ms", "min_silence_duration_ms", "speech_pad_ms"):
            if getattr(self, name) < 0:
                raise NpuEpError(f"vad {name} {getattr(self, name)}: must not be negative")
        if not self.max_speech_duration_s > 0:
            raise NpuEpError(f"vad max_speech_duration_s {self.max_speech_duration_s}: must be positive")

    @classmethod
    def from_value(cls, value: VadOptions | dict | None) -> VadOptions | None:
        """Options from a VadOptions or a dict of its fields (an unknown one is a one-line error); None stays
        None (the defaults)."""
        if value is None or isinstance(value, VadOptions):
            return value
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise NpuEpError(f"unknown vad_parameters key {unknown[0]!r} (known: {', '.join(sorted(known))})")
        return cls(**value)


def batched_options(options: VadOptions | None, window_seconds: float) -> VadOptions:
    """The VAD options of batched decoding: faster-whisper's BatchedInferencePipeline ends a chunk at a
    160 ms pause by default, and no chunk may be longer than one window."""
    if options is None:
        return VadOptions(max_speech_duration_s=window_seconds, min_silence_duration_ms=160)
    return replace(options, max_speech_duration_s=min(options.max_speech_duration_s, window_seconds))


def model_path() -> Path:
    """The Silero VAD ONNX model inside the installed faster-whisper (whose import would load CTranslate2)."""
    spec = importlib.util.find_spec("faster_whisper")
    if spec is None or not spec.submodule_search_locations:
        raise NpuEpError("--vad needs faster-whisper's Silero VAD model (install it: pip install -e '.[vad]')")
    path = Path(next(iter(spec.submodule_search_locations))) / "assets" / "silero_vad_v6.onnx"
    if not path.is_file():
        raise NpuEpError(f"{path}: missing from faster-whisper (reinstall it: pip install --force-reinstall faster-whisper)")
    return path


@lru_cache(maxsize=2)
def _session(threads: int | None):
    import onnx
    import onnxruntime as ort

    from npu_ep.session import STOP_SPINNING, intra_op_threads
    from npu_ep.whisper.silero import batched_front_end

    options = ort.SessionOptions()
    # The front end's MatMuls over every window of a call share the threads; the LSTM stays sequential.
    threads = intra_op_threads(threads)
    if threads:
        options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry(STOP_SPINNING, "1")  # its pool would spin on into the encoder's run
    options.enable_cpu_mem_arena = False
    options.log_severity_level = 4
    model = onnx.load(str(model_path()))
    try:
        source = batched_front_end(model).SerializeToString()
    except (KeyError, StopIteration, onnx.checker.ValidationError) as error:
        log.warning("%s: not the Silero graph expected (%s); running it as shipped, slower", model_path(), error)
        source = model.SerializeToString()
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def speech_probabilities(samples: np.ndarray, threads: int | None = None) -> np.ndarray:
    """The speech probability of each 512-sample window of 16 kHz `samples` (the last one zero-padded),
    computed on `threads` CPU threads (None: all cores)."""
    padded = np.pad(samples.astype(np.float32, copy=False), (0, -len(samples) % _WINDOW))
    windows = padded.reshape(-1, _WINDOW)
    probabilities = np.zeros(len(windows), dtype=np.float32)
    # Every window goes through the model with the recurrent state carried along, silent ones too: the
    # state a pause leaves behind decides how the speech after it scores, and so where chunks end (as in
    # faster-whisper). Calls of _BATCH windows keep the front end's intermediates in the CPU's caches.
    session = _session(threads)
    h = c = np.zeros(_STATE, dtype=np.float32)
    for at in range(0, len(windows), _BATCH):
        run = windows[at:at + _BATCH]
        context = np.zeros((len(run), _CONTEXT), dtype=np.float32)
        context[1:] = run[:-1, -_CONTEXT:]
        if at > 0:
            context[0] = windows[at - 1, -_CONTEXT:]
        output, h, c = session.run(None, {"input": np.concatenate([context, run], axis=1), "h": h, "c": c})
        probabilities[at:at + len(run)] = output.reshape(-1)
    return probabilities


def speech_chunks(samples: np.ndarray, options: VadOptions = VadOptions(),
                  threads: int | None = None) -> list[tuple[int, int]]:
    """(start, end) sample ranges of speech in 16 kHz `samples`, by faster-whisper's rules (the model on
    `threads` CPU threads, None: all cores)."""
    probabilities = speech_probabilities(samples, threads)
    threshold = options.threshold
    neg_threshold = options.neg_threshold if options.neg_threshold is not None else max(threshold - 0.15, 0.01)
    pad = _RATE * options.speech_pad_ms / 1000
    min_speech = _RATE * options.min_speech_duration_ms / 1000
    max_speech = _RATE * options.max_speech_duration_s - _WINDOW - 2 * pad
    min_silence = _RATE * options.min_silence_duration_ms / 1000
    min_silence_at_max_speech = _RATE * 98 / 1000  # where an over-long chunk may be split

    chunks: list[list[int]] = []
    start: int | None = None
    pause_start = 0  # where the current pause began (0: not in a pause)
    split_end = split_start = 0  # the last pause long enough to split an over-long chunk at
    for i, probability in enumerate(probabilities):
        at = _WINDOW * i
        if probability >= threshold and pause_start:
            pause_start = 0
            if split_start < split_end:
                split_start = at
        if probability >= threshold and start is None:
            start = at
            continue
        if start is not None and at - start > max_speech:
            if split_end:
                chunks.append([start, split_end])
                start = split_start if split_start >= split_end else None
            else:
                chunks.append([start, at])
                start = None
            split_end = split_start = pause_start = 0
            if start is None:
                continue
        if probability < neg_threshold and start is not None:
            if not pause_start:
                pause_start = at
            if at - pause_start > min_silence_at_max_speech:
                split_end = pause_start
            if at - pause_start < min_silence:
                continue
            if pause_start - start > min_speech:
                chunks.append([start, pause_start])
            start = None
            split_end = split_start = pause_start = 0
    if start is not None and len(samples) - start > min_speech:
        chunks.append([start, len(samples)])

    # Pad each chunk; chunks closer than two pads share the gap between them.
    for i, chunk in enumerate(chunks):
        if i == 0:
            chunk[0] = int(max(0, chunk[0] - pad))
        if i + 1 < len(chunks):
            gap = chunks[i + 1][0] - chunk[1]
            if gap < 2 * pad:
                chunk[1] += int(gap // 2)
                chunks[i + 1][0] = int(max(0, chunks[i + 1][0] - gap // 2))
            else:
                chunk[1] = int(min(len(samples), chunk[1] + pad))
                chunks[i + 1][0] = int(max(0, chunks[i + 1][0] - pad))
        else:
            chunk[1] = int(min(len(samples), chunk[1] + pad))
    return [(a, b) for a, b in chunks]


class SpeechMap:
    """Times in the joined speech chunks -> times in the original audio."""

    def __init__(self, chunks: list[tuple[int, int]]) -> None:
        self._ends: list[int] = []  # each chunk's end, in joined samples
        self._silence_before: list[float] = []  # seconds removed before each chunk
        removed = previous_end = 0
        for start, end in chunks:
            removed += start - previous_end
            previous_end = end
            self._ends.append(end - removed)
            self._silence_before.append(removed / _RATE)

    def windows(self, max_samples: int) -> list[tuple[int, int]]:
        """(start, end) ranges of the joined speech, in samples: whole chunks, each range holding as many
        consecutive chunks as fit in `max_samples` (a longer chunk is cut into pieces of that length)."""
        ranges: list[tuple[int, int]] = []
        start = chunk_start = 0
        for end in self._ends:
            if end - start > max_samples and chunk_start > start:
                ranges.append((start, chunk_start))
                start = chunk_start
            while end - start > max_samples:
                ranges.append((start, start + max_samples))
                start += max_samples
            chunk_start = end
        if chunk_start > start:
            ranges.append((start, chunk_start))
        return ranges

    def chunk(self, seconds: float, is_end: bool = False) -> int:
        """The chunk a time in the joined audio falls in (an end exactly at a chunk's end stays in it)."""
        sample = int(seconds * _RATE)
        if is_end and sample in self._ends:
            return self._ends.index(sample)
        return min(bisect_right(self._ends, sample), len(self._ends) - 1)

    def original(self, seconds: float, chunk: int | None = None, is_end: bool = False) -> float:
        if chunk is None:
            chunk = self.chunk(seconds, is_end)
        return round(self._silence_before[chunk] + seconds, 2)

    def restore(self, segment, whole_window: bool = False) -> None:
        """Move a segment (and its words) from joined-speech time to the original audio's time. Each word
        keeps both ends in the chunk of its middle, so no word spans a removed silence. Without words, a
        segment across a removed silence starts (ends) in the chunk where more of it lies than before
        (after) that silence: Whisper often opens a segment at the previous one's end, in the last chunk's
        padding, and its speech would otherwise seem to begin before the silence. A `whole_window`
        segment (batched mode's one per window) keeps its ends in the chunks they fall in."""
        if segment.words:
            for word in segment.words:
                chunk = self.chunk((word.start + word.end) / 2)
                word.start, word.end = self.original(word.start, chunk), self.original(word.end, chunk)
            segment.start, segment.end = segment.words[0].start, segment.words[-1].end
            return
        first, last = self.chunk(segment.start), self.chunk(segment.end, is_end=True)
        start, end = segment.start, segment.end
        if not whole_window and last > first and self._ends[first] / _RATE - start < (end - start) / 2:
            start, first = self._ends[first] / _RATE, first + 1
        if not whole_window and last > first and end - self._ends[last - 1] / _RATE < (end - start) / 2:
            end, last = self._ends[last - 1] / _RATE, last - 1
        segment.start, segment.end = self.original(start, first), self.original(end, last)


def join_speech(samples: np.ndarray, chunks: list[tuple[int, int]]) -> np.ndarray:
    """The speech chunks of `samples`, end to end."""
    if not chunks:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate([samples[start:end] for start, end in chunks])
