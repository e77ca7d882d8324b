"""Transcript writers: plain text, SubRip (srt), WebVTT, tab-separated (tsv) and JSON (scores, words, timing).

With word timestamps, subtitles are built from the words as openai/whisper's writers build them:
lines up to `max_line_width` characters, cues of up to `max_line_count` lines (a pause over 3 s also
starts a new cue), and with `highlight_words` one cue per word with that word underlined.
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Iterator

if TYPE_CHECKING:  # the CLI reads FORMATS for --help without loading the pipeline
    from npu_ep.whisper.pipeline import Segment, TranscriptionInfo

FORMATS = ("txt", "srt", "vtt", "tsv", "json")
ALL = "all"  # every format, one file each
_LONG_PAUSE = 3.0


@dataclass(frozen=True)
class SubtitleOptions:
    max_line_width: int | None = None  # characters per line (words needed)
    max_line_count: int | None = None  # lines per cue (words needed)
    highlight_words: bool = False  # underline each word as it is spoken (words needed)


def _clock(seconds: float, decimal: str) -> str:
    millis = round(seconds * 1000)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal}{millis:03d}"


def transcript_text(segments: list[Segment]) -> str:
    """The whole transcript as one line of text."""
    return " ".join(segment.text.strip() for segment in segments)


def _word_cues(segments: list[Segment], options: SubtitleOptions) -> Iterator[list[tuple[float, float, str]]]:
    """Cues as lists of (start, end, text) words, a line break written into a word's text as "\\n"."""
    # Without both limits, cues keep to the segments.
    keep_segments = options.max_line_width is None or options.max_line_count is None
    width = options.max_line_width if options.max_line_width is not None else 1000
    cue: list[tuple[float, float, str]] = []
    line_length, line_count = 0, 1
    last = segments[0].words[0].start if segments and segments[0].words else 0.0
    for segment in segments:
        for i, word in enumerate(segment.words or []):
            text = word.word
            long_pause = not keep_segments and word.start - last > _LONG_PAUSE
            segment_break = keep_segments and i == 0 and bool(cue)
            if line_length > 0 and line_length + len(text) <= width and not long_pause and not segment_break:
                line_length += len(text)
            else:
                text = text.strip()
                if cue and (segment_break or (options.max_line_count is not None
                                              and (long_pause or line_count >= options.max_line_count))):
                    yield cue
                    cue, line_count = [], 1
                elif line_length > 0:
                    line_count += 1
                    text = "\n" + text
                line_length = len(text.strip())
            cue.append((word.start, word.end, text))
            last = word.start
    if cue:
        yield cue


def _cues(segments: list[Segment], options: SubtitleOptions) -> Iterator[tuple[float, float, str]]:
    """(start, end, text) of each subtitle cue."""
    if not any(segment.words for segment in segments):
        for segment in segments:
            yield segment.start, segment.end, segment.text.strip().replace("-->", "->")
        return
    for cue in _word_cues(segments, options):
        text = "".join(word for _, _, word in cue)
        if not options.highlight_words:
            yield cue[0][0], cue[-1][1], text
            continue
        last = cue[0][0]
        for i, (start, end, _) in enumerate(cue):
            if start > last:
                yield last, start, text
            yield start, end, "".join(
                re.sub(r"^(\s*)(.*)$", r"\1<u>\2</u>", word) if j == i else word for j, (_, _, word) in enumerate(cue)
            )
            last = end


def render(segments: list[Segment], info: TranscriptionInfo, fmt: str, subtitles: SubtitleOptions = SubtitleOptions()) -> str:
    """The transcript in `fmt` (one of FORMATS), ending with a newline."""
    if fmt == "txt":
        return "".join(f"{segment.text.strip()}\n" for segment in segments)
    if fmt == "srt":
        return "\n".join(
            f"{i}\n{_clock(start, ',')} --> {_clock(end, ',')}\n{text}\n"
            for i, (start, end, text) in enumerate(_cues(segments, subtitles), 1)
        )
    if fmt == "vtt":
        cues = "".join(f"{_clock(start, '.')} --> {_clock(end, '.')}\n{text}\n\n" for start, end, text in _cues(segments, subtitles))
        return f"WEBVTT\n\n{cues}"
    if fmt == "tsv":
        # openai/whisper's columns: integer milliseconds, text without tabs.
        rows = "".join(
            f"{round(1000 * s.start)}\t{round(1000 * s.end)}\t{s.text.strip().replace(chr(9), ' ')}\n" for s in segments
        )
        return f"start\tend\ttext\n{rows}"
    if fmt == "json":
        document = {
            "text": transcript_text(segments),
            # "words" only with word timestamps, as openai/whisper writes it.
            "segments": [
                {"id": i, **{k: v for k, v in asdict(segment).items() if k != "words" or v is not None}}
                for i, segment in enumerate(segments)
            ],
            **{key: value for key, value in asdict(info).items() if key != "timing"},
            "timing": {key: round(value, 4) for key, value in asdict(info.timing).items()},
        }
        return json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    raise ValueError(f"unknown format {fmt!r}")
