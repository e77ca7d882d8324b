"""Our fp32 pipeline against faster-whisper float32 on the same files, threads and greedy search.

Runs alternate (ours, theirs, ours, ...) so a busy machine slows both alike; prints the best of N
per engine and stage, and the speed ratio. Usage: python scripts/transcribe_speed.py FILE... [--threads 2]
"""
from __future__ import annotations

import argparse
import time

import npu_ep
from npu_ep.export import ct2_model_dir


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("files", nargs="+")
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    from faster_whisper import WhisperModel

    ours = npu_ep.Pipeline(args.model, "cpu", args.threads)
    theirs = WhisperModel(str(ct2_model_dir(args.model)), device="cpu", compute_type="float32", cpu_threads=args.threads)
    for file in args.files:
        best = {"ours": float("inf"), "faster-whisper": float("inf")}
        stages = None
        for _ in range(args.repeats):
            segments, info = ours.transcribe(file, progress=False)
            if info.timing.total < best["ours"]:
                best["ours"], stages, text = info.timing.total, info.timing, " ".join(s.text.strip() for s in segments)
            started = time.perf_counter()
            fw_segments, fw_info = theirs.transcribe(file, beam_size=1)
            fw_text = " ".join(s.text.strip() for s in fw_segments)  # segments are lazy: decoding happens here
            best["faster-whisper"] = min(best["faster-whisper"], time.perf_counter() - started)
        duration = info.duration
        print(f"{file} ({duration:.1f} s, {args.threads} threads, greedy, best of {args.repeats})")
        print(f"  ours           {best['ours']:.3f} s  {duration / best['ours']:6.1f}x realtime  "
              f"[features {stages.features:.3f}  encoder {stages.encoder:.3f}  decoder {stages.decoder:.3f}]  {text}")
        print(f"  faster-whisper {best['faster-whisper']:.3f} s  {duration / best['faster-whisper']:6.1f}x realtime  {fw_text}")
        print(f"  ours / faster-whisper speed: {best['faster-whisper'] / best['ours']:.2f}")


if __name__ == "__main__":
    main()
