"""`npu-ep` command line: each subcommand lives in its feature's module.

A command module defines ``add_arguments(parser)`` and ``run(args) -> int`` and keeps heavy
imports (torch, onnxruntime) inside functions, so `npu-ep --help` stays instant.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from npu_ep.errors import NpuEpError

COMMANDS: dict[str, tuple[str, str]] = {
    "transcribe": ("npu_ep.whisper.command", "transcribe audio files to text or subtitles"),
    "batch": ("npu_ep.batch.command", "transcribe a whole archive on local Ray workers or a Ray cluster, resumably"),
    "export": ("npu_ep.export.command", "export a Whisper checkpoint to ONNX models"),
    "partition": ("npu_ep.partition.command", "place a model's MatMuls on the NPU or CPU and rewrite it"),
    "quantize": ("npu_ep.quantize", "make INT8 variants of an exported model, with an accuracy report"),
    "bench": ("npu_ep.bench", "compare speed, accuracy and memory of the engines on the same files"),
    "kernels": ("npu_ep.kernel_build", "build the NPU kernels the partitioned models use (needs mlir-aie)"),
    "serve": ("npu_ep.server.command", "serve OpenAI's audio transcription API and a web page on a local port"),
    "info": ("npu_ep.info", "show versions, exported models and NPU devices"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="npu-ep", description="Whisper on ONNX Runtime with an XDNA NPU provider.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        command = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(command)
        command.set_defaults(_run=module.run)
    return parser


def _attach_log_handler(args: argparse.Namespace) -> tuple[logging.Handler, int]:
    """The library logs under "npu_ep" and attaches no handler; the command line shows its messages on
    stderr, as "npu-ep: <message>", from INFO up (WARNING up with --quiet, DEBUG with NPU_EP_DEBUG)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("npu-ep: %(message)s"))
    logger = logging.getLogger("npu_ep")
    previous = logger.level
    level = logging.WARNING if getattr(args, "quiet", False) else logging.INFO
    logger.setLevel(logging.DEBUG if os.environ.get("NPU_EP_DEBUG") else level)
    logger.addHandler(handler)
    return handler, previous


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler, previous_level = _attach_log_handler(args)
    try:
        return int(args._run(args) or 0)
    except NpuEpError as error:
        if os.environ.get("NPU_EP_DEBUG"):
            raise
        print(f"npu-ep: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("npu-ep: interrupted", file=sys.stderr)
        return 130
    finally:  # in-process callers (tests, scripts) get the logger back as it was
        logging.getLogger("npu_ep").removeHandler(handler)
        logging.getLogger("npu_ep").setLevel(previous_level)


if __name__ == "__main__":
    sys.exit(main())
