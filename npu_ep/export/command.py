"""`npu-ep export --model NAME|DIR|HUB_ID [--out DIR] [--opset N] [--force]`."""
from __future__ import annotations

import argparse
from pathlib import Path

from npu_ep.export.weights import KNOWN_MODELS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        required=True,
        help=f"a known model ({', '.join(KNOWN_MODELS)}), a Hugging Face or CTranslate2 Whisper folder, "
        "or a hub id such as openai/whisper-small (needs the network)",
    )
    parser.add_argument("--out", type=Path, help="output folder (default: models/NAME)")
    parser.add_argument("--opset", type=int, help="ONNX opset (default: the exporter's choice for Whisper)")
    parser.add_argument("--force", action="store_true", help="rebuild even if the folder is up to date")


def run(args: argparse.Namespace) -> int:
    from npu_ep.export import export_model

    print(export_model(args.model, out_dir=args.out, opset=args.opset, force=args.force))
    return 0
