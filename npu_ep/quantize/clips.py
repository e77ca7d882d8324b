"""Audio clips for calibration and the accuracy report: which files, their features, their references."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from npu_ep.errors import NpuEpError
from npu_ep.metrics import REFERENCES_FILE, load_references
from npu_ep.paths import SAMPLES_DIR

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")
# One utterance gives ranges that fit that one voice; two is the least that is still a sample.
MIN_CALIBRATION_CLIPS = 2


def audio_files(sources: list[str | Path]) -> list[Path]:
    """Expand folders (their audio files, sorted) and check each named file exists."""
    files: list[Path] = []
    for source in map(Path, sources):
        if source.is_dir():
            files += sorted(p for p in source.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES)
        elif source.is_file():
            files.append(source)
        else:
            raise NpuEpError(f"{source}: no such audio file or folder")
    return files


def shipped_clips() -> list[Path]:
    """The project's own speech clips (samples/), the default for calibration and evaluation."""
    clips = audio_files([SAMPLES_DIR]) if SAMPLES_DIR.is_dir() else []
    if not clips:
        raise NpuEpError(f"{SAMPLES_DIR}: no shipped clips here (pass --calibration and --eval audio files)")
    return clips


def split_clips(calibration: list[str] | None, evaluation: list[str] | None, static: bool) -> tuple[list[Path], list[Path]]:
    """(calibration clips, evaluation clips), never sharing a file, so the report is calibration-independent.

    By default every other shipped clip calibrates and the rest evaluate.
    """
    needs_shipped = evaluation is None or (static and calibration is None)
    shipped = shipped_clips() if needs_shipped else []
    calib = [] if not static else audio_files(calibration) if calibration is not None else shipped[0::2]
    chosen = {p.resolve() for p in calib}
    held_out = [p for p in (audio_files(evaluation) if evaluation is not None else shipped) if p.resolve() not in chosen]
    if static and len(calib) < MIN_CALIBRATION_CLIPS:
        raise NpuEpError(f"{len(calib)} calibration clip(s) given; static quantization needs at least "
                         f"{MIN_CALIBRATION_CLIPS} (pass more audio files or a folder with --calibration)")
    if not held_out:
        raise NpuEpError("no evaluation clips left apart from the calibration clips (pass others with --eval)")
    return calib, held_out


def clip_features(path: Path, n_mels: int) -> np.ndarray:
    """[1, n_mels, 3000] log-mel features of the clip's first 30 s, padded with the log floor of silence.

    Not `encoder_features` (the pipeline's zero padding) on purpose: static int8 calibrated on the
    zero-padded features raised held-out WER by 14.8 points, on the log-floor ones by 0 (measured;
    why is still open).
    """
    from npu_ep.whisper.audio import load_audio

    return padded_features(load_audio(path), n_mels)


def padded_features(samples: np.ndarray, n_mels: int) -> np.ndarray:
    """`clip_features` of samples already loaded."""
    from npu_ep.whisper.features import log_mel_spectrogram

    return log_mel_spectrogram(samples, n_mels=n_mels)[None].astype(np.float32)


def both_inputs(path: Path, n_mels: int) -> tuple[np.ndarray, np.ndarray]:
    """The clip's encoder input as calibration makes it (`clip_features`) and as transcription feeds it
    (zeros past the audio), from one read of the file."""
    from npu_ep.whisper.audio import load_audio
    from npu_ep.whisper.features import encoder_features

    samples = load_audio(path)
    return padded_features(samples, n_mels), encoder_features(samples, n_mels)[None].astype(np.float32)


def references(clips: list[Path]) -> dict[Path, str]:
    """Reference texts from a references.json beside the clips ({file name: text}), where there is one."""
    found: dict[Path, str] = {}
    for folder in {clip.parent for clip in clips}:
        table = folder / REFERENCES_FILE
        if table.is_file():
            texts = load_references(table)
            found.update({clip: texts[clip.name] for clip in clips if clip.parent == folder and clip.name in texts})
    return found
