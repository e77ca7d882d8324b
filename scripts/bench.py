"""Run `npu-ep bench` from a source checkout without installing the console script.

    python scripts/bench.py --suite default --models tiny.en,base
"""
import sys

from npu_ep.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
