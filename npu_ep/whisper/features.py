"""Whisper's log-mel spectrogram in numpy, one 30 s window at a time (80 or 128 mel bins)."""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from npu_ep.whisper.audio import SAMPLE_RATE
from npu_ep.whisper.spec import ENCODER_FRAMES

N_FFT = 400
HOP_LENGTH = 160
WINDOW_SAMPLES = ENCODER_FRAMES * HOP_LENGTH  # 30 s: the encoder's fixed input, in samples
FRAME_SECONDS = HOP_LENGTH / SAMPLE_RATE


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    # Slaney's scale: linear below 1 kHz, logarithmic above (what Whisper was trained with).
    hz = np.asarray(hz, dtype=np.float64)
    mel = 3.0 * hz / 200.0
    log_region = hz >= 1000.0
    return np.where(log_region, 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) * (27.0 / np.log(6.4)), mel)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    hz = 200.0 * mel / 3.0
    log_region = mel >= 15.0
    return np.where(log_region, 1000.0 * np.exp(np.log(6.4) / 27.0 * (mel - 15.0)), hz)


@lru_cache(maxsize=4)
def mel_filters(n_mels: int) -> np.ndarray:
    """Slaney-normalised triangular filters, shape [n_mels, N_FFT // 2 + 1] (librosa's / Whisper's bank)."""
    fft_freqs = np.linspace(0.0, SAMPLE_RATE / 2, N_FFT // 2 + 1)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(SAMPLE_RATE / 2), n_mels + 2))
    widths = np.diff(edges)
    slopes = edges[None, :] - fft_freqs[:, None]
    rising = -slopes[:, :-2] / widths[:-1]
    falling = slopes[:, 2:] / widths[1:]
    bank = np.maximum(0.0, np.minimum(rising, falling))
    bank *= 2.0 / (edges[2 : n_mels + 2] - edges[:n_mels])
    return np.ascontiguousarray(bank.T, dtype=np.float32)


@lru_cache(maxsize=1)
def _blas():
    """numpy's BLAS, to run the mel projection on one thread: a multi-threaded BLAS (OpenBLAS) leaves its
    threads spinning after the call, on the cores the encoder's session runs on next. The small product
    costs about half a millisecond more on one thread; the spinning cost the encoder a third of its time."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


@lru_cache(maxsize=1)
def _hann() -> np.ndarray:
    return (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(N_FFT) / N_FFT)).astype(np.float32)  # periodic


def log_mel_spectrogram(samples: np.ndarray, n_mels: int = 80) -> np.ndarray:
    """Log-mel features [n_mels, 3000] of one 30 s window of 16 kHz samples (zero-padded or cut to 30 s).

    Matches transformers' WhisperFeatureExtractor on the same window: centred STFT with reflect padding,
    power spectrum, log10 clamped to 8 below the window's peak, scaled to about [-1, 1].
    """
    window = np.zeros(WINDOW_SAMPLES, dtype=np.float32)
    n = min(len(samples), WINDOW_SAMPLES)
    window[:n] = samples[:n]
    # Frames whose 400-sample span lies wholly in the zero padding have no power: skip their STFT
    # (most of the work for a short clip) and give them the log floor directly.
    active = min(ENCODER_FRAMES, -(-(n + N_FFT // 2) // HOP_LENGTH))
    padded = np.pad(window, N_FFT // 2, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP_LENGTH][:active]
    spectrum = np.fft.rfft(frames * _hann(), axis=-1)
    power = spectrum.real**2 + spectrum.imag**2
    log_spec = np.full((n_mels, ENCODER_FRAMES), -10.0, dtype=np.float32)
    with _blas().limit(limits=1, user_api="blas"):
        mel = mel_filters(n_mels) @ power.T.astype(np.float32)
    log_spec[:, :active] = np.log10(np.maximum(mel, 1e-10))
    log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
    return (log_spec + 4.0) / 4.0


def encoder_features(samples: np.ndarray, n_mels: int = 80) -> np.ndarray:
    """What the encoder is fed for one window: log-mel features with the frames past the audio zeroed.

    Past the end of the audio the encoder sees zeros, as faster-whisper feeds it, not the log floor of
    silence openai/whisper feeds: tiny.en then decodes short clips far more reliably (3 of the 4 clips
    in samples/ lose a word with the floor, none with zeros).
    """
    features = log_mel_spectrogram(samples, n_mels)
    features[:, min(-(-len(samples) // HOP_LENGTH), ENCODER_FRAMES):] = 0.0
    return features
