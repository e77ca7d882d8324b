"""Facts about an exported Whisper model that every layer shares: the files of a model folder.

The bottom of the package graph: export writes these files, the pipeline, partition, quantize and
bench read them, and this module imports nothing of npu_ep.
"""
from __future__ import annotations

ENCODER_FILE = "encoder_model.onnx"
DECODER_FILE = "decoder_model.onnx"
DECODER_WITH_PAST_FILE = "decoder_with_past_model.onnx"
ONNX_FILES = (ENCODER_FILE, DECODER_FILE, DECODER_WITH_PAST_FILE)
# Tokenizer and configs: everything the pipeline reads besides the ONNX graphs and the manifest.
CONFIG_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "preprocessor_config.json",
)
MANIFEST = "manifest.json"
