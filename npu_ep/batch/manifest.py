"""The results manifest: one JSON line per finished file, appended and synced as each file finishes, so a
run stopped at any point can be resumed; and the outputs, each written under a temporary name and renamed
when complete."""
from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

from npu_ep.errors import NpuEpError

MANIFEST_NAME = "npu-ep-batch.jsonl"
# Outputs being written carry this: hidden, and never mistaken for a finished transcript.
PARTIAL_SUFFIX = ".npu-ep-partial"


def write_output(target: Path, text: str) -> None:
    """Write `text` to `target` in one rename: a reader sees the old file or the whole new one."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}{PARTIAL_SUFFIX}")
    with partial.open("w", encoding="utf-8") as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())
    os.replace(partial, target)


def settings_key(record: dict) -> str:
    """What makes two results of one audio file interchangeable: same content, model and settings."""
    return json.dumps([record["path"], record["hash"], record["model"], record["settings"]], sort_keys=True)


class ResultsManifest:
    """`OUT/npu-ep-batch.jsonl`, held with an exclusive lock while a run appends to it."""

    def __init__(self, output_dir: Path) -> None:
        self.path = output_dir / MANIFEST_NAME
        try:
            output_dir.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("a+", encoding="utf-8")
        except OSError as error:
            raise NpuEpError(f"{output_dir}: cannot write the results there ({error.strerror or error}; "
                             "choose another --output-dir)") from None
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.close()
            raise NpuEpError(f"{self.path}: another npu-ep batch is writing to this folder "
                             "(wait for it to finish or choose another --output-dir)") from None
        self._file.seek(0)
        self.records = []
        for line in self._file.read().splitlines():
            try:
                self.records.append(json.loads(line))
            except json.JSONDecodeError:  # the last line of a run killed mid-write
                continue
        if self.path.stat().st_size and not self.path.read_bytes().endswith(b"\n"):
            self._file.write("\n")  # the next record starts on a line of its own
        for partial in output_dir.rglob(f".*{PARTIAL_SUFFIX}"):  # left by a run killed mid-write
            partial.unlink(missing_ok=True)

    def done(self) -> dict[str, dict]:
        """The latest successful record for each (path, hash, model, settings)."""
        return {settings_key(r): r for r in self.records if r.get("status") == "done" and "settings" in r}

    def append(self, record: dict) -> None:
        self._file.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        self.records.append(record)

    def close(self) -> None:
        self._file.close()  # releases the lock

    def __enter__(self) -> ResultsManifest:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
