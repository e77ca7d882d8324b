"""Decoding one 30 s window, in openai/whisper's parts: logit filters, token decoders, a sequence ranker.

- **Options** (`DecodeOptions`): frozen, documented, validated when made; the pipeline records them.
- **Logit filters** mask what a row may not emit next, for every row of a step at once (numpy over the
  rows, no Python loop per row): suppressed tokens, a blank first token, and the timestamp rules
  (pairing and ordering, the first timestamp within `max_initial_timestamp`, "timestamps win when they
  are jointly likelier than any text token").
- **Token decoders** pick the next token of each row: `GreedyDecoder` (argmax, or sampling at a
  temperature) and `BeamSearchDecoder`.
- **Ranker**: `MaximumLikelihoodRanker` chooses among a window's candidate sequences.
- `Decoder.decode` runs them at rising temperatures until the result is neither too repetitive (gzip
  compression ratio) nor too unlikely (average log-prob), and reads the no-speech probability at
  <|startoftranscript|>.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, fields, replace
from typing import Sequence

import numpy as np

from npu_ep.errors import NpuEpError
from npu_ep.whisper.alignment import APPEND_PUNCTUATIONS, PREPEND_PUNCTUATIONS
from npu_ep.whisper.model import DecoderState, WhisperOnnx, window_states
from npu_ep.whisper.tokenizer import WhisperTokenizer
from npu_ep.whisper.vad import VadOptions

TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
TIMESTAMP_SECONDS = 0.02
# Beams or samples decoded side by side: each holds its own key/value cache, so memory grows with it.
MAX_CANDIDATES = 64
# Windows decoded side by side in batched mode; each holds its encoder states and caches.
MAX_BATCH = 64
_NEG_INF = np.float32(-np.inf)


@dataclass(frozen=True)
class DecodeOptions:
    """How to decode a file. The defaults are openai/whisper's `transcribe` defaults, except greedy search.

    Invalid values raise `NpuEpError` when the options are made, naming the option and the fix; the
    checks that need the model (is the language known, is the model multilingual) are the pipeline's.

    Attributes:
        language: spoken language code (e.g. "en"); None detects it on the first spoken window.
        task: "transcribe", or "translate" (into English; multilingual models).
        temperature: one temperature or the fallback ladder tried in order (0 is greedy/beam search).
        beam_size: beams at temperature 0; 1 is greedy search.
        best_of: samples drawn per window at a temperature above 0; the likeliest is kept.
        patience: beam search stops after `beam_size * patience` finished candidates.
        length_penalty: None ranks by mean log-prob per token; alpha in [0, 1] uses Google NMT's
            ((5 + length) / 6) ** alpha instead.
        compression_ratio_threshold: retry hotter when the text gzips better than this (a loop).
        logprob_threshold: retry hotter when the mean log-prob per token is below this.
        no_speech_threshold: skip a window whose <|nospeech|> probability is above this, unless its
            text is likelier than `logprob_threshold`.
        condition_on_previous_text: prompt each window with the text before it.
        prompt_reset_on_temperature: a window decoded above this temperature does not prompt the next.
        initial_prompt: text (or token ids) before the first window, as if it had been said before.
        prefix: text the first window's transcript starts with; decoding continues after it.
        hotwords: words or phrases to prefer, put in every window's prompt (ignored with `prefix`).
        suppress_blank: never start a window's sampled text with a blank or the end.
        suppress_tokens: token ids never sampled; -1 stands for the model's own list of symbols.
        max_initial_timestamp: the first timestamp of a window comes no later than this (seconds).
        multilingual: detect the language of every window, not only the first (multilingual models).
        language_detection_threshold: language detection stops at the first window whose likeliest
            language is more probable than this (None: at the first window).
        language_detection_segments: windows looked at, at most, to detect the language.
        clip_timestamps: (start, end, start, end, ...) seconds: decode only these parts; an odd count
            runs the last clip to the end of the audio.
        word_timestamps: give each segment its words with their times and probabilities.
        prepend_punctuations: with word timestamps, these marks join the word after them.
        append_punctuations: with word timestamps, these marks join the word before them.
        hallucination_silence_threshold: with word timestamps, skip silences longer than this (seconds)
            around text that looks made up (unlikely, very short or very long words).
        vad_filter: transcribe only the speech Silero VAD finds (times stay those of the whole audio).
        vad_parameters: `VadOptions` (or a dict of its fields) for `vad_filter`; None: the defaults.
        batch_size: windows decoded together. Above 1 (batched mode) the windows are fixed
            beforehand (VAD chunks joined up to 30 s with `vad_filter`, else 30 s steps) and decoded
            independently: each is prompted by `initial_prompt` and `hotwords` only, never by the text
            before it, as faster-whisper's BatchedInferencePipeline does.
    """

    language: str | None = None
    task: str = "transcribe"
    temperature: float | tuple[float, ...] = TEMPERATURES
    beam_size: int = 1
    best_of: int = 5
    patience: float = 1.0
    length_penalty: float | None = None
    compression_ratio_threshold: float | None = 2.4
    logprob_threshold: float | None = -1.0
    no_speech_threshold: float | None = 0.6
    condition_on_previous_text: bool = True
    prompt_reset_on_temperature: float = 0.5
    initial_prompt: str | tuple[int, ...] | None = None
    prefix: str | None = None
    hotwords: str | None = None
    suppress_blank: bool = True
    suppress_tokens: tuple[int, ...] = (-1,)
    max_initial_timestamp: float = 1.0
    multilingual: bool = False
    language_detection_threshold: float | None = 0.5
    language_detection_segments: int = 1
    clip_timestamps: tuple[float, ...] = ()
    word_timestamps: bool = False
    prepend_punctuations: str = PREPEND_PUNCTUATIONS
    append_punctuations: str = APPEND_PUNCTUATIONS
    hallucination_silence_threshold: float | None = None
    vad_filter: bool = False
    vad_parameters: VadOptions | dict | None = None
    batch_size: int = 1

    def __post_init__(self) -> None:
        # Sequences become tuples (hashable, frozen); a single temperature becomes a one-step ladder.
        def normalise(name: str, kind: type) -> None:
            value = getattr(self, name)
            if isinstance(value, str) and name == "clip_timestamps":
                value = [float(part) for part in value.split(",") if part.strip()]
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                value = (value,)
            try:
                object.__setattr__(self, name, tuple(kind(v) for v in value))
            except (TypeError, ValueError):
                raise NpuEpError(f"{name}={value!r}: give a number or a list of numbers") from None

        normalise("temperature", float)
        normalise("suppress_tokens", int)
        normalise("clip_timestamps", float)
        object.__setattr__(self, "vad_parameters", VadOptions.from_value(self.vad_parameters))
        if self.initial_prompt is not None and not isinstance(self.initial_prompt, str):
            normalise("initial_prompt", int)
        self._validate()

    def _validate(self) -> None:
        def fail(message: str) -> None:
            raise NpuEpError(message)

        if self.task not in ("transcribe", "translate"):
            fail(f"--task {self.task}: unknown task (use transcribe or translate)")
        for name in ("beam_size", "best_of"):
            value = getattr(self, name)
            if not isinstance(value, int) or not 1 <= value <= MAX_CANDIDATES:
                fail(f"--{name.replace('_', '-')} {value}: must be between 1 and {MAX_CANDIDATES}")
        if not self.temperature:
            fail("temperature: give at least one value (e.g. 0.0)")
        if any(not 0.0 <= t <= 10.0 for t in self.temperature):
            fail(f"temperature {self.temperature}: each value must be between 0 and 10")
        if not self.patience > 0 or round(self.beam_size * self.patience) < 1:
            fail(f"--patience {self.patience}: must be positive, with beam_size * patience at least 1")
        if self.length_penalty is not None and not 0.0 <= self.length_penalty <= 1.0:
            fail(f"--length-penalty {self.length_penalty}: must be between 0 and 1 (or unset)")
        if self.no_speech_threshold is not None and not 0.0 <= self.no_speech_threshold <= 1.0:
            fail(f"--no-speech-threshold {self.no_speech_threshold}: must be a probability between 0 and 1")
        if self.language_detection_threshold is not None and not 0.0 <= self.language_detection_threshold <= 1.0:
            fail(f"language_detection_threshold {self.language_detection_threshold}: must be between 0 and 1")
        if not isinstance(self.language_detection_segments, int) or self.language_detection_segments < 1:
            fail(f"language_detection_segments {self.language_detection_segments}: must be at least 1")
        if not 0.0 <= self.max_initial_timestamp <= 30.0:
            fail(f"max_initial_timestamp {self.max_initial_timestamp}: must be between 0 and 30 seconds")
        clips = self.clip_timestamps
        if any(t < 0 for t in clips) or any(b <= a for a, b in zip(clips[::2], clips[1::2])) or any(
            b < a for a, b in zip(clips[1::2], clips[2::2])
        ):
            fail(f"--clip-timestamps {','.join(f'{t:g}' for t in clips)}: give start,end pairs in seconds, "
                 "each end after its start and the clips in time order")
        if self.hallucination_silence_threshold is not None:
            if not self.word_timestamps:
                fail("--hallucination-silence-threshold needs --word-timestamps True (it judges words)")
            if not self.hallucination_silence_threshold > 0:
                fail(f"--hallucination-silence-threshold {self.hallucination_silence_threshold}: must be positive")
        if self.vad_filter and clips:
            fail("--vad with --clip-timestamps: give one of them (VAD chooses the parts to decode itself)")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or not 1 <= self.batch_size <= MAX_BATCH:
            fail(f"--batch-size {self.batch_size}: must be a whole number between 1 and {MAX_BATCH}")
        if self.batch_size > 1:
            # Both follow from one window to the next, which batched windows do not.
            if self.prefix is not None:
                fail("--prefix with --batch-size above 1: batched windows are decoded independently "
                     "(use --batch-size 1, or --initial-prompt)")
            if self.hallucination_silence_threshold is not None:
                fail("--hallucination-silence-threshold with --batch-size above 1: it moves where the next window "
                     "starts, and batched windows are fixed beforehand (use --batch-size 1)")

    @classmethod
    def from_kwargs(cls, base: DecodeOptions | None = None, **changes: object) -> DecodeOptions:
        """`base` (or the defaults) with `changes`; an unknown name is a one-line error listing the known ones."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise NpuEpError(f"unknown decoding option {unknown[0]!r} (known: {', '.join(sorted(known))})")
        values = {f.name: getattr(base, f.name) for f in fields(cls)} if base else {}
        return cls(**{**values, **changes})


@dataclass
class DecodeResult:
    tokens: list[int]  # text and timestamp tokens (a prefix included), without <|endoftext|>
    avg_logprob: float
    no_speech_prob: float
    temperature: float
    compression_ratio: float
    no_speech: bool  # the window is taken for silence and skipped


def compression_ratio(text: str) -> float:
    """How well the text gzips: looping hallucinations compress far better than speech (> 2.4)."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def _logsumexp(logits: np.ndarray) -> np.ndarray:
    peak = logits.max(axis=-1, keepdims=True)
    return (peak + np.log(np.exp(logits - peak).sum(axis=-1, keepdims=True)))[..., 0]


# --- logit filters: `apply(logits [rows, vocab], tokens [rows, n])` masks in place; `tokens` is each
# row's window so far (a forced prefix, then what was sampled).


class SuppressTokens:
    """Tokens never sampled: the given ids (symbols, speaker tags, control tokens)."""

    def __init__(self, ids: np.ndarray) -> None:
        self.ids = ids

    def apply(self, logits: np.ndarray, tokens: np.ndarray) -> None:
        logits[:, self.ids] = _NEG_INF


class SuppressBlank:
    """The first sampled token is neither a blank nor the end of text."""

    def __init__(self, ids: list[int], sample_begin: int) -> None:
        self.ids = ids
        self.sample_begin = sample_begin

    def apply(self, logits: np.ndarray, tokens: np.ndarray) -> None:
        if tokens.shape[1] == self.sample_begin:
            logits[:, self.ids] = _NEG_INF


class ApplyTimestampRules:
    """Whisper's timestamp grammar: a window opens with a timestamp no later than `last_initial`;
    timestamps come in pairs (except right before the end), never go back, and a segment never has
    zero length; when the timestamps are jointly likelier than any one text token, a timestamp follows."""

    def __init__(self, timestamp_begin: int, eot: int, last_initial: int, vocab_size: int) -> None:
        self.tb = timestamp_begin
        self.eot = eot
        self.last_initial = last_initial
        self._offsets = np.arange(vocab_size - timestamp_begin)  # of each timestamp token from <|0.00|>

    def apply(self, logits: np.ndarray, tokens: np.ndarray) -> None:
        tb = self.tb
        if tokens.shape[1] == 0:
            # Begin with a timestamp no later than the limit (so never with text, a blank or the end).
            logits[:, :tb] = _NEG_INF
            logits[:, self.last_initial + 1 :] = _NEG_INF
            return
        is_timestamp = tokens[:, -2:] >= tb
        last = is_timestamp[:, -1]
        segment_end = np.zeros_like(last)
        if last.any():  # most steps follow a text token: nothing to pair then
            penultimate = is_timestamp[:, 0] if tokens.shape[1] > 1 else np.ones_like(last)
            logits[last & penultimate, tb:] = _NEG_INF  # a pair just closed: text (or the end) must follow
            segment_end = last & ~penultimate
            logits[segment_end, : self.eot] = _NEG_INF  # a segment just ended: its partner timestamp or the end
        # Timestamps never go back, and a segment never has zero length: the partner may repeat the last
        # timestamp, no other token may. Timestamps outrank every text token and never decrease, so a
        # row's largest token is its last timestamp (or, below <|0.00|>, masks nothing).
        bound = tokens.max(axis=1) + 1 - segment_end
        times = logits[:, tb:]
        times[self._offsets < (bound - tb)[:, None]] = _NEG_INF
        peak = times.max(axis=1)
        open_rows = peak > _NEG_INF
        if open_rows.any():
            with np.errstate(invalid="ignore"):
                total = peak + np.log(np.exp(times - peak[:, None]).sum(axis=1))
            logits[open_rows & (total > logits[:, :tb].max(axis=1)), :tb] = _NEG_INF


# --- token decoders: `update(tokens, logits)` appends each row's next token; `finalize` gives the
# candidate sequences (without the end token) and their summed log-probs.


class GreedyDecoder:
    """The likeliest token at temperature 0 (one row), else `rows` independent samples at `temperature`."""

    def __init__(self, temperature: float, rows: int, eot: int, rng: np.random.Generator) -> None:
        self.temperature = temperature
        self.rows = rows
        self.eot = eot
        self.rng = rng
        self.sum_logprobs = np.zeros(rows)
        self.done = np.zeros(rows, dtype=bool)

    def first_rows(self, logits: np.ndarray) -> np.ndarray:
        """The first step's logits, one row per sample (a copy: the filters write into it)."""
        return np.repeat(logits[None], self.rows, axis=0)

    def update(self, tokens: np.ndarray, logits: np.ndarray) -> tuple[np.ndarray, bool]:
        if self.temperature == 0:
            chosen = logits.argmax(axis=-1)
        else:  # Gumbel-max: a sample of softmax(logits / temperature)
            chosen = (logits / self.temperature + self.rng.gumbel(size=logits.shape)).argmax(axis=-1)
        logprobs = logits[np.arange(len(chosen)), chosen] - _logsumexp(logits)
        self.sum_logprobs += np.where(self.done, 0, logprobs)
        chosen = np.where(self.done, self.eot, chosen)
        self.done |= chosen == self.eot
        return np.concatenate([tokens, chosen[:, None]], axis=1), bool(self.done.all())

    def keep(self, rows: np.ndarray) -> None:
        """Follow only `rows` from now on (batched decoding drops the rows that have ended)."""
        self.rows = len(rows)
        self.sum_logprobs = self.sum_logprobs[rows]
        self.done = self.done[rows]

    def finalize(self, tokens: np.ndarray) -> list[tuple[list[int], float]]:
        candidates = []
        for row, sum_logprob in zip(tokens.tolist(), self.sum_logprobs):
            end = row.index(self.eot) if self.eot in row else len(row)
            candidates.append((row[:end], float(sum_logprob)))
        return candidates


class BeamSearchDecoder:
    """openai/whisper's beam search: `beam_size` live prefixes, stopping at `beam_size * patience` endings;
    the key/value caches of `state` follow the beams."""

    def __init__(self, beam_size: int, patience: float, eot: int, state: DecoderState) -> None:
        self.beam_size = beam_size
        self.eot = eot
        self.state = state
        self.max_finished = round(beam_size * patience)
        self.scores = [0.0]
        self.finished: dict[tuple[int, ...], float] = {}

    def first_rows(self, logits: np.ndarray) -> np.ndarray:
        return logits[None].copy()  # every beam holds the same prefix at first: expand from one row

    def update(self, tokens: np.ndarray, logits: np.ndarray) -> tuple[np.ndarray, bool]:
        beam_size = self.beam_size
        logprobs = logits - _logsumexp(logits)[:, None]
        best = np.argpartition(-logprobs, beam_size, axis=1)[:, : beam_size + 1]
        candidates: dict[tuple[int, ...], tuple[float, int]] = {}
        for row, (prefix, row_tokens) in enumerate(zip(tokens.tolist(), best.tolist())):
            for token in row_tokens:
                candidates[(*prefix, token)] = (self.scores[row] + float(logprobs[row, token]), row)
        beams, scores, rows = [], [], []
        for sequence, (score, row) in sorted(candidates.items(), key=lambda item: item[1][0], reverse=True):
            if sequence[-1] == self.eot:
                if len(self.finished) < self.max_finished:
                    self.finished[sequence[:-1]] = score
            else:
                beams.append(sequence)
                scores.append(score)
                rows.append(row)
                if len(beams) == beam_size:
                    break
        if len(self.finished) >= self.max_finished or not beams:
            return tokens, True  # `finished` holds the result
        while len(rows) < beam_size:  # fewer live candidates than rows: pad with copies of the best
            beams.append(beams[0])
            scores.append(scores[0])
            rows.append(rows[0])
        self.scores = scores
        self.state.reorder(rows)
        return np.array(beams, dtype=np.int64), False

    def finalize(self, tokens: np.ndarray) -> list[tuple[list[int], float]]:
        if self.finished:
            return [(list(sequence), score) for sequence, score in self.finished.items()]
        return [(row, score) for row, score in zip(tokens.tolist(), self.scores)]


class MaximumLikelihoodRanker:
    """The candidate with the best summed log-prob over a length norm: the token count, or Google NMT's
    ((5 + length) / 6) ** alpha with a length penalty alpha."""

    def __init__(self, length_penalty: float | None) -> None:
        self.length_penalty = length_penalty

    def rank(self, candidates: Sequence[tuple[list[int], float]], sampled_from: int = 0) -> int:
        """The index of the best candidate; lengths count only tokens from `sampled_from` on."""

        def score(index: int) -> float:
            tokens, sum_logprob = candidates[index]
            length = len(tokens) - sampled_from
            if self.length_penalty is None:
                return sum_logprob / max(length, 1)
            return sum_logprob / (((5 + length) / 6) ** self.length_penalty)

        return max(range(len(candidates)), key=score)


class Decoder:
    """Decodes windows of one model; the suppression index arrays are built once here, not per token."""

    def __init__(self, model: WhisperOnnx, tokenizer: WhisperTokenizer, seed: int = 0) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.sample_len = model.n_text_ctx // 2
        self._rng = np.random.default_rng(seed)
        self._suppress: dict[tuple[int, ...], np.ndarray] = {}
        self._blank = [*tokenizer.encode(" "), tokenizer.eot]

    def suppressed(self, suppress_tokens: tuple[int, ...]) -> np.ndarray:
        """The ids never sampled: `suppress_tokens` (-1: the model's list) and every control token
        (start, languages, tasks, <|notimestamps|>, ...); only text, the end and timestamps are sampled."""
        if suppress_tokens not in self._suppress:
            tokenizer = self.tokenizer
            ids = {t for t in suppress_tokens if t >= 0}
            if -1 in suppress_tokens:
                ids |= set(tokenizer.suppress_tokens)
            ids |= set(range(tokenizer.eot + 1, tokenizer.timestamp_begin))
            self._suppress[suppress_tokens] = np.array(
                sorted(t for t in ids if t < self.model.vocab_size), dtype=np.int64
            )
        return self._suppress[suppress_tokens]

    def detect_language(self, encoder_states) -> tuple[str, float]:
        """The likeliest language code of the window, and its probability among the languages."""
        logits = self.model.start([self.tokenizer.sot], encoder_states).logits
        codes = list(self.tokenizer.languages)
        scores = logits[0, list(self.tokenizer.languages.values())].astype(np.float64)
        probs = np.exp(scores - scores.max())
        probs /= probs.sum()
        best = int(probs.argmax())
        return codes[best], float(probs[best])

    def _opening(
        self, sot_sequence: list[int], prompt: Sequence[int], hotwords: Sequence[int], prefix: Sequence[int],
        timestamps: bool = True,
    ) -> tuple[list[int], list[int]]:
        """A window's opening tokens (the previous text, the start sequence, a forced prefix) and the forced part."""
        tokenizer = self.tokenizer
        if not timestamps:
            sot_sequence = [*sot_sequence, tokenizer.no_timestamps]
        context = list(hotwords[: self.sample_len - 1])
        room = self.sample_len - 1 - len(context)  # the latest of the text said before fills the rest
        context += prompt[len(prompt) - room :] if len(prompt) > room else list(prompt)
        forced = [*([tokenizer.timestamp_begin] if timestamps else []), *prefix[: self.sample_len - 1]] if len(prefix) else []
        return [*([tokenizer.sot_prev, *context] if context else []), *sot_sequence, *forced], forced

    def _no_speech_prob(self, opening_logits: np.ndarray) -> float:
        """The <|nospeech|> probability, read at <|startoftranscript|> (the first position of `opening_logits`:
        openings are run with logits from there on, the prompt before it needs none)."""
        at_sot = opening_logits[0].astype(np.float64)
        return float(np.exp(at_sot[self.tokenizer.no_speech] - _logsumexp(at_sot)))

    def _filters(self, options: DecodeOptions, n_forced: int, timestamps: bool = True) -> list:
        tokenizer = self.tokenizer
        suppressed = self.suppressed(options.suppress_tokens)
        if not timestamps:
            suppressed = np.concatenate([suppressed, np.arange(tokenizer.timestamp_begin, self.model.vocab_size)])
        filters = [SuppressTokens(suppressed)]
        if options.suppress_blank:
            filters.append(SuppressBlank(self._blank, n_forced))
        if not timestamps:
            return filters
        last_initial = tokenizer.timestamp_begin + round(options.max_initial_timestamp / TIMESTAMP_SECONDS)
        filters.append(ApplyTimestampRules(tokenizer.timestamp_begin, tokenizer.eot, last_initial, self.model.vocab_size))
        return filters

    def _result(
        self, tokens: list[int], sum_logprob: float, n_forced: int, temperature: float, no_speech_prob: float,
        options: DecodeOptions,
    ) -> tuple[DecodeResult, bool]:
        """A decoding attempt's result, and whether it stands (False: retry at the next temperature)."""
        avg_logprob = sum_logprob / (len(tokens) - n_forced + 1)
        too_unlikely = options.logprob_threshold is not None and avg_logprob < options.logprob_threshold
        # Skip the window as silence (openai/whisper's rule: a likely no-speech window is kept only if
        # what was decoded is likely enough).
        no_speech = (
            options.no_speech_threshold is not None and no_speech_prob > options.no_speech_threshold
            and not (options.logprob_threshold is not None and avg_logprob > options.logprob_threshold)
        )
        result = DecodeResult(tokens, avg_logprob, no_speech_prob, temperature,
                              compression_ratio(self.tokenizer.decode(tokens)), no_speech)
        too_repetitive = (
            options.compression_ratio_threshold is not None and result.compression_ratio > options.compression_ratio_threshold
        )
        # Silence ends the fallback: hotter attempts would only make up words.
        return result, (no_speech and too_unlikely) or not (too_repetitive or too_unlikely)

    def decode(
        self,
        encoder_states,
        sot_sequence: list[int],
        prompt: list[int],
        options: DecodeOptions,
        hotwords: Sequence[int] = (),
        prefix: Sequence[int] = (),
        timestamps: bool = True,
    ) -> DecodeResult:
        """Decode a window at rising temperatures until the result is neither repetitive nor unlikely.

        `prompt`: the text tokens said before (the latest are kept); `hotwords`: tokens put before
        them; `prefix`: text tokens the window's transcript is forced to start with; without
        `timestamps`, the text alone (after <|notimestamps|>).
        """
        tokenizer = self.tokenizer
        opening_tokens, forced = self._opening(sot_sequence, prompt, hotwords, prefix, timestamps)
        # The same prompt over the same audio: one pass for every attempt (only the sampling changes).
        opening = self.model.start(opening_tokens, encoder_states, opening_tokens.index(tokenizer.sot))
        no_speech_prob = self._no_speech_prob(opening.logits)
        max_len = min(self.sample_len, self.model.n_text_ctx - len(opening_tokens))
        filters = self._filters(options, len(forced), timestamps)
        ranker = MaximumLikelihoodRanker(options.length_penalty)
        result = None
        for temperature in options.temperature:
            if temperature == 0 and options.beam_size > 1:
                state = opening.state(options.beam_size)
                token_decoder = BeamSearchDecoder(options.beam_size, options.patience, tokenizer.eot, state)
            else:
                rows = 1 if temperature == 0 else options.best_of
                state = opening.state(rows)
                token_decoder = GreedyDecoder(temperature, rows, tokenizer.eot, self._rng)
            logits = token_decoder.first_rows(opening.logits[-1])
            tokens = np.tile(np.array(forced, dtype=np.int64), (len(logits), 1))
            for step in range(max_len):
                for logit_filter in filters:
                    logit_filter.apply(logits, tokens)
                tokens, completed = token_decoder.update(tokens, logits)
                if completed or step + 1 == max_len:
                    break
                logits = state.step(tokens[:, -1])
            candidates = token_decoder.finalize(tokens)
            best_tokens, sum_logprob = candidates[ranker.rank(candidates, len(forced))]
            result, stands = self._result(best_tokens, sum_logprob, len(forced), temperature, no_speech_prob, options)
            if stands:
                break
        return result

    def decode_batch(
        self,
        encoder_states,
        sot_sequences: list[list[int]],
        prompt: list[int],
        options: DecodeOptions,
        hotwords: Sequence[int] = (),
    ) -> list[DecodeResult]:
        """Decode several windows (`encoder_states` [windows, frames, d_model], one start sequence each), their
        text without timestamps: batched windows are fixed beforehand, and a window decoded with timestamps
        may end its text early, which the next window would pick up in sequential decoding but not here.

        Greedy search at temperature 0 runs over all of them at once, each row with its own key/value
        caches; once half the rows have ended, the ended ones are dropped from the batch, so finished
        windows stop costing decoder steps. A window whose result fails the thresholds is then decoded
        again on its own at the next temperatures, as `decode` would. Beam search and sampling decode
        one window at a time (on the batch's encoder states).
        """
        openings = [self._opening(sot, prompt, hotwords, (), timestamps=False)[0] for sot in sot_sequences]
        if options.temperature[0] != 0 or options.beam_size > 1 or len({len(o) for o in openings}) != 1:
            return [self.decode(window_states(encoder_states, i), sot, prompt, options, hotwords, timestamps=False)
                    for i, sot in enumerate(sot_sequences)]
        # Every row has the same prompt before its start sequence, so <|startoftranscript|> at the same position.
        logits, self_kv, cross_kv = self.model.start_rows(openings, encoder_states, openings[0].index(self.tokenizer.sot))
        no_speech_probs = [self._no_speech_prob(row) for row in logits]
        windows = len(openings)
        state = DecoderState(self.model, self_kv, cross_kv, windows)
        token_decoder = GreedyDecoder(0.0, windows, self.tokenizer.eot, self._rng)
        filters = self._filters(options, 0, timestamps=False)
        max_len = min(self.sample_len, self.model.n_text_ctx - len(openings[0]))
        rows = np.arange(windows)  # the window of each row still decoded
        tokens = np.zeros((windows, 0), dtype=np.int64)
        step_logits = logits[:, -1].copy()
        ended: dict[int, tuple[list[int], float]] = {}
        for step in range(max_len):
            for logit_filter in filters:
                logit_filter.apply(step_logits, tokens)
            tokens, completed = token_decoder.update(tokens, step_logits)
            if completed or step + 1 == max_len:
                break
            done = token_decoder.done
            if 2 * done.sum() >= len(done):
                # Copying the caches of the rows kept costs about one step: worth it once half have ended.
                for row, candidate, finished in zip(rows, token_decoder.finalize(tokens), done):
                    if finished:
                        ended[int(row)] = candidate
                keep = np.flatnonzero(~done)
                state, rows, tokens = state.select(keep), rows[keep], tokens[keep]
                token_decoder.keep(keep)
            step_logits = state.step(tokens[:, -1])
        ended.update({int(row): candidate for row, candidate in zip(rows, token_decoder.finalize(tokens))})
        results = []
        fallback = replace(options, temperature=options.temperature[1:]) if len(options.temperature) > 1 else None
        for window, sot in enumerate(sot_sequences):
            result, stands = self._result(*ended[window], 0, 0.0, no_speech_probs[window], options)
            if not stands and fallback is not None:
                result = self.decode(window_states(encoder_states, window), sot, prompt, fallback, hotwords,
                                     timestamps=False)
            results.append(result)
        return results
