"""Word timestamps on real speech: tiny.en and base on jfk, the CLI's word-level subtitles, old folders."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import npu_ep
from npu_ep.errors import NpuEpError
from npu_ep.export import resolve_model
from npu_ep.whisper.dtw import dtw, median_filter


@pytest.fixture(scope="module", params=["tiny.en", "base"])
def words_of_jfk(request, jfk_path: Path):
    pipeline = npu_ep.Pipeline(resolve_model(request.param), threads=2)
    segments, _ = pipeline.transcribe(jfk_path, word_timestamps=True)
    return segments


def test_jfk_words_are_ordered_and_make_up_their_segments(words_of_jfk) -> None:
    segments = words_of_jfk
    assert segments and all(segment.words for segment in segments)
    words = [word for segment in segments for word in segment.words]
    assert all(word.start < word.end for word in words), [w for w in words if w.start >= w.end]
    assert all(a.end <= b.start for a, b in zip(words, words[1:])), "words overlap or go back in time"
    for segment in segments:
        assert segment.text == "".join(word.word for word in segment.words)
        assert (segment.start, segment.end) == (segment.words[0].start, segment.words[-1].end)
        assert all(0.0 <= word.probability <= 1.0 for word in segment.words)
    americans = next(word for word in words if "Americans" in word.word)
    assert americans.start < 1.8 < americans.end


def test_words_off_by_default(tiny_en_dir: Path, jfk_path: Path) -> None:
    segments, _ = npu_ep.transcribe(jfk_path, model=tiny_en_dir)
    assert all(segment.words is None for segment in segments)


def test_dtw_follows_the_cheap_diagonal() -> None:
    cost = np.ones((3, 6), dtype=np.float32)
    for row, (a, b) in enumerate([(0, 2), (2, 4), (4, 6)]):
        cost[row, a:b] = 0.0
    rows, cols = dtw(cost)
    assert rows.tolist() == [0, 0, 1, 1, 2, 2] and cols.tolist() == [0, 1, 2, 3, 4, 5]


def test_median_filter_matches_numpy() -> None:
    x = np.random.default_rng(0).standard_normal((2, 3, 40)).astype(np.float32)
    padded = np.pad(x, [(0, 0), (0, 0), (3, 3)], mode="reflect")
    expected = np.median(np.lib.stride_tricks.sliding_window_view(padded, 7, axis=-1), axis=-1)
    assert np.array_equal(median_filter(x, 7), expected)


def _cli(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "npu_ep", "transcribe", *args], input=stdin, capture_output=True,
                          timeout=600)


def test_cli_word_timestamps_json_and_subtitles(tiny_en_dir: Path, jfk_path: Path, tmp_path: Path) -> None:
    run = _cli(str(jfk_path), "--model", str(tiny_en_dir), "--word-timestamps", "True", "--format", "all",
               "--output-dir", str(tmp_path), "--max-line-width", "24", "--max-line-count", "1", "--quiet")
    assert run.returncode == 0, run.stderr.decode()
    document = json.loads((tmp_path / "jfk.json").read_text())
    words = [w for s in document["segments"] for w in s["words"]]
    assert {"start", "end", "word", "probability"} <= words[0].keys()
    srt = (tmp_path / "jfk.srt").read_text()
    lines = [line for line in srt.splitlines() if line and "-->" not in line and not line.isdigit()]
    assert lines and all(len(line) <= 24 for line in lines)
    assert " ".join(lines).split() == " ".join(w["word"] for w in words).split()
    assert (tmp_path / "jfk.vtt").read_text().startswith("WEBVTT")

    highlighted = _cli(str(jfk_path), "--model", str(tiny_en_dir), "--word-timestamps", "True", "--format", "vtt",
                       "--highlight-words", "True", "--quiet")
    assert highlighted.returncode == 0, highlighted.stderr.decode()
    cues = highlighted.stdout.decode().count("<u>")
    assert cues == len(words)

    without = _cli(str(jfk_path), "--model", str(tiny_en_dir), "--max-line-width", "20", "--quiet")
    assert without.returncode == 2 and b"--word-timestamps" in without.stderr and len(without.stderr.splitlines()) == 1


def test_folder_without_alignment_output_says_so(tiny_en_dir: Path, jfk_path: Path, tmp_path: Path) -> None:
    import onnx

    old = tmp_path / "old-export"
    shutil.copytree(tiny_en_dir, old)
    model = onnx.load(str(old / "decoder_model.onnx"))
    kept = [o for o in model.graph.output if o.name != "alignment_scores"]
    del model.graph.output[:]
    model.graph.output.extend(kept)
    onnx.save(model, str(old / "decoder_model.onnx"))
    pipeline = npu_ep.Pipeline(old, threads=2)
    segments, _ = pipeline.transcribe(jfk_path)  # transcribes as before
    assert "Americans" in segments[0].text
    with pytest.raises(NpuEpError, match="re-export it with: npu-ep") as caught:
        pipeline.transcribe(jfk_path, word_timestamps=True)
    assert str(old) in str(caught.value) and "\n" not in str(caught.value)


def test_hallucination_silence_threshold_drops_text_made_up_in_a_long_silence(tiny_en_dir: Path, jfk_path: Path) -> None:
    from npu_ep.whisper.audio import SAMPLE_RATE, load_audio

    speech = load_audio(jfk_path)
    room = np.random.default_rng(0).normal(0, 2e-3, 60 * SAMPLE_RATE).astype(np.float32)  # a quiet room, 11-71 s
    clip = np.concatenate([speech, room, speech])
    pipeline = npu_ep.Pipeline(tiny_en_dir, threads=2)
    # Without the no-speech rule, tiny.en writes a word into the room's noise (" you", probability 0.02).
    options = dict(word_timestamps=True, no_speech_threshold=None)
    plain, _ = pipeline.transcribe(clip, **options)
    made_up = [s for s in plain if 12.0 < s.start and s.end < 70.0]
    assert made_up, [(s.start, s.text) for s in plain]
    checked, _ = pipeline.transcribe(clip, **options, hallucination_silence_threshold=2.0)
    assert not [s for s in checked if 12.0 < s.start and s.end < 70.0], [(s.start, s.text) for s in checked]
    # The speech on both sides stays.
    assert [s.text for s in checked if s.end < 12.0] == [s.text for s in plain if s.end < 12.0]
    second = " ".join(s.text for s in checked if s.start > 70.0)
    assert "your country" in second, [(s.start, s.text) for s in checked]
