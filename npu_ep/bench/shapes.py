"""Random-weight Whisper models with the real encoder dimensions of the larger checkpoints, for the
NPU section's projections: their weights are not on PyPI, and an encoder's time depends on its
shapes, not its values. Online, the real ones export by hub id (`npu-ep export --model
openai/whisper-small`) and bench like any exported folder.

Built with transformers + torch (the export extra), exported with the project's exporter and kept
under `NPU_EP_CACHE`. The decoder is one small layer: the projections time only the encoder.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from npu_ep.paths import cache_dir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EncoderShape:
    name: str
    d_model: int
    layers: int
    heads: int
    ffn: int
    mels: int


# From each checkpoint's config.json on the Hugging Face hub (openai/whisper-*): d_model,
# encoder_layers, encoder_attention_heads, encoder_ffn_dim, num_mel_bins.
SHAPES = {shape.name: shape for shape in (
    EncoderShape("small", 768, 12, 12, 3072, 80),
    EncoderShape("medium", 1024, 24, 16, 4096, 80),
    EncoderShape("large-v3-turbo", 1280, 32, 20, 5120, 128),
)}


def build_random_whisper(folder: Path, d_model: int = 64, encoder_layers: int = 2, heads: int = 4,
                         ffn: int = 128, mels: int = 80, decoder_layers: int = 2, decoder_ffn: int = 128,
                         seed: int = 0) -> Path:
    """Save a random-weight English-only Whisper (tiny.en's tokenizer and vocabulary) as a Hugging
    Face folder at `folder`, the way a user's own checkpoint would look."""
    import torch
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    from npu_ep.export import ct2_model_dir
    from npu_ep.export.convert import save_tokenizer_and_preprocessor, special_tokens

    tokenizer_json = ct2_model_dir("tiny.en") / "tokenizer.json"
    ids = special_tokens(tokenizer_json)
    config = WhisperConfig(
        vocab_size=51864,  # tiny.en's vocabulary: text tokens, specials and timestamps
        num_mel_bins=mels, d_model=d_model, encoder_layers=encoder_layers, decoder_layers=decoder_layers,
        encoder_attention_heads=heads, decoder_attention_heads=heads, encoder_ffn_dim=ffn,
        decoder_ffn_dim=decoder_ffn, max_source_positions=1500, max_target_positions=448,
        pad_token_id=ids["eot"], bos_token_id=ids["eot"], eos_token_id=ids["eot"], decoder_start_token_id=ids["sot"],
    )
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(config).eval()
    with torch.no_grad():  # float16-exact weights, so a CTranslate2 (float16) round trip loses nothing
        for parameter in model.parameters():
            parameter.copy_(parameter.half().float())
    model.save_pretrained(folder)
    save_tokenizer_and_preprocessor(tokenizer_json, config.num_mel_bins, config.max_target_positions, folder)
    return folder


def shaped_model(name: str) -> Path:
    """The exported random-weight model shaped like `name` (built once, then reused from the cache)."""
    from npu_ep.export import export_model

    shape = SHAPES[name]
    base = cache_dir() / "shaped-models"
    out = base / f"{name}-shaped"
    hf = base / f"{name}-hf"
    if not (hf / "config.json").exists():
        log.info("building a random-weight %s-shaped Whisper (d_model %d, %d layers)", name, shape.d_model, shape.layers)
        build_random_whisper(hf, shape.d_model, shape.layers, shape.heads, shape.ffn, shape.mels,
                             decoder_layers=1, decoder_ffn=shape.d_model)
    return export_model(hf, out_dir=out)
