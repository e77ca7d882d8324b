"""CTranslate2 Whisper weights <-> a transformers `WhisperForConditionalGeneration` checkpoint folder.

The CT2 package gives model.bin (weights), config.json (generation settings) and tokenizer.json;
we write a Hugging Face folder (weights, WhisperConfig, GenerationConfig, tokenizer, preprocessor)
that optimum's exporter and transformers both load. Special-token ids come from tokenizer.json.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from npu_ep.errors import NpuEpError
from npu_ep.export.ctranslate2 import Ct2Model, read_model_bin
from npu_ep.whisper.spec import (LANGUAGE_TOKEN, MAX_INITIAL_TIMESTAMP_INDEX, NO_SPEECH_OLD, SPECIAL_TOKENS, ModelDims,
                                 is_multilingual)

# (CT2 name, transformers names): several transformers names are concatenated along rows in CT2;
# None marks Whisper's k_proj bias, which transformers lacks and CT2 stores as zeros.
_Pair = tuple[str, tuple[str | None, ...]]
# The weights files of a Hugging Face checkpoint transformers loads: safetensors, or the older PyTorch pickle.
WEIGHT_SUFFIXES = (".safetensors", ".bin")


def _linear(ct2: str, hf: tuple[str, ...], bias: tuple[str | None, ...] | None = None) -> list[_Pair]:
    bias = bias if bias is not None else tuple(name for name in hf)
    return [(f"{ct2}/weight", tuple(f"{n}.weight" for n in hf)), (f"{ct2}/bias", tuple(n and f"{n}.bias" for n in bias))]


def _norm(ct2: str, hf: str) -> list[_Pair]:
    return [(f"{ct2}/gamma", (f"{hf}.weight",)), (f"{ct2}/beta", (f"{hf}.bias",))]


def variable_map(encoder_layers: int, decoder_layers: int) -> list[_Pair]:
    """Every weight of a Whisper model as (CT2 variable, transformers state-dict keys)."""
    pairs: list[_Pair] = []
    enc, dec = "model.encoder", "model.decoder"
    for conv in ("conv1", "conv2"):
        pairs += [(f"encoder/{conv}/weight", (f"{enc}.{conv}.weight",)), (f"encoder/{conv}/bias", (f"{enc}.{conv}.bias",))]
    pairs.append(("encoder/position_encodings/encodings", (f"{enc}.embed_positions.weight",)))
    pairs += _norm("encoder/layer_norm", f"{enc}.layer_norm")
    for side, count in (("encoder", encoder_layers), ("decoder", decoder_layers)):
        for i in range(count):
            ct2, hf = f"{side}/layer_{i}", f"model.{side}.layers.{i}"
            attn = f"{hf}.self_attn"
            qkv = (f"{attn}.q_proj", f"{attn}.k_proj", f"{attn}.v_proj")
            pairs += _linear(f"{ct2}/self_attention/linear_0", qkv, (qkv[0], None, qkv[2]))
            pairs += _linear(f"{ct2}/self_attention/linear_1", (f"{attn}.out_proj",))
            pairs += _norm(f"{ct2}/self_attention/layer_norm", f"{hf}.self_attn_layer_norm")
            if side == "decoder":
                cross = f"{hf}.encoder_attn"
                pairs += _linear(f"{ct2}/attention/linear_0", (f"{cross}.q_proj",))
                kv = (f"{cross}.k_proj", f"{cross}.v_proj")
                pairs += _linear(f"{ct2}/attention/linear_1", kv, (None, kv[1]))
                pairs += _linear(f"{ct2}/attention/linear_2", (f"{cross}.out_proj",))
                pairs += _norm(f"{ct2}/attention/layer_norm", f"{hf}.encoder_attn_layer_norm")
            pairs += _linear(f"{ct2}/ffn/linear_0", (f"{hf}.fc1",))
            pairs += _linear(f"{ct2}/ffn/linear_1", (f"{hf}.fc2",))
            pairs += _norm(f"{ct2}/ffn/layer_norm", f"{hf}.final_layer_norm")
    pairs.append(("decoder/embeddings/weight", (f"{dec}.embed_tokens.weight",)))
    pairs.append(("decoder/position_encodings/encodings", (f"{dec}.embed_positions.weight",)))
    pairs += _norm("decoder/layer_norm", f"{dec}.layer_norm")
    return pairs


def _count_layers(model: Ct2Model, side: str) -> int:
    return len({match.group(1) for name in model.variables if (match := re.match(rf"{side}/layer_(\d+)/", name))})


def ct2_dims(model: Ct2Model) -> ModelDims:
    """Whisper's dimensions, read from the shapes of the weights."""
    try:
        return ModelDims(
            n_mels=int(model.get("encoder/conv1/weight").shape[1]),
            n_vocab=int(model.get("decoder/embeddings/weight").shape[0]),
            n_audio_ctx=int(model.get("encoder/position_encodings/encodings").shape[0]),
            n_audio_state=int(model.get("encoder/conv1/weight").shape[0]),
            n_audio_head=int(model.get("encoder/num_heads")),
            n_audio_layer=_count_layers(model, "encoder"),
            n_text_ctx=int(model.get("decoder/position_encodings/encodings").shape[0]),
            n_text_state=int(model.get("decoder/embeddings/weight").shape[1]),
            n_text_head=int(model.get("decoder/num_heads")),
            n_text_layer=_count_layers(model, "decoder"),
        )
    except KeyError as error:
        raise NpuEpError(f"model.bin lacks Whisper variable {error} (not a CTranslate2 Whisper model)") from None


def ct2_ffn_dim(model: Ct2Model) -> int:
    """The feed-forward width (not one of openai/whisper's dims: it is 4 x n_audio_state there)."""
    return int(model.get("encoder/layer_0/ffn/linear_0/weight").shape[0])


def ct2_to_state_dict(model: Ct2Model) -> dict[str, np.ndarray]:
    """The transformers state dict (float32) of a CTranslate2 Whisper model."""
    if model.spec_name != "WhisperSpec":
        raise NpuEpError(f"model.bin holds a {model.spec_name}, not a WhisperSpec (use a Whisper checkpoint)")
    dims = ct2_dims(model)
    state: dict[str, np.ndarray] = {}
    for ct2_name, hf_names in variable_map(dims.n_audio_layer, dims.n_text_layer):
        if ct2_name not in model.variables and ct2_name not in model.aliases:
            raise NpuEpError(f"model.bin lacks Whisper variable {ct2_name} (the file is not a complete Whisper model)")
        value = model.get(ct2_name).astype(np.float32)
        for index, piece in enumerate(np.split(value, len(hf_names), axis=0)):
            if hf_names[index] is not None:
                state[hf_names[index]] = piece
    state["proj_out.weight"] = state["model.decoder.embed_tokens.weight"]
    return state


def state_dict_to_ct2(state: dict[str, np.ndarray], encoder_heads: int, decoder_heads: int) -> Ct2Model:
    """The inverse of ct2_to_state_dict (float16 weights, CT2's flags), for tests that need a model.bin."""
    encoder_layers = len({k.split(".")[3] for k in state if k.startswith("model.encoder.layers.")})
    decoder_layers = len({k.split(".")[3] for k in state if k.startswith("model.decoder.layers.")})
    variables: dict[str, np.ndarray] = {}
    for ct2_name, hf_names in variable_map(encoder_layers, decoder_layers):
        present = next(state[name] for name in hf_names if name is not None)
        pieces = [state[name] if name is not None else np.zeros_like(present) for name in hf_names]
        variables[ct2_name] = np.concatenate(pieces, axis=0).astype(np.float16)
    for side, heads in (("encoder", encoder_heads), ("decoder", decoder_heads)):
        variables[f"{side}/num_heads"] = np.array(heads, dtype=np.int16)
        variables[f"{side}/pre_norm"] = np.array(1, dtype=np.int8)
        variables[f"{side}/activation"] = np.array(3, dtype=np.int8)  # CT2's id for GELU
    aliases = {"decoder/projection/weight": "decoder/embeddings/weight"}
    return Ct2Model("WhisperSpec", 3, dict(sorted(variables.items())), aliases)


def special_tokens(tokenizer_json: Path) -> dict[str, int]:
    """Whisper's special-token ids by name, read from the tokenizer's added tokens."""
    added = {token["content"]: token["id"] for token in json.loads(tokenizer_json.read_text())["added_tokens"]}
    ids = {key: added[token] for key, token in SPECIAL_TOKENS.items() if token in added}
    if "no_speech" not in ids and NO_SPEECH_OLD in added:
        ids["no_speech"] = added[NO_SPEECH_OLD]
    missing = {"eot", "sot", "no_timestamps"} - ids.keys()
    if missing:
        raise NpuEpError(f"{tokenizer_json}: not a Whisper tokenizer (no {', '.join(sorted(missing))} token)")
    return ids


def language_tokens(tokenizer_json: Path, lang_ids: list[int]) -> dict[str, int]:
    """`<|xx|>` -> id for the language ids listed in the package's config.json."""
    by_id = {token["id"]: token["content"] for token in json.loads(tokenizer_json.read_text())["added_tokens"]}
    return {by_id[i]: i for i in lang_ids if i in by_id}


def write_hf_folder(ct2_dir: Path, out_dir: Path) -> ModelDims:
    """Convert the CT2 folder `ct2_dir` into a transformers Whisper folder at `out_dir`; returns its dims."""
    import torch
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    model_bin = read_model_bin(ct2_dir / "model.bin")
    dims, ffn_dim = ct2_dims(model_bin), ct2_ffn_dim(model_bin)
    state = ct2_to_state_dict(model_bin)
    del model_bin
    tokenizer_json = ct2_dir / "tokenizer.json"
    ids = special_tokens(tokenizer_json)
    settings = json.loads((ct2_dir / "config.json").read_text())
    config = WhisperConfig(
        vocab_size=dims.n_vocab,
        num_mel_bins=dims.n_mels,
        d_model=dims.n_audio_state,
        encoder_layers=dims.n_audio_layer,
        decoder_layers=dims.n_text_layer,
        encoder_attention_heads=dims.n_audio_head,
        decoder_attention_heads=dims.n_text_head,
        encoder_ffn_dim=ffn_dim,
        decoder_ffn_dim=ffn_dim,
        max_source_positions=dims.n_audio_ctx,
        max_target_positions=dims.n_text_ctx,
        pad_token_id=ids["eot"],
        bos_token_id=ids["eot"],
        eos_token_id=ids["eot"],
        decoder_start_token_id=ids["sot"],
    )
    model = WhisperForConditionalGeneration(config)
    model.load_state_dict({key: torch.from_numpy(value) for key, value in state.items()}, strict=True)
    model.generation_config = generation_config(config, settings, tokenizer_json)
    model.save_pretrained(out_dir)
    save_tokenizer_and_preprocessor(tokenizer_json, dims.n_mels, dims.n_text_ctx, out_dir)
    return dims


def generation_config(config, settings: dict, tokenizer_json: Path):
    """transformers' Whisper GenerationConfig from the CT2 package's config.json and the tokenizer."""
    from transformers import GenerationConfig

    ids = special_tokens(tokenizer_json)
    multilingual = is_multilingual(config.vocab_size)
    generation = GenerationConfig(
        decoder_start_token_id=ids["sot"],
        bos_token_id=ids["eot"],
        eos_token_id=ids["eot"],
        pad_token_id=ids["eot"],
        max_length=config.max_target_positions,
        suppress_tokens=list(settings.get("suppress_ids", [])),
        begin_suppress_tokens=list(settings.get("suppress_ids_begin", [])),
        alignment_heads=[list(pair) for pair in settings.get("alignment_heads", [])],
        no_timestamps_token_id=ids["no_timestamps"],
        prev_sot_token_id=ids.get("sot_prev"),
        is_multilingual=multilingual,
        max_initial_timestamp_index=MAX_INITIAL_TIMESTAMP_INDEX,
        return_timestamps=False,
    )
    if multilingual:
        generation.lang_to_id = language_tokens(tokenizer_json, list(settings.get("lang_ids", [])))
        generation.task_to_id = {task: ids[task] for task in ("transcribe", "translate") if task in ids}
    return generation


def save_tokenizer_and_preprocessor(tokenizer_json: Path, n_mels: int, max_length: int, out_dir: Path) -> None:
    """Write tokenizer files and preprocessor_config.json, so transformers' WhisperProcessor loads `out_dir`."""
    from transformers import WhisperFeatureExtractor, WhisperProcessor, WhisperTokenizerFast

    tokenizer = WhisperTokenizerFast(
        tokenizer_file=str(tokenizer_json), pad_token=SPECIAL_TOKENS["eot"], model_max_length=max_length
    )
    WhisperProcessor(WhisperFeatureExtractor(feature_size=n_mels), tokenizer).save_pretrained(out_dir)


def prompt_ids(tokenizer_json: Path, vocab_size: int) -> list[int]:
    """The decoder prompt for English transcription without timestamps: sot [en transcribe] notimestamps."""
    ids = special_tokens(tokenizer_json)
    prompt = [ids["sot"]]
    if is_multilingual(vocab_size):
        english = language_tokens(tokenizer_json, [ids["sot"] + 1])  # <|en|> follows <|startoftranscript|>
        prompt += list(english.values()) + ([ids["transcribe"]] if "transcribe" in ids else [])
    return prompt + [ids["no_timestamps"]]


def has_weights(hf_dir: Path) -> bool:
    """Whether a Hugging Face folder holds a weights file (checked before an export, which would fail late)."""
    return any(file.suffix in WEIGHT_SUFFIXES and file.is_file() for file in hf_dir.iterdir())


def complete_hf_folder(hf_dir: Path, out_dir: Path) -> None:
    """Link a Hugging Face Whisper folder's weights into `out_dir` with a complete tokenizer, preprocessor
    and generation config (a bare save_pretrained folder lacks Whisper's generation settings)."""
    from transformers import GenerationConfig, WhisperConfig, WhisperTokenizerFast

    config = WhisperConfig.from_pretrained(hf_dir)
    try:
        tokenizer = WhisperTokenizerFast.from_pretrained(hf_dir)
    except (OSError, ValueError, TypeError):
        raise NpuEpError(f"{hf_dir}: no Whisper tokenizer (save one there with tokenizer.save_pretrained)") from None
    tokenizer.save_pretrained(out_dir)
    tokenizer_json = out_dir / "tokenizer.json"
    special_tokens(tokenizer_json)  # fail early, in one line, on a tokenizer that is not Whisper's
    for file in hf_dir.iterdir():
        # Sharded checkpoints also need their index (model.safetensors.index.json, pytorch_model.bin.index.json).
        if file.suffix in WEIGHT_SUFFIXES or file.name == "config.json" or file.name.endswith(".index.json"):
            (out_dir / file.name).symlink_to(file.resolve())
    if (hf_dir / "preprocessor_config.json").is_file():
        (out_dir / "preprocessor_config.json").write_bytes((hf_dir / "preprocessor_config.json").read_bytes())
    else:
        from transformers import WhisperFeatureExtractor

        WhisperFeatureExtractor(feature_size=config.num_mel_bins).save_pretrained(out_dir)
    try:
        existing = GenerationConfig.from_pretrained(hf_dir).to_dict()
    except OSError:
        existing = {}
    settings = {
        "suppress_ids": existing.get("suppress_tokens") or [],
        "suppress_ids_begin": existing.get("begin_suppress_tokens") or [],
        "alignment_heads": existing.get("alignment_heads") or [],
        "lang_ids": list((existing.get("lang_to_id") or {}).values())
        or [token_id for token, token_id in tokenizer.get_added_vocab().items() if LANGUAGE_TOKEN.match(token)],
    }
    generation_config(config, settings, tokenizer_json).save_pretrained(out_dir)
