"""Word timestamps the way Whisper defines them: align a window's text tokens to its audio frames.

One decoder pass over the window's text gives the cross-attention of the model's alignment heads
(softmax over the window's audio frames, normalised per frame across tokens, median-filtered along
time, averaged over heads). Dynamic time warping through that tokens x frames matrix gives each token
the frame where it starts; tokens are grouped into words, punctuation is attached to its neighbour, and
implausibly long words at pauses and segment edges are cut back as openai/whisper does.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from npu_ep.whisper.model import WhisperOnnx
from npu_ep.whisper.tokenizer import WhisperTokenizer

# Audio frames of the encoder output per second (two mel frames each).
_AUDIO_FRAMES_PER_SECOND = 50
_MEDIAN_FILTER_WIDTH = 7
PREPEND_PUNCTUATIONS = "\"'“¿([{-"
APPEND_PUNCTUATIONS = "\"'.。,，!！?？:：”)]}、"
_SENTENCE_END = ".。!！?？"


@dataclass
class Word:
    start: float
    end: float
    word: str  # with its leading space, so a segment's text is its words joined
    probability: float


@dataclass
class _Timing:
    word: str
    tokens: list[int]
    start: float
    end: float
    probability: float


def _find_alignment(
    model: WhisperOnnx,
    tokenizer: WhisperTokenizer,
    encoder_states,
    sot_sequence: list[int],
    text_tokens: list[int],
    frames: int,
    language: str | None,
) -> list[_Timing]:
    """Start, end (seconds into the window) and probability of each word of `text_tokens`."""
    if not text_tokens:
        return []
    from npu_ep.whisper.dtw import dtw, median_filter

    tokens = [*sot_sequence, tokenizer.no_timestamps, *text_tokens, tokenizer.eot]
    logits, scores = model.align(tokens, encoder_states)
    # The token probabilities of the text, as the model predicts each from those before it.
    text_logits = logits[len(sot_sequence) : len(sot_sequence) + len(text_tokens), : tokenizer.eot].astype(np.float64)
    text_logits -= text_logits.max(axis=-1, keepdims=True)
    chosen = text_logits[np.arange(len(text_tokens)), text_tokens]
    token_probs = np.exp(chosen) / np.exp(text_logits).sum(axis=-1)

    # Softmax over the window's own frames only (the rest of the 30 s is padding).
    weights = scores[:, :, : max(frames // 2, 1)].astype(np.float32)
    weights = np.exp(weights - weights.max(axis=-1, keepdims=True))
    weights /= weights.sum(axis=-1, keepdims=True)
    weights = (weights - weights.mean(axis=-2, keepdims=True)) / (weights.std(axis=-2, keepdims=True) + 1e-10)
    weights = median_filter(weights, _MEDIAN_FILTER_WIDTH)
    matrix = weights.mean(axis=0)[len(sot_sequence) : -1]
    token_index, frame_index = dtw(-matrix)

    words, word_tokens = tokenizer.split_to_word_tokens([*text_tokens, tokenizer.eot], language)
    if len(word_tokens) <= 1:
        return []
    boundaries = np.pad(np.cumsum([len(t) for t in word_tokens[:-1]]), (1, 0))
    # A token starts where the path first enters its row.
    jumps = np.pad(np.diff(token_index), (1, 0), constant_values=1).astype(bool)
    jump_times = frame_index[jumps] / _AUDIO_FRAMES_PER_SECOND
    starts = jump_times[boundaries[:-1]]
    ends = jump_times[boundaries[1:]]
    probabilities = [float(np.mean(token_probs[i:j])) for i, j in zip(boundaries[:-1], boundaries[1:])]
    return [
        _Timing(word, ids, float(start), float(end), probability)
        for word, ids, start, end, probability in zip(words, word_tokens, starts, ends, probabilities)
    ]


def _merge_punctuations(alignment: list[_Timing], prepended: str, appended: str) -> None:
    """Attach opening punctuation to the next word and closing punctuation to the previous one; the
    emptied entries stay (with their tokens) so the token counts per segment still add up."""
    i = len(alignment) - 2
    j = len(alignment) - 1
    while i >= 0:
        previous, following = alignment[i], alignment[j]
        if previous.word.startswith(" ") and previous.word.strip() in prepended:
            following.word = previous.word + following.word
            following.tokens = previous.tokens + following.tokens
            previous.word, previous.tokens = "", []
        else:
            j = i
        i -= 1
    i, j = 0, 1
    while j < len(alignment):
        previous, following = alignment[i], alignment[j]
        if not previous.word.endswith(" ") and following.word in appended:
            previous.word = previous.word + following.word
            previous.tokens = previous.tokens + following.tokens
            following.word, following.tokens = "", []
        else:
            i = j
        j += 1


def align_words(
    model: WhisperOnnx,
    tokenizer: WhisperTokenizer,
    encoder_states,
    sot_sequence: list[int],
    segments: list,
    frames: int,
    time_offset: float,
    last_speech_timestamp: float,
    language: str | None = None,
    prepend_punctuations: str = PREPEND_PUNCTUATIONS,
    append_punctuations: str = APPEND_PUNCTUATIONS,
) -> float:
    """Give each of one window's `segments` (objects with tokens, start, end, words) its words, and set its
    start and end to its first word's start and last word's end. `frames`: mel frames of audio in the
    window, which starts at `time_offset` seconds. Returns the new end of the last speech."""
    per_segment = [[t for t in segment.tokens if t < tokenizer.eot] for segment in segments]
    alignment = _find_alignment(
        model, tokenizer, encoder_states, sot_sequence, [t for ts in per_segment for t in ts], frames, language
    )
    durations = np.array([t.end - t.start for t in alignment])
    durations = durations[durations.nonzero()]
    median_duration = min(0.7, float(np.median(durations))) if len(durations) else 0.0
    max_duration = median_duration * 2
    if len(durations):
        # A sentence-ending mark that DTW stretched over a pause is cut back to a plausible length.
        for i in range(1, len(alignment)):
            if alignment[i].end - alignment[i].start > max_duration:
                if alignment[i].word in _SENTENCE_END:
                    alignment[i].end = alignment[i].start + max_duration
                elif alignment[i - 1].word in _SENTENCE_END:
                    alignment[i].start = alignment[i].end - max_duration
    _merge_punctuations(alignment, prepend_punctuations, append_punctuations)

    index = 0
    for segment, text_tokens in zip(segments, per_segment):
        used = 0
        words: list[Word] = []
        while index < len(alignment) and used < len(text_tokens):
            timing = alignment[index]
            if timing.word:
                words.append(Word(round(time_offset + timing.start, 2), round(time_offset + timing.end, 2),
                                  timing.word, round(timing.probability, 4)))
            used += len(timing.tokens)
            index += 1
        if words:
            _trim_edges(segment, words, last_speech_timestamp, median_duration, max_duration)
            last_speech_timestamp = segment.end
        segment.words = words
    return last_speech_timestamp


def _trim_edges(segment, words: list[Word], last_speech: float, median_duration: float, max_duration: float) -> None:
    """openai/whisper's fixes for words DTW stretched over a pause, then the segment spans its words."""
    first = words[0]
    # After a pause, the first (and second) word is no longer than twice the median word.
    if first.end - last_speech > median_duration * 4 and (
        first.end - first.start > max_duration or (len(words) > 1 and words[1].end - first.start > max_duration * 2)
    ):
        if len(words) > 1 and words[1].end - words[1].start > max_duration:
            boundary = max(words[1].end / 2, words[1].end - max_duration)
            first.end = words[1].start = boundary
        first.start = max(0.0, first.end - max_duration)
    # A first or last word reaching half a second past the decoded segment boundary is cut to it.
    if segment.start < first.end and segment.start - 0.5 > first.start:
        first.start = max(0.0, min(first.end - median_duration, segment.start))
    last = words[-1]
    if segment.end > last.start and segment.end + 0.5 < last.end:
        last.end = max(last.start + median_duration, segment.end)
    segment.start, segment.end = first.start, last.end
