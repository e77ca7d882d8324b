"""Batched mode (`batch_size` above 1): windows fixed beforehand, encoded one by one and decoded several at a time.

Most tests run the small random-weight export (fast); the real tiny.en checks what batching must keep:
jfk's and the shipped clips' text, word timestamps and VAD times.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import npu_ep
from npu_ep.errors import NpuEpError
from npu_ep.metrics import normalize_text
from npu_ep.whisper.audio import SAMPLE_RATE, load_audio
from npu_ep.whisper.decoding import DecodeOptions
from npu_ep.whisper.formats import transcript_text
from npu_ep.whisper.vad import SpeechMap

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = sorted((ROOT / "samples").glob("*.flac"))
GREEDY = {"temperature": 0.0}  # no sampled fallback: results depend on the audio only, not on a random draw


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "npu_ep", *args], capture_output=True, text=True, cwd=ROOT, timeout=600)


@pytest.fixture(scope="module")
def random_pipeline(random_model_dir: Path) -> npu_ep.Pipeline:
    return npu_ep.Pipeline(random_model_dir, threads=1)


def _speechlike(seconds: float, seed: int) -> np.ndarray:
    """Loud noise: never taken for silence (the random model decodes something from it)."""
    return (0.1 * np.random.default_rng(seed).standard_normal(int(seconds * SAMPLE_RATE))).astype(np.float32)


def test_each_input_decodes_the_same_alone_and_in_a_batch_of_different_lengths(random_pipeline) -> None:
    # 3 s to 70 s: the long one has three windows, so a batch holds windows of several inputs; rows
    # end at different steps (the ended ones are dropped from the batch) without changing the others.
    inputs = [_speechlike(seconds, seed) for seed, seconds in enumerate((3.0, 70.0, 12.0, 0.5))]
    together = list(random_pipeline.transcribe_many(inputs, batch_size=4, **GREEDY))
    assert [result.error for result in together] == [None] * 4
    for audio, result in zip(inputs, together):
        alone, info = random_pipeline.transcribe(audio, batch_size=2, **GREEDY)
        assert [s.tokens for s in result.segments] == [s.tokens for s in alone]
        assert result.info.duration == pytest.approx(len(audio) / SAMPLE_RATE)
    long = together[1].segments
    assert len(long) == 3  # one segment per 30 s window, in order, each spanning its window
    assert [(s.start, s.end) for s in long] == [(0.0, 30.0), (30.0, 60.0), (60.0, 70.0)]


def test_batched_segments_stream_in_order_with_their_windows_times(random_pipeline) -> None:
    stream, info = random_pipeline.transcribe_iter(_speechlike(95.0, 7), batch_size=2, **GREEDY)
    starts = [segment.start for segment in stream]
    assert starts == [0.0, 30.0, 60.0, 90.0]
    assert info.timing.total > 0 and info.timing.encoder > 0 and info.timing.decoder > 0


def test_a_bad_input_in_a_batch_fails_alone(random_pipeline, tmp_path: Path) -> None:
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF not audio at all")
    inputs = [_speechlike(4.0, 1), str(broken), _speechlike(5.0, 2), str(tmp_path / "missing.wav")]
    results = list(random_pipeline.transcribe_many(inputs, batch_size=8, **GREEDY))
    assert [result.error is None for result in results] == [True, False, True, False]
    assert "broken.wav" in str(results[1].error) and "missing.wav" in str(results[3].error)
    assert results[0].segments and results[2].segments


def test_cli_batches_files_and_a_bad_one_does_not_lose_the_others(random_model_dir: Path, tmp_path: Path) -> None:
    good = []
    for seed, seconds in enumerate((3.0, 40.0, 6.0)):
        good.append(tmp_path / f"good{seed}.wav")
        sf.write(good[-1], _speechlike(seconds, seed), SAMPLE_RATE)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"")
    out = tmp_path / "out"
    result = _cli("transcribe", str(good[0]), str(bad), str(good[1]), str(good[2]), "--model", str(random_model_dir),
                  "--batch-size", "4", "--temperature", "0", "--format", "json", "--output-dir", str(out), "--quiet",
                  "--threads", "1")
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("npu-ep: error")]
    assert len(errors) == 1 and "bad.wav" in errors[0] and "empty" in errors[0]
    written = {path.name: json.loads(path.read_text()) for path in out.glob("*.json")}
    assert sorted(written) == ["good0.json", "good1.json", "good2.json"]
    assert [len(written[f"good{i}.json"]["segments"]) for i in range(3)] == [1, 2, 1]


@pytest.mark.parametrize(("args", "message"), [
    (["--batch-size", "0"], "--batch-size 0: must be a whole number between 1 and 64"),
    (["--batch-size", "65"], "--batch-size 65: must be a whole number between 1 and 64"),
    (["--batch-size", "two"], "argument --batch-size/--batch_size: invalid int value: 'two'"),
    (["--batch-size", "4", "--prefix", "So"], "--prefix with --batch-size above 1"),
])
def test_batch_size_errors_are_one_line_before_the_model_loads(args: list[str], message: str, tmp_path: Path) -> None:
    clip = tmp_path / "clip.wav"
    sf.write(clip, _speechlike(1.0, 0), SAMPLE_RATE)
    result = _cli("transcribe", str(clip), "--model", str(tmp_path / "no-model-here"), *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert len([line for line in result.stderr.splitlines() if "error" in line]) == 1
    assert "no-model-here" not in result.stderr  # refused before the model is looked for


def test_batch_size_is_checked_in_the_api() -> None:
    for bad in (0, -1, 2.5, True, 100):
        with pytest.raises(NpuEpError, match="batch-size"):
            DecodeOptions(batch_size=bad)
    with pytest.raises(NpuEpError, match="hallucination-silence-threshold with --batch-size"):
        DecodeOptions(batch_size=8, word_timestamps=True, hallucination_silence_threshold=2.0)


def test_speech_chunks_are_grouped_into_windows_of_whole_chunks() -> None:
    second = SAMPLE_RATE
    # Chunks of 10, 15, 8, 40 and 3 s, each after a pause (which the joined speech leaves out).
    chunks, at = [], 0
    for length in (10, 15, 8, 40, 3):
        at += 2 * second
        chunks.append((at, at + length * second))
        at += length * second
    windows = SpeechMap(chunks).windows(30 * second)
    # The 40 s chunk is cut at 30 s; its last 10 s and the 3 s chunk after it share a window.
    assert [(a / second, b / second) for a, b in windows] == [(0, 25), (25, 33), (33, 63), (63, 76)]


def test_real_batched_words_equal_sequential_words_on_jfk_and_the_samples(tiny_en_dir: Path, jfk_path: Path) -> None:
    pipeline = npu_ep.Pipeline(tiny_en_dir, threads=2)
    files = [jfk_path, *SAMPLES]
    sequential = [transcript_text(pipeline.transcribe(file)[0]) for file in files]
    results = list(pipeline.transcribe_many(files, batch_size=8))
    batched = [transcript_text(result.segments) for result in results]
    # The same words. Decoded without timestamps, the text may be punctuated differently: tiny.en ends
    # jfk's sentences with full stops there.
    assert [normalize_text(text) for text in batched] == [normalize_text(text) for text in sequential]
    assert batched[0].endswith("can do for your country.") and sequential[0].endswith("can do for your country")
    # One segment per file, spanning its audio.
    for file, result in zip(files, results):
        assert len(result.segments) == 1 and result.segments[0].start == 0.0
        assert result.segments[0].end == pytest.approx(len(load_audio(file)) / SAMPLE_RATE, abs=0.01)


def test_real_batched_vad_and_word_timestamps_keep_the_recordings_times(tiny_en_dir: Path, jfk_path: Path) -> None:
    pytest.importorskip("faster_whisper")  # Silero VAD's model ships in it (the vad extra)
    jfk = load_audio(jfk_path)
    gap = np.zeros(25 * SAMPLE_RATE, dtype=np.float32)
    audio = np.concatenate([jfk, gap, jfk])  # jfk at 0 s and at 36 s
    pipeline = npu_ep.Pipeline(tiny_en_dir, threads=2)
    segments, info = pipeline.transcribe(audio, batch_size=4, vad_filter=True, word_timestamps=True)
    text = transcript_text(segments)
    # Both copies may now share one window, punctuated as tiny.en likes ("asked, not, what"): count words.
    assert " ".join(normalize_text(text)).count("not what your country can do for you") == 2, text
    second_start = 11.0 + 25.0
    words = [word for segment in segments for word in segment.words]
    assert all(a.start <= b.start for a, b in zip(words, words[1:]))
    first_half = [w for w in words if w.start < second_start]
    second_half = [w for w in words if w.start >= second_start]
    assert first_half and second_half
    assert first_half[-1].end <= 11.5  # no word in the silence
    # In the recording's time: the second jfk's first word near 36 s (in the joined speech it is at 11 s).
    assert second_start - 0.5 <= second_half[0].start <= second_start + 1.5
    assert "country" in second_half[-1].word.lower() and second_half[-1].end <= info.duration
