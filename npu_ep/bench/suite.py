"""Built-in bench suites: clips made offline from the speech shipped in `samples/`, with references.

The default suite holds every shipped clip as it is, a long-form concatenation (> 60 s), one clip
with white noise at a fixed seed, and near-silence with an empty reference. The long suite is one
recording of over ten minutes: paragraphs spoken by espeak-ng in several voices and rates, the shipped
clips between them, with pauses (for batched long-form decoding). A suite is written once into the
cache folder and rebuilt only when what it is made from changes or the cached copy is damaged.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from npu_ep.errors import NpuEpError
from npu_ep.metrics import REFERENCES_FILE, load_references
from npu_ep.paths import SAMPLES_DIR, cache_dir
from npu_ep.whisper.audio import SAMPLE_RATE

SUITES = ("default", "long")
# Bump when the recipe below changes, so cached suites are rebuilt.
RECIPE_VERSION = 1
LONG_MIN_SECONDS = 60.0
GAP_SECONDS = 1.0
NOISE_SNR_DB = 10.0
SILENCE_SECONDS = 10.0
SEED = 1234
LONG_SUITE_MIN_SECONDS = 600.0
# espeak-ng voice and words per minute of each pass over the paragraphs, until the recording is long enough.
VOICES = (("en-us", 160), ("en-gb", 150), ("en-us", 180), ("en-gb-x-rp", 165))
PAUSE_SECONDS = (0.6, 1.2, 2.5)  # between pieces, in turn: short pauses and longer ones
# In the suite's cache folder: the stamp of the clips it was built from, and its references.
SUITE_FILE = "suite.json"


def build_suite(name: str, samples_dir: Path = SAMPLES_DIR, root: Path | None = None) -> tuple[list[Path], dict[str, str]]:
    """The suite's audio files and references (file name -> text), built on first use."""
    if name not in SUITES:
        raise NpuEpError(f"--suite {name}: unknown suite (known: {', '.join(SUITES)})")
    references_path = samples_dir / REFERENCES_FILE
    if not references_path.is_file():
        raise NpuEpError(f"{references_path}: missing (the default suite is built from the clips in {samples_dir})")
    shipped = load_references(references_path)
    clips = sorted(samples_dir / file for file in shipped)
    for clip in clips:
        if not clip.is_file():
            raise NpuEpError(f"{clip}: listed in {references_path} but missing (restore it from the repository)")

    folder = (root or cache_dir() / "bench") / name
    stamp = _stamp([references_path, *clips], name)
    references = _cached(folder, stamp)
    if references is None:
        write = _write_long if name == "long" else _write_default
        references = _rebuild(folder, stamp, clips, [shipped[clip.name] for clip in clips], write)
    return [folder / file for file in references], references


def _cached(folder: Path, stamp: str) -> dict[str, str] | None:
    """The cached suite's references when it was built from the same clips and is intact, else None."""
    try:
        built = json.loads((folder / SUITE_FILE).read_text())
        references = dict(built["references"]) if built["stamp"] == stamp else None
    except (OSError, ValueError, KeyError, TypeError):
        return None  # missing or corrupt: the suite is rebuilt from samples/, so there is nothing to report
    intact = references is not None and all(isinstance(text, str) and (folder / file).is_file()
                                            for file, text in references.items())
    return references if intact else None


def _rebuild(folder: Path, stamp: str, clips: list[Path], texts: list[str], write) -> dict[str, str]:
    stamp_path = folder / SUITE_FILE
    # The stamp goes first and comes back last, through a rename, so an interrupted build is never taken as done.
    stamp_path.unlink(missing_ok=True)
    folder.mkdir(parents=True, exist_ok=True)
    references = write(folder, clips, texts)
    partial = stamp_path.with_name(f"{SUITE_FILE}.partial")
    partial.write_text(json.dumps({"stamp": stamp, "references": references}, indent=1))
    partial.replace(stamp_path)
    return references


def _stamp(paths: list[Path], name: str) -> str:
    digest = hashlib.sha256(str(RECIPE_VERSION).encode())
    if name == "long":
        from npu_ep.bench.paragraphs import PARAGRAPHS

        digest.update(json.dumps([PARAGRAPHS, VOICES, PAUSE_SECONDS, LONG_SUITE_MIN_SECONDS]).encode())
    for path in paths:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _write_default(folder: Path, clips: list[Path], texts: list[str]) -> dict[str, str]:
    import soundfile as sf

    from npu_ep.whisper.audio import load_audio

    audios = [load_audio(clip) for clip in clips]
    rng = np.random.default_rng(SEED)
    references: dict[str, str] = {}

    def write(file: str, audio: np.ndarray, text: str) -> None:
        sf.write(folder / file, audio.astype(np.float32), SAMPLE_RATE, subtype="FLOAT")
        references[file] = text

    for clip, audio, text in zip(clips, audios, texts):
        write(f"clip-{clip.stem}.wav", audio, text)

    gap = np.zeros(int(GAP_SECONDS * SAMPLE_RATE), np.float32)
    pieces, words, seconds = [], [], 0.0
    while seconds <= LONG_MIN_SECONDS:
        for audio, text in zip(audios, texts):
            pieces += [audio, gap]
            words.append(text)
            seconds += (len(audio) + len(gap)) / SAMPLE_RATE
    write("long.wav", np.concatenate(pieces), " ".join(words))

    # Noise on the longest clip at a fixed SNR: harder input, same reference.
    longest = max(range(len(audios)), key=lambda i: len(audios[i]))
    speech = audios[longest]
    noise = rng.standard_normal(len(speech)).astype(np.float32)
    noise *= np.sqrt(np.mean(speech**2) / np.mean(noise**2) / 10 ** (NOISE_SNR_DB / 10))
    write(f"noisy-{clips[longest].stem}.wav", np.clip(speech + noise, -1.0, 1.0), texts[longest])

    # Faint room noise rather than digital zeros: a transcriber must say nothing.
    write("silence.wav", 1e-4 * rng.standard_normal(int(SILENCE_SECONDS * SAMPLE_RATE)), "")
    return references


def _spoken(text: str, voice: str, rate: int) -> np.ndarray:
    """`text` said by espeak-ng, as 16 kHz mono float32."""
    import shutil
    import subprocess
    import tempfile

    from npu_ep.whisper.audio import load_audio

    if shutil.which("espeak-ng") is None:
        raise NpuEpError("--suite long speaks its paragraphs with espeak-ng, which is not installed "
                         "(install it: sudo apt-get install espeak-ng)")
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "speech.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(rate), "-w", str(path), text], check=True, capture_output=True)
        return load_audio(path)


def _write_long(folder: Path, clips: list[Path], texts: list[str]) -> dict[str, str]:
    import soundfile as sf

    from npu_ep.bench.paragraphs import PARAGRAPHS
    from npu_ep.whisper.audio import load_audio

    shipped = [(load_audio(clip), text) for clip, text in zip(clips, texts)]
    pieces, words, samples = [], [], 0
    for voice, rate in VOICES:
        for index, paragraph in enumerate(PARAGRAPHS):
            said = [(_spoken(paragraph, voice, rate), paragraph)]
            if index % 3 == 2:  # a shipped clip every third paragraph
                said.append(shipped[(index // 3) % len(shipped)])
            for audio, text in said:
                pause = np.zeros(int(PAUSE_SECONDS[len(pieces) % len(PAUSE_SECONDS)] * SAMPLE_RATE), np.float32)
                pieces += [audio, pause]
                words.append(text)
                samples += len(audio) + len(pause)
        if samples >= LONG_SUITE_MIN_SECONDS * SAMPLE_RATE:
            break
    sf.write(folder / "long-speech.wav", np.concatenate(pieces), SAMPLE_RATE, subtype="FLOAT")
    return {"long-speech.wav": " ".join(words)}
