#!/usr/bin/env python3
"""Same as `npu-ep quantize`: INT8 variants of an exported model, with an accuracy report (see --help)."""
import sys

from npu_ep.cli import main

if __name__ == "__main__":
    sys.exit(main(["quantize", *sys.argv[1:]]))
