"""`npu-ep batch INPUT... --output-dir OUT`: a whole archive on local Ray workers or a Ray cluster."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from npu_ep.whisper.command import add_transcription_arguments, decoding_options, positive_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="audio files, folders (searched recursively) or .txt/.csv lists of paths")
    parser.add_argument("--output-dir", type=Path, required=True,
                        help="outputs keep each input's path below the inputs' common folder; "
                             "the results manifest npu-ep-batch.jsonl goes here too")
    add_transcription_arguments(parser)
    parser.add_argument("--workers", type=positive_int,
                        help="worker processes, each loading the model once (default: as many as the cores allow)")
    parser.add_argument("--threads-per-worker", type=positive_int, default=1,
                        help="ONNX Runtime threads (and Ray CPUs) per worker (default: 1)")
    parser.add_argument("--ray", metavar="ADDRESS",
                        help="run on an existing Ray cluster: auto or host:port (default: a local Ray runtime)")
    parser.add_argument("--retries", type=int, default=2,
                        help="times a file is retried when its worker dies, before it is recorded failed (default: 2)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or summary on stderr")


def run(args: argparse.Namespace) -> int:
    from npu_ep.batch import transcribe_batch

    summary = transcribe_batch(
        args.inputs, args.output_dir, model=args.model, device=args.device, format=args.format,
        workers=args.workers, threads_per_worker=args.threads_per_worker, ray_address=args.ray,
        retries=max(0, args.retries), progress=not args.quiet, **decoding_options(args),
    )
    if not args.quiet:
        speed = summary.audio_seconds / summary.wall_seconds if summary.wall_seconds else 0.0
        print(f"npu-ep: batch: {summary.done} done, {summary.failed} failed, {summary.skipped} already done; "
              f"{tqdm.format_interval(summary.audio_seconds)} of audio in {tqdm.format_interval(summary.wall_seconds)} "
              f"({speed:.1f}x realtime, {summary.workers} workers); results in {summary.manifest}", file=sys.stderr)
    return 2 if summary.failed else 0
