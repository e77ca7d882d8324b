"""Fuzz the audio loader with mutated real files (flac, wav, mp3, ogg made from a recording).

Each case is loaded in its own process under a time limit, so a crash or a hang is seen, not suffered.
A case passes when the loader returns audio or raises the one-line NpuEpError with nothing on stderr;
anything else (traceback, signal, time-out, decoder noise on stderr) is a finding, kept in --keep.

    python scripts/fuzz_audio.py --cases 2000 --seed 1 [--source samples/hello.flac] [--keep fuzz-findings]
"""
from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
FORMATS = {"flac": "PCM_16", "wav": "PCM_16", "mp3": "MPEG_LAYER_III", "ogg": "VORBIS"}
_LOADER = """
import sys
from npu_ep.errors import NpuEpError
from npu_ep.whisper.audio import load_audio
try:
    print("ok", len(load_audio(sys.argv[1])))
except NpuEpError as error:
    print("error", error)
"""
_SPECIAL = [0, 1, 0x7F, 0x80, 0xFF]


def make_seeds(source: Path, folder: Path, seconds: float = 2.0) -> list[Path]:
    """`source`'s first seconds written in each format (at 22.05 kHz stereo, so the loader resamples)."""
    samples, rate = sf.read(source, frames=int(seconds * sf.info(source).samplerate), always_2d=True)
    samples = np.repeat(samples[:, :1], 2, axis=1)
    seeds = []
    for ext, subtype in FORMATS.items():
        path = folder / f"seed.{ext}"
        sf.write(path, samples, rate, subtype=subtype)
        seeds.append(path)
    return seeds


def mutate(data: bytes, rng: np.random.Generator) -> bytes:
    """One to four edits: flipped bits, special bytes (more of them in the header), cuts, copies, inserts."""
    data = bytearray(data)
    for _ in range(rng.integers(1, 5)):
        kind = rng.integers(0, 6)
        at = int(rng.integers(0, max(len(data), 1)))
        if kind == 0:  # flip bits anywhere
            for spot in rng.integers(0, len(data), rng.integers(1, 32)):
                data[spot] ^= 1 << int(rng.integers(0, 8))
        elif kind == 1:  # special values in the header, where the lengths and rates live
            for spot in rng.integers(0, min(len(data), 256), rng.integers(1, 8)):
                data[spot] = _SPECIAL[rng.integers(0, len(_SPECIAL))]
        elif kind == 2:  # truncate
            data = data[:at]
        elif kind == 3:  # drop a chunk
            del data[at:at + int(rng.integers(1, 4096))]
        elif kind == 4:  # repeat a chunk
            data[at:at] = data[at:at + int(rng.integers(1, 4096))]
        else:  # insert random bytes
            data[at:at] = rng.integers(0, 256, int(rng.integers(1, 512)), dtype=np.uint8).tobytes()
    return bytes(data)


def run_case(path: Path, timeout: float) -> tuple[str, str]:
    """(outcome, detail): outcome is ok, error, or a finding: traceback, crash, hang, noise."""
    try:
        result = subprocess.run([sys.executable, "-c", _LOADER, str(path)], capture_output=True, text=True,
                                timeout=timeout, cwd=ROOT, errors="backslashreplace")
    except subprocess.TimeoutExpired:
        return "hang", f"no answer in {timeout:g} s"
    stdout, stderr = result.stdout.strip(), result.stderr.strip()
    if "Traceback" in stderr:
        return "traceback", stderr.splitlines()[-1]
    if result.returncode != 0:
        return "crash", f"exit {result.returncode}: {stderr[-300:]}"
    if stderr:
        return "noise", stderr.splitlines()[0]
    outcome, _, detail = stdout.partition(" ")
    if outcome not in ("ok", "error") or "\n" in detail:
        return "traceback", stdout[-300:]
    return outcome, detail


def fuzz(source: Path, cases: int, seed: int, timeout: float, keep: Path | None) -> collections.Counter:
    rng = np.random.default_rng(seed)
    outcomes: collections.Counter = collections.Counter()
    with tempfile.TemporaryDirectory(prefix="npu-ep-fuzz-") as scratch:
        folder = Path(scratch)
        seeds = [(path, path.read_bytes()) for path in make_seeds(source, folder)]
        for index in range(cases):
            seed_path, data = seeds[index % len(seeds)]
            case = folder / f"case{seed_path.suffix}"
            case.write_bytes(mutate(data, rng))
            outcome, detail = run_case(case, timeout)
            outcomes[outcome] += 1
            if outcome not in ("ok", "error"):
                print(f"case {index} ({seed_path.suffix[1:]}): {outcome}: {detail}", flush=True)
                if keep is not None:
                    keep.mkdir(parents=True, exist_ok=True)
                    shutil.copy(case, keep / f"case{index}-{outcome}{seed_path.suffix}")
    return outcomes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per case")
    parser.add_argument("--source", type=Path, default=ROOT / "samples" / "hello.flac")
    parser.add_argument("--keep", type=Path, help="folder to copy findings into")
    args = parser.parse_args()
    outcomes = fuzz(args.source, args.cases, args.seed, args.timeout, args.keep)
    findings = sum(count for outcome, count in outcomes.items() if outcome not in ("ok", "error"))
    print(f"{args.cases} cases (seed {args.seed}): " + ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items())))
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
