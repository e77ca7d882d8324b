"""Realistic inputs for every session, from audio: features for the encoder, and the decoders' inputs
as the float model produces them while greedily decoding the same clips."""
from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from onnxruntime.quantization import CalibrationDataReader

from npu_ep.quantize.clips import clip_features
from npu_ep.whisper.spec import (DECODER_FILE, DECODER_WITH_PAST_FILE, ENCODER_FILE, ENCODER_HIDDEN_STATES, INPUT_FEATURES,
                                 INPUT_IDS, LOGITS)

if TYPE_CHECKING:
    from npu_ep.whisper.pipeline import Pipeline

# Enough steps to see each decoder position range a short utterance reaches; bounded for run-away outputs.
MAX_NEW_TOKENS = 96


@dataclass
class Feeds:
    """Input dictionaries per ONNX file of `files` (others' inputs are not kept), in the order they were produced."""

    files: frozenset[str]
    by_file: dict[str, list[dict[str, np.ndarray]]] = field(default_factory=dict)

    def add(self, onnx_file: str, feed: dict[str, np.ndarray]) -> None:
        if onnx_file in self.files:
            self.by_file.setdefault(onnx_file, []).append(feed)


class FeedReader(CalibrationDataReader):
    """Hands stored feeds to ORT's calibrator; `set_range` lets it calibrate a few at a time (bounded memory)."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self.feeds = feeds
        self.set_range(0, len(feeds))

    def __len__(self) -> int:
        return len(self.feeds)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._pending = iter(self.feeds[start_index:end_index])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._pending, None)


class FloatModel:
    """A pipeline's three sessions as plain numpy in and out, with the prompt its decoder starts from.

    It borrows the pipeline's sessions rather than opening the ONNX files again: one quantize run needs
    both the transcripts and these raw outputs, and a second load would double its memory.
    """

    def __init__(self, pipeline: Pipeline) -> None:
        model, tokenizer = pipeline.model, pipeline.tokenizer
        self.n_mels = model.n_mels
        self.encoder, self.decoder, self.decoder_with_past = model.encoder, model.decoder, model.decoder_with_past
        # The cache names, self-attention (grows each step) and cross-attention (fixed), as the model maps them.
        self.self_outputs, self.self_inputs = model.self_outputs, model.self_inputs
        self.cross_outputs, self.cross_inputs = model.cross_outputs, model.cross_inputs
        # Fed on top of each graph's own inputs (a merged decoder's choice of graph), never recorded with them.
        self.first_pass_feeds, self.step_feeds = model.first_pass_feeds, model.step_feeds
        # Calibration and evaluation clips are English speech: transcribe without timestamps.
        self.prompt = tokenizer.sot_sequence("en", "transcribe") + [tokenizer.no_timestamps]
        self.eot = tokenizer.eot

    def encode(self, features: np.ndarray) -> np.ndarray:
        return self.encoder.run(None, {INPUT_FEATURES: features})[0]

    def logits(self, hidden: np.ndarray, tokens: list[int]) -> np.ndarray:
        """Decoder logits [positions, vocab] for prompt + `tokens` in one pass (teacher forcing)."""
        ids = np.array([self.prompt + list(tokens)], dtype=np.int64)
        return self.decoder.run([LOGITS], {INPUT_IDS: ids, ENCODER_HIDDEN_STATES: hidden, **self.first_pass_feeds})[0][0]

    def greedy(self, hidden: np.ndarray, feeds: Feeds | None = None) -> list[int]:
        """Greedy tokens after the prompt (no suppression rules: inputs to record, not a transcript to show)."""
        first = {INPUT_IDS: np.array([self.prompt], dtype=np.int64), ENCODER_HIDDEN_STATES: hidden}
        outputs = self.decoder.run([LOGITS, *self.self_outputs, *self.cross_outputs], {**first, **self.first_pass_feeds})
        n_self = len(self.self_outputs)
        past = dict(zip(self.self_inputs, outputs[1 : 1 + n_self]))
        # Only the self-attention cache grows; the cross-attention cache is shared by every step.
        cross = dict(zip(self.cross_inputs, outputs[1 + n_self :]))
        if feeds is not None:
            feeds.add(DECODER_FILE, first)
        tokens: list[int] = []
        token = int(outputs[0][0, -1].argmax())
        while token != self.eot and len(tokens) < MAX_NEW_TOKENS:
            tokens.append(token)
            step = {INPUT_IDS: np.array([[token]], dtype=np.int64), **past, **cross}
            if feeds is not None:
                feeds.add(DECODER_WITH_PAST_FILE, step)
            outputs = self.decoder_with_past.run([LOGITS, *self.self_outputs], {**step, **self.step_feeds})
            past = dict(zip(self.self_inputs, outputs[1:]))
            token = int(outputs[0][0, -1].argmax())
        return tokens


def collect_feeds(model: FloatModel, clips: list[Path], files: Collection[str], progress: bool = True) -> Feeds:
    """Run the float model over `clips`, recording the inputs each of `files` (the ONNX files to be
    quantized) receives. The clips are decoded, most of the time here, only when a decoder is among them."""
    from tqdm import tqdm

    feeds = Feeds(frozenset(files))
    decode = not feeds.files.isdisjoint((DECODER_FILE, DECODER_WITH_PAST_FILE))
    for clip in tqdm(clips, desc="calibration inputs", unit="clip", disable=not progress):
        features = clip_features(clip, model.n_mels)
        feeds.add(ENCODER_FILE, {INPUT_FEATURES: features})
        if decode:
            model.greedy(model.encode(features), feeds)
    return feeds
