"""Peak memory and time of one transcription with the decoders as one merged session or as two sessions.

On the CPU the pipeline opens a folder's two decoder graphs as one session (`session.create_merged_decoder`);
this measures what that saves against two sessions of their own.

    python scripts/decoder_sessions.py CLIP models/tiny.en-int8-dynamic models/base-int8-dynamic \\
        [--runs 2] [--threads 2]

Each run is a fresh process per form (peak RSS is per process): it loads the folder, transcribes CLIP
greedily and prints its peak RSS, its transcription time and whether its text matches the other form's.
Load each folder once beforehand: the first load makes the merged graph, and that process peaks higher.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = """
import json, resource, sys, time
import npu_ep.session
from npu_ep.whisper.pipeline import Pipeline
if sys.argv[3] == "two":
    npu_ep.session.create_merged_decoder = lambda *args, **kwargs: None
pipeline = Pipeline(sys.argv[2], threads=int(sys.argv[4]))
started = time.perf_counter()
segments, _ = pipeline.transcribe(sys.argv[1], temperature=0.0, progress=False)
seconds = time.perf_counter() - started
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"peak": peak, "seconds": seconds, "text": " ".join(s.text for s in segments)}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("clip", help="audio file to transcribe")
    parser.add_argument("folders", nargs="+", help="model folders")
    parser.add_argument("--runs", type=int, default=2, help="processes per form (default: 2)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    from npu_ep.machine import cpu

    print(f"CPU: {cpu().describe()}; {args.threads} threads; {args.clip}")
    for folder in args.folders:
        for run in range(args.runs):
            results = {}
            for form in ("merged", "two"):  # alternating, so drift in the machine's speed hits both
                child = subprocess.run([sys.executable, "-c", CHILD, args.clip, folder, form, str(args.threads)],
                                       capture_output=True, text=True, check=True)
                results[form] = json.loads(child.stdout.splitlines()[-1])
            same = results["merged"]["text"] == results["two"]["text"]
            print(f"{folder} run {run + 1}: " + "; ".join(
                f"{form} peak {r['peak']:.0f} MB, {r['seconds']:.2f} s" for form, r in results.items())
                + f"; same text: {'yes' if same else 'NO'}")


if __name__ == "__main__":
    main()
