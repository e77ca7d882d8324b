"""The reusable transcription pipeline: sessions loaded once, audio of any length in sequential 30 s windows."""
from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

import numpy as np

from npu_ep.errors import NpuEpError, first_line
from npu_ep.whisper.alignment import Word, align_words
from npu_ep.whisper.audio import MIN_SAMPLES, SAMPLE_RATE, AudioSource, load_audio
from npu_ep.whisper.decoding import TIMESTAMP_SECONDS, Decoder, DecodeOptions, DecodeResult
from npu_ep.whisper.features import FRAME_SECONDS, HOP_LENGTH, encoder_features
from npu_ep.whisper.model import WhisperOnnx
from npu_ep.whisper.hallucination import repeats_prompt, skip_silence
from npu_ep.whisper.tokenizer import WhisperTokenizer
from npu_ep.whisper.spec import ENCODER_FRAMES
from npu_ep.whisper import vad

if TYPE_CHECKING:
    from npu_ep.whisper.batched import FileResult

log = logging.getLogger(__name__)

_PROGRESS_MIN_SECONDS = 60.0
# A window quieter than -60 dBFS RMS holds no speech; Whisper would still "hear" a word in it (tiny.en says
# " you" to digital silence with a confident enough log-prob to pass the no-speech rule), so it is skipped
# before the encoder runs.
SILENCE_RMS = 1e-3
WINDOW_SAMPLES = ENCODER_FRAMES * HOP_LENGTH


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
    language: str | None = None  # the language the window was decoded in
    words: list[Word] | None = None  # with word_timestamps: the words, their times and probabilities


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
    """What was transcribed and how. With `Pipeline.transcribe_iter`, `language` and `timing` fill in as
    the segments are consumed and are final once the iterator is exhausted."""

    language: str | None
    language_probability: float
    duration: float
    task: str
    model: str
    device: str
    options: DecodeOptions = field(default_factory=DecodeOptions)
    timing: Timing = field(default_factory=Timing)


@dataclass
class Window:
    """One decoded 30 s window: what a segment post-processor (such as word alignment) works from."""

    seek: int  # first mel frame of the window in the audio
    frames: int  # mel frames of audio in it
    samples: np.ndarray
    encoder_states: object  # an OrtValue [1, frames, d_model]
    sot_sequence: list[int]
    language: str | None
    result: DecodeResult


class Pipeline:
    """A loaded model: `pipeline.transcribe(file_or_array)` as often as needed, sessions stay open."""

    def __init__(self, model: str | Path = "tiny.en", device: str = "cpu", threads: int | None = None) -> None:
        from npu_ep.export import rebuild_command, resolve_model

        started = time.perf_counter()
        self.model_dir = Path(resolve_model(str(model)))
        self.device = device
        self.threads = threads
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
        options: DecodeOptions | None = None,
        *,
        sample_rate: int = SAMPLE_RATE,
        progress: bool = True,
        **changes: Any,
    ) -> tuple[list[Segment], TranscriptionInfo]:
        """Segments (start/end seconds, text, tokens, scores) and info (language, duration, options, timing).

        `audio` is a file path or a float array of `sample_rate` Hz (mono, or samples x channels).
        Decoding follows `options` (default `DecodeOptions()`) with any of its fields changed by keyword,
        e.g. `beam_size=5`. A progress bar goes to stderr for audio over a minute unless `progress` is False.
        """
        segments, info = self.transcribe_iter(audio, options, sample_rate=sample_rate, progress=progress, **changes)
        return list(segments), info

    def transcribe_iter(
        self,
        audio: str | Path | np.ndarray,
        options: DecodeOptions | None = None,
        *,
        sample_rate: int = SAMPLE_RATE,
        progress: bool = True,
        **changes: Any,
    ) -> tuple[Iterator[Segment], TranscriptionInfo]:
        """As `transcribe`, but the segments come from an iterator as each window is decoded.

        Options and the audio are checked before this returns (a bad file raises here); decoding runs
        while the iterator is consumed, and `info.timing` is complete when it is exhausted.
        """
        options = DecodeOptions.from_kwargs(options, **changes)
        self.check(options)
        started = time.perf_counter()
        source, speech_map, info = self.prepare(audio, sample_rate, options)
        if options.batch_size > 1:
            from npu_ep.whisper.batched import file_segments

            windows = lambda source: file_segments(self, source, speech_map, info, options, progress)  # noqa: E731
            return self._segments(source, info, started, windows, None), info
        windows = lambda source: self._windows(source, options, info, progress)  # noqa: E731
        return self._segments(source, info, started, windows, speech_map), info

    def transcribe_many(
        self,
        audios: Iterable[str | Path | np.ndarray],
        options: DecodeOptions | None = None,
        *,
        sample_rate: int = SAMPLE_RATE,
        **changes: Any,
    ) -> Iterator[FileResult]:
        """Several recordings, one `FileResult` each, in the given order. With `batch_size` above 1 the
        windows of all of them are batched together (short files share encoder runs); otherwise each is
        transcribed in turn. A bad recording's result holds its error, and the others go on."""
        from npu_ep.whisper.batched import transcribe_many

        options = DecodeOptions.from_kwargs(options, **changes)
        self.check(options)
        if options.batch_size > 1:
            return transcribe_many(self, audios, sample_rate, options)
        return self._one_by_one(audios, options, sample_rate)

    def _one_by_one(self, audios: Iterable[str | Path | np.ndarray], options: DecodeOptions, sample_rate: int
                    ) -> Iterator[FileResult]:
        from npu_ep.whisper.batched import FileResult

        for audio in audios:
            try:
                segments, info = self.transcribe(audio, options, sample_rate=sample_rate, progress=False)
                yield FileResult(audio, segments, info)
            except NpuEpError as error:
                yield FileResult(audio, [], None, error)

    def prepare(
        self, audio: str | Path | np.ndarray, sample_rate: int, options: DecodeOptions
    ) -> tuple[AudioSource | None, vad.SpeechMap | None, TranscriptionInfo]:
        """The audio to decode (None: VAD found no speech), the map from its times to the recording's (with
        VAD), and the info to fill in; a bad recording raises `NpuEpError` here."""
        started = time.perf_counter()
        speech_map = None
        if options.vad_filter:
            vad_options = options.vad_parameters
            if options.batch_size > 1:
                vad_options = vad.batched_options(vad_options, WINDOW_SAMPLES / SAMPLE_RATE)
            source, speech_map, duration = _speech_only(audio, sample_rate, vad_options, self.threads)
        else:
            source = AudioSource(audio, sample_rate)
            duration = source.duration
        info = TranscriptionInfo(
            # None until detected on the first spoken windows (stays None for silence).
            language=options.language if options.language or self.tokenizer.multilingual else "en",
            language_probability=1.0,
            duration=duration,
            task=options.task,
            model=self.model_dir.name,
            device=self.device,
            options=options,
            timing=Timing(load=self.load_seconds),
        )
        info.timing.features += time.perf_counter() - started
        return source, speech_map, info

    def check(self, options: DecodeOptions) -> None:
        """Raise a user error for options this model cannot follow (language, task, multilingual)."""
        self.tokenizer.check_language(options.language, options.task)
        if options.multilingual and not self.tokenizer.multilingual:
            raise NpuEpError("--multilingual: this model is English-only (use a multilingual model, e.g. --model base)")
        if options.word_timestamps and not self.model.has_alignment:
            from npu_ep.export import rebuild_command

            raise NpuEpError(f"{self.model_dir}: exported before word timestamps existed, so it has none "
                             f"(re-export it with: {rebuild_command(self.model_dir)})")

    def _segments(
        self, source: AudioSource | None, info: TranscriptionInfo, started: float,
        windows: Callable[[AudioSource], Iterator[Segment]], speech_map: vad.SpeechMap | None,
    ) -> Iterator[Segment]:
        timing = info.timing
        try:
            if source is None:  # VAD found no speech
                return
            with source:
                for segment in windows(source):
                    if speech_map is not None:
                        speech_map.restore(segment)
                    yield segment
        finally:
            timing.total = time.perf_counter() - started
            timing.realtime = info.duration / timing.total if timing.total > 0 else 0.0

    def clips(self, options: DecodeOptions, content_frames: int) -> list[tuple[int, int]]:
        """The (start, end) mel-frame ranges to decode: `clip_timestamps`, or the whole audio."""
        points = [round(t / FRAME_SECONDS) for t in options.clip_timestamps] or [0]
        if len(points) % 2:
            points.append(content_frames)
        return [(start, min(end, content_frames)) for start, end in zip(points[::2], points[1::2])]

    def text_tokens(self, text: str | tuple[int, ...] | None) -> list[int]:
        if text is None:
            return []
        return list(text) if not isinstance(text, str) else self.tokenizer.encode(" " + text.strip())

    def _windows(
        self, source: AudioSource, options: DecodeOptions, info: TranscriptionInfo, progress: bool
    ) -> Iterator[Segment]:
        from tqdm import tqdm

        content_frames = source.n_samples // HOP_LENGTH
        prompt = self.text_tokens(options.initial_prompt)
        prefix = self.text_tokens(options.prefix)
        hotwords = self.text_tokens(options.hotwords)
        detector = LanguageDetector(self, options, info)
        seek = 0
        previous_text = ""  # the last segment of the text that prompts the next window
        last_speech = 0.0  # end of the last word (word timestamps)
        bar = tqdm(
            total=round(source.duration, 2),
            unit="s",
            unit_scale=False,
            desc=Path(source.name).name,
            file=sys.stderr,
            disable=not progress or source.duration <= _PROGRESS_MIN_SECONDS,
            bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s [{elapsed}<{remaining}]",
        )
        with bar:
            for clip_start, clip_end in self.clips(options, content_frames):
                seek = max(seek, clip_start)
                while seek < clip_end:
                    clock = time.perf_counter()
                    samples = source.window(seek * HOP_LENGTH, WINDOW_SAMPLES)
                    if len(samples) == 0:
                        break  # the file held fewer samples than its header announced
                    frames = min(ENCODER_FRAMES, clip_end - seek, -(-len(samples) // HOP_LENGTH))
                    samples = samples[: frames * HOP_LENGTH]
                    silent = np.sqrt(np.mean(np.square(samples, dtype=np.float64))) < SILENCE_RMS
                    window = None
                    if not silent:
                        # The prefix starts the first decoded window, where it replaces the hotwords.
                        window = self._decode_window(
                            seek, samples, options, info, detector, prompt,
                            hotwords=[] if prefix else hotwords, prefix=prefix, clock=clock,
                        )
                        prefix = []
                        if (window is not None and previous_text
                                and repeats_prompt(self.split(window.result, 0.0, frames, None)[0], previous_text)):
                            log.debug("window at %.1f s repeats its prompt; decoding it without the prompt",
                                      seek * FRAME_SECONDS)
                            prompt, previous_text = [], ""
                            window = self._decode_window(seek, samples, options, info, detector, prompt, hotwords,
                                                         prefix=[], clock=time.perf_counter())
                    if window is None:  # no sound, or the model's no-speech verdict: skip the window
                        seek += frames
                    else:
                        result = window.result
                        new_segments, advance = self.split(result, seek * FRAME_SECONDS, frames, window.language)
                        seek, redo = seek + advance, False
                        if options.word_timestamps:
                            new_segments, seek, redo = self._align(window, new_segments, options, seek, last_speech,
                                                                   content_frames, info.timing)
                            last_speech = next((s.end for s in reversed(new_segments) if s.words), last_speech)
                        for segment in new_segments:
                            segment.end = min(segment.end, info.duration)
                            segment.start = min(segment.start, segment.end)
                            if segment.text.strip():
                                yield segment
                        if redo:  # the window is decoded again from a later point: it prompts nothing
                            pass
                        elif options.condition_on_previous_text and result.temperature <= options.prompt_reset_on_temperature:
                            # Only the last half-context of tokens can ever be a prompt: keep no more.
                            prompt = [*prompt, *(t for s in new_segments for t in s.tokens)][-(self.decoder.sample_len - 1) :]
                            previous_text = next((s.text for s in reversed(new_segments) if s.text.strip()), previous_text)
                        else:
                            prompt, previous_text = [], ""
                    bar.update(min(round(seek * FRAME_SECONDS, 2), bar.total) - bar.n)

    def _align(
        self, window: Window, segments: list[Segment], options: DecodeOptions, next_seek: int, last_speech: float,
        content_frames: int, timing: Timing,
    ) -> tuple[list[Segment], int, bool]:
        """Words for one window's segments; what to keep, where to decode next, and whether to decode from
        there again instead of keeping anything (openai/whisper's rules)."""
        clock = time.perf_counter()
        time_offset = window.seek * FRAME_SECONDS
        align_words(self.model, self.tokenizer, window.encoder_states, window.sot_sequence, segments, window.frames,
                    time_offset, last_speech, window.language, options.prepend_punctuations, options.append_punctuations)
        tokens, tb = window.result.tokens, self.tokenizer.timestamp_begin
        single_timestamp_ending = len(tokens) >= 2 and tokens[-2] < tb <= tokens[-1]
        ends = [segment.words[-1].end for segment in segments if segment.words]
        if not single_timestamp_ending and ends and ends[-1] > time_offset:
            # The window's text may be cut mid-word after its last timestamp: resume at the last word.
            next_seek = round(ends[-1] / FRAME_SECONDS)
        redo = False
        if options.hallucination_silence_threshold is not None:
            verdict = skip_silence(segments, options.hallucination_silence_threshold, window.seek, window.frames,
                                   next_seek, single_timestamp_ending, last_speech, content_frames)
            segments, next_seek, redo = verdict.segments, verdict.seek, verdict.redo
        timing.decoder += time.perf_counter() - clock
        return segments, next_seek, redo

    def _decode_window(
        self,
        seek: int,
        samples: np.ndarray,
        options: DecodeOptions,
        info: TranscriptionInfo,
        detector: LanguageDetector,
        prompt: list[int],
        hotwords: list[int],
        prefix: list[int],
        clock: float,
    ) -> Window | None:
        """Features, encoder and decoder of one window (timed from `clock`); None when it holds no speech."""
        timing = info.timing
        features = encoder_features(samples, self.model.n_mels)
        timing.features += time.perf_counter() - clock

        clock = time.perf_counter()
        encoder_states = self.model.encode(features)
        timing.encoder += time.perf_counter() - clock

        clock = time.perf_counter()
        language = detector.language(encoder_states)
        sot_sequence = self.tokenizer.sot_sequence(language, options.task)
        result = self.decoder.decode(encoder_states, sot_sequence, prompt, options, hotwords=hotwords, prefix=prefix)
        timing.decoder += time.perf_counter() - clock
        if result.no_speech:
            return None
        return Window(seek, len(samples) // HOP_LENGTH, samples, encoder_states, sot_sequence, language, result)

    def split(
        self, result: DecodeResult, time_offset: float, segment_frames: int, language: str | None
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
                language=language,
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
    **options: Any,
) -> tuple[list[Segment], TranscriptionInfo]:
    """One-off transcription: load `model`, transcribe `audio` (options as Pipeline.transcribe)."""
    return Pipeline(model, device, threads).transcribe(audio, **options)


def _speech_only(
    audio: str | Path | np.ndarray, sample_rate: int, options: vad.VadOptions | None, threads: int | None
) -> tuple[AudioSource | None, vad.SpeechMap, float]:
    """The speech of `audio` joined end to end (None when there is none), the map back to the original
    times, and the original duration. The whole recording is read first: VAD looks at all of it."""
    samples = load_audio(audio, sample_rate)
    chunks = vad.speech_chunks(samples, options or vad.VadOptions(), threads)
    speech = vad.join_speech(samples, chunks)
    source = AudioSource(speech) if len(speech) >= MIN_SAMPLES else None
    return source, vad.SpeechMap(chunks), len(samples) / SAMPLE_RATE


class LanguageDetector:
    """The language of each window, detected as faster-whisper does.

    With a language given, or an English-only model, it is that language. Otherwise the first spoken
    windows vote, one at a time: the first whose likeliest language is more probable than
    `language_detection_threshold` decides, else the most frequent after `language_detection_segments`
    windows (earlier windows are decoded in their own likeliest language). With `multilingual`, every
    window is decoded in the language detected on it.
    """

    def __init__(self, pipeline: Pipeline, options: DecodeOptions, info: TranscriptionInfo) -> None:
        self._decoder = pipeline.decoder
        self._options = options
        self._info = info
        self._decided = info.language is not None
        self._votes: list[tuple[str, float]] = []

    @property
    def settled(self) -> bool:
        """Every further window is decoded in `info.language`: no need to look at its audio."""
        return self._decided and not self._options.multilingual

    def language(self, encoder_states) -> str | None:
        options, info = self._options, self._info
        if self.settled:
            return info.language
        language, probability = self._decoder.detect_language(encoder_states)
        if not self._decided:
            self._votes.append((language, probability))
            threshold = options.language_detection_threshold
            if (threshold is None or probability > threshold
                    or len(self._votes) >= options.language_detection_segments):
                codes = [code for code, _ in self._votes]
                info.language = max(codes, key=codes.count) if not (threshold is None or probability > threshold) else language
                info.language_probability = max(p for code, p in self._votes if code == info.language)
                self._decided = True
        return language
