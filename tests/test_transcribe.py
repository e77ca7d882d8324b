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


def test_a_window_opening_with_its_prompts_last_sentence_is_decoded_again_without_the_prompt(
    base_dir: Path, jfk_path: Path, tmp_path: Path
) -> None:
    """The bench's long clip is the four samples three times over. base int8, prompted with the second
    pass, opens its third window with the prompt's last sentence and skips the three it hears (25 % WER on
    an AVX2 EPYC, and on an AVX-512 one); decoded again unprompted, the window says what it hears."""
    from npu_ep.bench.suite import build_suite
    from npu_ep.quantize import quantize_model
    from npu_ep.whisper.hallucination import repeats_prompt
    from npu_ep.whisper.pipeline import Segment

    def segment(text: str) -> Segment:
        return Segment(start=0.0, end=1.0, text=text, tokens=[], avg_logprob=0.0, no_speech_prob=0.0,
                       temperature=0.0, compression_ratio=1.0)

    assert repeats_prompt([segment(" "), segment(" The weather, today.")], " the weather today")
    assert not repeats_prompt([segment(" The weather today is cold.")], " the weather today")
    assert not repeats_prompt([segment("...")], "!")

    files, references = build_suite("default", root=tmp_path / "suite")
    out, _ = quantize_model(base_dir, "dynamic", tmp_path / "base-int8-dynamic", evaluation=[jfk_path],
                            max_wer_increase=100.0, progress=False)
    segments, _ = npu_ep.Pipeline(out).transcribe(next(f for f in files if f.name == "long.wav"), progress=False)
    errors, words = word_errors(references["long.wav"], transcript_text(segments))
    assert errors <= 0.06 * words, transcript_text(segments)


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


def _speak(text: str, path: Path, voice: str = "en-us") -> Path:
    """`text` synthesised by espeak-ng (a Debian package the CI installs) into a wav file."""
    import subprocess

    subprocess.run(["espeak-ng", "-v", voice, "-s", "150", "-w", str(path), text], check=True, capture_output=True)
    return path


def test_hotwords_spell_a_word_the_model_misses(tiny_en_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    clip = _speak("Please deploy the new service on Kubernetes tomorrow morning.", tmp_path / "deploy.wav")
    pipeline = npu_ep.Pipeline(tiny_en_dir)
    plain = transcript_text(pipeline.transcribe(clip)[0])
    assert "Kubernetes" not in plain  # tiny.en hears "Cuba, need"
    assert "Kubernetes" in transcript_text(pipeline.transcribe(clip, hotwords="Kubernetes")[0])
    assert main(["transcribe", str(clip), "--model", str(tiny_en_dir), "--hotwords", "Kubernetes", "--quiet"]) == 0
    assert "Kubernetes" in capsys.readouterr().out
    # An initial prompt holding the word steers the first window the same way.
    assert "Kubernetes" in transcript_text(pipeline.transcribe(clip, initial_prompt="Kubernetes clusters.")[0])


def test_prefix_starts_the_transcript(tiny_en: npu_ep.Pipeline, jfk_path: Path) -> None:
    segments, info = tiny_en.transcribe(jfk_path, prefix="And so, my fellow Americans,")
    assert transcript_text(segments).startswith("And so, my fellow Americans,")
    assert segments[0].start == 0.0 and info.options.prefix == "And so, my fellow Americans,"
    assert word_errors(JFK, transcript_text(segments))[0] == 0


def test_clip_timestamps_decode_only_the_clips(tiny_en: npu_ep.Pipeline, jfk_path: Path) -> None:
    jfk = load_audio(jfk_path)
    clip = np.concatenate([jfk, np.zeros(4 * SAMPLE_RATE, dtype=np.float32), jfk])  # 26 s, speech twice
    segments, _ = tiny_en.transcribe(clip, clip_timestamps=(15.0,))  # from 15 s to the end
    assert word_errors(JFK, transcript_text(segments))[0] == 0
    assert all(s.start >= 15.0 for s in segments)
    segments, _ = tiny_en.transcribe(clip, clip_timestamps="0,11.2,15,26")
    assert word_errors(" ".join([JFK] * 2), transcript_text(segments))[0] <= 1
    assert segments[0].start < 1.0 and any(s.start >= 15.0 for s in segments)


@pytest.mark.needs_weights
@pytest.mark.slow
def test_mixed_language_audio_per_window(jfk_path: Path, tmp_path: Path) -> None:
    from npu_ep.export import resolve_model

    german = load_audio(_speak("Guten Morgen. Heute ist das Wetter sehr schön, und wir gehen in den Park.",
                               tmp_path / "de.wav", voice="de"))
    jfk = load_audio(jfk_path)
    clip = np.concatenate([jfk, np.zeros(30 * SAMPLE_RATE - len(jfk), dtype=np.float32), german])
    pipeline = npu_ep.Pipeline(resolve_model("base"))
    segments, info = pipeline.transcribe(clip, multilingual=True)
    assert info.language == "en"
    languages = {s.language for s in segments}
    assert languages == {"en", "de"}, [(s.language, s.text) for s in segments]
    assert all(s.language == "en" for s in segments if s.end <= 12.0)
    assert all(s.language == "de" for s in segments if s.start >= 30.0)
    # Without it the file's language (detected on the first window) holds throughout.
    segments, _ = pipeline.transcribe(clip)
    assert {s.language for s in segments} == {"en"}
    with pytest.raises(NpuEpError, match="--multilingual: this model is English-only"):
        npu_ep.Pipeline("tiny.en").check(npu_ep.DecodeOptions(multilingual=True))


def test_cli_decoding_options(tiny_en_dir: Path, jfk_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    from npu_ep.whisper import pipeline as pipeline_module

    used = []
    original = pipeline_module.Pipeline.transcribe_iter
    monkeypatch.setattr(pipeline_module.Pipeline, "transcribe_iter",
                        lambda self, audio, options, **kw: used.append(options) or original(self, audio, options, **kw))
    args = ["--beam_size", "2", "--best-of", "3", "--patience", "1.5", "--length-penalty", "0.5",
            "--temperature", "0", "--temperature_increment_on_fallback", "0.25", "--logprob-threshold", "none",
            "--no_speech_threshold", "0.5", "--compression-ratio-threshold", "2.2",
            "--condition_on_previous_text", "False", "--initial-prompt", "Kennedy.", "--suppress-tokens=-1,220"]
    output = tmp_path / "out"
    assert main(["transcribe", str(jfk_path), "--model", str(tiny_en_dir), *args, "--output-dir", str(output),
                 "--quiet"]) == 0
    assert used[-1] == npu_ep.DecodeOptions(
        beam_size=2, best_of=3, patience=1.5, length_penalty=0.5, temperature=(0.0, 0.25, 0.5, 0.75, 1.0),
        logprob_threshold=None, no_speech_threshold=0.5, compression_ratio_threshold=2.2,
        condition_on_previous_text=False, initial_prompt="Kennedy.", suppress_tokens=(-1, 220),
    )
    assert word_errors(JFK, (output / "jfk.txt").read_text())[0] <= 1
    # Bad values are one line each, before any model loads.
    monkeypatch.setattr(pipeline_module.Pipeline, "__init__", lambda *a, **k: pytest.fail("model loaded"))
    for bad, message in [(["--beam-size", "100"], "--beam-size 100: must be between 1 and 64"),
                         (["--patience", "-1"], "--patience -1.0"),
                         (["--clip-timestamps", "5,2"], "--clip-timestamps 5,2"),
                         (["--no-speech-threshold", "3"], "--no-speech-threshold 3.0")]:
        assert main(["transcribe", str(jfk_path), *bad, "--quiet"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, err
