"""Exported model folders on disk, as export and quantize both write them: the manifest (format
npu-ep-model) with its file records, and swapping a finished folder in whole."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from npu_ep.paths import sha256_file
from npu_ep.whisper.spec import MANIFEST

FORMAT = "npu-ep-model"


def read_manifest(folder: Path) -> dict | None:
    """The folder's manifest if it is one of ours (format npu-ep-model), else None."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("format") == FORMAT else None


def file_records(folder: Path, names: list[str] | None = None) -> dict[str, dict]:
    """The manifest's "files" (sha256) and "file_sizes" entries for `names`, by default every file in
    `folder` but the manifest."""
    if names is None:
        names = sorted(p.name for p in folder.iterdir() if p.is_file() and p.name != MANIFEST)
    return {"files": {name: sha256_file(folder / name) for name in names},
            "file_sizes": {name: (folder / name).stat().st_size for name in names}}


def replace_folder(staging: Path, out_dir: Path) -> None:
    """Put the finished `staging` folder at `out_dir`, replacing an older one whole: its derived files
    (partitioned copies) would be stale. A reader never sees a half-written folder."""
    old = None
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        out_dir.rename(old)
    staging.rename(out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
