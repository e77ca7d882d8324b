"""`npu-ep bench`: a short real run, the built-in suite, and bad input."""
from __future__ import annotations

import json
import time

import pytest
import soundfile as sf

from npu_ep.bench.suite import LONG_MIN_SECONDS, SUITE_FILE, build_suite
from npu_ep.cli import main
from npu_ep.errors import NpuEpError
from npu_ep.paths import SAMPLES_DIR

JFK_TEXT = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."


@pytest.fixture
def jfk_refs(tmp_path, jfk_path):
    refs = tmp_path / "refs.json"
    refs.write_text(json.dumps({jfk_path.name: JFK_TEXT}))
    return refs


def test_bench_measures_ours_and_skips_a_missing_engine(tmp_path, tiny_en_dir, jfk_path, jfk_refs, capsys, monkeypatch):
    # An empty models folder: no quantized variant of tiny.en exists there, so ours-int8 must be skipped.
    monkeypatch.setenv("NPU_EP_MODELS", str(tmp_path / "models"))
    out = tmp_path / "out"
    code = main([
        "bench", str(jfk_path), "--refs", str(jfk_refs), "--models", str(tiny_en_dir),
        "--engines", "ours-fp32,ours-int8", "--repeat", "1", "--threads", "1", "--shapes", "none", "--out", str(out),
    ])
    assert code == 0
    table = capsys.readouterr().out
    report = json.loads((out / "bench.json").read_text())
    results = {(r["engine"], r["beam_size"]): r for r in report["results"]}

    ours = results[("ours-fp32", 1)]
    assert ours["status"] == "ok"
    assert ours["wer"] == 0.0
    assert ours["x_realtime"] > 0 and ours["peak_rss_mb"] > 50 and ours["load_seconds"] > 0
    assert set(ours["stages"]) == {"features", "encoder", "decoder"} and ours["stages"]["encoder"] > 0
    assert "| ours-fp32 | 1 |" in table

    assert results[("ours-int8", 1)]["status"] == "skipped"
    assert "npu-ep quantize" in results[("ours-int8", 1)]["note"]
    assert "ours-int8 on" in table and "--mode dynamic" in table

    assert (out / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert report["files"][0]["audio_seconds"] == pytest.approx(11.0, abs=0.1)
    from npu_ep.machine import cpu

    assert report["machine"]["cpu"] == cpu().as_dict()
    assert f"CPU: {cpu().model} ({', '.join(cpu().feature_names())})." in table


def test_unavailable_engine_is_skipped_with_a_note(tmp_path, random_model_dir, jfk_path, capsys):
    # A model given as a folder has no known CTranslate2 weights, so faster-whisper cannot run on it.
    code = main([
        "bench", str(jfk_path), "--models", str(random_model_dir), "--engines", "faster-whisper-int8",
        "--repeat", "1", "--shapes", "none", "--out", str(tmp_path),
    ])
    assert code == 0
    report = json.loads((tmp_path / "bench.json").read_text())
    assert [r["status"] for r in report["results"]] == ["skipped"]
    assert "faster-whisper-int8 on" in capsys.readouterr().out
    assert (tmp_path / "bench.png").is_file()


def test_default_suite_is_built_once_with_references(tmp_path):
    files, references = build_suite("default", root=tmp_path)
    assert [path.name for path in files] == list(references)
    assert all(path.is_file() for path in files)
    assert references["silence.wav"] == ""
    long_info = sf.info(tmp_path / "default" / "long.wav")
    assert long_info.samplerate == 16000 and long_info.duration > LONG_MIN_SECONDS
    noisy = [name for name in references if name.startswith("noisy-")]
    assert len(noisy) == 1 and references[noisy[0]] == references["clip-" + noisy[0][len("noisy-"):]]

    before = {path: path.stat().st_mtime_ns for path in files}
    time.sleep(0.01)
    assert build_suite("default", root=tmp_path) == (files, references)
    assert {path: path.stat().st_mtime_ns for path in files} == before


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--engines", "ours-fp32,whisper.cpp"], "unknown engine whisper.cpp"),
        (["--beam-size", "one"], "--beam-size"),
        (["--suite", "nope"], "unknown suite"),
        (["missing.wav"], "missing.wav: no such audio file"),
        ([], "nothing to bench"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, argv, message, capsys):
    assert main(["bench", *argv, "--out", str(tmp_path)]) == 2
    error = capsys.readouterr().err.strip()
    assert message in error and len(error.splitlines()) == 1


@pytest.mark.parametrize(
    "content, message",
    [("{not json", "not a readable JSON references file"), ("[]", "not a JSON object"),
     ('{"jfk.flac": ["ask", "not"]}', "the entry for 'jfk.flac' is not text")],
)
def test_bad_references_file(tmp_path, jfk_path, capsys, content, message):
    refs = tmp_path / "refs.json"
    refs.write_text(content)
    assert main(["bench", str(jfk_path), "--refs", str(refs), "--out", str(tmp_path)]) == 2
    error = capsys.readouterr().err.strip()
    assert f"refs.json: {message}" in error and "make it a JSON object mapping audio file name" in error
    assert len(error.splitlines()) == 1


def test_two_model_folders_with_one_name_are_refused(tmp_path, jfk_path, capsys):
    for parent in ("a", "b"):
        (tmp_path / parent / "tiny.en").mkdir(parents=True)
    models = f"{tmp_path / 'a' / 'tiny.en'},{tmp_path / 'b' / 'tiny.en'}"
    assert main(["bench", str(jfk_path), "--models", models, "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err.strip()
    assert "both named tiny.en" in error and "rename one" in error and len(error.splitlines()) == 1


@pytest.mark.parametrize("damage", ["{not json", "[]", '{"stamp": "old"}', "missing clip"])
def test_damaged_cached_suite_is_rebuilt(tmp_path, damage):
    files, references = build_suite("default", root=tmp_path)
    if damage == "missing clip":
        files[0].unlink()
    else:
        (tmp_path / "default" / SUITE_FILE).write_text(damage)
    assert build_suite("default", root=tmp_path) == (files, references)
    assert all(path.is_file() for path in files)


def test_malformed_shipped_references_is_one_line(tmp_path):
    samples = tmp_path / "samples"
    samples.mkdir()
    (samples / "references.json").write_text('{"hello.flac": "Hello", }')
    with pytest.raises(NpuEpError) as error:
        build_suite("default", samples_dir=samples, root=tmp_path / "cache")
    message = str(error.value)
    assert message.startswith(f"{samples / 'references.json'}: not a readable JSON references file")
    assert "make it a JSON object" in message and "\n" not in message


def test_shipped_samples_have_valid_references():
    from npu_ep.metrics import load_references

    references = load_references(SAMPLES_DIR / "references.json")
    assert references and all((SAMPLES_DIR / name).is_file() for name in references)


def test_errors_per_word_charge_the_alignment_to_reference_words():
    from npu_ep.metrics import errors_per_word, word_errors

    # "your" substituted, "for" deleted, "friends" inserted after the last word.
    hypothesis = "And so my fellow Americans, ask not what my country can do you, ask what you can do for your country friends."
    charged = errors_per_word(JFK_TEXT, hypothesis)
    assert sum(charged) == word_errors(JFK_TEXT, hypothesis)[0] == 3
    words = JFK_TEXT.lower().replace(",", "").rstrip(".").split()
    assert [words[i] for i, count in enumerate(charged) if count] == ["your", "for", "country"]
    assert errors_per_word("", "words in silence") == []


def test_wer_interval_tells_a_real_difference_from_chance():
    from npu_ep.metrics import wer_difference_interval

    sentences = [f"Sentence number {n} is read aloud by a voice." for n in range(60)]
    reference = " ".join(sentences)
    # A drops one word of every sentence: a difference the interval must keep away from zero.
    dropped = " ".join(s.replace(" aloud", "") for s in sentences)
    difference, low, high = wer_difference_interval([(reference, dropped, reference)])
    assert difference == pytest.approx(100 / 9) and 0 < low <= difference <= high
    # A and B each miss one different sentence's word: equal WER, an interval around zero.
    first = reference.replace("number 3 is", "number 3")
    second = reference.replace("number 40 is", "number 40")
    difference, low, high = wer_difference_interval([(reference, first, second)])
    assert difference == 0 and low < 0 < high
    assert wer_difference_interval([("", "uh", "")]) is None
