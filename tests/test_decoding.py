"""Decoding: the key/value cache equals a full recompute, Whisper's token rules, beams, fallback, language."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from npu_ep.errors import NpuEpError
from npu_ep.whisper.decoding import (
    ApplyTimestampRules,
    Decoder,
    DecodeOptions,
    MaximumLikelihoodRanker,
    SuppressBlank,
    SuppressTokens,
    compression_ratio,
)
from npu_ep.whisper.features import encoder_features
from npu_ep.whisper.audio import load_audio
from npu_ep.whisper.model import WhisperOnnx
from npu_ep.whisper.tokenizer import WhisperTokenizer


@pytest.fixture(scope="module")
def random_parts(random_model_dir: Path) -> tuple[WhisperOnnx, WhisperTokenizer, Decoder]:
    model = WhisperOnnx(random_model_dir, "cpu", threads=1)
    tokenizer = WhisperTokenizer(random_model_dir)
    return model, tokenizer, Decoder(model, tokenizer)


def _apply_rules(decoder: Decoder, logits: np.ndarray, sequences: list[list[int]]) -> None:
    """The default filters, as a window without a prefix applies them."""
    tokenizer = decoder.tokenizer
    tokens = np.array(sequences, dtype=np.int64).reshape(len(sequences), -1)
    for logit_filter in (
        SuppressTokens(decoder.suppressed((-1,))),
        SuppressBlank(decoder._blank, 0),
        ApplyTimestampRules(tokenizer.timestamp_begin, tokenizer.eot, tokenizer.timestamp_begin + 50, logits.shape[1]),
    ):
        logit_filter.apply(logits, tokens)


@pytest.fixture(scope="module")
def encoder_states(random_parts, jfk_path: Path):
    model = random_parts[0]
    return model.encode(encoder_features(load_audio(jfk_path), model.n_mels))


def test_cached_steps_equal_full_recompute(random_parts, encoder_states) -> None:
    model = random_parts[0]
    tokens = [50257, 50363, 843, 523, 616, 5891, 3399]
    state = model.start(tokens[:1], encoder_states).state()
    for i in range(1, len(tokens)):
        cached = state.step(np.array([tokens[i]])).copy()
        full = model.start(tokens[: i + 1], encoder_states).logits
        np.testing.assert_allclose(cached[0], full[-1], atol=2e-4)


def test_batched_state_and_reorder_rows(random_parts, encoder_states) -> None:
    model = random_parts[0]
    rows = model.start([50257], encoder_states).state(3)
    assert all(value.shape()[0] == 1 for value in rows._cross_kv)  # the rows share the window's cross caches
    first = rows.step(np.array([843, 523, 616])).copy()
    rows.reorder([2, 2, 0])  # rows now continue "616", "616", "843"
    second = rows.step(np.array([100, 200, 300])).copy()
    for row, prefix in enumerate([[616, 100], [616, 200], [843, 300]]):
        full = model.start([50257, *prefix], encoder_states).logits
        np.testing.assert_allclose(second[row], full[-1], atol=2e-4)
    full = model.start([50257, 523], encoder_states).logits
    np.testing.assert_allclose(first[1], full[-1], atol=2e-4)


@pytest.mark.parametrize("batch", [1, 3])
def test_an_opening_serves_attempt_after_attempt(random_parts, encoder_states, batch: int) -> None:
    # Each fallback attempt continues the same opening pass: one attempt's steps must leave it as it was.
    opening = random_parts[0].start([50257, 50363], encoder_states)
    tokens = np.array([843, 523, 616][:batch])
    runs = []
    for _ in range(2):
        state = opening.state(batch)
        state.step(tokens)
        state.reorder([0] * batch)
        runs.append(state.step(tokens[::-1]).copy())
    np.testing.assert_array_equal(runs[0], runs[1])


def test_first_token_is_a_timestamp_within_a_second(random_parts) -> None:
    _, tokenizer, decoder = random_parts
    tb = tokenizer.timestamp_begin
    logits = np.zeros((1, random_parts[0].vocab_size), dtype=np.float32)
    _apply_rules(decoder, logits, [[]])
    allowed = np.flatnonzero(np.isfinite(logits[0]))
    assert allowed.min() == tb and allowed.max() == tb + 50


def test_timestamp_pairing_and_order(random_parts) -> None:
    model, tokenizer, decoder = random_parts
    tb, eot = tokenizer.timestamp_begin, tokenizer.eot

    def allowed(sequence: list[int], boost_text: bool = True) -> np.ndarray:
        logits = np.zeros((1, model.vocab_size), dtype=np.float32)
        if boost_text:
            logits[0, :tb] = 10.0  # text clearly likelier than any timestamp
        _apply_rules(decoder, logits, [sequence])
        return np.isfinite(logits[0])

    # After text then a timestamp (a segment end): only later timestamps or the end.
    ok = allowed([tb + 10, 843, tb + 40])
    assert not ok[:eot].any() and ok[eot] and ok[tb + 40] and not ok[tb + 39]
    # After a closed pair: text or the end, no timestamp.
    ok = allowed([tb + 10, 843, tb + 40, tb + 40])
    assert ok[843] and not ok[tb:].any()
    # Mid-segment: timestamps may not go back, nor repeat the last one.
    ok = allowed([tb + 10, 843])
    assert ok[843] and not ok[tb : tb + 11].any() and ok[tb + 11]
    # Control tokens and the configured suppressions are never allowed.
    assert not ok[tokenizer.sot] and not ok[tokenizer.no_timestamps] and not ok[tokenizer.suppress_tokens].any()


def test_timestamps_win_when_jointly_likelier(random_parts) -> None:
    model, tokenizer, decoder = random_parts
    tb = tokenizer.timestamp_begin
    logits = np.zeros((1, model.vocab_size), dtype=np.float32)
    logits[0, 843] = 5.0  # one text token beats each timestamp alone, not their total probability
    _apply_rules(decoder, logits, [[tb, 843]])
    assert not np.isfinite(logits[0, :tb]).any() and np.isfinite(logits[0, tb + 1 :]).all()


def test_compression_ratio_flags_loops() -> None:
    assert compression_ratio("the the the the the the the the the the the the the the the the " * 4) > 2.4
    assert compression_ratio(" And so my fellow Americans, ask not what your country can do for you") < 2.4


def test_temperature_fallback(random_parts, encoder_states, monkeypatch: pytest.MonkeyPatch) -> None:
    model, tokenizer, decoder = random_parts
    sot = tokenizer.sot_sequence(None, "transcribe")
    lenient = DecodeOptions(logprob_threshold=None, compression_ratio_threshold=None)
    plain = decoder.decode(encoder_states, sot, [], lenient)
    assert plain.temperature == 0.0 and plain.tokens and plain.tokens[0] >= tokenizer.timestamp_begin
    openings = []
    monkeypatch.setattr(model, "start", lambda *args: openings.append(args) or type(model).start(model, *args))
    # A threshold no result can meet walks through every temperature, sampling best_of rows (and beams first).
    strict = DecodeOptions(logprob_threshold=0.0, no_speech_threshold=None, beam_size=3)
    result = decoder.decode(encoder_states, sot, [843, 523], strict)
    assert result.temperature == 1.0
    assert 0.0 <= result.no_speech_prob <= 1.0 and result.avg_logprob < 0.0
    assert len(openings) == 1  # one pass over the prompt serves all six attempts


@pytest.mark.parametrize("beam_size", [1, 4])
def test_results_obey_the_rules(random_parts, encoder_states, beam_size: int) -> None:
    # Random weights babble to the length limit: every rule gets exercised on every step.
    _, tokenizer, decoder = random_parts
    tb = tokenizer.timestamp_begin
    options = DecodeOptions(beam_size=beam_size, logprob_threshold=None, compression_ratio_threshold=None)
    result = decoder.decode(encoder_states, tokenizer.sot_sequence(None, "transcribe"), [], options)
    tokens = result.tokens
    assert tb <= tokens[0] <= tb + 50
    assert all(t < tokenizer.eot or t >= tb for t in tokens)  # text and timestamps only
    timestamps = [t for t in tokens if t >= tb]
    assert timestamps == sorted(timestamps)
    for i in range(2, len(tokens)):  # never three timestamps in a row
        assert not (tokens[i] >= tb and tokens[i - 1] >= tb and tokens[i - 2] >= tb)
    assert len(tokens) <= decoder.sample_len


def test_prompt_changes_the_prefix(random_parts, encoder_states, monkeypatch) -> None:
    model, tokenizer, decoder = random_parts
    openings = []
    start = model.start
    monkeypatch.setattr(model, "start", lambda tokens, *args: openings.append(list(tokens)) or start(tokens, *args))
    sot = tokenizer.sot_sequence(None, "transcribe")
    options = DecodeOptions(logprob_threshold=None, compression_ratio_threshold=None, temperature=0.0)
    prompt = [843, 523, 616] * 100  # longer than half the context
    without = decoder.decode(encoder_states, sot, [], options)
    with_prompt = decoder.decode(encoder_states, sot, prompt, options)
    # The decoder sees <|startofprev|>, the latest tokens that fit half the context, then the start.
    room = model.n_text_ctx // 2 - 1
    assert openings == [sot, [tokenizer.sot_prev, *prompt[-room:], *sot]]
    # And it conditions on them: the no-speech probability read at <|startoftranscript|> moves.
    assert abs(with_prompt.no_speech_prob - without.no_speech_prob) > 1e-6


def test_prompted_opening_computes_logits_from_the_start_of_transcript(random_parts, encoder_states) -> None:
    """A window's opening pass asks the graph for logits from <|startoftranscript|> on: the same values the
    whole pass gives there, and the no-speech probability read at that position, not over the prompt."""
    model, tokenizer, decoder = random_parts
    assert model.has_logits_start
    sot = tokenizer.sot_sequence(None, "transcribe")
    prompt = [843, 523, 616] * 20
    opening_tokens = [tokenizer.sot_prev, *prompt, *sot]
    first = opening_tokens.index(tokenizer.sot)
    full = model.start(opening_tokens, encoder_states).logits
    sliced = model.start(opening_tokens, encoder_states, first).logits
    assert full.shape[0] == len(opening_tokens) and sliced.shape[0] == len(opening_tokens) - first
    assert np.abs(sliced - full[first:]).max() < 1e-4
    at_sot = full[first].astype(np.float64)
    expected = np.exp(at_sot[tokenizer.no_speech] - at_sot.max()) / np.exp(at_sot - at_sot.max()).sum()
    options = DecodeOptions(logprob_threshold=None, compression_ratio_threshold=None, temperature=0.0)
    result = decoder.decode(encoder_states, sot, prompt, options)
    assert abs(result.no_speech_prob - expected) < 1e-5
    # A folder exported before the graph took the position: every position is computed and sliced here.
    model.has_logits_start = False
    try:
        assert np.abs(model.start(opening_tokens, encoder_states, first).logits - sliced).max() < 1e-4
        assert decoder.decode(encoder_states, sot, prompt, options).tokens == result.tokens
    finally:
        model.has_logits_start = True


def test_english_only_tokenizer_rejects_other_languages(random_parts) -> None:
    from npu_ep.errors import NpuEpError

    tokenizer = random_parts[1]
    assert tokenizer.sot_sequence("en", "transcribe") == [tokenizer.sot]
    with pytest.raises(NpuEpError, match="English-only"):
        tokenizer.check_language("de", "transcribe")
    with pytest.raises(NpuEpError, match="English-only"):
        tokenizer.check_language(None, "translate")


@pytest.fixture(scope="module")
def base_parts() -> tuple[WhisperOnnx, WhisperTokenizer, Decoder]:
    from npu_ep.export import resolve_model

    folder = resolve_model("base")
    model = WhisperOnnx(folder, "cpu")
    tokenizer = WhisperTokenizer(folder)
    return model, tokenizer, Decoder(model, tokenizer)


def test_multilingual_language_detection_and_tasks(base_parts, jfk_path: Path) -> None:
    from npu_ep.errors import NpuEpError

    model, tokenizer, decoder = base_parts
    assert tokenizer.multilingual and len(tokenizer.languages) >= 99
    states = model.encode(encoder_features(load_audio(jfk_path), model.n_mels))
    language, probability = decoder.detect_language(states)
    assert language == "en" and probability > 0.5
    assert tokenizer.sot_sequence("de", "translate") == [tokenizer.sot, tokenizer.languages["de"], tokenizer.translate]
    with pytest.raises(NpuEpError, match="unknown language code"):
        tokenizer.check_language("xx", "transcribe")
    # The translate task (into English) runs through the same decoder: English audio stays English words.
    result = decoder.decode(states, tokenizer.sot_sequence("en", "translate"), [], DecodeOptions(task="translate"))
    assert "country" in tokenizer.decode(result.tokens).lower()


def test_filters_treat_each_row_as_if_alone(random_parts) -> None:
    # One call masks every row of a batch; each row must come out as it would on its own.
    model, tokenizer, decoder = random_parts
    tb = tokenizer.timestamp_begin
    rows = [
        [tb + 10, 843, tb + 40, tb + 40],  # a pair just closed
        [tb + 10, 843, 523, tb + 40],  # a segment just ended
        [tb + 10, 843, 523, 616],  # mid-segment
        [843, 523, 616, 5891],  # no timestamp yet (after a prefix)
        [tb, tb, 843, tb + 3],  # ended again, later
    ]
    logits = np.random.default_rng(1).normal(0, 2, (len(rows), model.vocab_size)).astype(np.float32)
    logits[2, tb + 30 :] += 6.0  # this row's timestamps jointly beat its text
    logits[3, 843] += 20.0  # this row's text beats them
    batch = logits.copy()
    _apply_rules(decoder, batch, rows)
    for row, sequence in enumerate(rows):
        alone = logits[row : row + 1].copy()
        _apply_rules(decoder, alone, [sequence])
        np.testing.assert_array_equal(batch[row], alone[0])
    assert not np.isfinite(batch[2, :tb]).any() and np.isfinite(batch[3, :tb]).any()


def test_decode_options_validate_themselves() -> None:
    options = DecodeOptions(temperature=0.3, clip_timestamps="0,5.5,9")
    assert options.temperature == (0.3,) and options.clip_timestamps == (0.0, 5.5, 9.0)
    with pytest.raises(AttributeError):
        options.beam_size = 2  # frozen: a recorded option stays what was used
    for bad, message in [
        (dict(beam_size=0), "--beam-size 0: must be between 1 and 64"),
        (dict(best_of=65), "--best-of 65: must be between 1 and 64"),
        (dict(task="summarise"), "unknown task"),
        (dict(temperature=()), "at least one value"),
        (dict(temperature=(0.0, -0.2)), "between 0 and 10"),
        (dict(patience=0.0), "--patience"),
        (dict(length_penalty=1.5), "--length-penalty 1.5"),
        (dict(no_speech_threshold=2.0), "--no-speech-threshold"),
        (dict(language_detection_segments=0), "language_detection_segments"),
        (dict(clip_timestamps=(5.0, 2.0)), "--clip-timestamps 5,2"),
        (dict(temperature="hot"), "temperature='hot'"),
    ]:
        with pytest.raises(NpuEpError, match=message.replace("(", r"\(")):
            DecodeOptions(**bad)
    with pytest.raises(NpuEpError, match="unknown decoding option 'beamsize'"):
        DecodeOptions.from_kwargs(beamsize=5)
    changed = DecodeOptions.from_kwargs(options, beam_size=5)
    assert changed.beam_size == 5 and changed.temperature == (0.3,)


def test_ranker_length_penalty() -> None:
    short, long = ([1, 2], -2.0), ([1, 2, 3, 4, 5, 6], -3.0)
    assert MaximumLikelihoodRanker(None).rank([short, long]) == 1  # -0.5 per token beats -1.0
    # Google NMT's penalty at alpha 0 is no length norm at all: the higher total wins.
    assert MaximumLikelihoodRanker(0.0).rank([short, long]) == 0
    assert MaximumLikelihoodRanker(1.0).rank([short, long]) == 1  # -3 / (11 / 6) beats -2 / (7 / 6)


def test_prefix_is_forced_and_hotwords_prompt(random_parts, encoder_states, monkeypatch: pytest.MonkeyPatch) -> None:
    model, tokenizer, decoder = random_parts
    tb = tokenizer.timestamp_begin
    sot = tokenizer.sot_sequence(None, "transcribe")
    options = DecodeOptions(logprob_threshold=None, compression_ratio_threshold=None, temperature=0.0)
    prefix = tokenizer.encode(" Ask not")
    result = decoder.decode(encoder_states, sot, [], options, prefix=prefix)
    assert result.tokens[: len(prefix) + 1] == [tb, *prefix] and len(result.tokens) > len(prefix) + 1
    openings = []
    monkeypatch.setattr(model, "start", lambda tokens, *args: openings.append(tokens) or type(model).start(model, tokens, *args))
    hotwords = tokenizer.encode(" Kennedy")
    decoder.decode(encoder_states, sot, [843] * 500, options, hotwords=hotwords)
    opening = openings[-1]
    # <|startofprev|>, the hotwords, then the latest said tokens up to half the context, then the start.
    assert opening[: 1 + len(hotwords)] == [tokenizer.sot_prev, *hotwords]
    assert len(opening) == decoder.sample_len + len(sot) and opening[-len(sot) :] == sot
