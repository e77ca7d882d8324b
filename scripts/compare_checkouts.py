"""Transcription speed of two (or more) checkouts of npu_ep on the same files, in interleaved rounds.

Each checkout runs in its own process (its folder first on PYTHONPATH, so its `npu_ep` is the one
imported), loads its model folder once, and times `Pipeline.transcribe` per file from inside that
process. Rounds alternate which checkout goes first, so drift in the machine's load falls on both.

    python scripts/compare_checkouts.py --threads 2 --repeat 5 \\
        --checkout main=/tmp/main:models/tiny.en --checkout before=/tmp/old:/tmp/old-tiny.en FILE...

A checkout is NAME=FOLDER:MODEL (MODEL: a model folder, or a name the checkout resolves). The first
checkout is compared to each other: per round, the ratio of its total wall time to theirs, then the
median ratio with the rounds' spread. Transcripts that differ between checkouts are reported.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

WORKER = r"""
import json, sys, time
import npu_ep
pipeline = npu_ep.Pipeline(sys.argv[1], threads=int(sys.argv[2]))
print(json.dumps({"ready": npu_ep.__file__}), flush=True)
for line in sys.stdin:
    path = json.loads(line)
    wall, cpu = time.perf_counter(), time.process_time()
    segments, _ = pipeline.transcribe(path, progress=False)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(json.dumps({"wall": wall, "cpu": cpu, "text": " ".join(s.text.strip() for s in segments)}), flush=True)
"""


class Checkout:
    def __init__(self, spec: str, threads: int) -> None:
        self.name, _, rest = spec.partition("=")
        folder, _, model = rest.partition(":")
        if not (self.name and folder and model):
            raise SystemExit(f"--checkout {spec!r}: expected NAME=FOLDER:MODEL")
        self.folder = Path(folder).resolve()
        env = {**os.environ, "PYTHONPATH": str(self.folder)}
        self.process = subprocess.Popen([sys.executable, "-c", WORKER, model, str(threads)], cwd=self.folder, env=env,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        ready = json.loads(self.process.stdout.readline() or "{}")
        if not str(ready.get("ready", "")).startswith(str(self.folder)):
            raise SystemExit(f"{self.name}: its worker did not load npu_ep from {self.folder} ({ready})")

    def transcribe(self, path: Path) -> dict:
        self.process.stdin.write(json.dumps(str(path)) + "\n")
        self.process.stdin.flush()
        return json.loads(self.process.stdout.readline())

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE")
    parser.add_argument("--checkout", action="append", required=True, help="NAME=FOLDER:MODEL (two or more)")
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--repeat", type=int, default=5, help="timed rounds after one warm-up round (default: 5)")
    parser.add_argument("--out", type=Path, help="write every measurement here as JSON")
    args = parser.parse_args()
    if len(args.checkout) < 2:
        parser.error("give at least two --checkout")
    files = [path.resolve() for path in args.files]
    checkouts = [Checkout(spec, args.threads) for spec in args.checkout]
    runs: dict[str, list[list[dict]]] = {c.name: [] for c in checkouts}
    try:
        for round_ in range(args.repeat + 1):
            order = checkouts if round_ % 2 else checkouts[::-1]
            results = {c.name: [] for c in checkouts}
            for path in files:
                for checkout in order:
                    results[checkout.name].append(checkout.transcribe(path))
            if round_:  # the first round warms caches and the allocator
                for name, values in results.items():
                    runs[name].append(values)
            totals = "  ".join(f"{name} {sum(r['wall'] for r in values):.2f} s" for name, values in results.items())
            print(f"round {round_}{' (warm-up)' if not round_ else ''}: {totals}", file=sys.stderr, flush=True)
    finally:
        for checkout in checkouts:
            checkout.close()

    first = checkouts[0].name
    print(f"| file | {' | '.join(f'{c.name} median s' for c in checkouts)} |")
    print(f"|---|{'---:|' * len(checkouts)}")
    for index, path in enumerate(files):
        medians = [statistics.median(r[index]["wall"] for r in runs[c.name]) for c in checkouts]
        print(f"| {path.name} | {' | '.join(f'{m:.3f}' for m in medians)} |")
    summary = {}
    for other in checkouts[1:]:
        ratios = [sum(r["wall"] for r in a) / sum(r["wall"] for r in b) for a, b in zip(runs[first], runs[other.name])]
        cpu = [sum(r["cpu"] for r in a) / sum(r["cpu"] for r in b) for a, b in zip(runs[first], runs[other.name])]
        differ = [path.name for index, path in enumerate(files)
                  if runs[first][0][index]["text"] != runs[other.name][0][index]["text"]]
        summary[other.name] = {"wall_ratios": ratios, "cpu_ratios": cpu, "texts_differ": differ}
        print(f"\n{first} / {other.name}, total wall time per round: median {statistics.median(ratios):.3f} "
              f"(rounds {min(ratios):.3f}-{max(ratios):.3f}); process CPU time: median {statistics.median(cpu):.3f} "
              f"(rounds {min(cpu):.3f}-{max(cpu):.3f})")
        print(f"transcripts that differ: {', '.join(differ) or 'none'}")
    if args.out:
        args.out.write_text(json.dumps({"files": [str(p) for p in files], "runs": runs, "summary": summary}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
