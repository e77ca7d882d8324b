"""Voice activity detection: Silero VAD finds the speech, timestamps map back across removed silence."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import npu_ep
from npu_ep.errors import NpuEpError
from npu_ep.whisper.audio import SAMPLE_RATE, load_audio
from npu_ep.whisper.vad import SpeechMap, VadOptions, model_path, speech_chunks, speech_probabilities

SILENCE = 60.0


def _words(text: str) -> list[str]:
    return re.sub(r"[^a-z' ]", " ", text.lower()).split()


@pytest.fixture(scope="module")
def speech_silence_speech(jfk_path: Path) -> tuple[np.ndarray, np.ndarray]:
    speech = load_audio(jfk_path)
    # A quiet room, not digital silence: the model itself has to call it silence.
    room = np.random.default_rng(0).normal(0, 2e-3, int(SILENCE * SAMPLE_RATE)).astype(np.float32)
    return np.concatenate([speech, speech]), np.concatenate([speech, room, speech])


def test_model_ships_in_an_installed_package() -> None:
    assert model_path().is_file() and "faster_whisper" in str(model_path())


def test_speech_chunks_skip_the_silence(speech_silence_speech) -> None:
    _, clip = speech_silence_speech
    chunks = speech_chunks(clip)
    assert len(chunks) == 2
    (_, first_end), (second_start, _) = chunks
    assert first_end / SAMPLE_RATE < 12.0 and second_start / SAMPLE_RATE > 11.0 + SILENCE - 1.0
    assert speech_chunks(np.zeros(SAMPLE_RATE * 5, dtype=np.float32)) == []


def test_speech_probabilities_are_the_shipped_graph_run_over_every_window(jfk_path: Path) -> None:
    import onnxruntime as ort

    speech = load_audio(jfk_path)
    # Digital-silence gaps inside speech: the state the model carries through them decides the scores after.
    gap = np.zeros(SAMPLE_RATE // 2, dtype=np.float32)
    clip = np.concatenate([speech[:3 * SAMPLE_RATE], gap, speech[3 * SAMPLE_RATE:7 * SAMPLE_RATE], gap,
                           speech[7 * SAMPLE_RATE:]])
    windows = np.pad(clip, (0, -len(clip) % 512)).reshape(-1, 512)
    context = np.concatenate([np.zeros((1, 64), np.float32), windows[:-1, -64:]])
    shipped = ort.InferenceSession(str(model_path()), providers=["CPUExecutionProvider"])
    expected = shipped.run(None, {"input": np.concatenate([context, windows], axis=1),
                                  "h": np.zeros((1, 1, 128), np.float32), "c": np.zeros((1, 1, 128), np.float32)})[0]
    np.testing.assert_allclose(speech_probabilities(clip, threads=2), expected.reshape(-1), atol=1e-4)


def test_batched_front_end_scores_as_the_shipped_graph(speech_silence_speech) -> None:
    import onnxruntime as ort

    from npu_ep.whisper.vad import _session

    _, clip = speech_silence_speech
    windows = np.pad(clip, (0, -len(clip) % 512)).reshape(-1, 512)
    context = np.concatenate([np.zeros((1, 64), np.float32), windows[:-1, -64:]])
    feed = {"input": np.concatenate([context, windows], axis=1), "h": np.zeros((1, 1, 128), np.float32),
            "c": np.zeros((1, 1, 128), np.float32)}
    shipped = ort.InferenceSession(str(model_path()), providers=["CPUExecutionProvider"])
    expected = shipped.run(None, feed)
    assert expected[0].max() > 0.9 and expected[0].min() < 0.1
    for threads in (1, 2):
        for got, want in zip(_session(threads).run(None, feed), expected):
            np.testing.assert_allclose(got, want, atol=1e-5)


def test_speech_map_restores_times() -> None:
    speech_map = SpeechMap([(16000, 32000), (80000, 96000)])  # 1-2 s and 5-6 s
    assert speech_map.original(0.5) == 1.5 and speech_map.original(1.5) == 5.5
    assert speech_map.original(1.0, is_end=True) == 2.0

    def restored(start: float, end: float, whole_window: bool = False) -> tuple[float, float]:
        segment = npu_ep.whisper.pipeline.Segment(start=start, end=end, text="", tokens=[], avg_logprob=0.0,
                                                  no_speech_prob=0.0, temperature=0.0, compression_ratio=1.0)
        speech_map.restore(segment, whole_window)
        return segment.start, segment.end

    assert restored(0.2, 0.8) == (1.2, 1.8) and restored(1.2, 1.8) == (5.2, 5.8)
    assert restored(0.8, 1.9) == (5.0, 5.9)  # mostly after the silence: it starts there
    assert restored(0.1, 1.2) == (1.1, 2.0)  # mostly before it: it ends there
    assert restored(0.8, 1.9, whole_window=True) == (1.8, 5.9)  # a batched window's segment spans its speech


def test_vad_gives_the_same_words_shifted_by_the_silence(tiny_en_dir: Path, speech_silence_speech) -> None:
    joined, clip = speech_silence_speech
    pipeline = npu_ep.Pipeline(tiny_en_dir, threads=2)
    plain, _ = pipeline.transcribe(joined, vad_filter=True, word_timestamps=True)
    spaced, info = pipeline.transcribe(clip, vad_filter=True, word_timestamps=True)
    assert info.duration == pytest.approx(len(clip) / SAMPLE_RATE)
    # The same words (Whisper may split them into segments differently around the cut).
    words_plain = [w for s in plain for w in s.words]
    words_spaced = [w for s in spaced for w in s.words]
    assert _words(" ".join(w.word for w in words_spaced)) == _words(" ".join(w.word for w in words_plain))
    half = 11.0 + SILENCE / 2
    shifts = []
    for before, after in zip(words_plain, words_spaced):
        shift = SILENCE if after.start > half else 0.0
        # Word times move by a fraction of a second with the audio around them.
        assert after.start == pytest.approx(before.start + shift, abs=1.0), (before, after)
        if shift:
            shifts.append(after.start - before.start)
    assert shifts and abs(float(np.median(shifts)) - SILENCE) < 0.3
    assert any(s.start > half for s in spaced) and all(not (11.5 < s.start < 10.0 + SILENCE) for s in spaced)

    # Without words, a segment starts on the side of the silence its speech is on: tiny.en opens the
    # meeting sentence at the end of jfk's chunk, in its padding.
    jfk = joined[: len(joined) // 2]
    meeting = load_audio(Path(__file__).resolve().parent.parent / "samples" / "meeting.flac")
    segments, _ = pipeline.transcribe(np.concatenate([jfk, np.zeros_like(clip[: int(SILENCE * SAMPLE_RATE)]), meeting]),
                                      vad_filter=True)
    last = segments[-1]
    assert "report" in last.text and 11.0 + SILENCE - 1.0 < last.start < last.end, [(s.start, s.text) for s in segments]


def test_vad_options_are_checked() -> None:
    assert VadOptions.from_value({"min_silence_duration_ms": 500}).min_silence_duration_ms == 500
    assert VadOptions.from_value(None) is None
    with pytest.raises(NpuEpError, match="unknown vad_parameters key 'silence'"):
        VadOptions.from_value({"silence": 1})
    with pytest.raises(NpuEpError, match="threshold"):
        VadOptions(threshold=1.5)


def test_cli_vad(tiny_en_dir: Path, speech_silence_speech, tmp_path: Path) -> None:
    import soundfile

    _, clip = speech_silence_speech
    wav = tmp_path / "spaced.wav"
    soundfile.write(wav, clip, SAMPLE_RATE)
    run = subprocess.run([sys.executable, "-m", "npu_ep", "transcribe", str(wav), "--model", str(tiny_en_dir),
                          "--vad", "True", "--format", "srt", "--quiet"], capture_output=True, timeout=600)
    assert run.returncode == 0, run.stderr.decode()
    assert run.stdout.decode().count("Americans") == 2 and "00:01:1" in run.stdout.decode()
