"""`npu-ep quantize`: INT8 variants of an exported model (dynamic for the CPU, static QDQ for the NPU),
each checked against its float source before it is written."""
from __future__ import annotations

import argparse
from pathlib import Path

from npu_ep.quantize.build import DEFAULT_FORM, MODES, quantize_model
from npu_ep.quantize.dynamic import FORMS
from npu_ep.quantize.static import METHODS

__all__ = ["quantize_model", "add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="tiny.en", help="float model folder or known name (default: tiny.en)")
    parser.add_argument("--mode", choices=MODES, required=True,
                        help="dynamic: int8 weights, activations at run time (the CPU path); "
                             "static: calibrated int8 QDQ (the NPU's int8 kernels)")
    parser.add_argument("--calibration", nargs="+", metavar="DIR_OR_FILE",
                        help="audio for static calibration (default: every other clip of samples/)")
    parser.add_argument("--eval", nargs="+", metavar="DIR_OR_FILE", dest="evaluation",
                        help="audio for the accuracy report, minus any calibration clip (default: samples/)")
    parser.add_argument("--calibrate-method", choices=METHODS, default="minmax", help="activation ranges (default: minmax)")
    parser.add_argument("--exclude", nargs="*", metavar="PATTERN",
                        help="keep nodes whose '<file stem>:<node name>' contains this glob in float "
                             "(default: the nodes measured as the sensitive ones: for dynamic base's encoder fc2s, "
                             "none for other models; for static the last encoder layer's fc1 and fc2; --exclude alone: none)")
    parser.add_argument("--parts", nargs="+", choices=("encoder", "decoder"),
                        help="which models to quantize (default: both for dynamic, the encoder for static)")
    parser.add_argument("--form", choices=FORMS, default=DEFAULT_FORM, help=f"dynamic mode's int8 operator (default: {DEFAULT_FORM})")
    parser.add_argument("--per-tensor", action="store_true", help="one weight scale per matrix instead of per output channel")
    parser.add_argument("--max-wer-increase", type=float, default=1.0, metavar="POINTS",
                        help="refuse to write a model whose WER rises more than this (default: 1.0)")
    parser.add_argument("--force", action="store_true", help="replace an existing output folder; write despite a WER rise")
    parser.add_argument("--out", type=Path, help="output folder (default: models/<name>-int8-<mode>)")
    parser.add_argument("--sensitivity", action="store_true",
                        help="instead of writing a model, print how much quantizing each encoder MatMul alone "
                             "changes the encoder output")


def run(args: argparse.Namespace) -> int:
    if args.sensitivity:
        from npu_ep.quantize.sensitivity import format_sensitivity, measure_sensitivity

        print(format_sensitivity(measure_sensitivity(args.model, args.mode, args.calibration, args.evaluation,
                                                     args.calibrate_method, args.form, not args.per_tensor)))
        return 0
    from npu_ep.quantize.accuracy import format_report
    from npu_ep.quantize.folder import ACCURACY

    out, report = quantize_model(args.model, args.mode, args.out, calibration=args.calibration, evaluation=args.evaluation,
                                 method=args.calibrate_method, exclude=args.exclude, parts=args.parts,
                                 form=args.form, per_channel=not args.per_tensor,
                                 max_wer_increase=args.max_wer_increase, force=args.force)
    print(format_report(report))
    print(f"wrote {out} (report: {out / ACCURACY})")
    return 0
