"""Exported model folders on disk, as export and quantize both write them: the manifest (format
npu-ep-model) with its file records, the graphs' weights in page-aligned files beside them, and
swapping a finished folder in whole."""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from npu_ep.errors import NpuEpError
from npu_ep.paths import cache_dir, sha256_file
from npu_ep.whisper.spec import MANIFEST

if TYPE_CHECKING:
    import onnx

FORMAT = "npu-ep-model"
# Weights are stored outside the graph at offsets aligned to this (a multiple of any x86-64 page size):
# ONNX Runtime then maps them from the file instead of copying them onto its heap, so the decoders'
# token-embedding table (80 MB in tiny.en, 106 MB in base) costs only the rows a transcript touches, and
# a session opens without parsing its weights out of a protobuf.
WEIGHTS_ALIGNMENT = 65536
# Tensors smaller than this stay inside the graph (shapes, constants): mapping them would waste a page each.
MAPPED_MIN_BYTES = 4096

log = logging.getLogger(__name__)


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


def weights_file(onnx_path: Path) -> Path:
    """The file holding `onnx_path`'s mapped weights (see `map_weights`)."""
    return onnx_path.with_name(onnx_path.name + ".data")


def map_weights(onnx_path: Path) -> None:
    """Rewrite `onnx_path` with its large weights moved to `weights_file(onnx_path)`, each at an offset
    ONNX Runtime can map (`WEIGHTS_ALIGNMENT`). The graph and its values stay the same."""
    import onnx

    save_mapped(onnx.load(str(onnx_path)), onnx_path)


def save_mapped(model: onnx.ModelProto, target: Path) -> None:
    """Write `model` (its weights loaded) to `target` with its large weights in `weights_file(target)` at
    mappable offsets. Both are written under temporary names and renamed into place, weights first: a
    process that has the old weights file mapped keeps reading it."""
    import onnx
    from onnx import TensorProto

    data_file = weights_file(target)
    staged_data = data_file.with_name(f".{data_file.name}.{os.getpid()}.tmp")
    staged_graph = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    offset = 0
    with open(staged_data, "wb") as data:
        for tensor in model.graph.initializer:
            raw = tensor.raw_data
            if len(raw) < MAPPED_MIN_BYTES:
                continue
            padding = -offset % WEIGHTS_ALIGNMENT
            data.write(bytes(padding))
            offset += padding
            data.write(raw)
            tensor.ClearField("raw_data")
            tensor.data_location = TensorProto.EXTERNAL
            del tensor.external_data[:]
            for key, value in (("location", data_file.name), ("offset", str(offset)), ("length", str(len(raw)))):
                tensor.external_data.add(key=key, value=value)
            offset += len(raw)
    onnx.save(model, str(staged_graph))
    staged_data.replace(data_file)
    staged_graph.replace(target)


def copy_onnx(source: Path, target: Path) -> None:
    """Copy an ONNX file with its mapped weights file, if it has one."""
    shutil.copy2(source, target)
    if weights_file(source).is_file():
        shutil.copy2(weights_file(source), weights_file(target))


def replace_folder(staging: Path, out_dir: Path) -> None:
    """Put the finished `staging` folder at `out_dir`, replacing an older one whole: its derived files
    (partitioned copies) would be stale. A reader never sees a half-written folder."""
    old = None
    if out_dir.exists():
        old = out_dir.with_name(f"{scratch_prefix(out_dir, 'old')}{os.getpid()}")
        out_dir.rename(old)
    staging.rename(out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# What a run builds beside the folder: the staged folder, the replaced one, converted weights.
SCRATCH_ROLES = ("partial", "old", "hf")


def scratch_prefix(out_dir: Path, role: str) -> str:
    """The name prefix of a scratch folder beside `out_dir` (staging, converted weights): `sweep_scratch`
    finds what a killed run left by it."""
    return f".{out_dir.name}.{role}-"


def lock_path(out_dir: Path) -> Path:
    """Where the lock of `out_dir` lives: in the cache, so a refused or finished run leaves nothing
    beside the folder, keyed by the folder's absolute path."""
    key = hashlib.sha256(str(out_dir.resolve()).encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return cache_dir() / "locks" / f"{out_dir.name}-{key}.lock"


@contextlib.contextmanager
def exclusive(out_dir: Path, what: str) -> Iterator[None]:
    """Hold the folder's lock while building it: one writer at a time (`what`, e.g. "export", names the
    work in the message a waiting run prints). Scratch left by a run that was killed is removed once
    the lock is held, since only the holder creates scratch."""
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        lock_file = lock_path(out_dir)
        lock_file.parent.mkdir(parents=True, exist_ok=True)
        lock = open(lock_file, "a+")
    except OSError as error:
        raise NpuEpError(f"{error.filename or out_dir.parent}: cannot write there ({error.strerror or error}; "
                         "choose another output folder, or set NPU_EP_CACHE for the lock)") from None
    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "unknown"
            log.warning("waiting for another %s of %s (pid %s) to finish", what, out_dir, holder)
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            lock.seek(0)
            lock.truncate()
            lock.write(str(os.getpid()))
            lock.flush()
            sweep_scratch(out_dir)
            yield
        finally:
            lock.seek(0)
            lock.truncate()
            lock.flush()
            fcntl.flock(lock, fcntl.LOCK_UN)


def sweep_scratch(out_dir: Path) -> None:
    """Remove the scratch folders beside `out_dir` (names from `scratch_prefix`, and `replace_folder`'s
    old copies). Call only with `exclusive` held."""
    for stale in (path for role in SCRATCH_ROLES for path in out_dir.parent.glob(scratch_prefix(out_dir, role) + "*")):
        if stale.is_dir():
            log.info("removing %s, left by an interrupted run", stale)
            shutil.rmtree(stale, ignore_errors=True)
