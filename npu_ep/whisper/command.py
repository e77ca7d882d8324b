"""`npu-ep transcribe FILE...`: speech to text, subtitles or JSON, one file after another."""
from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path

from npu_ep.errors import NpuEpError
from npu_ep.whisper.decoding import DecodeOptions
from npu_ep.whisper.formats import ALL, FORMATS


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _boolean(text: str) -> bool:
    """True/False as the `whisper` CLI spells them (also yes/no, 1/0)."""
    value = text.strip().lower()
    if value in ("true", "yes", "1"):
        return True
    if value in ("false", "no", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got {text!r}")


def _optional_float(text: str) -> float | None:
    """A number, or None to switch the rule off."""
    return None if text.strip().lower() == "none" else float(text)


def _numbers(kind: type):
    def parse(text: str) -> tuple:
        try:
            return tuple(kind(part) for part in text.split(",") if part.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None

    return parse


def _option(group, name: str, help_text: str, **kwargs) -> None:
    """A decoding option under its hyphenated name and the `whisper` CLI's underscored one; left out of
    the namespace when not given, so `DecodeOptions`' own defaults apply (they are the ones shown)."""
    default = getattr(DecodeOptions, name, None)
    shown = f" (default: {default})" if "(default:" not in help_text else ""
    spellings = [f"--{name.replace('_', '-')}"] + ([f"--{name}"] if "_" in name else [])
    kwargs.setdefault("metavar", "VALUE" if "choices" not in kwargs else None)
    group.add_argument(*spellings, dest=name, default=argparse.SUPPRESS, help=help_text + shown, **kwargs)


def _json_object(text: str) -> dict:
    import json

    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f'expected a JSON object such as {{"min_silence_duration_ms": 500}}, got {text!r}')
    return value


def add_transcription_arguments(parser: argparse.ArgumentParser, formats: tuple[str, ...] = FORMATS) -> None:
    """Model, device, output-format and decoding options: shared by `npu-ep transcribe` and `npu-ep batch`."""
    parser.add_argument("--model", default="tiny.en", help="tiny.en, base or an exported model folder (default: tiny.en)")
    parser.add_argument("--device", default="cpu", help="auto, cpu, npu or emulator (default: cpu)")
    parser.add_argument("--format", choices=formats, default="txt", help="output format (default: txt)")
    group = parser.add_argument_group("decoding (the whisper CLI's underscored names work too)")
    _option(group, "language", "spoken language code, e.g. en, de (default: detected on multilingual models)")
    _option(group, "task", "translate means into English", choices=("transcribe", "translate"))
    _option(group, "beam_size", "beam width at temperature 0; 1 is greedy search", type=positive_int)
    _option(group, "best_of", "samples per window at a temperature above 0", type=positive_int)
    _option(group, "patience", "beam search stops at beam_size * patience finished candidates", type=float)
    _option(group, "length_penalty", "rank by ((5 + length) / 6) ** alpha instead of the token count", type=_optional_float)
    _option(group, "temperature", "first temperature (default: 0)", type=float)
    _option(group, "temperature_increment_on_fallback",
            "temperature step when a window fails a threshold; 0 or none: no fallback (default: 0.2)",
            type=_optional_float)
    _option(group, "compression_ratio_threshold", "retry hotter above this gzip ratio; none: off", type=_optional_float)
    _option(group, "logprob_threshold", "retry hotter below this mean log-prob; none: off", type=_optional_float)
    _option(group, "no_speech_threshold", "skip a window above this no-speech probability; none: off",
            type=_optional_float)
    _option(group, "condition_on_previous_text", "prompt each window with the text before it (True/False)",
            type=_boolean)
    _option(group, "prompt_reset_on_temperature", "no prompt after a window decoded above this temperature",
            type=float)
    _option(group, "initial_prompt", "text said before the first window (names, spelling, style)")
    _option(group, "prefix", "text the first window's transcript starts with")
    _option(group, "hotwords", "words or phrases to prefer, in every window's prompt (not with --prefix)")
    _option(group, "suppress_tokens",
            "comma-separated token ids never sampled; -1: the model's symbols (write --suppress-tokens=-1,...)",
            type=_numbers(int))
    _option(group, "suppress_blank", "never start a window with a blank (True/False)", type=_boolean)
    _option(group, "max_initial_timestamp", "the first timestamp of a window comes before this (seconds)", type=float)
    _option(group, "multilingual", "detect the language of every window (multilingual models)", type=_boolean,
            nargs="?", const=True)
    _option(group, "language_detection_threshold", "stop detecting at a language likelier than this",
            type=_optional_float)
    _option(group, "language_detection_segments", "windows looked at, at most, to detect the language", type=positive_int)
    _option(group, "clip_timestamps", "start,end,... seconds to decode; an odd count runs to the end",
            type=_numbers(float))
    _option(group, "word_timestamps", "word-level times and probabilities (json words, word-level subtitles)",
            type=_boolean, nargs="?", const=True)
    _option(group, "prepend_punctuations", "with word timestamps: marks joined to the next word")
    _option(group, "append_punctuations", "with word timestamps: marks joined to the previous word")
    _option(group, "hallucination_silence_threshold",
            "with word timestamps: skip silences over this many seconds around likely made-up text", type=float)
    group.add_argument("--vad", "--vad-filter", "--vad_filter", dest="vad_filter", type=_boolean, nargs="?", const=True,
                       default=argparse.SUPPRESS, metavar="VALUE",
                       help="transcribe only the speech Silero VAD finds (default: False)")
    _option(group, "vad_parameters", 'VAD options as JSON, e.g. {"min_silence_duration_ms": 500} (default: faster-whisper\'s)',
            type=_json_object)
    _option(group, "batch_size", "windows decoded together; above 1, windows are fixed 30 s steps (VAD "
            "chunks with --vad), decoded without the text before them, one segment each, and the windows of several "
            "files share batches", type=int)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", metavar="FILE", help="audio files (wav, flac, ogg, mp3; any rate and channels)")
    add_transcription_arguments(parser, (*FORMATS, ALL))
    parser.add_argument("--output-dir", type=Path,
                        help="write FILE's stem + .FORMAT here (inputs from several folders keep their folders) "
                             "instead of printing to stdout, where txt, srt, vtt and tsv come segment by segment as "
                             "they are decoded and json once each file is done; --format all writes every format")
    subtitles = parser.add_argument_group("word-level subtitles (srt, vtt; need --word-timestamps True)")
    subtitles.add_argument("--highlight-words", "--highlight_words", type=_boolean, nargs="?", const=True, default=False,
                           metavar="VALUE", help="one cue per word, the word underlined (default: False)")
    subtitles.add_argument("--max-line-width", "--max_line_width", type=positive_int, metavar="N",
                           help="characters per line")
    subtitles.add_argument("--max-line-count", "--max_line_count", type=positive_int, metavar="N",
                           help="lines per cue (with --max-line-width)")
    parser.add_argument("--threads", type=positive_int, help="CPU threads for ONNX Runtime (default: all cores)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or per-file summaries on stderr")


def decoding_options(args: argparse.Namespace) -> dict:
    """The `DecodeOptions` fields given on the command line (keywords of `Pipeline.transcribe`), checked
    here, before any model loads."""
    given = {name: getattr(args, name) for name in DecodeOptions.__dataclass_fields__ if hasattr(args, name)}
    if hasattr(args, "temperature") or hasattr(args, "temperature_increment_on_fallback"):
        # The whisper CLI's ladder: temperature, temperature + increment, ... up to 1.
        first = given.get("temperature", 0.0)
        increment = getattr(args, "temperature_increment_on_fallback", 0.2)
        if increment is not None and increment < 0:
            raise NpuEpError(f"--temperature-increment-on-fallback {increment}: must be positive (or 0 for none)")
        steps = math.floor((1.0 - first) / increment + 1e-6) if increment and first < 1.0 else 0
        given["temperature"] = tuple(round(first + k * increment, 6) for k in range(steps + 1))
    DecodeOptions(**given)
    return given


def output_names(files: list[str], output_dir: Path) -> dict[str, Path]:
    """Each input's output path without the format's suffix: its stem in `output_dir`, under the input's
    folder relative to the inputs' common folder. Two inputs that would still share a name (a/x.wav and
    a/x.mp3) are a one-line error naming both, before anything is transcribed."""
    import os

    folders = [os.path.dirname(os.path.abspath(file)) for file in files if file != "-"]
    common = os.path.commonpath(folders) if folders else ""
    names: dict[str, Path] = {}
    taken: dict[Path, str] = {}
    for file in files:
        if file == "-":
            relative = Path("stdin")
        else:
            absolute = os.path.abspath(file)
            relative = Path(os.path.relpath(os.path.dirname(absolute), common)) / Path(absolute).stem
        target = output_dir / relative
        if target in taken and taken[target] != file:
            raise NpuEpError(f"{taken[target]} and {file} would both be written to {target}.* "
                             "(rename one, or transcribe them in separate runs)")
        taken[target] = file
        names[file] = target
    return names


def subtitle_options(args: argparse.Namespace, options: DecodeOptions):
    """The word-level subtitle options, refused in one line without word timestamps."""
    from npu_ep.whisper.formats import SubtitleOptions

    given = [name for name, value in (("--highlight-words", args.highlight_words), ("--max-line-width", args.max_line_width),
                                      ("--max-line-count", args.max_line_count)) if value]
    if given and not options.word_timestamps:
        raise NpuEpError(f"{given[0]} needs --word-timestamps True (subtitle lines are cut at word times)")
    return SubtitleOptions(args.max_line_width, args.max_line_count, args.highlight_words)


def run(args: argparse.Namespace) -> int:
    from npu_ep.whisper.audio import display_name
    from npu_ep.whisper.formats import render, render_iter
    from npu_ep.whisper.pipeline import Pipeline

    options = DecodeOptions(**decoding_options(args))
    subtitles = subtitle_options(args, options)
    formats = FORMATS if args.format == ALL else (args.format,)
    if args.format == ALL and args.output_dir is None:
        raise NpuEpError("--format all writes one file per format: give --output-dir")
    names = output_names(args.files, args.output_dir) if args.output_dir is not None else {}
    if args.output_dir is not None:
        try:
            args.output_dir.mkdir(parents=True, exist_ok=True)
            tempfile.NamedTemporaryFile(dir=args.output_dir, prefix=".npu-ep-probe-").close()  # writable, before any work
        except OSError as error:
            raise NpuEpError(
                f"{args.output_dir}: cannot write the output folder ({error.strerror or error}; "
                "choose another --output-dir)"
            ) from None
    pipeline = Pipeline(args.model, args.device, args.threads)
    pipeline.check(options)  # once, not once per file
    failed = 0

    def write(file: str, segments: list, info) -> None:
        if args.output_dir is None:
            sys.stdout.write(render(segments, info, args.format, subtitles))
            sys.stdout.flush()
            return
        for fmt in formats:
            target = names[file].with_name(f"{names[file].name}.{fmt}")
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(render(segments, info, fmt, subtitles), encoding="utf-8")
            except OSError as error:
                raise NpuEpError(
                    f"{display_name(target)}: cannot write the transcript of {display_name(file)} ({error.strerror or error}; "
                    "choose another --output-dir)"
                ) from None
        if not args.quiet:
            print(
                f"npu-ep: {display_name(file)} -> {display_name(target)} ({info.duration:.1f} s of audio, {info.timing.realtime:.1f}x realtime)",
                file=sys.stderr,
            )

    if options.batch_size > 1 and len(args.files) > 1:
        # The files' windows share batches: each file is written once all its windows are decoded.
        for result in pipeline.transcribe_many(args.files, options):
            try:
                if result.error is not None:
                    raise result.error
                write(result.audio, result.segments, result.info)
            except NpuEpError as error:
                print(f"npu-ep: error: {error}", file=sys.stderr)
                failed += 1
        return 2 if failed else 0
    for file in args.files:
        try:
            stream, info = pipeline.transcribe_iter(file, options, progress=not args.quiet)
            if args.output_dir is None:
                # On stdout, each line or cue as soon as its segment is decoded (json once the file is done).
                for piece in render_iter(stream, info, args.format, subtitles):
                    sys.stdout.write(piece)
                    sys.stdout.flush()
                continue
            write(file, list(stream), info)
        except NpuEpError as error:
            print(f"npu-ep: error: {error}", file=sys.stderr)
            failed += 1
    return 2 if failed else 0
