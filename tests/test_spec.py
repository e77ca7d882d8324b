"""npu_ep.whisper.spec against what the export really writes: its names, dims and token facts are the
ones every other layer reads."""
from __future__ import annotations

import json
from pathlib import Path

import onnx

from npu_ep.model_folder import read_manifest
from npu_ep.whisper import spec


def _names(path: Path, side: str) -> set[str]:
    graph = onnx.load(str(path), load_external_data=False).graph
    return {v.name for v in getattr(graph, side)}


def test_graph_names_are_the_exported_ones(random_model_dir: Path) -> None:
    encoder = random_model_dir / spec.ENCODER_FILE
    decoder = random_model_dir / spec.DECODER_FILE
    with_past = random_model_dir / spec.DECODER_WITH_PAST_FILE
    assert _names(encoder, "input") == {spec.INPUT_FEATURES} and _names(encoder, "output") == {spec.ENCODER_OUTPUT}
    assert _names(decoder, "input") == {spec.INPUT_IDS, spec.ENCODER_HIDDEN_STATES, spec.LOGITS_START}
    presents = {n for n in _names(decoder, "output") if n.startswith(spec.PRESENT)}
    assert spec.LOGITS in _names(decoder, "output") and presents
    # Every cache the first pass returns is an input of the decoder with past, under past_name.
    assert {spec.past_name(n) for n in presents} == _names(with_past, "input") - {spec.INPUT_IDS}
    cross = {n for n in presents if spec.is_cross_attention(n)}
    assert cross and cross != presents  # both kinds exist, and the test tells them apart
    # The decoder with past returns only the self-attention caches, which grow.
    assert {n for n in _names(with_past, "output") if n.startswith(spec.PRESENT)} == presents - cross


def test_dims_read_from_the_manifest_are_the_config_ones(random_model_dir: Path) -> None:
    manifest = read_manifest(random_model_dir)
    dims = spec.ModelDims.from_manifest(manifest)
    config = json.loads((random_model_dir / spec.CONFIG_FILE).read_text())
    assert dims == spec.ModelDims.from_config(config)
    assert (dims.n_audio_ctx, dims.n_vocab, dims.multilingual) == (spec.ENCODER_POSITIONS, 51864, False)
    assert manifest["multilingual"] is dims.multilingual


def test_token_facts_match_the_tokenizer(random_model_dir: Path) -> None:
    added = {t["content"] for t in json.loads((random_model_dir / spec.TOKENIZER_FILE).read_text())["added_tokens"]}
    # tiny.en's tokenizer: every role but <|nospeech|> (which it calls <|nocaptions|>) is there.
    assert set(spec.SPECIAL_TOKENS.values()) - added == {spec.SPECIAL_TOKENS["no_speech"]}
    assert spec.NO_SPEECH_OLD in added
    assert spec.LANGUAGE_TOKEN.match("<|en|>") and spec.LANGUAGE_TOKEN.match("<|haw|>")
    assert not spec.LANGUAGE_TOKEN.match("<|nocaptions|>")
    assert spec.is_multilingual(51865) and not spec.is_multilingual(51864)
