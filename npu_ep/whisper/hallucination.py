"""Rules against text the model makes up rather than hears.

- `hallucination_silence_threshold` (`skip_silence`), as openai/whisper has it: Whisper tends to invent
  text in long pauses. With word timestamps, a segment whose words are unlikely, very short or very long
  is an anomaly; one surrounded by more than `threshold` seconds of silence (or by other anomalies) is
  dropped, and decoding resumes after the silence instead of trusting it.
- Prompt copying (`repeats_prompt`): prompted with the text before it, a window may open by saying the
  prompt's last sentence again, over audio that says something else, and then skip ahead. The pipeline
  decodes such a window again without the prompt; speech that really repeats itself is heard again then.
"""
from __future__ import annotations

from dataclasses import dataclass

from npu_ep.metrics import normalize_text
from npu_ep.whisper.alignment import APPEND_PUNCTUATIONS, PREPEND_PUNCTUATIONS, Word
from npu_ep.whisper.features import FRAME_SECONDS

_PUNCTUATION = PREPEND_PUNCTUATIONS + APPEND_PUNCTUATIONS


def _word_anomaly(word: Word) -> float:
    duration = word.end - word.start
    score = 1.0 if word.probability < 0.15 else 0.0
    if duration < 0.133:
        score += (0.133 - duration) * 15
    if duration > 2.0:
        score += duration - 2.0
    return score


def is_anomaly(segment) -> bool:
    """Whether a segment's first (up to 8) words look hallucinated."""
    if segment is None or not segment.words:
        return False
    words = [word for word in segment.words if word.word not in _PUNCTUATION][:8]
    score = sum(_word_anomaly(word) for word in words)
    return score >= 3 or score + 0.01 >= len(words)


def repeats_prompt(segments: list, previous_text: str) -> bool:
    """Whether a window's first segment says again `previous_text`, the last segment before the window."""
    first = next((segment for segment in segments if segment.text.strip()), None)
    return first is not None and normalize_text(first.text) == normalize_text(previous_text) != []


def _next_with_words(segments: list):
    return next((segment for segment in segments if segment.words), None)


@dataclass
class Verdict:
    segments: list  # what to keep of the window
    seek: int  # mel frame to decode from next
    redo: bool  # drop the whole window and decode again from `seek`


def skip_silence(
    segments: list,
    threshold: float,
    seek: int,
    frames: int,
    next_seek: int,
    single_timestamp_ending: bool,
    last_speech: float,
    content_frames: int,
) -> Verdict:
    """Apply the rule to one window's segments (with words): window at mel frame `seek`, `frames` long;
    `next_seek` is where decoding would go on; `last_speech` the end of the last speech before it."""
    time_offset = seek * FRAME_SECONDS
    window_end = (seek + frames) * FRAME_SECONDS
    ends = [segment.words[-1].end for segment in segments if segment.words]
    if not single_timestamp_ending and ends and ends[-1] > time_offset:
        # Resume at the last word if a long pause follows it, else after the whole window.
        next_seek = round(ends[-1] / FRAME_SECONDS) if window_end - ends[-1] > threshold else seek + frames
    first = _next_with_words(segments)
    if is_anomaly(first) and first.start - time_offset > threshold:
        return Verdict([], seek + round((first.start - time_offset) / FRAME_SECONDS), True)
    previous_end = last_speech
    for index, segment in enumerate(segments):
        if not segment.words:
            continue
        if is_anomaly(segment):
            following = _next_with_words(segments[index + 1 :])
            next_start = following.words[0].start if following is not None else window_end
            silence_before = (segment.start - previous_end > threshold or segment.start < threshold
                              or segment.start - time_offset < 2.0)
            silence_after = next_start - segment.end > threshold or is_anomaly(following) or window_end - segment.end < 2.0
            if silence_before and silence_after:
                next_seek = round(max(time_offset + 1, segment.start) / FRAME_SECONDS)
                if content_frames * FRAME_SECONDS - segment.end < threshold:
                    next_seek = content_frames
                return Verdict(segments[:index], next_seek, False)
        previous_end = segment.end
    return Verdict(segments, next_seek, False)
