"""Work handed to other threads leaves none of them busy-waiting afterwards: the next stage (the encoder after
the features, a decoder step after the encoder) runs on the same cores. The process's CPU time over a short
pause right after the work tells: a thread still spinning there adds about 50 ms of CPU time to 50 ms."""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from npu_ep.session import create_session
from npu_ep.whisper.features import WINDOW_SAMPLES, log_mel_spectrogram
from npu_ep.whisper.spec import ENCODER_FILE, ModelDims
from npu_ep.model_folder import read_manifest

pytestmark = pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="one core: no other thread can spin")


def _busy_after(work: Callable[[], object]) -> float:
    """The least CPU time over 50 ms pauses right after `work`, of three."""
    work()
    busy = []
    for _ in range(3):
        work()
        start = time.process_time()
        time.sleep(0.05)
        busy.append(time.process_time() - start)
    return min(busy)


def test_features_leave_no_blas_thread_spinning() -> None:
    samples = np.random.default_rng(0).standard_normal(WINDOW_SAMPLES).astype(np.float32) * 0.1
    assert _busy_after(lambda: log_mel_spectrogram(samples)) < 0.01


def test_sessions_leave_no_pool_thread_spinning(random_model_dir: Path) -> None:
    dims = ModelDims.from_manifest(read_manifest(random_model_dir))
    session = create_session(random_model_dir / ENCODER_FILE, "cpu", 2, attention_heads=dims.n_audio_head)
    features = np.random.default_rng(0).standard_normal((1, dims.n_mels, 3000)).astype(np.float32)
    assert _busy_after(lambda: session.run(None, {"input_features": features})) < 0.01
