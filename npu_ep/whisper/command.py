"""`npu-ep transcribe FILE...`: speech to text, subtitles or JSON, one file after another."""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from npu_ep.errors import NpuEpError
from npu_ep.whisper.formats import FORMATS


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_transcription_arguments(parser: argparse.ArgumentParser) -> None:
    """Model, device, decoding and output-format options: shared by `npu-ep transcribe` and `npu-ep batch`."""
    parser.add_argument("--model", default="tiny.en", help="tiny.en, base or an exported model folder (default: tiny.en)")
    parser.add_argument("--device", default="cpu", help="auto, cpu, npu or emulator (default: cpu)")
    parser.add_argument("--beam-size", type=positive_int, default=1, help="beam width; 1 is greedy search (default: 1)")
    parser.add_argument("--language", help="spoken language code, e.g. en, de (default: detected on multilingual models)")
    parser.add_argument("--task", choices=("transcribe", "translate"), default="transcribe", help="translate means into English")
    parser.add_argument("--format", choices=FORMATS, default="txt", help="output format (default: txt)")


def decoding_options(args: argparse.Namespace) -> dict:
    """The keyword arguments of `Pipeline.transcribe` that the shared options set."""
    return {"language": args.language, "task": args.task, "beam_size": args.beam_size}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", metavar="FILE", help="audio files (wav, flac, ogg, mp3; any rate and channels)")
    add_transcription_arguments(parser)
    parser.add_argument("--output-dir", type=Path, help="write FILE's stem + .FORMAT here instead of printing to stdout")
    parser.add_argument("--threads", type=positive_int, help="CPU threads for ONNX Runtime (default: all cores)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or per-file summaries on stderr")


def run(args: argparse.Namespace) -> int:
    from npu_ep.whisper.formats import render
    from npu_ep.whisper.pipeline import Pipeline

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
    pipeline.tokenizer.check_language(args.language, args.task)  # once, not once per file
    failed = 0
    for file in args.files:
        try:
            segments, info = pipeline.transcribe(file, **decoding_options(args), progress=not args.quiet)
            output = render(segments, info, args.format)
            if args.output_dir is None:
                sys.stdout.write(output)
                sys.stdout.flush()
                continue
            target = args.output_dir / f"{Path(file).stem}.{args.format}"
            try:
                target.write_text(output, encoding="utf-8")
            except OSError as error:
                raise NpuEpError(
                    f"{target}: cannot write the transcript of {file} ({error.strerror or error}; "
                    "choose another --output-dir)"
                ) from None
            if not args.quiet:
                print(
                    f"npu-ep: {file} -> {target} ({info.duration:.1f} s of audio, {info.timing.realtime:.1f}x realtime)",
                    file=sys.stderr,
                )
        except NpuEpError as error:
            print(f"npu-ep: error: {error}", file=sys.stderr)
            failed += 1
    return 2 if failed else 0
