"""Log-mel features equal transformers' WhisperFeatureExtractor (80 and 128 bins) within 1e-4."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from npu_ep.whisper.audio import SAMPLE_RATE, load_audio
from npu_ep.whisper.features import WINDOW_SAMPLES, log_mel_spectrogram, mel_filters
from npu_ep.whisper.spec import ENCODER_FRAMES

transformers = pytest.importorskip("transformers", reason="the reference extractor comes with the export extra")


@pytest.fixture(scope="module")
def clips(jfk_path: Path) -> dict[str, np.ndarray]:
    jfk = load_audio(jfk_path)
    noise = np.random.default_rng(1).normal(0, 0.1, WINDOW_SAMPLES).astype(np.float32)
    return {
        "jfk": jfk,  # 11 s: the window ends in zero padding
        "jfk x3 (full window)": np.tile(jfk, 3)[:WINDOW_SAMPLES],
        "noise": noise,
        "short": jfk[: SAMPLE_RATE // 10],
        "longer than a window": np.tile(jfk, 4),
    }


@pytest.mark.parametrize("n_mels", [80, 128])
def test_equal_to_transformers(clips: dict[str, np.ndarray], n_mels: int) -> None:
    extractor = transformers.WhisperFeatureExtractor(feature_size=n_mels)
    for name, samples in clips.items():
        expected = extractor(samples, sampling_rate=SAMPLE_RATE, return_tensors="np").input_features[0]
        ours = log_mel_spectrogram(samples, n_mels)
        assert ours.shape == (n_mels, ENCODER_FRAMES) and ours.dtype == np.float32
        assert np.abs(ours - expected).max() < 1e-4, name


@pytest.mark.parametrize("n_mels", [80, 128])
def test_mel_filters_equal_transformers(n_mels: int) -> None:
    from transformers.audio_utils import mel_filter_bank

    expected = mel_filter_bank(
        num_frequency_bins=201, num_mel_filters=n_mels, min_frequency=0.0, max_frequency=8000.0,
        sampling_rate=SAMPLE_RATE, norm="slaney", mel_scale="slaney",
    ).T
    np.testing.assert_allclose(mel_filters(n_mels), expected, atol=1e-7)


def test_features_of_speech_and_silence_differ(clips: dict[str, np.ndarray]) -> None:
    features = log_mel_spectrogram(clips["jfk"])
    speech, padding = features[:, 100:1000], features[:, 1200:]
    assert speech.mean() > padding.mean() + 0.5
    assert np.ptp(padding) == 0.0  # the zero padding sits at the floor, 8 below the peak
