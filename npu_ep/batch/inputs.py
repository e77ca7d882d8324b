"""What a batch transcribes: audio files, folders searched recursively, and lists of paths (text or CSV),
each file with the relative path its outputs keep."""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from npu_ep.errors import NpuEpError
from npu_ep.whisper.audio import AUDIO_EXTENSIONS

# An INPUT with one of these suffixes is a list of paths rather than audio.
LIST_SUFFIXES = (".txt", ".csv", ".lst")


@dataclass(frozen=True)
class BatchFile:
    path: Path  # absolute, as found (symlinks kept)
    rel: PurePosixPath  # below the inputs' common folder: the name its outputs keep


def _list_entries(listing: Path) -> list[Path]:
    """Paths named by a text list (one per line, `#` comments) or a CSV (a `path` column, else the first);
    relative entries are relative to the list's folder."""
    try:
        text = listing.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise NpuEpError(f"{listing}: cannot read the list of inputs ({error}; give a UTF-8 text or CSV file)") from None
    if listing.suffix.lower() == ".csv":
        rows = [row for row in csv.reader(text.splitlines()) if row and any(cell.strip() for cell in row)]
        header = [cell.strip().lower() for cell in rows[0]] if rows else []
        column = header.index("path") if "path" in header else 0
        names = [row[column].strip() for row in (rows[1:] if "path" in header else rows) if len(row) > column]
    else:
        names = [line.strip() for line in text.splitlines()]
    return [listing.parent / name for name in names if name and not name.startswith("#")]


def _folder_files(folder: Path) -> list[Path]:
    found = []
    for root, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [Path(root) / name for name in sorted(files)
                  if not name.startswith(".") and Path(name).suffix.lower() in AUDIO_EXTENSIONS]
    return found


def discover(inputs: list[str | Path], exclude: Path | None = None) -> list[BatchFile]:
    """Every audio file the inputs name, once each, in a stable order. A folder's files keep their path
    below it, so same-named files in different folders never share an output name. Files under `exclude`
    (the output folder) are left out. A missing input is a one-line error; a named file that is not audio
    is kept, so its failure is recorded with the rest."""
    roots: list[Path] = []
    files: list[Path] = []
    for given in inputs:
        path = Path(os.path.abspath(given))
        if path.is_dir():
            roots.append(path)
            files += _folder_files(path)
        elif path.suffix.lower() in LIST_SUFFIXES and path.is_file():
            entries = [Path(os.path.abspath(entry)) for entry in _list_entries(path)]
            roots += [entry.parent for entry in entries]
            files += entries
        elif path.exists() or path.suffix.lower() in AUDIO_EXTENSIONS:
            roots.append(path.parent)
            files.append(path)  # a missing audio file is reported as that file's failure
        else:
            raise NpuEpError(f"{given}: no such file or folder (give audio files, folders or a .txt/.csv list of paths)")
    excluded = Path(os.path.abspath(exclude)) if exclude is not None else None
    files = [f for f in dict.fromkeys(files) if excluded is None or not f.is_relative_to(excluded)]
    if not files:
        raise NpuEpError(f"no audio files in {' '.join(map(str, inputs))} "
                         f"(folders are searched for {', '.join(AUDIO_EXTENSIONS)})")
    base = Path(os.path.commonpath(roots))
    return [BatchFile(f, PurePosixPath(f.relative_to(base).as_posix())) for f in files]


def output_names(files: list[BatchFile], extension: str) -> dict[BatchFile, PurePosixPath]:
    """Each file's output name: its relative path with the audio suffix replaced by `extension`, or
    kept before it (`x.wav.txt`, `x.mp3.txt`) when two inputs differ only by suffix."""
    stems: dict[PurePosixPath, int] = {}
    for f in files:
        stems[f.rel.with_suffix("")] = stems.get(f.rel.with_suffix(""), 0) + 1
    return {f: (f.rel.with_suffix(f".{extension}") if stems[f.rel.with_suffix("")] == 1
                else f.rel.with_name(f"{f.rel.name}.{extension}")) for f in files}
