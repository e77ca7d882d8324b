"""What the silence of a long recording costs with and without VAD (`vad_filter`).

Builds two clips once (cached in --clips): `speech.flac`, about 20 minutes of speech (espeak-ng reading
prose from Python's own documentation in three voices, the shipped samples, and --jfk if given) with
3 s pauses, and `speech_silence.flac`, the same speech with 40 minutes of a quiet room's noise
(-54 dBFS, loud enough that no window is skipped as digital silence) spread over the pauses. Then
transcribes them in interleaved rounds on one loaded pipeline and prints the median wall times:

    python scripts/vad_speed.py --model tiny.en --threads 2 --repeat 3 [--jfk ../shared/audio/jfk.flac]

The silent part's cost is 1 - (cut, VAD) / (speech + silence, VAD), where `cut` is exactly the speech
VAD keeps from speech_silence.flac, end to end (checked: VAD on it keeps all of it), so both runs decode
the same audio and only the silence differs.
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile
import soxr

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_RATE = 16000
VOICES = ("en-us+m3", "en-us+f3", "en-gb+m2")
ROOM_NOISE = 2e-3  # RMS: above the pipeline's digital-silence floor (1e-3), so the model has to judge it
# Pauses in speech.flac: over VAD's default min_silence_duration_ms (2 s), so VAD cuts both clips at the
# same places and both transcribe the same speech chunks; only the silence differs.
PAUSE_SECONDS = 3.0


def _prose() -> list[str]:
    """Paragraphs of plain English prose from the Python documentation every CPython ships."""
    from pydoc_data.topics import topics

    paragraphs = []
    for key in sorted(topics):
        for paragraph in re.split(r"\n\s*\n", topics[key]):
            paragraph = " ".join(paragraph.split())
            if len(paragraph) > 150 and re.fullmatch(r"[A-Za-z0-9 ,.;:'\"()?!-]+", paragraph) and "::" not in paragraph:
                paragraphs.append(paragraph)
    return paragraphs


def _read(path: Path) -> np.ndarray:
    samples, rate = soundfile.read(path, dtype="float32", always_2d=True)
    return soxr.resample(samples.mean(axis=1), rate, SAMPLE_RATE).astype(np.float32)


def _speak(text: str, voice: str, folder: Path) -> np.ndarray:
    wav = folder / "piece.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-s", "150", "-w", str(wav), text], check=True)
    return _read(wav)


def build(clips: Path, speech_seconds: float, silence_seconds: float, jfk: Path | None) -> tuple[Path, Path]:
    """speech.flac and speech_silence.flac in `clips` (made once), and references.json with the text."""
    speech_path, spaced_path = clips / "speech.flac", clips / "speech_silence.flac"
    if speech_path.is_file() and spaced_path.is_file():
        return speech_path, spaced_path
    clips.mkdir(parents=True, exist_ok=True)
    pieces: list[np.ndarray] = [_read(path) for path in sorted((ROOT / "samples").glob("*.flac"))]
    if jfk is not None:
        pieces.insert(0, _read(jfk))
    texts = []
    with tempfile.TemporaryDirectory() as tmp:
        for index, paragraph in enumerate(_prose()):
            if sum(map(len, pieces)) >= speech_seconds * SAMPLE_RATE:
                break
            pieces.append(_speak(paragraph, VOICES[index % len(VOICES)], Path(tmp)))
            texts.append(paragraph)
    rng = np.random.default_rng(0)

    def room(seconds: float) -> np.ndarray:
        return rng.normal(0, ROOM_NOISE, int(seconds * SAMPLE_RATE)).astype(np.float32)

    gap = silence_seconds / len(pieces)  # the silence spread evenly, after every piece
    soundfile.write(speech_path, np.concatenate([x for p in pieces for x in (p, room(PAUSE_SECONDS))]), SAMPLE_RATE)
    soundfile.write(spaced_path, np.concatenate([x for p in pieces for x in (p, room(PAUSE_SECONDS + gap))]), SAMPLE_RATE)
    (clips / "spoken.json").write_text(json.dumps({"pieces": len(pieces), "espeak_paragraphs": texts}, indent=1))
    return speech_path, spaced_path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--repeat", type=int, default=3, help="timed rounds (default: 3)")
    parser.add_argument("--clips", type=Path, default=Path(tempfile.gettempdir()) / "npu-ep-vad-clips")
    parser.add_argument("--jfk", type=Path, help="a real speech clip to include (e.g. ../shared/audio/jfk.flac)")
    parser.add_argument("--speech-minutes", type=float, default=20.0)
    parser.add_argument("--silence-minutes", type=float, default=40.0)
    parser.add_argument("--cases", default="cut+vad,spaced+vad,speech+vad,speech,spaced",
                        help="which runs, each round (default: all five)")
    parser.add_argument("--build-only", action="store_true", help="make the clips and stop")
    args = parser.parse_args()

    speech_path, spaced_path = build(args.clips, args.speech_minutes * 60, args.silence_minutes * 60, args.jfk)
    for path in (speech_path, spaced_path):
        print(f"{path}: {soundfile.info(path).duration / 60:.1f} min", file=sys.stderr)
    if args.build_only:
        return 0

    import npu_ep
    from npu_ep.metrics import wer
    from npu_ep.whisper.audio import load_audio
    from npu_ep.whisper.formats import transcript_text
    from npu_ep.whisper.vad import speech_chunks

    from npu_ep.whisper.vad import join_speech

    cut_path = args.clips / "cut.flac"
    if not cut_path.is_file():
        spaced = load_audio(spaced_path)
        soundfile.write(cut_path, join_speech(spaced, speech_chunks(spaced, threads=args.threads)), SAMPLE_RATE)
    cut = load_audio(cut_path)
    kept = join_speech(cut, speech_chunks(cut, threads=args.threads))
    print(f"{cut_path}: {len(cut) / SAMPLE_RATE / 60:.1f} min; VAD keeps {len(kept) / len(cut):.4f} of it",
          file=sys.stderr)
    cases = {"speech+vad": (speech_path, True), "spaced+vad": (spaced_path, True), "cut+vad": (cut_path, True),
             "speech": (speech_path, False), "spaced": (spaced_path, False)}
    chosen = [name for name in args.cases.split(",") if name]
    pipeline = npu_ep.Pipeline(args.model, threads=args.threads)
    pipeline.transcribe(ROOT / "samples" / "hello.flac", vad_filter=True, progress=False)  # warm-up
    seconds: dict[str, list[float]] = {name: [] for name in chosen}
    texts: dict[str, str] = {}
    for round_ in range(args.repeat):
        for name in chosen:
            path, vad_filter = cases[name]
            started = time.perf_counter()
            segments, _ = pipeline.transcribe(path, vad_filter=vad_filter, progress=False)
            seconds[name].append(time.perf_counter() - started)
            texts[name] = transcript_text(segments)
            print(f"round {round_ + 1} {name}: {seconds[name][-1]:.1f} s", file=sys.stderr, flush=True)
    vad_seconds = {}
    for name, path in (("speech", speech_path), ("spaced", spaced_path), ("cut", cut_path)):
        samples = load_audio(path)
        started = time.perf_counter()
        speech_chunks(samples, threads=args.threads)
        vad_seconds[name] = time.perf_counter() - started

    median = {name: statistics.median(values) for name, values in seconds.items()}
    result = {"model": args.model, "threads": args.threads, "rounds": args.repeat, "seconds": seconds,
              "median": median, "vad_only_seconds": vad_seconds, "texts": texts}
    print("| run | audio | median s (rounds) |\n|---|---:|---:|")
    for name in chosen:
        path, vad_filter = cases[name]
        rounds = ", ".join(f"{value:.1f}" for value in seconds[name])
        print(f"| {name} | {soundfile.info(path).duration / 60:.1f} min | {median[name]:.1f} ({rounds}) |")
    print(f"\nSilero VAD alone: {vad_seconds['speech']:.2f} s on speech.flac, {vad_seconds['spaced']:.2f} s on "
          f"speech_silence.flac, {vad_seconds['cut']:.2f} s on cut.flac")
    if {"speech+vad", "spaced+vad"} <= median.keys():
        result["silence_share_with_vad"] = 1 - median["speech+vad"] / median["spaced+vad"]
        result["wer_spaced_vs_speech_with_vad"] = wer(texts["speech+vad"], texts["spaced+vad"])
        print(f"silent part's share of the speech+silence run with VAD: {100 * result['silence_share_with_vad']:.1f} %")
        print(f"word difference between the two VAD transcripts: {result['wer_spaced_vs_speech_with_vad']:.2f} % WER")
    if {"cut+vad", "spaced+vad"} <= median.keys():
        result["silence_share_exact_cut"] = 1 - median["cut+vad"] / median["spaced+vad"]
        print(f"silent part's share against the exact cut: {100 * result['silence_share_exact_cut']:.1f} % "
              f"(transcripts {'equal' if texts['cut+vad'] == texts['spaced+vad'] else 'differ'})")
    if {"spaced", "spaced+vad"} <= median.keys():
        print(f"speech + silence, without VAD / with VAD: {median['spaced'] / median['spaced+vad']:.2f}x")
    (args.clips / "vad_speed.json").write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
