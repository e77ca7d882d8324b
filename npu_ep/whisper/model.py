"""The three ONNX sessions of an exported Whisper model, and a key/value-cached decoder state over them.

Per-token host work is kept small: the decoder-with-past session runs through one IO binding whose
inputs (token ids, the cross-attention keys/values) and logits buffer are bound once; each step only
re-binds the growing self-attention caches, which stay OrtValues and are never copied to numpy
(except to reorder beams).
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from npu_ep.errors import NpuEpError
from npu_ep.model_folder import read_manifest
from npu_ep.whisper.spec import (ALIGNMENT_OUTPUT, CONFIG_FILE, DECODER_FILE, DECODER_WITH_PAST_FILE, ENCODER_FILE, ENCODER_HIDDEN_STATES,
                                 ENCODER_OUTPUT, INPUT_FEATURES, INPUT_IDS, LOGITS, LOGITS_START, MANIFEST, PRESENT, TOKENIZER_FILE,
                                 USE_CACHE_BRANCH, ModelDims, is_cross_attention, past_name)

log = logging.getLogger(__name__)


def int8_needs_vnni(quantization: dict) -> bool:
    """Whether a quantized model's int8 is exact on the CPU EP only with VNNI or AMX (the manifest's
    "needs_vnni"; older manifests lack it: their dynamic MatMulInteger and static QDQ forms used full-range
    int8 weights)."""
    if "needs_vnni" in quantization:
        return bool(quantization["needs_vnni"])
    return quantization.get("mode") == "static" or quantization.get("form") == "matmul-integer"


def _needs_exact_int8(model_dir: Path, manifest: dict) -> bool:
    """True, after saying so in one line, when the model's int8 would lose accuracy on this CPU's kernels."""
    from npu_ep.machine import cpu

    quantization = manifest.get("quantization")
    if not quantization or not int8_needs_vnni(quantization) or cpu().exact_int8:
        return False
    log.warning("%s: its int8 is exact only with VNNI or AMX, which this CPU (%s) lacks; computing it exactly "
                "another way, at about float speed%s", model_dir.name, cpu().describe(),
                "" if quantization.get("mode") == "static" else
                " (re-quantize it with npu-ep quantize --mode dynamic --force for a form exact on every CPU)")
    return True


class WhisperOnnx:
    """Encoder, first-pass decoder and decoder-with-past sessions of one model folder (on the CPU, the two
    decoders are one merged session: `first_pass_feeds` and `step_feeds` pick the graph)."""

    def __init__(self, model_dir: Path, device: str = "cpu", threads: int | None = None) -> None:
        from onnxruntime import OrtValue

        from npu_ep.session import create_merged_decoder, create_session

        for name in (CONFIG_FILE, ENCODER_FILE, DECODER_FILE, DECODER_WITH_PAST_FILE, TOKENIZER_FILE):
            if not (model_dir / name).exists():
                raise NpuEpError(f"{model_dir}: no {name} in the model folder (re-export it with: npu-ep export)")
        manifest = read_manifest(model_dir)
        if manifest is None:
            raise NpuEpError(f"{model_dir}: no valid {MANIFEST} in the model folder (re-export it with: npu-ep export)")
        self.dims = ModelDims.from_manifest(manifest)
        self.n_mels: int = self.dims.n_mels
        self.n_text_ctx: int = self.dims.n_text_ctx
        self.vocab_size: int = self.dims.n_vocab
        exact = _needs_exact_int8(model_dir, manifest)
        self.encoder = create_session(model_dir / ENCODER_FILE, device, threads, exact, self.dims.n_audio_head)
        merged = create_merged_decoder(model_dir / DECODER_FILE, model_dir / DECODER_WITH_PAST_FILE, device, threads, exact)
        if merged is None:
            self.decoder = create_session(model_dir / DECODER_FILE, device, threads, exact)
            self.decoder_with_past = create_session(model_dir / DECODER_WITH_PAST_FILE, device, threads, exact)
        else:
            self.decoder = self.decoder_with_past = merged
        # What each decoder pass is fed besides its own graph's inputs: the merged session's choice of graph.
        self.first_pass_feeds: dict[str, np.ndarray] = {} if merged is None else {USE_CACHE_BRANCH: np.array([False])}
        self.step_feeds: dict[str, np.ndarray] = {} if merged is None else {USE_CACHE_BRANCH: np.array([True])}
        self._first_pass_values = {name: OrtValue.ortvalue_from_numpy(value) for name, value in self.first_pass_feeds.items()}
        presents = [o.name for o in self.decoder.get_outputs() if o.name.startswith(PRESENT)]
        self.self_outputs = [n for n in presents if not is_cross_attention(n)]
        self.cross_outputs = [n for n in presents if is_cross_attention(n)]
        self.self_inputs = [past_name(n) for n in self.self_outputs]
        self.cross_inputs = [past_name(n) for n in self.cross_outputs]
        # Folders exported before word timestamps existed lack it; they transcribe without words.
        self.has_alignment = any(o.name == ALIGNMENT_OUTPUT for o in self.decoder.get_outputs())
        # Folders exported before LOGITS_START compute every position's logits; the unread ones are dropped here.
        self.has_logits_start = any(i.name == LOGITS_START for i in self.decoder.get_overridable_initializers())

    def encode(self, features: np.ndarray):
        """Encoder states (an OrtValue, fed on to the decoder without a copy) of features [n_mels, 3000]."""
        from onnxruntime import OrtValue

        window = OrtValue.ortvalue_from_numpy(np.ascontiguousarray(features[None], dtype=np.float32))
        return self.encoder.run_with_ort_values([ENCODER_OUTPUT], {INPUT_FEATURES: window})[0]

    def encode_batch(self, features: np.ndarray):
        """Encoder states [batch, frames, d_model] (an OrtValue) of features [batch, n_mels, 3000], one encoder
        run per window. A dynamic int8 encoder takes one activation scale per run, so a window run alone encodes
        the same whichever windows share its batch; on the CPU one run of the whole batch is no faster and holds
        every window's attention scores at once; an NPU's kernels are built for one window's shape."""
        from onnxruntime import OrtValue

        if len(features) == 1:
            return self.encode(features[0])
        return OrtValue.ortvalue_from_numpy(np.concatenate([self.encode(window).numpy() for window in features]))

    def start(self, tokens: list[int], encoder_states, first: int = 0) -> Opening:
        """Run the decoder over the opening `tokens` of a window; logits from position `first` on."""
        logits, self_kv, cross_kv = self.start_rows([tokens], encoder_states, first)
        return Opening(self, logits[0], self_kv, cross_kv)

    def start_rows(self, rows: list[list[int]], encoder_states, first: int = 0) -> tuple[np.ndarray, list, list]:
        """The decoder over the opening tokens of several windows at once (one row each, all of one length,
        `encoder_states` [rows, frames, d_model]): logits [rows, tokens - first, vocab] of positions `first`
        on, the self- and cross-attention caches (OrtValues)."""
        from onnxruntime import OrtValue

        feeds = {INPUT_IDS: OrtValue.ortvalue_from_numpy(np.array(rows, dtype=np.int64)),
                 ENCODER_HIDDEN_STATES: encoder_states, **self._first_pass_values}
        if self.has_logits_start:
            feeds[LOGITS_START] = OrtValue.ortvalue_from_numpy(np.array([first], dtype=np.int64))
        outputs = self.decoder.run_with_ort_values([LOGITS, *self.self_outputs, *self.cross_outputs], feeds)
        logits = outputs[0].numpy()
        n_self = len(self.self_outputs)
        return logits if self.has_logits_start else logits[:, first:], outputs[1 : 1 + n_self], outputs[1 + n_self :]

    def align(self, tokens: list[int], encoder_states) -> tuple[np.ndarray, np.ndarray]:
        """One decoder pass over `tokens`: logits [tokens, vocab] and the alignment heads' cross-attention
        scores [heads, tokens, audio frames] (before the softmax)."""
        from onnxruntime import OrtValue

        ids = OrtValue.ortvalue_from_numpy(np.array([tokens], dtype=np.int64))
        logits, scores = self.decoder.run_with_ort_values(
            [LOGITS, ALIGNMENT_OUTPUT], {INPUT_IDS: ids, ENCODER_HIDDEN_STATES: encoder_states, **self._first_pass_values}
        )
        return logits.numpy()[0], scores.numpy()[0]


def window_states(encoder_states, index: int):
    """Window `index`'s encoder states [1, frames, d_model] out of a batch's (a new OrtValue)."""
    from onnxruntime import OrtValue

    return OrtValue.ortvalue_from_numpy(np.ascontiguousarray(encoder_states.numpy()[index : index + 1]))


def _rows(values: list, rows: np.ndarray) -> list:
    """New OrtValues holding the batch `rows` of each of `values`."""
    from onnxruntime import OrtValue

    return [OrtValue.ortvalue_from_numpy(np.ascontiguousarray(v.numpy()[rows])) for v in values]


class Opening:
    """The decoder's pass over a window's opening tokens, which every decoding attempt of the window continues.

    `logits` [len(tokens) - first, vocab], the positions from the `first` it was run with; `state(batch)` gives
    attempts their own cached state while the caches here, read-only to ORT, stay as they are for the next attempt.
    The rows of one state share the window's cross-attention keys and values: the decoder-with-past graph
    broadcasts one row of them over all its rows, so beams and samples do not copy them (for base, 37 MB a row).
    """

    def __init__(self, model: WhisperOnnx, logits: np.ndarray, self_kv: list, cross_kv: list) -> None:
        self._model = model
        self.logits = logits
        self._self_kv = self_kv
        self._cross_kv = cross_kv
        self._copies: tuple[int, list] | None = None  # the last batch's self-attention caches: attempts reuse one size

    def state(self, batch: int = 1) -> DecoderState:
        """A fresh state of `batch` rows (beams or samples), each continuing the opening tokens."""
        if batch == 1:
            return DecoderState(self._model, self._self_kv, self._cross_kv, batch)
        if self._copies is None or self._copies[0] != batch:
            self._copies = (batch, _rows(self._self_kv, np.zeros(batch, dtype=np.int64)))
        return DecoderState(self._model, self._copies[1], self._cross_kv, batch)


class DecoderState:
    """The key/value caches of `batch` decoder rows; `step` feeds one token per row."""

    def __init__(self, model: WhisperOnnx, self_kv: list, cross_kv: list, batch: int) -> None:
        from onnxruntime import OrtValue

        self._model = model
        self.batch = batch
        self._cross_kv = cross_kv
        self._binding = model.decoder_with_past.io_binding()
        self._ids = np.zeros((batch, 1), dtype=np.int64)
        self._binding.bind_ortvalue_input(INPUT_IDS, OrtValue.ortvalue_from_numpy(self._ids))
        self._logits = np.empty((batch, 1, model.vocab_size), dtype=np.float32)
        self._binding.bind_ortvalue_output(LOGITS, OrtValue.ortvalue_from_numpy(self._logits))
        for name, value in zip(model.cross_inputs, cross_kv):
            self._binding.bind_ortvalue_input(name, value)
        for name, value in model.step_feeds.items():
            self._binding.bind_cpu_input(name, value)
        self._bind_self(self_kv)

    def _bind_self(self, self_kv: list) -> None:
        self._self_kv = self_kv
        for input_name, output_name, value in zip(self._model.self_inputs, self._model.self_outputs, self_kv):
            self._binding.bind_ortvalue_input(input_name, value)
            # Unallocated again: ORT cannot reuse last step's buffer, the cache grows by one position.
            self._binding.bind_output(output_name, "cpu")

    def step(self, tokens: np.ndarray) -> np.ndarray:
        """Logits [batch, vocab] after appending `tokens` [batch]; a view overwritten by the next step."""
        self._ids[:, 0] = tokens
        self._model.decoder_with_past.run_with_iobinding(self._binding)
        self._bind_self(self._binding.get_outputs()[1:])
        return self._logits[:, 0]

    def reorder(self, rows: list[int]) -> None:
        """Keep the caches of `rows` (same count), as beam search does when beams swap prefixes."""
        if rows != list(range(self.batch)):
            self._bind_self(_rows(self._self_kv, np.asarray(rows)))

    def select(self, rows: np.ndarray) -> DecoderState:
        """A state of only `rows` (fewer), as batched decoding keeps when some of its windows have ended."""
        return DecoderState(self._model, _rows(self._self_kv, rows), _rows(self._cross_kv, rows), len(rows))
