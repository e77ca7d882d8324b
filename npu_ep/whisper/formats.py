"""Transcript writers: plain text, SubRip (srt), WebVTT, tab-separated (tsv) and JSON (scores, words, timing).

With word timestamps, subtitles are built from the words as openai/whisper's writers build them:
lines up to `max_line_width` characters, cues of up to `max_line_count` lines (a pause over 3 s also
starts a new cue), and with `highlight_words` one cue per word with that word underlined.
"""
from __future__ import annotations

import itertools
import json
import re
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Iterable, Iterator

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


def _word_cues(segments: Iterable[Segment], options: SubtitleOptions) -> Iterator[list[tuple[float, float, str]]]:
    """Cues as lists of (start, end, text) words, a line break written into a word's text as "\\n"; each
    cue as soon as its last word is known (at the end of its segment when cues keep to the segments)."""
    # Without both limits, cues keep to the segments.
    keep_segments = options.max_line_width is None or options.max_line_count is None
    width = options.max_line_width if options.max_line_width is not None else 1000
    cue: list[tuple[float, float, str]] = []
    line_length, line_count = 0, 1
    last = 0.0
    for segment in segments:
        for word in segment.words or []:
            text = word.word
            long_pause = not keep_segments and word.start - last > _LONG_PAUSE
            if line_length > 0 and line_length + len(text) <= width and not long_pause:
                line_length += len(text)
            else:
                text = text.strip()
                if cue and options.max_line_count is not None and (long_pause or line_count >= options.max_line_count):
                    yield cue
                    cue, line_count = [], 1
                elif line_length > 0:
                    line_count += 1
                    text = "\n" + text
                line_length = len(text.strip())
            cue.append((word.start, word.end, text))
            last = word.start
        if keep_segments and cue:
            yield cue
            cue, line_length, line_count = [], 0, 1
    if cue:
        yield cue


def _cues(segments: Iterable[Segment], options: SubtitleOptions) -> Iterator[tuple[float, float, str]]:
    """(start, end, text) of each subtitle cue, as the segments arrive: one per segment, or cut at word
    times when the segments have words (the first segment tells)."""
    segments = iter(segments)
    first = next(segments, None)
    if first is None:
        return
    segments = itertools.chain([first], segments)
    if first.words is None:
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


def render_iter(segments: Iterable[Segment], info: TranscriptionInfo, fmt: str,
                subtitles: SubtitleOptions = SubtitleOptions()) -> Iterator[str]:
    """The transcript in `fmt` (one of FORMATS) in pieces, each as soon as the segments it needs have come
    from `segments` (an iterator of them streams); json, one document, comes once they all have."""
    if fmt == "txt":
        for segment in segments:
            yield f"{segment.text.strip()}\n"
    elif fmt == "srt":
        for i, (start, end, text) in enumerate(_cues(segments, subtitles), 1):
            yield f"{'' if i == 1 else chr(10)}{i}\n{_clock(start, ',')} --> {_clock(end, ',')}\n{text}\n"
    elif fmt == "vtt":
        yield "WEBVTT\n\n"
        for start, end, text in _cues(segments, subtitles):
            yield f"{_clock(start, '.')} --> {_clock(end, '.')}\n{text}\n\n"
    elif fmt == "tsv":
        # openai/whisper's columns: integer milliseconds, text without tabs.
        yield "start\tend\ttext\n"
        for s in segments:
            yield f"{round(1000 * s.start)}\t{round(1000 * s.end)}\t{s.text.strip().replace(chr(9), ' ')}\n"
    elif fmt == "json":
        segments = list(segments)
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
        yield json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    else:
        raise ValueError(f"unknown format {fmt!r}")


def render(segments: Iterable[Segment], info: TranscriptionInfo, fmt: str,
           subtitles: SubtitleOptions = SubtitleOptions()) -> str:
    """The transcript in `fmt` (one of FORMATS), ending with a newline."""
    return "".join(render_iter(segments, info, fmt, subtitles))
