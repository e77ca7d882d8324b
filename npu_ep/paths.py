"""Where the project keeps exported models and per-machine caches."""
from __future__ import annotations

import os
from pathlib import Path

_CHECKOUT = Path(__file__).resolve().parent.parent
# The speech clips shipped with the source checkout, with their references.json: quantize's default
# calibration and evaluation audio, and the source of bench's default suite.
SAMPLES_DIR = _CHECKOUT / "samples"


def models_dir() -> Path:
    """`$NPU_EP_MODELS`, else `models/` of a source checkout, else `~/.cache/npu_ep/models`."""
    env = os.environ.get("NPU_EP_MODELS")
    if env:
        return Path(env).expanduser()
    if (_CHECKOUT / "pyproject.toml").exists():
        return _CHECKOUT / "models"
    return cache_dir() / "models"


def cache_dir() -> Path:
    """Per-user cache (CPU calibration of the cost model, downloaded-free scratch)."""
    env = os.environ.get("NPU_EP_CACHE")
    base = Path(env).expanduser() if env else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "npu_ep"
    return base
