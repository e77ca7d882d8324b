"""Batched mode (`batch_size` above 1): windows fixed beforehand, encoded one by one, decoded `batch_size` at a time.

The windows of a recording are its 30 s steps, or with VAD its speech chunks joined up to 30 s (as
faster-whisper's BatchedInferencePipeline cuts them), and the windows of several recordings follow each
other into the same batches. Each window is decoded on its own, as faster-whisper's batched mode does:
no text of the window before prompts it, and its text is decoded without timestamps, so it is one
segment spanning the window's audio (with VAD, from its first speech to its last); word timestamps time
its words. Segments, and each recording's result, come out in the recordings' and windows' order.
"""
from __future__ import annotations

import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from npu_ep.errors import NpuEpError
from npu_ep.whisper.alignment import align_words
from npu_ep.whisper.audio import SAMPLE_RATE, AudioSource
from npu_ep.whisper.decoding import DecodeOptions
from npu_ep.whisper.features import FRAME_SECONDS, HOP_LENGTH, encoder_features
from npu_ep.whisper.model import window_states
from npu_ep.whisper.pipeline import (SILENCE_RMS, WINDOW_SAMPLES, LanguageDetector, Pipeline, Segment, TranscriptionInfo,
                                     _PROGRESS_MIN_SECONDS)
from npu_ep.whisper import vad


@dataclass
class FileResult:
    """One recording of `Pipeline.transcribe_many`: its segments and info, or the error that stopped it
    (then `segments` are those decoded before it, and `info` is None if it could not be opened)."""

    audio: object
    segments: list[Segment]
    info: TranscriptionInfo | None
    error: NpuEpError | None = None


@dataclass
class _Window:
    job: _Job
    start: int  # first sample, in the decoded audio (the joined speech with VAD)
    samples: np.ndarray


@dataclass
class _Job:
    """One recording on its way through the batches."""

    audio: object
    source: AudioSource | None
    speech_map: vad.SpeechMap | None
    info: TranscriptionInfo | None
    detector: LanguageDetector | None
    error: NpuEpError | None = None
    segments: list[Segment] = field(default_factory=list)
    last_speech: float = 0.0  # end of the last word (word timestamps)
    in_flight: int = 0  # windows handed to a batch and not yet decoded
    planned: bool = False  # every window has been handed out

    def windows(self, pipeline: Pipeline, options: DecodeOptions) -> Iterator[_Window]:
        """The windows to decode, silent ones left out (`planned` once they are all out)."""
        try:
            if self.source is None:
                return
            if self.speech_map is not None:
                ranges = self.speech_map.windows(WINDOW_SAMPLES)
            else:
                content_frames = self.source.n_samples // HOP_LENGTH
                ranges = [(start * HOP_LENGTH, min(start * HOP_LENGTH + WINDOW_SAMPLES, end * HOP_LENGTH))
                          for first, end in pipeline.clips(options, content_frames)
                          for start in range(first, end, WINDOW_SAMPLES // HOP_LENGTH)]
            for start, end in ranges:
                clock = time.perf_counter()
                samples = self.source.window(start, end - start).copy()
                self.info.timing.features += time.perf_counter() - clock
                if len(samples) == 0:
                    break  # the file held fewer samples than its header announced
                if np.sqrt(np.mean(np.square(samples, dtype=np.float64))) >= SILENCE_RMS:
                    self.in_flight += 1
                    yield _Window(self, start, samples)
        except NpuEpError as error:  # a read fails mid-file: this recording stops, the others go on
            self.error = error
        finally:
            self.planned = True
            if self.source is not None:
                self.source.close()


def _open(pipeline: Pipeline, audio: object, sample_rate: int, options: DecodeOptions) -> _Job:
    try:
        source, speech_map, info = pipeline.prepare(audio, sample_rate, options)
    except NpuEpError as error:
        return _Job(audio, None, None, None, None, error)
    return _Job(audio, source, speech_map, info, LanguageDetector(pipeline, options, info))


def _run(pipeline: Pipeline, jobs: Iterable[_Job], options: DecodeOptions) -> Iterator[tuple[_Job, list[Segment] | None]]:
    """(job, the segments of one of its windows) in order, and (job, None) once a job has no more."""
    waiting: deque[_Job] = deque()

    def windows() -> Iterator[_Window]:
        for job in jobs:
            waiting.append(job)
            if job.error is None:
                yield from job.windows(pipeline, options)
            job.planned = True

    def finished() -> Iterator[tuple[_Job, None]]:
        while waiting and waiting[0].planned and waiting[0].in_flight == 0:
            yield waiting.popleft(), None

    batch: list[_Window] = []
    for window in windows():
        batch.append(window)
        if len(batch) == options.batch_size:
            yield from _decode(pipeline, batch, options)
            batch = []
        yield from finished()
    if batch:
        yield from _decode(pipeline, batch, options)
    yield from finished()


def _decode(pipeline: Pipeline, batch: list[_Window], options: DecodeOptions) -> Iterator[tuple[_Job, list[Segment]]]:
    """Features, the encoder and the batched decoder over `batch`; each window's segments in order.
    The batch's encoder and decoder time is shared out evenly among its windows' recordings."""
    model, tokenizer = pipeline.model, pipeline.tokenizer
    clock = time.perf_counter()
    features = []
    for window in batch:
        features.append(encoder_features(window.samples, model.n_mels))
        window.job.info.timing.features += time.perf_counter() - clock
        clock = time.perf_counter()
    encoder_states = model.encode_batch(np.stack(features))
    _share(batch, "encoder", time.perf_counter() - clock)

    clock = time.perf_counter()
    languages = []
    for i, window in enumerate(batch):
        detector = window.job.detector
        languages.append(detector.language(None if detector.settled else window_states(encoder_states, i)))
    sot_sequences = [tokenizer.sot_sequence(language, options.task) for language in languages]
    results = pipeline.decoder.decode_batch(encoder_states, sot_sequences, pipeline.text_tokens(options.initial_prompt),
                                            options, pipeline.text_tokens(options.hotwords))
    decoded: list[list[Segment]] = []
    for i, (window, result, language) in enumerate(zip(batch, results, languages)):
        job, offset, frames = window.job, window.start / SAMPLE_RATE, -(-len(window.samples) // HOP_LENGTH)
        segments = [] if result.no_speech else pipeline.split(result, offset, frames, language)[0]
        if segments and options.word_timestamps:
            align_words(model, tokenizer, window_states(encoder_states, i), sot_sequences[i], segments, frames, offset,
                        job.last_speech, language, options.prepend_punctuations, options.append_punctuations)
            job.last_speech = next((s.end for s in reversed(segments) if s.words), job.last_speech)
        kept = []
        for segment in segments:
            segment.end = min(segment.end, round(offset + frames * FRAME_SECONDS, 3))
            segment.start = min(segment.start, segment.end)
            if segment.text.strip():
                if job.speech_map is not None:
                    job.speech_map.restore(segment, whole_window=True)
                kept.append(segment)
        decoded.append(kept)
    _share(batch, "decoder", time.perf_counter() - clock)
    for window, segments in zip(batch, decoded):
        window.job.in_flight -= 1
        if window.job.error is None:
            yield window.job, segments


def _share(batch: list[_Window], stage: str, seconds: float) -> None:
    for window in batch:
        timing = window.job.info.timing
        setattr(timing, stage, getattr(timing, stage) + seconds / len(batch))


def file_segments(
    pipeline: Pipeline, source: AudioSource, speech_map: vad.SpeechMap | None, info: TranscriptionInfo,
    options: DecodeOptions, progress: bool,
) -> Iterator[Segment]:
    """One recording's segments in batched mode, as each batch of its windows is decoded."""
    from tqdm import tqdm

    job = _Job(source.name, source, speech_map, info, LanguageDetector(pipeline, options, info))
    bar = tqdm(total=round(info.duration, 2), unit="s", desc=Path(source.name).name, file=sys.stderr,
               disable=not progress or info.duration <= _PROGRESS_MIN_SECONDS,
               bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s [{elapsed}<{remaining}]")
    with bar:
        for _, segments in _run(pipeline, [job], options):
            for segment in segments or ():
                bar.update(min(segment.end, bar.total) - bar.n)
                yield segment
    if job.error is not None:
        raise job.error


def transcribe_many(
    pipeline: Pipeline, audios: Iterable[object], sample_rate: int, options: DecodeOptions
) -> Iterator[FileResult]:
    """`Pipeline.transcribe_many` in batched mode: each recording is opened when its windows are next."""
    jobs = (_open(pipeline, audio, sample_rate, options) for audio in audios)
    for job, segments in _run(pipeline, jobs, options):
        if segments is not None:
            job.segments += segments
            continue
        if job.info is not None:
            timing = job.info.timing
            timing.total = timing.features + timing.encoder + timing.decoder
            timing.realtime = job.info.duration / timing.total if timing.total > 0 else 0.0
        yield FileResult(job.audio, job.segments, job.info, job.error)
