"""Facts about a Whisper model exported by npu_ep that every layer shares, each in one place: the
files of a model folder, the graphs' input and output names, the model's dimensions, and Whisper's
token conventions.

The bottom of the package graph: export writes what is described here; the pipeline, partition,
quantize and bench read it. This module imports nothing of npu_ep.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields

# The files of a model folder.
ENCODER_FILE = "encoder_model.onnx"
DECODER_FILE = "decoder_model.onnx"
DECODER_WITH_PAST_FILE = "decoder_with_past_model.onnx"
ONNX_FILES = (ENCODER_FILE, DECODER_FILE, DECODER_WITH_PAST_FILE)
CONFIG_FILE = "config.json"
GENERATION_CONFIG_FILE = "generation_config.json"
TOKENIZER_FILE = "tokenizer.json"
# The first-pass decoder's output of the alignment heads' cross-attention scores (word timestamps).
ALIGNMENT_OUTPUT = "alignment_scores"
# Tokenizer and configs: everything the pipeline reads besides the ONNX graphs and the manifest.
CONFIG_FILES = (
    CONFIG_FILE,
    GENERATION_CONFIG_FILE,
    TOKENIZER_FILE,
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "preprocessor_config.json",
)
MANIFEST = "manifest.json"

# Input and output names of optimum's Whisper graphs.
INPUT_FEATURES = "input_features"            # encoder input [batch, n_mels, ENCODER_FRAMES]
ENCODER_OUTPUT = "last_hidden_state"         # encoder output [batch, ENCODER_POSITIONS, n_audio_state]
INPUT_IDS = "input_ids"                      # decoder input [batch, tokens]
DECODER_INPUT_IDS = "decoder_input_ids"      # the same, in some exporters' naming
ENCODER_HIDDEN_STATES = "encoder_hidden_states"
LOGITS = "logits"
# First-pass decoder input with a default (an overridable initializer, 0): the first token position whose logits
# are computed. A window's opening pass needs them only from <|startoftranscript|> on, not over its prompt.
LOGITS_START = "logits_start"
# The merged decoder's input (optimum's name for it): true runs the with-past graph, false the first pass.
USE_CACHE_BRANCH = "use_cache_branch"
PRESENT = "present."                         # decoder outputs: key/value caches after this step
PAST = "past_key_values."                    # decoder-with-past inputs: the caches fed back


def past_name(present: str) -> str:
    """The decoder-with-past input that takes the decoder output `present` back."""
    return PAST + present[len(PRESENT):]


def is_cross_attention(cache_name: str) -> bool:
    """Whether a present/past cache name holds cross-attention (encoder) keys/values, fixed per window."""
    return ".encoder." in cache_name


# One 30 s window: 3000 mel frames in, 1500 positions out of the encoder (its convolutions halve them).
ENCODER_FRAMES = 3000
ENCODER_POSITIONS = 1500


@dataclass(frozen=True)
class ModelDims:
    """Whisper's dimensions, named as in openai/whisper's ModelDimensions; the manifest's "dims"."""

    n_mels: int
    n_vocab: int
    n_audio_ctx: int
    n_audio_state: int
    n_audio_head: int
    n_audio_layer: int
    n_text_ctx: int
    n_text_state: int
    n_text_head: int
    n_text_layer: int

    @classmethod
    def from_manifest(cls, manifest: dict) -> ModelDims:
        """The dims an export recorded in its manifest (extra keys are ignored)."""
        dims = manifest["dims"]
        return cls(**{f.name: int(dims[f.name]) for f in fields(cls)})

    @classmethod
    def from_config(cls, config: dict) -> ModelDims:
        """The dims of a transformers WhisperConfig (its config.json)."""
        return cls(n_mels=config["num_mel_bins"], n_vocab=config["vocab_size"],
                   n_audio_ctx=config["max_source_positions"], n_audio_state=config["d_model"],
                   n_audio_head=config["encoder_attention_heads"], n_audio_layer=config["encoder_layers"],
                   n_text_ctx=config["max_target_positions"], n_text_state=config["d_model"],
                   n_text_head=config["decoder_attention_heads"], n_text_layer=config["decoder_layers"])

    @property
    def multilingual(self) -> bool:
        return is_multilingual(self.n_vocab)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


# Whisper's special tokens by role.
SPECIAL_TOKENS = {
    "eot": "<|endoftext|>",
    "sot": "<|startoftranscript|>",
    "sot_prev": "<|startofprev|>",
    "sot_lm": "<|startoflm|>",
    "no_timestamps": "<|notimestamps|>",
    "transcribe": "<|transcribe|>",
    "translate": "<|translate|>",
    "no_speech": "<|nospeech|>",
}
NO_SPEECH_OLD = "<|nocaptions|>"  # older tokenizers' name for <|nospeech|>
# Language tokens are <|xx|> or <|haw|>; every other special token has a longer name.
LANGUAGE_TOKEN = re.compile(r"^<\|[a-z]{2,3}\|>$")
# OpenAI's multilingual vocabulary has one token more than the English-only one (51865 vs 51864).
MULTILINGUAL_VOCAB = 51865
# The first timestamp of a window may come at most this many 0.02 s steps in (1.0 s), as in openai/whisper.
MAX_INITIAL_TIMESTAMP_INDEX = 50


def is_multilingual(vocab_size: int) -> bool:
    return vocab_size >= MULTILINGUAL_VOCAB
