"""Decoding one 30 s window: greedy, sampling and beam search over the cached decoder, with Whisper's rules.

The rules are openai/whisper's: suppressed tokens, begin-suppress, timestamp pairing and ordering, the
first timestamp within 1 s, "timestamps win when they are jointly likelier than any text token",
temperature fallback on a too-repetitive (gzip compression ratio) or too-unlikely (average log-prob)
result, and the no-speech probability read at <|startoftranscript|>.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from npu_ep.whisper.model import DecoderState, Opening, WhisperOnnx
from npu_ep.whisper.tokenizer import WhisperTokenizer

TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
TIMESTAMP_SECONDS = 0.02
_NEG_INF = np.float32(-np.inf)


@dataclass
class DecodeOptions:
    """How to decode; the defaults are openai/whisper's `transcribe` defaults, except greedy search."""

    task: str = "transcribe"
    beam_size: int = 1
    best_of: int = 5
    patience: float = 1.0
    temperatures: tuple[float, ...] = TEMPERATURES
    compression_ratio_threshold: float | None = 2.4
    logprob_threshold: float | None = -1.0
    no_speech_threshold: float | None = 0.6


@dataclass
class DecodeResult:
    tokens: list[int]  # text and timestamp tokens, without <|endoftext|>
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


class Decoder:
    """Decodes windows of one model; the suppression index arrays are built once here, not per token."""

    def __init__(self, model: WhisperOnnx, tokenizer: WhisperTokenizer, seed: int = 0) -> None:
        self.model = model
        self.tokenizer = tokenizer
        tb = tokenizer.timestamp_begin
        self._tb = tb
        self._eot = tokenizer.eot
        # Every control token (start, languages, tasks, <|notimestamps|>, ...) is never sampled, only
        # text, <|endoftext|> and timestamps are.
        suppress = set(tokenizer.suppress_tokens) | set(range(tokenizer.eot + 1, tb))
        self._suppress = np.array(sorted(t for t in suppress if t < model.vocab_size), dtype=np.int64)
        self._last_initial = tb + tokenizer.max_initial_timestamp_index
        self.sample_len = model.n_text_ctx // 2
        self._rng = np.random.default_rng(seed)

    def detect_language(self, encoder_states) -> tuple[str, float]:
        """The likeliest language code of the window, and its probability among the languages."""
        logits = self.model.start([self.tokenizer.sot], encoder_states).logits
        codes = list(self.tokenizer.languages)
        scores = logits[0, list(self.tokenizer.languages.values())].astype(np.float64)
        probs = np.exp(scores - scores.max())
        probs /= probs.sum()
        best = int(probs.argmax())
        return codes[best], float(probs[best])

    def decode(
        self, encoder_states, sot_sequence: list[int], prompt: list[int], options: DecodeOptions
    ) -> DecodeResult:
        """Decode a window at rising temperatures until the result is neither repetitive nor unlikely."""
        prefix = sot_sequence
        if prompt:
            prefix = [self.tokenizer.sot_prev, *prompt[-(self.sample_len - 1) :], *sot_sequence]
        # The same prompt over the same audio: one pass for every attempt (only the sampling changes).
        opening = self.model.start(prefix, encoder_states)
        at_sot = opening.logits[prefix.index(self.tokenizer.sot)].astype(np.float64)
        no_speech_prob = float(np.exp(at_sot[self.tokenizer.no_speech] - _logsumexp(at_sot)))
        max_len = min(self.sample_len, self.model.n_text_ctx - len(prefix))
        result = None
        for temperature in options.temperatures:
            tokens, sum_logprob = self._attempt(opening, max_len, temperature, options)
            text = self.tokenizer.decode(tokens)
            avg_logprob = sum_logprob / (len(tokens) + 1)
            too_unlikely = options.logprob_threshold is not None and avg_logprob < options.logprob_threshold
            # Skip the window as silence (openai/whisper's rule: a likely no-speech window is kept only if
            # what was decoded is likely enough).
            no_speech = (
                options.no_speech_threshold is not None and no_speech_prob > options.no_speech_threshold
                and not (options.logprob_threshold is not None and avg_logprob > options.logprob_threshold)
            )
            result = DecodeResult(tokens, avg_logprob, no_speech_prob, temperature, compression_ratio(text), no_speech)
            too_repetitive = (
                options.compression_ratio_threshold is not None
                and result.compression_ratio > options.compression_ratio_threshold
            )
            # Silence ends the fallback: hotter attempts would only make up words.
            if (no_speech and too_unlikely) or not (too_repetitive or too_unlikely):
                break
        return result

    def _attempt(
        self, opening: Opening, max_len: int, temperature: float, options: DecodeOptions
    ) -> tuple[list[int], float]:
        """Tokens and their summed log-prob: beam search at temperature 0 if asked for, else sampling."""
        first = opening.logits[-1]
        if temperature == 0 and options.beam_size > 1:
            state = opening.state(options.beam_size)
            return self._beam_search(state, first, max_len, options.beam_size, options.patience)
        n = 1 if temperature == 0 else options.best_of
        return self._sample(opening.state(n), first, max_len, temperature, n)

    def _apply_rules(self, logits: np.ndarray, sequences: list[list[int]], step: int) -> None:
        """Mask, in place, what each row may not emit next (logits [rows, vocab], generated tokens per row)."""
        tb, eot = self._tb, self._eot
        logits[:, self._suppress] = _NEG_INF
        if step == 0:
            # Begin with a timestamp no later than 1 s (so never with text, a blank or the end).
            logits[:, :tb] = _NEG_INF
            logits[:, self._last_initial + 1 :] = _NEG_INF
            return
        for row, sequence in zip(logits, sequences):
            last_was_timestamp = sequence[-1] >= tb
            penultimate_was_timestamp = len(sequence) < 2 or sequence[-2] >= tb
            if last_was_timestamp:
                if penultimate_was_timestamp:
                    row[tb:] = _NEG_INF  # a pair just closed: text (or the end) must follow
                else:
                    row[:eot] = _NEG_INF  # a segment just ended: its partner timestamp or the end
            last_timestamp = next((t for t in reversed(sequence) if t >= tb), None)
            if last_timestamp is not None:
                # Timestamps never go back, and a segment never has zero length.
                row[tb : last_timestamp if last_was_timestamp and not penultimate_was_timestamp else last_timestamp + 1] = (
                    _NEG_INF
                )
            times = row[tb:]
            peak = times.max()
            if peak > _NEG_INF and peak + np.log(np.exp(times - peak).sum()) > row[:tb].max():
                row[:tb] = _NEG_INF

    def _sample(
        self, state: DecoderState, first: np.ndarray, max_len: int, temperature: float, n: int
    ) -> tuple[list[int], float]:
        """Greedy (temperature 0, one row) or `n` independent samples; the best by mean log-prob."""
        eot = self._eot
        logits = np.repeat(first[None], n, axis=0)
        sequences: list[list[int]] = [[] for _ in range(n)]
        sum_logprobs = np.zeros(n)
        done = np.zeros(n, dtype=bool)
        for step in range(max_len):
            self._apply_rules(logits, sequences, step)
            if temperature == 0:
                tokens = logits.argmax(axis=-1)
            else:
                tokens = (logits / temperature + self._rng.gumbel(size=logits.shape)).argmax(axis=-1)
            logprobs = logits[np.arange(n), tokens] - _logsumexp(logits)
            for row in np.flatnonzero(~done):
                token = int(tokens[row])
                sum_logprobs[row] += logprobs[row]
                if token == eot:
                    done[row] = True
                else:
                    sequences[row].append(token)
            if done.all() or step + 1 == max_len:
                break
            logits = state.step(np.where(done, eot, tokens))
        best = max(range(n), key=lambda row: sum_logprobs[row] / max(len(sequences[row]), 1))
        return sequences[best], float(sum_logprobs[best])

    def _beam_search(
        self, state: DecoderState, first: np.ndarray, max_len: int, beam_size: int, patience: float
    ) -> tuple[list[int], float]:
        """openai/whisper's beam search: keep `beam_size` live prefixes, stop at beam_size * patience endings."""
        eot = self._eot
        beams: list[list[int]] = [[]]  # all rows hold the same prefix at first: expand from one
        scores = [0.0]
        finished: dict[tuple[int, ...], float] = {}
        max_finished = round(beam_size * patience)
        logits = first[None].copy()
        for step in range(max_len):
            self._apply_rules(logits, beams, step)
            logprobs = logits - _logsumexp(logits)[:, None]
            candidates: dict[tuple[int, ...], tuple[float, int]] = {}
            for row, beam in enumerate(beams):
                for token in np.argpartition(-logprobs[row], beam_size)[: beam_size + 1]:
                    candidates[(*beam, int(token))] = (scores[row] + float(logprobs[row, token]), row)
            beams, scores, rows = [], [], []
            for sequence, (score, row) in sorted(candidates.items(), key=lambda item: item[1][0], reverse=True):
                if sequence[-1] == eot:
                    if len(finished) < max_finished:
                        finished[sequence[:-1]] = score
                else:
                    beams.append(list(sequence))
                    scores.append(score)
                    rows.append(row)
                    if len(beams) == beam_size:
                        break
            if len(finished) >= max_finished or not beams or step + 1 == max_len:
                break
            while len(rows) < beam_size:  # fewer live candidates than rows: pad with copies of the best
                beams.append(beams[0])
                scores.append(scores[0])
                rows.append(rows[0])
            state.reorder(rows)
            logits = state.step(np.array([beam[-1] for beam in beams], dtype=np.int64))
        if not finished:
            finished = {tuple(beam): score for beam, score in zip(beams, scores)}
        # openai's ranking without a length penalty: the best mean log-prob per token.
        best = max(finished, key=lambda sequence: finished[sequence] / max(len(sequence), 1))
        return list(best), finished[best]
