"""Peak memory of `npu-ep transcribe` against audio length: it should stay flat (streamed audio, one window).

Builds speech clips of the given minutes from a clip (repeated, --gap seconds of silence between) as 44.1 kHz
stereo FLAC in a temporary folder, transcribes each with a fresh pipeline in a child process and
prints its peak resident memory. Usage: python scripts/transcribe_memory.py CLIP [--minutes 5 60]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = """
import resource, sys, npu_ep
segments, info = npu_ep.Pipeline(sys.argv[2], threads=int(sys.argv[3])).transcribe(sys.argv[1], progress=False)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(f"{info.duration / 60:.1f} {len(segments)} {peak:.0f} {info.timing.realtime:.1f}")
"""


def build(clip: Path, minutes: float, gap: float, out: Path) -> None:
    import numpy as np
    import soundfile as sf

    import soxr

    from npu_ep.whisper.audio import load_audio

    speech = soxr.resample(load_audio(clip), 16000, 44100).astype(np.float32)
    period = np.concatenate([speech, np.zeros(int(gap * 44100), dtype=np.float32)])
    with sf.SoundFile(out, "w", 44100, 2, subtype="PCM_16") as f:
        for _ in range(int(minutes * 60 * 44100 / len(period)) + 1):
            f.write(np.stack([period, period], axis=1))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("clip", type=Path)
    parser.add_argument("--minutes", type=float, nargs="+", default=[5, 60])
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--threads", default="2")
    parser.add_argument("--gap", type=float, default=4.0, help="seconds of silence after each repetition")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        for minutes in args.minutes:
            path = Path(folder) / f"{minutes:g}min.flac"
            build(args.clip, minutes, args.gap, path)
            result = subprocess.run([sys.executable, "-c", CHILD, str(path), args.model, args.threads],
                                    capture_output=True, text=True, check=True)
            audio_minutes, n_segments, peak, realtime = result.stdout.split()
            print(f"{audio_minutes} min of audio: {n_segments} segments, peak RSS {peak} MB, {realtime}x realtime")


if __name__ == "__main__":
    main()
