"""A transcript in the shapes OpenAI's audio API returns: json, text, srt, vtt, verbose_json, and the
server-sent events of `stream=true`."""
from __future__ import annotations

import json
from typing import TYPE_CHECKING

from npu_ep.whisper.features import FRAME_SECONDS
from npu_ep.whisper.formats import render, transcript_text

if TYPE_CHECKING:
    from npu_ep.whisper.pipeline import Segment, TranscriptionInfo

RESPONSE_FORMATS = ("json", "text", "srt", "verbose_json", "vtt")
_MEDIA_TYPES = {"json": "application/json", "verbose_json": "application/json", "text": "text/plain; charset=utf-8",
                "srt": "text/plain; charset=utf-8", "vtt": "text/vtt; charset=utf-8"}


def media_type(fmt: str) -> str:
    return _MEDIA_TYPES[fmt]


def segment_body(index: int, segment: Segment) -> dict:
    """One segment as verbose_json lists it (`seek` is the frame the segment starts at)."""
    return {
        "id": index,
        "seek": round(segment.start / FRAME_SECONDS),
        "start": segment.start,
        "end": segment.end,
        "text": segment.text,
        "tokens": segment.tokens,
        "temperature": segment.temperature,
        "avg_logprob": segment.avg_logprob,
        "compression_ratio": segment.compression_ratio,
        "no_speech_prob": segment.no_speech_prob,
    }


def body(segments: list[Segment], info: TranscriptionInfo, fmt: str) -> str:
    """The response body for `fmt` (one of RESPONSE_FORMATS)."""
    text = transcript_text(segments)
    if fmt == "json":
        return json.dumps({"text": text}, ensure_ascii=False)
    if fmt == "text":
        return text + "\n"
    if fmt in ("srt", "vtt"):
        return render(segments, info, fmt)
    if fmt == "verbose_json":
        verbose = {
            "task": info.task,
            "language": info.language,
            "duration": round(info.duration, 3),
            "text": text,
            "segments": [segment_body(i, s) for i, s in enumerate(segments)],
        }
        if info.options.word_timestamps:  # asked for with timestamp_granularities[]=word
            verbose["words"] = [{"word": w.word, "start": w.start, "end": w.end}
                                for s in segments for w in (s.words or [])]
        return json.dumps(verbose, ensure_ascii=False)
    raise ValueError(f"unknown response format {fmt!r}")


def event(payload: dict) -> str:
    """One server-sent event carrying `payload` as its JSON data."""
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


def delta_event(index: int, segment: Segment) -> str:
    """A finished segment as OpenAI's `transcript.text.delta`; its id and times ride along for the page."""
    delta = segment.text.strip() if index == 0 else " " + segment.text.strip()
    return event({"type": "transcript.text.delta", "delta": delta, "segment_id": str(index),
                  "start": segment.start, "end": segment.end})


def done_event(segments: list[Segment]) -> str:
    return event({"type": "transcript.text.done", "text": transcript_text(segments)})
