"""Where the project keeps exported models and per-machine caches."""
from __future__ import annotations

import hashlib
import os
import site
import sysconfig
from pathlib import Path

_CHECKOUT = Path(__file__).resolve().parent.parent


def shipped(folder: str) -> Path:
    """A top-level folder the project ships (kernels/, samples/): the source checkout's, else where a
    wheel installs it (pyproject's data-files under <prefix>/share/npu_ep, system or --user)."""
    candidates = (_CHECKOUT / folder, Path(sysconfig.get_path("data")) / "share" / "npu_ep" / folder,
                  Path(site.getuserbase()) / "share" / "npu_ep" / folder)
    return next((path for path in candidates if path.is_dir()), candidates[0])


# The speech clips shipped with the project, with their references.json: quantize's default
# calibration and evaluation audio, and the source of bench's default suite.
SAMPLES_DIR = shipped("samples")


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


def sha256_file(path: Path) -> str:
    """The file's SHA-256 as hex, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
