"""Audio in: formats, sample widths, channel counts and rates down to 16 kHz mono; streaming; bad files."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from npu_ep.errors import NpuEpError
from npu_ep.whisper.audio import SAMPLE_RATE, AudioSource, load_audio


def _tone(rate: int, seconds: float, hz: float = 440.0, channels: int = 1) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    wave = 0.5 * np.sin(2 * np.pi * hz * t)
    return np.repeat(wave[:, None], channels, axis=1) if channels > 1 else wave


def _peak_hz(samples: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / SAMPLE_RATE)[spectrum.argmax()])


@pytest.mark.parametrize(
    ("ext", "subtype", "rate", "channels"),
    [
        ("wav", "PCM_U8", 8000, 1),
        ("wav", "PCM_16", 44100, 2),
        ("wav", "PCM_24", 48000, 6),
        ("wav", "PCM_32", 22050, 1),
        ("wav", "FLOAT", 16000, 2),
        ("flac", "PCM_24", 96000, 2),
        ("ogg", "VORBIS", 32000, 1),
        ("mp3", "MPEG_LAYER_III", 44100, 2),
    ],
)
def test_formats_become_16k_mono(tmp_path: Path, ext: str, subtype: str, rate: int, channels: int) -> None:
    path = tmp_path / f"tone.{ext}"
    sf.write(path, _tone(rate, 2.0, channels=channels), rate, subtype=subtype)
    audio = load_audio(path)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(len(audio) - 2 * SAMPLE_RATE) < 0.03 * SAMPLE_RATE  # mp3 adds a few ms of codec delay
    assert abs(_peak_hz(audio) - 440.0) < 2.0
    assert 0.4 < np.abs(audio).max() < 0.6


def test_downmix_averages_channels(tmp_path: Path) -> None:
    left = _tone(16000, 1.0)
    path = tmp_path / "opposite.wav"
    sf.write(path, np.stack([left, -left * 0.5], axis=1), 16000, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(path), left * 0.25, atol=1e-6)


def test_array_input_any_layout_and_rate() -> None:
    stereo = _tone(8000, 1.0, channels=2).astype(np.float32)
    as_rows = load_audio(stereo, sample_rate=8000)
    as_columns = load_audio(stereo.T, sample_rate=8000)
    assert len(as_rows) == SAMPLE_RATE
    np.testing.assert_allclose(as_rows, as_columns)
    assert abs(_peak_hz(as_rows) - 440.0) < 2.0


def test_int16_arrays_and_lists_are_audio_too() -> None:
    tone = _tone(16000, 0.5, channels=1).astype(np.float32).reshape(-1)
    pcm = np.round(tone * 32767).astype(np.int16)  # what a WAV reader hands over
    np.testing.assert_allclose(load_audio(pcm), tone, atol=1e-4)  # scaled to [-1, 1), not left at +-32767
    np.testing.assert_allclose(load_audio(tone.tolist()), tone)


def test_jfk_is_stereo_24bit_44k(jfk_path: Path) -> None:
    info = sf.info(jfk_path)
    assert (info.channels, info.samplerate) == (2, 44100)
    audio = load_audio(jfk_path)
    assert abs(len(audio) / SAMPLE_RATE - info.duration) < 0.01


def test_streaming_windows_match_whole_file_and_stay_small(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    path = tmp_path / "long.flac"
    sf.write(path, rng.uniform(-0.5, 0.5, 44100 * 150).astype(np.float32), 44100, subtype="PCM_24")
    whole = load_audio(path)
    window = 30 * SAMPLE_RATE
    with AudioSource(path) as source:
        assert abs(source.n_samples - len(whole)) <= 1
        for start in range(0, len(whole), 7 * SAMPLE_RATE):  # overlapping, forward-moving windows
            np.testing.assert_array_equal(source.window(start, window), whole[start : start + window])
            # Only what lies ahead is kept: never the whole recording.
            assert len(source._buffer) <= window + 30 * SAMPLE_RATE + 1
        with pytest.raises(ValueError):
            source.window(0, 10)


def _bad_files(folder: Path) -> dict[str, Path]:
    files = {"missing": folder / "missing.wav", "empty": folder / "empty.wav", "text": folder / "notes.wav"}
    files["empty"].write_bytes(b"")
    files["text"].write_text("this is not audio\n" * 20)
    files["zero"] = folder / "zero.wav"
    sf.write(files["zero"], np.zeros(0, dtype=np.float32), 16000)
    files["one_sample"] = folder / "one.wav"
    sf.write(files["one_sample"], np.zeros(1, dtype=np.float32), 44100)
    files["nan"] = folder / "nan.wav"
    samples = _tone(16000, 1.0)
    samples[8000] = np.nan
    sf.write(files["nan"], samples, 16000, subtype="FLOAT")
    return files


BAD_FILE_PROBLEMS = {
    "missing": "no such file",
    "empty": "empty",
    "text": "not a readable audio file",
    "zero": "no samples",
    "one_sample": "too short",
    "nan": "NaN",
}


@pytest.mark.parametrize("kind", list(BAD_FILE_PROBLEMS))
def test_bad_files_raise_one_line_naming_the_file(tmp_path: Path, kind: str) -> None:
    path = _bad_files(tmp_path)[kind]
    with pytest.raises(NpuEpError) as caught:
        load_audio(path)
    message = str(caught.value)
    assert str(path) in message and BAD_FILE_PROBLEMS[kind] in message and "\n" not in message


def test_bad_arrays() -> None:
    with pytest.raises(NpuEpError, match="NaN"):
        load_audio(np.array([0.0, np.nan] * 1000, dtype=np.float32))
    with pytest.raises(NpuEpError, match="no samples"):
        load_audio(np.zeros(0, dtype=np.float32))
    with pytest.raises(NpuEpError, match="expected shape"):
        load_audio(np.zeros((2, 2, 1000), dtype=np.float32))


@pytest.mark.parametrize("scale", [32767.0, 1e6])
def test_float_audio_far_outside_unit_range_is_refused_in_one_line(tmp_path: Path, scale: float) -> None:
    tone = _tone(16000, 1.0)
    path = tmp_path / "unscaled.wav"
    sf.write(path, tone * scale, 16000, subtype="FLOAT")  # int16 values stored as float, or worse
    with pytest.raises(NpuEpError, match=r"unscaled.wav: float samples reach .*far outside \[-1, 1\]"):
        load_audio(path)
    with pytest.raises(NpuEpError, match=r"audio array: float samples reach"):
        load_audio((tone * scale).astype(np.float32))
    sf.write(path, tone * 1.2, 16000, subtype="FLOAT")  # a hot master slightly over 1 is still audio
    assert abs(np.abs(load_audio(path)).max() - 0.6) < 0.01


def test_channels_first_arrays_with_many_channels_keep_time_on_the_longer_axis() -> None:
    tone = _tone(16000, 3.0).astype(np.float32)
    sixteen = np.tile(tone, (16, 1))  # (16, N): channels first
    audio = load_audio(sixteen)
    assert len(audio) == 3 * SAMPLE_RATE
    np.testing.assert_allclose(audio, tone, atol=1e-6)
    np.testing.assert_allclose(load_audio(sixteen.T), tone, atol=1e-6)


@pytest.mark.parametrize("rate", ["16000", True, None, 16000j])
def test_a_sample_rate_that_is_not_a_number_is_refused_naming_the_parameter(rate: object) -> None:
    with pytest.raises(NpuEpError, match=r"^audio array: sample_rate .* \(give a number, e\.g\. 16000\)$"):
        load_audio(np.zeros(16000, dtype=np.float32), sample_rate=rate)


@pytest.mark.parametrize("values", [np.ones(16000, dtype=bool), np.ones(16000, dtype=np.complex64), np.array(["0.1"] * 800)])
def test_bool_complex_and_text_arrays_are_not_audio(values: np.ndarray) -> None:
    with pytest.raises(NpuEpError, match=rf"^audio array: {values.dtype} values are not audio samples"):
        load_audio(values)


def test_unsigned_pcm_is_centred_as_audio_libraries_read_it(tmp_path: Path) -> None:
    tone = _tone(16000, 0.5)
    path = tmp_path / "u8.wav"
    sf.write(path, tone, 16000, subtype="PCM_U8")
    with open(path, "rb") as handle:  # the raw bytes after the 44-byte header: what a WAV parser hands over
        u8 = np.frombuffer(handle.read()[44:], dtype=np.uint8)
    np.testing.assert_allclose(load_audio(u8), load_audio(path), atol=1e-6)
    np.testing.assert_allclose(load_audio(u8), tone, atol=1 / 128)
    assert load_audio(np.full(800, 32768, dtype=np.uint16)).max() == 0.0


def test_sample_rates_no_recording_has_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "one-hertz.wav"
    sf.write(path, np.zeros(1000), 1, subtype="PCM_16")  # resampled to 16 kHz it would grow 16000-fold
    with pytest.raises(NpuEpError, match=r"one-hertz.wav: sample rate 1 Hz is outside 1000-768000 Hz"):
        load_audio(path)
    with pytest.raises(NpuEpError, match=r"audio array: sample rate 0.001 Hz is outside"):
        load_audio(np.zeros(16000, dtype=np.float32), sample_rate=0.001)


_DECODE_IN_A_NOISY_APP = r"""
import logging, os, sys
import av, av.logging
from npu_ep.errors import NpuEpError
from npu_ep.whisper.audio import load_audio

# An application that shows PyAV's logging, and writes to stderr itself while FFmpeg decodes.
logging.basicConfig()
av.logging.set_level(av.logging.VERBOSE)

class Resampler:
    said = False

    def __init__(self, **settings):
        self.resampler = FFmpegResampler(**settings)

    def resample(self, frame):
        if not Resampler.said:
            Resampler.said = True
            os.write(2, b"the application's own line\n")
        return self.resampler.resample(frame)

FFmpegResampler, av.AudioResampler = av.AudioResampler, Resampler
print(len(load_audio(sys.argv[1])))
try:
    load_audio(sys.argv[2])
except NpuEpError as error:
    print(error)
"""


def test_ffmpeg_is_quiet_but_stderr_stays_open_while_it_decodes(tmp_path: Path) -> None:
    import subprocess
    import sys

    good = tmp_path / "tone.m4a"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "sine=frequency=440:duration=2", str(good)],
                   check=True)
    cut = tmp_path / "cut.m4a"
    cut.write_bytes(good.read_bytes()[:-4000])  # the index (moov atom) is at the end: FFmpeg logs that it is missing
    run = subprocess.run([sys.executable, "-c", _DECODE_IN_A_NOISY_APP, str(good), str(cut)], capture_output=True,
                         timeout=120)
    out, err = run.stdout.decode().splitlines(), run.stderr.decode()
    assert run.returncode == 0, err
    assert abs(int(out[0]) - 2 * SAMPLE_RATE) < SAMPLE_RATE // 10 and "not a readable audio file" in out[1]
    assert err == "the application's own line\n"
