"""Audio in: any file soundfile reads (wav, flac, ogg, mp3, ...) or a numpy array, as 16 kHz mono float32.

Files are streamed block by block (decode, down-mix, resample), so an hour of audio never sits in memory:
the pipeline only ever asks for the next 30 s window, moving forward.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from npu_ep.errors import NpuEpError

SAMPLE_RATE = 16000
# What a folder given to `npu-ep batch` is searched for (any file soundfile reads still works when named).
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")
# One STFT window (25 ms): anything shorter has no spectrum to recognise.
MIN_SAMPLES = 400
_BLOCK_SECONDS = 30


def _check_finite(samples: np.ndarray, name: str) -> None:
    if not np.isfinite(samples).all():
        raise NpuEpError(f"{name}: the audio contains NaN or infinite samples (re-encode or clean the file)")


def _downmix(samples: np.ndarray) -> np.ndarray:
    return samples if samples.ndim == 1 else samples.mean(axis=1, dtype=np.float32)


class AudioSource:
    """Forward-only reader of 16 kHz mono samples from a file or an array.

    `window(start, count)` returns samples [start, start + count) (shorter at the end); `start` may not
    go back before the previous call's `start`, which lets the reader drop what lies behind.
    """

    def __init__(self, audio: str | Path | np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
        if not isinstance(audio, (str, os.PathLike)):  # an array, or anything numpy makes one of (lists, tensors)
            self.name = "audio array"
            self._file = None
            if sample_rate <= 0:
                raise NpuEpError(f"audio array: sample rate {sample_rate} Hz (give the array's real rate, e.g. 16000)")
            try:
                raw = np.asarray(audio)
                # Integer PCM (e.g. int16 from a WAV reader) scaled to [-1, 1) as soundfile does for files.
                scale = float(np.iinfo(raw.dtype).max) + 1 if np.issubdtype(raw.dtype, np.integer) else 1.0
                samples = np.asarray(raw, dtype=np.float32) / np.float32(scale)
            except (TypeError, ValueError):
                raise NpuEpError(f"audio array: {type(audio).__name__} values are not audio samples (pass numbers)") from None
            if samples.ndim == 2 and samples.shape[0] < samples.shape[1] and samples.shape[0] <= 8:
                samples = samples.T  # (channels, samples) as torch/librosa hand it over
            if samples.ndim not in (1, 2):
                raise NpuEpError(f"audio array: expected shape (samples,) or (samples, channels), got {samples.shape}")
            _check_finite(samples, self.name)
            samples = _downmix(samples)
            if sample_rate != SAMPLE_RATE and samples.size:
                import soxr

                samples = soxr.resample(samples, sample_rate, SAMPLE_RATE).astype(np.float32, copy=False)
            self._raw_frames = len(samples)
            self._buffer = np.ascontiguousarray(samples)
            self.n_samples = len(samples)
            self.duration = self.n_samples / SAMPLE_RATE
            self._eof = True
        else:
            self._open(Path(audio))
        if self._raw_frames == 0:
            self.close()
            raise NpuEpError(f"{self.name}: the audio has no samples (give a recording with sound in it)")
        if self.n_samples < MIN_SAMPLES:
            self.close()
            raise NpuEpError(
                f"{self.name}: the audio is too short ({self.duration * 1000:.2f} ms; give at least 25 ms of sound)"
            )
        self._buffer_start = 0

    def _open(self, path: Path) -> None:
        import soundfile

        self.name = str(path)
        if not path.exists():
            raise NpuEpError(f"{path}: no such file (check the path)")
        if path.is_dir():
            raise NpuEpError(f"{path}: is a folder, not an audio file (give the audio files inside it)")
        if path.stat().st_size == 0:
            raise NpuEpError(f"{path}: the file is empty (0 bytes; give a wav, flac, ogg or mp3 recording)")
        try:
            self._file = soundfile.SoundFile(str(path))
        except (soundfile.LibsndfileError, RuntimeError, TypeError) as error:
            reason = str(error).split(":")[-1].strip() or "unreadable"
            raise NpuEpError(f"{path}: not a readable audio file ({reason}; give a wav, flac, ogg or mp3 recording)") from None
        rate = self._file.samplerate
        self._resampler = None
        if rate != SAMPLE_RATE:
            import soxr

            self._resampler = soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32")
        self._raw_frames = self._file.frames
        self.duration = self._file.frames / rate
        self.n_samples = int(round(self._file.frames * SAMPLE_RATE / rate))
        self._block = _BLOCK_SECONDS * rate
        self._buffer = np.zeros(0, dtype=np.float32)
        self._eof = False

    def _read_block(self) -> np.ndarray:
        try:
            block = self._file.read(self._block, dtype="float32", always_2d=True)
        except Exception as error:  # libsndfile reports corrupt data mid-stream as assorted errors
            raise NpuEpError(f"{self.name}: the audio data is corrupt ({error})") from None
        self._eof = len(block) < self._block
        _check_finite(block, self.name)
        mono = _downmix(block)
        if self._resampler is not None:
            mono = self._resampler.resample_chunk(mono, last=self._eof)
        return mono

    def window(self, start: int, count: int) -> np.ndarray:
        """Samples [start, start + count); fewer (maybe none) past the end of the audio."""
        if start < self._buffer_start:
            raise ValueError("AudioSource is forward-only")
        # Drop what lies behind `start`, then read until the window is covered.
        self._buffer = self._buffer[start - self._buffer_start :]
        self._buffer_start = start
        if not self._eof:
            pieces = [self._buffer]
            have = len(self._buffer)
            while have < count and not self._eof:
                pieces.append(self._read_block())
                have += len(pieces[-1])
            self._buffer = np.concatenate(pieces)
        return self._buffer[:count]

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> AudioSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def load_audio(audio: str | Path | np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """The whole recording as 16 kHz mono float32 (for short clips; long ones go through AudioSource)."""
    with AudioSource(audio, sample_rate) as source:
        pieces, start = [], 0
        while True:
            piece = source.window(start, SAMPLE_RATE * _BLOCK_SECONDS)
            if len(piece) == 0:
                break
            pieces.append(piece.copy())
            start += len(piece)
        return np.concatenate(pieces)
