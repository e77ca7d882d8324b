"""Audio in, as 16 kHz mono float32: any file soundfile or PyAV decodes, standard input ("-"), or an array.

Files soundfile reads (wav, flac, ogg, mp3) are streamed block by block (decode, down-mix, resample), so
an hour of them never sits in memory: the pipeline only ever asks for the next 30 s window, moving
forward. Everything else (m4a/aac, opus/webm, video files' first audio stream, ...) and standard input
is decoded whole through PyAV (FFmpeg's decoders), 3.8 MB per minute of audio.
"""
from __future__ import annotations

import contextlib
import logging
import os
import stat
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from npu_ep.errors import NpuEpError

SAMPLE_RATE = 16000
# What a folder given to `npu-ep batch` is searched for (any file soundfile or PyAV reads still works when named).
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".opus", ".m4a", ".aac", ".webm", ".mp4", ".mkv", ".mov")
# One STFT window (25 ms): anything shorter has no spectrum to recognise.
MIN_SAMPLES = 400
_BLOCK_SECONDS = 30
# Float audio peaks near 1; far beyond it the samples are integers stored as floats (or garbage), which
# Whisper hears as noise: refused, with the fix, rather than rescaled by a guessed factor.
MAX_FLOAT_PEAK = 4.0
# Sample rates audio is recorded at lie well inside this; outside it a resample to 16 kHz would be a
# memory bomb (a 1 Hz "recording" grows 16000-fold) or a header is lying.
RATE_RANGE = (1000, 768_000)
_stderr_lock = threading.Lock()
log = logging.getLogger(__name__)


def display_name(path: str | os.PathLike) -> str:
    """A path as printable text: bytes that are not UTF-8 shown as \\xNN rather than raising on print."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


@contextlib.contextmanager
def _libsndfile_quiet() -> Iterator[None]:
    """Silence file descriptor 2 while libsndfile runs: its libmpg123 prints notes there itself, with no
    switch to turn them off.

    Whatever another thread writes to fd 2 in that moment is lost too, so only libsndfile's own calls
    (opening, reading one block) are wrapped; FFmpeg's logging goes through PyAV's instead.
    """
    with _stderr_lock:
        saved = os.dup(2)
        try:
            with open(os.devnull, "wb") as null:
                os.dup2(null.fileno(), 2)
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _check_finite(samples: np.ndarray, name: str) -> None:
    if not np.isfinite(samples).all():
        raise NpuEpError(f"{name}: the audio contains NaN or infinite samples (re-encode or clean the file)")


def _check_range(samples: np.ndarray, name: str) -> None:
    peak = float(np.abs(samples).max()) if samples.size else 0.0
    if peak > MAX_FLOAT_PEAK:
        raise NpuEpError(
            f"{name}: float samples reach {peak:g}, far outside [-1, 1] (integer PCM stored as float? "
            "divide by 32768 for 16-bit values, or save it as PCM)"
        )


def _check_rate(rate: float, name: str, fix: str) -> None:
    if not RATE_RANGE[0] <= rate <= RATE_RANGE[1]:  # NaN fails too
        raise NpuEpError(f"{name}: sample rate {rate:g} Hz is outside {RATE_RANGE[0]}-{RATE_RANGE[1]} Hz ({fix})")


def _pcm_to_float(audio: object) -> np.ndarray:
    """Array-like PCM as float32 in [-1, 1): signed integers scaled as soundfile scales files, unsigned
    ones (uint8 WAV data) centred on their midpoint first, as audio libraries read them."""
    try:
        raw = np.asarray(audio)
        if raw.dtype == object:
            raw = raw.astype(np.float32)
    except (TypeError, ValueError):
        raise NpuEpError(f"audio array: {type(audio).__name__} values are not audio samples (pass numbers)") from None
    if raw.dtype.kind not in "iuf":  # bool, complex, strings, dates: not PCM
        raise NpuEpError(f"audio array: {raw.dtype} values are not audio samples (pass integer or float PCM)")
    if raw.dtype.kind == "f":
        return raw.astype(np.float32, copy=False)
    half = float(np.iinfo(raw.dtype).max) + 1 if raw.dtype.kind == "i" else (float(np.iinfo(raw.dtype).max) + 1) / 2
    offset = half if raw.dtype.kind == "u" else 0.0
    return ((raw.astype(np.float64) - offset) / half).astype(np.float32)


def _downmix(samples: np.ndarray) -> np.ndarray:
    return samples if samples.ndim == 1 else samples.mean(axis=1, dtype=np.float32)


def _decode_with_av(source, name: str) -> np.ndarray:
    """The first audio stream of `source` (a path or a binary file object) as 16 kHz mono float32."""
    import av
    import av.logging

    # FFmpeg reports damaged data through its log. PyAV keeps that off the terminal by default; the capture
    # keeps it off even when the application turned PyAV's logging on, and hands it to ours at debug level.
    notes = av.logging.Capture()
    try:
        with notes, av.open(source, metadata_errors="ignore") as container:
            if not container.streams.audio:
                raise NpuEpError(f"{name}: has no audio stream (give a recording, or a video with sound)")
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
            pieces = []
            for frame in container.decode(stream):
                frame.pts = None  # the resampler needs no timing, and odd timestamps only make it complain
                pieces.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(frame))
            pieces.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(None))
    except av.FFmpegError as error:
        reason = (getattr(error, "strerror", None) or str(error)).rstrip(".")
        raise NpuEpError(f"{name}: not a readable audio file ({reason}; give a recording or a video FFmpeg decodes)") from None
    finally:
        for _, origin, message in notes.logs:
            log.debug("%s: FFmpeg %s: %s", name, origin, message.strip())
    if not pieces:  # FFmpeg guessed a format from the bytes but found no audio in them
        raise NpuEpError(f"{name}: not a readable audio file (no audio frames in it; give a recording or a video "
                         "FFmpeg decodes)")
    samples = np.concatenate(pieces)
    _check_finite(samples, name)
    return samples


class AudioSource:
    """Forward-only reader of 16 kHz mono samples from a file or an array.

    `window(start, count)` returns samples [start, start + count) (shorter at the end); `start` may not
    go back before the previous call's `start`, which lets the reader drop what lies behind.

    An array is (samples,) or 2-D with time on the longer axis: (samples, channels) and (channels,
    samples) both work, whatever the channel count. Integer PCM is scaled to [-1, 1) (unsigned centred
    first); float samples far outside [-1, 1], bool, complex or non-numeric values are refused.
    """

    def __init__(self, audio: str | Path | np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
        self._file = None
        self._handle = None
        if isinstance(audio, str) and audio == "-":
            self.name = "stdin"
            self._use_samples(_decode_with_av(sys.stdin.buffer, self.name))
        elif not isinstance(audio, (str, os.PathLike)):  # an array, or anything numpy makes one of (lists, tensors)
            self.name = "audio array"
            if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, float, np.integer, np.floating)):
                raise NpuEpError(
                    f"audio array: sample_rate {sample_rate!r} is a {type(sample_rate).__name__} (give a number, e.g. 16000)"
                )
            _check_rate(sample_rate, self.name, "give the array's real rate, e.g. 16000")
            samples = _pcm_to_float(audio)
            if samples.ndim == 2 and min(samples.shape) == 0:
                samples = np.zeros(0, dtype=np.float32)  # no channels or no time: no samples
            if samples.ndim == 2 and samples.shape[0] < samples.shape[1]:
                samples = samples.T  # (channels, samples) as torch/librosa hand it over: time is the longer axis
            if samples.ndim not in (1, 2):
                raise NpuEpError(f"audio array: expected shape (samples,) or (samples, channels), got {samples.shape}")
            _check_finite(samples, self.name)
            _check_range(samples, self.name)
            samples = _downmix(samples)
            if sample_rate != SAMPLE_RATE and samples.size:
                import soxr

                samples = soxr.resample(samples, sample_rate, SAMPLE_RATE).astype(np.float32, copy=False)
            self._use_samples(samples)
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

    def _use_samples(self, samples: np.ndarray) -> None:
        """Serve windows from `samples` (16 kHz mono, already decoded)."""
        self._raw_frames = len(samples)
        self._buffer = np.ascontiguousarray(samples)
        self.n_samples = len(samples)
        self.duration = self.n_samples / SAMPLE_RATE
        self._eof = True

    def _open(self, path: Path) -> None:
        import soundfile

        self.name = name = display_name(path)
        try:
            mode = path.stat().st_mode
        except FileNotFoundError:
            raise NpuEpError(f"{name}: no such file (check the path)") from None
        except OSError as error:
            raise NpuEpError(f"{name}: cannot read it ({error.strerror or error})") from None
        if stat.S_ISDIR(mode):
            raise NpuEpError(f"{name}: is a folder, not an audio file (give the audio files inside it)")
        if not stat.S_ISREG(mode):  # reading a FIFO or a device could block forever or never end
            raise NpuEpError(f"{name}: pipes and devices are not supported (save the audio to a file first)")
        if path.stat().st_size == 0:
            raise NpuEpError(f"{name}: the file is empty (0 bytes; give a recording with sound in it)")
        try:
            # Python's open() encodes any name the OS gave us; soundfile would re-encode it strictly.
            self._handle = open(path, "rb")
        except PermissionError:
            raise NpuEpError(f"permission denied: {name} (make it readable, e.g. chmod a+r)") from None
        except OSError as error:
            raise NpuEpError(f"{name}: cannot read it ({error.strerror or error})") from None
        try:
            with _libsndfile_quiet():
                self._file = soundfile.SoundFile(self._handle)
        except (soundfile.LibsndfileError, RuntimeError, TypeError):  # not a format libsndfile knows
            self._handle.seek(0)
            try:
                samples = _decode_with_av(self._handle, name)
            finally:
                self.close()
            self._use_samples(samples)
            return
        rate = self._file.samplerate
        try:
            _check_rate(rate, name, "the header is damaged, or re-encode the audio")
        except NpuEpError:
            self.close()
            raise
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
            with _libsndfile_quiet():
                block = self._file.read(self._block, dtype="float32", always_2d=True)
        except Exception as error:  # libsndfile reports corrupt data mid-stream as assorted errors
            raise NpuEpError(f"{self.name}: the audio data is corrupt ({error})") from None
        self._eof = len(block) < self._block
        _check_finite(block, self.name)
        _check_range(block, self.name)
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
        if self._handle is not None:
            self._handle.close()
            self._handle = None

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
