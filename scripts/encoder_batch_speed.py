"""Encoder time for N windows: one run of the whole batch against N runs of one window, per model folder.

Batched mode runs the encoder one window per run; this measures what that costs against a batched run.

    python scripts/encoder_batch_speed.py models/tiny.en-int8-dynamic models/base-int8-dynamic \\
        [--windows 8] [--rounds 4] [--threads 2]

The sessions are the product's (`Pipeline(folder).model`), fed random features; rounds alternate the two
ways, and the best round of each is printed with the CPU.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from npu_ep.machine import cpu
from npu_ep.whisper.pipeline import Pipeline
from npu_ep.whisper.spec import ENCODER_OUTPUT, INPUT_FEATURES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", help="model folders")
    parser.add_argument("--windows", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    print(f"CPU: {cpu().describe()}; {args.windows} windows, best of {args.rounds} rounds, {args.threads} threads")
    for folder in args.folders:
        model = Pipeline(folder, threads=args.threads).model
        features = np.random.default_rng(0).standard_normal((args.windows, model.n_mels, 3000)).astype(np.float32)

        def batched() -> None:
            model.encoder.run([ENCODER_OUTPUT], {INPUT_FEATURES: features})

        def per_window() -> None:
            model.encode_batch(features)

        times: dict[str, list[float]] = {"one run": [], "one run per window": []}
        batched()  # warm-up: first-run allocations
        for _ in range(args.rounds):
            for name, run in (("one run", batched), ("one run per window", per_window)):
                start = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - start)
        one, each = min(times["one run"]), min(times["one run per window"])
        print(f"{folder}: one run {one:.2f} s, one run per window {each:.2f} s ({each / one:.2f}×)")


if __name__ == "__main__":
    main()
