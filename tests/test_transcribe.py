"""End to end: the real tiny.en and base transcribe speech word for word; long audio, silence, the CLI."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import npu_ep
from npu_ep.cli import main
from npu_ep.errors import NpuEpError
from npu_ep.metrics import word_errors
from npu_ep.whisper.audio import SAMPLE_RATE, load_audio
from npu_ep.whisper.formats import transcript_text
from test_audio import BAD_FILE_PROBLEMS, _bad_files

JFK = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def tiny_en(tiny_en_dir: Path) -> npu_ep.Pipeline:
    return npu_ep.Pipeline(tiny_en_dir)


@pytest.mark.parametrize("beam_size", [1, 5])
def test_tiny_en_jfk_zero_word_errors(tiny_en: npu_ep.Pipeline, jfk_path: Path, beam_size: int) -> None:
    segments, info = tiny_en.transcribe(jfk_path, beam_size=beam_size)
    assert word_errors(JFK, transcript_text(segments))[0] == 0
    assert info.language == "en" and abs(info.duration - 11.0) < 0.1
    timing = info.timing
    assert timing.load > 0 and timing.features > 0 and timing.encoder > 0 and timing.decoder > 0
    assert timing.total >= timing.features + timing.encoder + timing.decoder - 1e-3
    assert timing.realtime == pytest.approx(info.duration / timing.total)
    for segment in segments:
        assert 0.0 <= segment.start < segment.end <= info.duration
        assert segment.avg_logprob < 0 and 0 <= segment.no_speech_prob < 0.5 and segment.tokens


@pytest.mark.needs_weights
@pytest.mark.slow
def test_base_jfk_zero_word_errors_with_language_detection(jfk_path: Path) -> None:
    from npu_ep.export import resolve_model

    segments, info = npu_ep.transcribe(jfk_path, model=resolve_model("base"))
    assert word_errors(JFK, transcript_text(segments))[0] == 0
    assert info.language == "en" and info.language_probability > 0.5


def test_long_clip_every_repetition_in_order(tiny_en: npu_ep.Pipeline, jfk_path: Path) -> None:
    jfk = load_audio(jfk_path)
    gap = np.zeros(3 * SAMPLE_RATE, dtype=np.float32)
    repeats = 6
    clip = np.concatenate([part for _ in range(repeats) for part in (jfk, gap)])  # 84 s: three windows or more
    segments, info = tiny_en.transcribe(clip, progress=False)
    assert info.duration > 60
    errors, words = word_errors(" ".join([JFK] * repeats), transcript_text(segments))
    assert errors <= 2, transcript_text(segments)  # a word may blur at a window edge, no repetition may go
    starts = [s.start for s in segments]
    assert starts == sorted(starts)
    for previous, segment in zip(segments, segments[1:]):
        assert previous.start < previous.end <= segment.start + 1e-6
    period = (len(jfk) + len(gap)) / SAMPLE_RATE
    for k in range(repeats):  # each repetition's speech is covered by some segment
        speech_mid = k * period + 5.5
        assert any(s.start <= speech_mid <= s.end for s in segments), k


def test_silence_gives_no_text(tiny_en: npu_ep.Pipeline) -> None:
    hiss = np.random.default_rng(0).normal(0, 1e-4, 20 * SAMPLE_RATE).astype(np.float32)
    for silence in (np.zeros(20 * SAMPLE_RATE, dtype=np.float32), hiss):
        segments, info = tiny_en.transcribe(silence)
        assert transcript_text(segments) == "" and info.duration == 20.0


def test_pipeline_is_reusable_and_takes_arrays(tiny_en: npu_ep.Pipeline, jfk_path: Path) -> None:
    from_file, _ = tiny_en.transcribe(jfk_path)
    stereo_44k = np.stack([load_audio(jfk_path)] * 2, axis=1)
    from_array, _ = tiny_en.transcribe(stereo_44k, sample_rate=SAMPLE_RATE)
    assert word_errors(transcript_text(from_file), transcript_text(from_array))[0] == 0


def test_shipped_samples(tiny_en: npu_ep.Pipeline) -> None:
    references = json.loads((ROOT / "samples" / "references.json").read_text())
    for name, reference in references.items():
        segments, _ = tiny_en.transcribe(ROOT / "samples" / name)
        assert word_errors(reference, transcript_text(segments))[0] == 0, name


def test_cli_formats(tiny_en_dir: Path, jfk_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    for fmt in ("txt", "srt", "vtt", "json"):
        args = ["--format", fmt, "--output-dir", str(tmp_path), "--quiet"]
        assert main(["transcribe", str(jfk_path), "--model", str(tiny_en_dir), *args]) == 0
    assert word_errors(JFK, (tmp_path / "jfk.txt").read_text())[0] == 0
    srt = (tmp_path / "jfk.srt").read_text()
    assert srt.startswith("1\n00:00:00,000 --> 00:00:0") and "\n\n2\n" in srt
    vtt = (tmp_path / "jfk.vtt").read_text()
    assert vtt.startswith("WEBVTT\n\n00:00:00.000 --> ")
    document = json.loads((tmp_path / "jfk.json").read_text())
    assert word_errors(JFK, document["text"])[0] == 0 and document["language"] == "en"
    assert {"start", "end", "text", "tokens", "avg_logprob", "no_speech_prob"} <= set(document["segments"][0])
    assert {"load", "features", "encoder", "decoder", "total", "realtime"} == set(document["timing"])
    assert document["duration"] == pytest.approx(11.0, abs=0.1)
    # Without --output-dir the text goes to stdout.
    capsys.readouterr()
    assert main(["transcribe", str(jfk_path), "--model", str(tiny_en_dir), "--quiet"]) == 0
    assert word_errors(JFK, capsys.readouterr().out)[0] == 0


def test_cli_bad_inputs_in_a_batch(tiny_en_dir: Path, jfk_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = _bad_files(tmp_path)
    order = ["missing", "empty", "text", "zero", "one_sample", "nan"]
    files = [str(bad[kind]) for kind in order]
    files.insert(2, str(jfk_path))
    assert main(["transcribe", *files, "--model", str(tiny_en_dir), "--quiet"]) == 2
    out, err = capsys.readouterr()
    assert word_errors(JFK, out)[0] == 0  # the good file of the batch still transcribes
    lines = err.strip().splitlines()
    assert len(lines) == len(BAD_FILE_PROBLEMS)
    for line, kind in zip(lines, order):
        assert line.startswith("npu-ep: error: ") and str(bad[kind]) in line and BAD_FILE_PROBLEMS[kind] in line


def test_cli_bad_options(tiny_en_dir: Path, jfk_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from npu_ep.export import resolve_model

    base = str(resolve_model("base"))
    assert main(["transcribe", str(jfk_path), "--model", base, "--language", "xx", "--quiet"]) == 2
    assert "--language xx: unknown language code" in capsys.readouterr().err
    assert main(["transcribe", str(jfk_path), "--model", str(tiny_en_dir), "--language", "de", "--quiet"]) == 2
    assert "English-only" in capsys.readouterr().err
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    unwritable = ["--output-dir", str(blocker / "out"), "--quiet"]
    assert main(["transcribe", str(jfk_path), "--model", str(tiny_en_dir), *unwritable]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(blocker / "out") in err and "cannot write the output folder" in err


def test_damaged_folder_and_impossible_options_are_one_line_errors(tiny_en_dir, tmp_path):
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    for file in tiny_en_dir.iterdir():
        (damaged / file.name).symlink_to(file)
    (damaged / "config.json").unlink()
    (damaged / "config.json").write_text('{"num_mel_bins": 80')  # cut short
    with pytest.raises(NpuEpError, match="damaged model folder.*npu-ep export"):
        npu_ep.Pipeline(damaged)
    pipeline = npu_ep.Pipeline(tiny_en_dir)
    speech = np.zeros(16000, dtype=np.float32)
    with pytest.raises(NpuEpError, match="between 1 and 64"):
        pipeline.transcribe(speech, beam_size=60000)
    with pytest.raises(NpuEpError, match="temperature"):
        pipeline.transcribe(speech, temperature=())
    with pytest.raises(NpuEpError, match="sample rate 0"):
        pipeline.transcribe(speech, sample_rate=0)
    with pytest.raises(NpuEpError, match="not audio samples"):
        pipeline.transcribe(np.array(["a", "b"]))


def test_segments_stream_as_windows_finish(tiny_en: npu_ep.Pipeline, jfk_path: Path) -> None:
    jfk = load_audio(jfk_path)
    clip = np.concatenate([jfk, np.zeros(25 * SAMPLE_RATE, dtype=np.float32), jfk])  # two windows of speech
    listed, listed_info = tiny_en.transcribe(clip, beam_size=2, progress=False)
    assert listed_info.options == npu_ep.DecodeOptions(beam_size=2)  # what was used is recorded
    windows = []
    original = tiny_en.decoder.decode
    tiny_en.decoder.decode = lambda *args, **kwargs: windows.append(1) or original(*args, **kwargs)
    try:
        stream, info = tiny_en.transcribe_iter(clip, npu_ep.DecodeOptions(beam_size=2), progress=False)
        assert windows == [] and info.timing.total == 0  # nothing decoded before it is asked for
        first = next(stream)
        assert len(windows) == 1 and first.end < 12.0  # the first window's segments come before the second
        streamed = [first, *stream]
    finally:
        tiny_en.decoder.decode = original
    assert len(windows) >= 2 and info.timing.total > 0
    assert [s.tokens for s in streamed] == [s.tokens for s in listed]
    assert all(s.language == "en" for s in streamed)


def test_unknown_option_is_a_one_line_error(tiny_en: npu_ep.Pipeline) -> None:
    with pytest.raises(NpuEpError, match="unknown decoding option 'beam'"):
        tiny_en.transcribe(np.zeros(16000, dtype=np.float32), beam=5)
