"""Property-based tests (Hypothesis) of array input: whatever the shape, dtype, rate, length or NaN/Inf
placement, the loader returns 16 kHz mono float32 or raises NpuEpError, and so does Pipeline.transcribe."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from npu_ep.errors import NpuEpError
from npu_ep.whisper.audio import SAMPLE_RATE, load_audio

DTYPES = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.float16, np.float32,
          np.float64, np.bool_, np.complex64]
RATES = st.one_of(
    st.sampled_from([8000, 16000, 22050, 44100, 48000, 96000]),
    st.integers(-10, 200_000),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["16000", None, True, 16000j]),
)


@st.composite
def arrays(draw: st.DrawFn, max_length: int = 24_000) -> np.ndarray:
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    length = draw(st.integers(0, max_length))
    layout = draw(st.sampled_from(["mono", "channels last", "channels first", "3-D", "scalar"]))
    channels = draw(st.integers(1, 20))
    shape = {"mono": (length,), "channels last": (length, channels), "channels first": (channels, length),
             "3-D": (2, channels, length), "scalar": ()}[layout]
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    scale = draw(st.sampled_from([1.0, 0.01, 1.5, 32767.0, 1e30]))
    values = rng.uniform(-1, 1, shape) * scale
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        values = rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)
    else:
        with np.errstate(over="ignore", invalid="ignore"):
            values = values.astype(dtype)
    if dtype.kind == "f" and values.size and draw(st.booleans()):
        flat = values.reshape(-1)
        spots = draw(st.lists(st.integers(0, flat.size - 1), min_size=1, max_size=5))
        flat[spots] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    return values


def _check_output(audio: np.ndarray) -> None:
    assert audio.dtype == np.float32 and audio.ndim == 1 and len(audio) >= 400
    assert np.isfinite(audio).all()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(values=arrays(), rate=RATES)
def test_any_array_becomes_16k_mono_or_a_one_line_error(values: np.ndarray, rate: object) -> None:
    try:
        audio = load_audio(values, sample_rate=rate)
    except NpuEpError as error:
        assert "\n" not in str(error) and str(error).startswith("audio array: ")
        return
    _check_output(audio)
    time_axis = max(values.shape[-2:]) if values.ndim == 2 else values.shape[0]
    assert abs(len(audio) - time_axis * SAMPLE_RATE / float(rate)) <= 2 + 0.001 * len(audio)


@pytest.mark.slow
@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                                               HealthCheck.data_too_large])
@given(values=arrays(max_length=20_000), rate=st.sampled_from([8000, 16000, 44100]))
def test_transcribe_takes_any_array_or_raises_one_line(random_pipeline, values: np.ndarray, rate: int) -> None:
    try:
        segments, info = random_pipeline.transcribe(values, sample_rate=rate, progress=False)
    except NpuEpError as error:
        assert "\n" not in str(error)
        return
    assert info.duration > 0 and all(segment.end >= segment.start for segment in segments)


@pytest.fixture(scope="module")
def random_pipeline(random_model_dir: Path):
    import npu_ep

    return npu_ep.Pipeline(random_model_dir)
