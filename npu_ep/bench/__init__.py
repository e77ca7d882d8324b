"""`npu-ep bench`: speed, accuracy and memory of every engine on the same files, in one run.

    npu-ep bench --suite default
    npu-ep bench clip.wav other.flac --refs refs.json --models tiny.en,base --beam-size 1,5
    npu-ep bench --suite long --engines ours-int8-batched,faster-whisper-int8-batched --batch-size 8
"""
from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
from pathlib import Path

from npu_ep.bench.shapes import SHAPES
from npu_ep.errors import NpuEpError

log = logging.getLogger(__name__)

DEFAULT_ENGINES = "ours-fp32,ours-int8,ours-emulator,faster-whisper-int8,faster-whisper-fp32,optimum-ort"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="*", type=Path, metavar="FILE", help="audio files to transcribe")
    parser.add_argument("--suite", help="a built-in set of clips with references instead of FILEs: default, or long "
                        "(over ten minutes of speech in one recording, for the batched engines)")
    parser.add_argument("--models", default="tiny.en", help="comma-separated model names or folders (default: tiny.en)")
    parser.add_argument("--engines", default=DEFAULT_ENGINES, help=f"comma-separated engines (default: {DEFAULT_ENGINES})")
    parser.add_argument("--beam-size", default="1", help="comma-separated beam sizes, 1 = greedy (default: 1)")
    parser.add_argument("--batch-size", type=int, default=8,
                        help="windows decoded together by the *-batched engines (default: 8, faster-whisper's)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="CPU threads for every engine (default: all cores)")
    parser.add_argument("--repeat", type=int, default=3, help="timed rounds after one warm-up; the median is shown (default: 3)")
    parser.add_argument("--refs", type=Path, help="JSON file mapping audio file name -> reference transcript (for WER)")
    parser.add_argument("--shapes", default=",".join(SHAPES),
                        help="random-weight models shaped like these checkpoints, projected in the NPU section; "
                             f"'none' for none (default: {','.join(SHAPES)}; built once under NPU_EP_CACHE)")
    parser.add_argument("--out", type=Path, default=Path("bench-out"), help="folder for bench.json, bench.png and logs (default: bench-out)")


def _csv(value: str, option: str) -> list[str]:
    items = [item.strip() for item in value.split(",") if item.strip()]
    if not items:
        raise NpuEpError(f"{option} {value!r}: empty list (give comma-separated values)")
    return list(dict.fromkeys(items))


def _inputs(args: argparse.Namespace) -> tuple[list[Path], dict[str, str]]:
    from npu_ep.bench.suite import build_suite
    from npu_ep.metrics import load_references

    if args.suite and args.files:
        raise NpuEpError("give either audio FILEs or --suite, not both")
    if args.suite:
        files, references = build_suite(args.suite)
    elif args.files:
        files, references = args.files, {}
    else:
        raise NpuEpError("nothing to bench (give audio FILEs, or --suite default)")
    for path in files:
        if not path.is_file():
            raise NpuEpError(f"{path}: no such audio file")
    if len({path.name for path in files}) != len(files):
        raise NpuEpError("two FILEs share a file name (results and references are keyed by name: rename one)")
    if args.refs:
        given = load_references(args.refs)
        # A reference may be keyed by the file's name or by the path as given on the command line.
        references.update({path.name: given[key] for path in files for key in (str(path), path.name) if key in given})
    return list(files), references


def _models(value: str) -> dict[str, Path]:
    """--models as {name: exported folder}. A folder goes by its own name, which must be unique: results,
    logs and the int8 variant looked up for it are keyed by that name."""
    from npu_ep.export import resolve_model

    given: dict[str, str] = {}
    for entry in _csv(value, "--models"):
        name = Path(entry).name if Path(entry).is_dir() else entry
        if name in given:
            raise NpuEpError(f"--models: {given[name]} and {entry} are both named {name} (results are keyed by "
                             "model name: give each model once, or rename one of the folders)")
        given[name] = entry
    return {name: resolve_model(entry) for name, entry in given.items()}


def _shapes(value: str) -> list[str]:
    if value == "none":
        return []
    shapes = _csv(value, "--shapes")
    unknown = [shape for shape in shapes if shape not in SHAPES]
    if unknown:
        raise NpuEpError(f"--shapes: unknown {', '.join(unknown)} (known: {', '.join(SHAPES)}, or none)")
    return shapes


def _npu_section(model_dirs: dict[str, Path], shapes: list[str]) -> tuple[str, dict]:
    """The provider's NPU figures (emulated dispatch overhead, projected XDNA encoder times), labelled."""
    from npu_ep.bench.npu import npu_report

    log.info("measuring the NPU provider section (emulated dispatches, cost-model projections)")
    try:
        return npu_report(list(model_dirs.values()), shapes)
    except Exception as error:  # a secondary section must not throw away the engines' measurements
        note = f"NPU section not produced: {type(error).__name__}: {error}"
        return note, {"error": note}


def run(args: argparse.Namespace) -> int:
    from npu_ep.bench.engines import ENGINES
    from npu_ep.bench import report as reports
    from npu_ep.bench.runner import measure, summarize
    from npu_ep.machine import cpu

    engines = _csv(args.engines, "--engines")
    unknown = [engine for engine in engines if engine not in ENGINES]
    if unknown:
        raise NpuEpError(f"--engines: unknown engine {', '.join(unknown)} (known: {', '.join(ENGINES)})")
    try:
        beam_sizes = [int(beam) for beam in _csv(args.beam_size, "--beam-size")]
    except ValueError:
        raise NpuEpError(f"--beam-size {args.beam_size!r}: not a comma-separated list of whole numbers") from None
    if min(beam_sizes) < 1:
        raise NpuEpError(f"--beam-size {args.beam_size}: beam sizes must be 1 or more")
    if args.repeat < 1 or args.threads < 1:
        raise NpuEpError("--repeat and --threads must be 1 or more")
    from npu_ep.whisper.decoding import DecodeOptions

    DecodeOptions(batch_size=args.batch_size)  # a bad --batch-size is a one-line error before any work
    files, references = _inputs(args)
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise NpuEpError(f"{args.out}: cannot create the output folder ({error.strerror})") from None

    models = _models(args.models)
    shapes = _shapes(args.shapes)
    runs, machine = measure(files, models, engines, beam_sizes, args.threads, args.repeat, args.out / "logs",
                            args.batch_size)
    durations = machine.pop("durations")
    results = [summarize(one, durations, references) for one in runs]
    npu_markdown, npu_data = _npu_section(models, shapes)
    report = {
        "settings": {
            "models": {name: str(path) for name, path in models.items()}, "engines": engines,
            "beam_sizes": beam_sizes, "batch_size": args.batch_size, "threads": args.threads, "repeat": args.repeat,
            "suite": args.suite, "references": bool(references),
        },
        "machine": {**machine, "cpu": cpu().as_dict(), "platform": platform.platform(), "python": platform.python_version()},
        "files": [{"file": path.name, "path": str(path), "audio_seconds": durations[path.name],
                   "reference": references.get(path.name)} for path in files],
        "target_ratios": reports.add_ratios(results, references),
        "int8_targets": reports.int8_targets(results, references),
        "results": results,
        "npu": npu_data,
        "npu_markdown": npu_markdown,
    }
    text = reports.markdown(report)
    reports.write_json(report, args.out / "bench.json")
    reports.write_png(report, args.out / "bench.png")
    (args.out / "bench.md").write_text(text)
    sys.stdout.write(text)
    print(f"wrote {args.out / 'bench.json'}, {args.out / 'bench.png'} and {args.out / 'bench.md'}", file=sys.stderr)
    return 0
