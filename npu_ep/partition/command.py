"""`npu-ep partition --model DIR --device xdna1|xdna2|emulator [--report FILE]`: place each model
file's GEMMs, write partitioned copies beside the originals (for files with offloaded nodes) and a
placement report."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from npu_ep.errors import NpuEpError
from npu_ep.partition.profiles import PROFILES
from npu_ep.whisper.spec import ONNX_FILES
PROFILE_NAMES = tuple(PROFILES)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="tiny.en", help="tiny.en, base or an exported model folder (default: tiny.en)")
    parser.add_argument("--device", choices=PROFILE_NAMES, default="xdna1",
                        help="NPU profile to place for; emulator places like xdna1 (default: xdna1)")
    parser.add_argument("--report", type=Path,
                        help="placement report (markdown; .json and .png beside it) (default: MODEL/partition-DEVICE.md)")


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from npu_ep.export import resolve_model
    from npu_ep import calibrate
    from npu_ep.partition import report
    from npu_ep.partition.planner import partition_file

    folder = resolve_model(args.model)
    files = [folder / name for name in ONNX_FILES if (folder / name).exists()]
    if not files:
        raise NpuEpError(f"{folder}: no encoder/decoder ONNX files (export the model again: npu-ep export --model {args.model})")
    calibration = calibrate.calibration()
    plans = []
    for path in tqdm(files, desc=f"partition for {args.device}", unit="file", file=sys.stderr):
        written, plan = partition_file(path, args.device, lambda: calibration, force=True)
        plans.append(plan)
        where = f"{written}: " if written != path else f"{path}: no copy needed, it runs as it is; "
        tqdm.write(f"{where}{len(plan.offloaded)} of {len(plan.placements)} GEMMs on the NPU; predicted GEMM time "
                   f"{plan.cpu_ms:.1f} -> {plan.hybrid_ms:.1f} ms (projected by the cost model)", file=sys.stderr)
    target = args.report or folder / f"partition-{args.device}.md"
    try:
        written_files = report.write(plans, calibration, target)
    except OSError as error:
        raise NpuEpError(f"{target}: cannot write the report ({error.strerror or error}; choose another --report)") from None
    print(f"report: {', '.join(str(f) for f in written_files)}", file=sys.stderr)
    return 0
