#!/usr/bin/env python3
"""Same as `npu-ep export`: export a Whisper checkpoint to ONNX Runtime models (see --help)."""
import sys

from npu_ep.cli import main

if __name__ == "__main__":
    sys.exit(main(["export", *sys.argv[1:]]))
