"""Transcript writers: plain text, SubRip (srt), WebVTT and JSON (with scores and the stage timing)."""
from __future__ import annotations

import json
from dataclasses import asdict
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the CLI reads FORMATS for --help without loading the pipeline
    from npu_ep.whisper.pipeline import Segment, TranscriptionInfo

FORMATS = ("txt", "srt", "vtt", "json")


def _clock(seconds: float, decimal: str) -> str:
    millis = round(seconds * 1000)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal}{millis:03d}"


def transcript_text(segments: list[Segment]) -> str:
    """The whole transcript as one line of text."""
    return " ".join(segment.text.strip() for segment in segments)


def render(segments: list[Segment], info: TranscriptionInfo, fmt: str) -> str:
    """The transcript in `fmt` (one of FORMATS), ending with a newline."""
    if fmt == "txt":
        return "".join(f"{segment.text.strip()}\n" for segment in segments)
    if fmt == "srt":
        return "\n".join(
            f"{i}\n{_clock(s.start, ',')} --> {_clock(s.end, ',')}\n{s.text.strip()}\n" for i, s in enumerate(segments, 1)
        )
    if fmt == "vtt":
        cues = "".join(f"{_clock(s.start, '.')} --> {_clock(s.end, '.')}\n{s.text.strip()}\n\n" for s in segments)
        return f"WEBVTT\n\n{cues}"
    if fmt == "json":
        document = {
            "text": transcript_text(segments),
            "segments": [{"id": i, **asdict(segment)} for i, segment in enumerate(segments)],
            **{key: value for key, value in asdict(info).items() if key != "timing"},
            "timing": {key: round(value, 4) for key, value in asdict(info.timing).items()},
        }
        return json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    raise ValueError(f"unknown format {fmt!r}")
