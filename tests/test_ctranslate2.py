"""CTranslate2 model.bin: read, write, round trip, damaged files, and export from a CT2 folder."""
from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from npu_ep.bench.shapes import build_random_whisper
from npu_ep.errors import NpuEpError
from npu_ep.export import ct2_model_dir, export_model
from npu_ep.export.convert import ct2_dims, ct2_to_state_dict, prompt_ids, state_dict_to_ct2
from npu_ep.export.ctranslate2 import Ct2Model, read_model_bin, write_model_bin


@pytest.fixture(scope="module")
def random_state(tmp_path_factory) -> dict[str, np.ndarray]:
    """The state dict of the same random model `random_model_dir` was exported from (same seed)."""
    from safetensors.numpy import load_file

    folder = build_random_whisper(tmp_path_factory.mktemp("hf"))
    return load_file(folder / "model.safetensors")


@pytest.fixture(scope="module")
def random_ct2_dir(tmp_path_factory, random_state) -> Path:
    """A CTranslate2 Whisper folder (model.bin, config.json, tokenizer.json) of the random model."""
    folder = tmp_path_factory.mktemp("ct2")
    write_model_bin(folder / "model.bin", state_dict_to_ct2(random_state, encoder_heads=4, decoder_heads=4))
    package = ct2_model_dir("tiny.en")
    shutil.copyfile(package / "tokenizer.json", folder / "tokenizer.json")
    config = json.loads((package / "config.json").read_text())
    config["alignment_heads"] = [[1, 0], [1, 3]]  # tiny.en's name layers 2 and 3; this model has 2 layers
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_round_trip_keeps_every_variable(tmp_path):
    variables = {
        "a/weight": np.arange(12, dtype=np.float16).reshape(3, 4),
        "a/flag": np.array(3, dtype=np.int8),
        "b/count": np.array([-2, 7], dtype=np.int16),
        "b/ids": np.array([[1, 2]], dtype=np.int32),
        "c/full": np.linspace(-1, 1, 5, dtype=np.float32),
    }
    write_model_bin(tmp_path / "model.bin", Ct2Model("WhisperSpec", 3, variables, {"d/tied": "a/weight"}))
    model = read_model_bin(tmp_path / "model.bin")
    assert (model.spec_name, model.spec_revision) == ("WhisperSpec", 3)
    assert model.aliases == {"d/tied": "a/weight"}
    assert model.variables.keys() == variables.keys()
    for name, value in variables.items():
        assert model.variables[name].dtype == value.dtype and np.array_equal(model.variables[name], value)
    assert np.array_equal(model.get("d/tied"), variables["a/weight"])


def test_whisper_weights_survive_conversion_both_ways(random_state):
    model = state_dict_to_ct2(random_state, encoder_heads=4, decoder_heads=4)
    # Whisper's k_proj has no bias: CT2 stores zeros in its slot of the fused q/k/v bias.
    fused = model.variables["encoder/layer_0/self_attention/linear_0/bias"]
    assert fused.shape == (192,) and not fused[64:128].any()
    back = ct2_to_state_dict(model)
    # save_pretrained drops the tied output projection; the converter restores it from the embeddings.
    assert set(back) == set(random_state) | {"proj_out.weight"}
    assert np.array_equal(back["proj_out.weight"], random_state["model.decoder.embed_tokens.weight"])
    for name, value in random_state.items():
        assert np.array_equal(back[name], value), name
    assert ct2_dims(model).n_audio_layer == 2 and ct2_dims(model).n_text_head == 4


@pytest.mark.needs_weights
def test_reads_the_real_tiny_en_package():
    model = read_model_bin(ct2_model_dir("tiny.en") / "model.bin")
    dims = ct2_dims(model)
    assert (dims.n_audio_state, dims.n_audio_layer, dims.n_audio_head, dims.n_vocab) == (384, 4, 6, 51864)
    assert model.aliases["decoder/projection/weight"] == "decoder/embeddings/weight"


@pytest.mark.needs_weights
@pytest.mark.slow
def test_base_parts_are_joined_once_into_a_loadable_folder():
    folder = ct2_model_dir("base")
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == [
        "config.json", "model.bin", "tokenizer.json", "vocabulary.txt"]
    dims = ct2_dims(read_model_bin(folder / "model.bin"))
    assert (dims.n_audio_state, dims.n_text_layer, dims.n_text_head, dims.n_vocab) == (512, 6, 8, 51865)
    stamp = (folder / "model.bin").stat().st_mtime_ns
    assert ct2_model_dir("base") == folder and (folder / "model.bin").stat().st_mtime_ns == stamp


def _offsets(data: bytes) -> tuple[int, int]:
    """Byte offsets of the first variable's dtype byte and of the end of its header."""
    name_len = struct.unpack_from("<H", data, 4)[0]
    first = 4 + 2 + name_len + 4 + 4  # version, spec name, revision, variable count
    var_name_len = struct.unpack_from("<H", data, first)[0]
    rank_at = first + 2 + var_name_len
    rank = data[rank_at]
    return rank_at + 1 + 4 * rank, first


@pytest.mark.parametrize("cut", [3, 40, -5])
def test_truncated_file_names_the_offset(tmp_path, random_ct2_dir, cut):
    data = (random_ct2_dir / "model.bin").read_bytes()
    (tmp_path / "model.bin").write_bytes(data[:cut])
    with pytest.raises(NpuEpError, match=r"byte offset \d+") as error:
        read_model_bin(tmp_path / "model.bin")
    assert "truncated" in str(error.value) and "\n" not in str(error.value)


def test_corrupt_dtype_names_its_offset(tmp_path, random_ct2_dir):
    data = bytearray((random_ct2_dir / "model.bin").read_bytes())
    dtype_at, variable_at = _offsets(bytes(data))
    data[dtype_at] = 99
    (tmp_path / "model.bin").write_bytes(bytes(data))
    with pytest.raises(NpuEpError, match=f"unknown dtype id 99 at byte offset {variable_at} "):
        read_model_bin(tmp_path / "model.bin")


def test_wrong_version_is_refused(tmp_path):
    (tmp_path / "model.bin").write_bytes(struct.pack("<I", 5) + b"\0" * 16)
    with pytest.raises(NpuEpError, match="binary version 5"):
        read_model_bin(tmp_path / "model.bin")


def test_export_from_ct2_folder_matches_the_hf_export(tmp_path, random_ct2_dir, random_model_dir):
    """The CT2 path (our converter) and the Hugging Face path give the same ONNX model."""
    import onnxruntime as ort

    out = export_model(random_ct2_dir, out_dir=tmp_path / "from-ct2")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["source"]["kind"] == "ctranslate2-folder"
    generation = json.loads((out / "generation_config.json").read_text())
    package_config = json.loads((random_ct2_dir / "config.json").read_text())
    assert generation["suppress_tokens"] == package_config["suppress_ids"]
    assert generation["begin_suppress_tokens"] == package_config["suppress_ids_begin"]
    assert generation["alignment_heads"] == package_config["alignment_heads"]

    features = np.random.default_rng(1).uniform(-1, 1, (1, 80, 3000)).astype(np.float32)
    ids = np.array([prompt_ids(out / "tokenizer.json", 51864) + [440, 1002]], dtype=np.int64)
    results = []
    for folder in (out, random_model_dir):
        encoder = ort.InferenceSession(str(folder / "encoder_model.onnx"), providers=["CPUExecutionProvider"])
        decoder = ort.InferenceSession(str(folder / "decoder_model.onnx"), providers=["CPUExecutionProvider"])
        hidden = encoder.run(None, {"input_features": features})[0]
        results.append(decoder.run(["logits"], {"input_ids": ids, "encoder_hidden_states": hidden})[0])
    assert np.abs(results[0] - results[1]).max() < 1e-4
