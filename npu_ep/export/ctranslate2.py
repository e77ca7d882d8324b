"""Read and write CTranslate2's `model.bin` (binary version 6), the format of the offline Whisper packages.

Layout (little-endian): version, spec name, spec revision, then variables (name, shape, dtype, raw bytes),
then aliases (name -> target). A string is a uint16 length counting a trailing NUL, then the bytes.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from npu_ep.errors import NpuEpError

BINARY_VERSION = 6

# CTranslate2's dtype ids; bfloat16 (5) has no numpy type, it is widened to float32 on read.
_DTYPES: dict[int, np.dtype] = {
    0: np.dtype("<f4"),
    1: np.dtype("i1"),
    2: np.dtype("<i2"),
    3: np.dtype("<i4"),
    4: np.dtype("<f2"),
    5: np.dtype("<u2"),
}
_DTYPE_IDS = {np.dtype("<f4"): 0, np.dtype("i1"): 1, np.dtype("<i2"): 2, np.dtype("<i4"): 3, np.dtype("<f2"): 4}


@dataclass
class Ct2Model:
    spec_name: str
    spec_revision: int
    variables: dict[str, np.ndarray]
    aliases: dict[str, str] = field(default_factory=dict)

    def get(self, name: str) -> np.ndarray:
        """The variable `name`, following an alias (e.g. the tied output projection)."""
        return self.variables[self.aliases.get(name, name)]


class _Reader:
    def __init__(self, data: bytes | memoryview, path: Path) -> None:
        self.data = data
        self.path = path
        self.pos = 0

    def fail(self, what: str, offset: int) -> NpuEpError:
        return NpuEpError(
            f"{self.path}: {what} at byte offset {offset} of {len(self.data)} "
            "(the file is truncated or corrupt: reinstall the weights package or re-export with --force)"
        )

    def take(self, n: int, what: str) -> memoryview:
        if n < 0 or self.pos + n > len(self.data):
            raise self.fail(f"truncated {what} (needs {n} bytes)", self.pos)
        chunk = memoryview(self.data)[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def unpack(self, fmt: str, what: str) -> int:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), what))[0]

    def string(self, what: str) -> str:
        start = self.pos
        length = self.unpack("<H", f"{what} length")
        raw = bytes(self.take(length, what))
        if length == 0 or raw[-1] != 0:
            raise self.fail(f"{what} is not NUL-terminated", start)
        try:
            return raw[:-1].decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail(f"{what} is not UTF-8", start) from None


def read_model_bin(path: str | Path) -> Ct2Model:
    """Parse `path`; raise NpuEpError naming the byte offset if it is truncated or corrupt."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise NpuEpError(f"{path}: cannot read ({error.strerror})") from None
    return parse_model_bin(data, path)


def parse_model_bin(data: bytes, path: Path) -> Ct2Model:
    reader = _Reader(data, path)
    version = reader.unpack("<I", "binary version")
    if version != BINARY_VERSION:
        raise reader.fail(f"unsupported CTranslate2 binary version {version} (expected {BINARY_VERSION})", 0)
    spec_name = reader.string("spec name")
    spec_revision = reader.unpack("<I", "spec revision")
    variables: dict[str, np.ndarray] = {}
    for index in range(reader.unpack("<I", "variable count")):
        start = reader.pos
        name = reader.string(f"name of variable {index}")
        rank = reader.unpack("<B", f"rank of {name}")
        if rank > 8:
            raise reader.fail(f"variable {name} has rank {rank}", start)
        shape = tuple(reader.unpack("<I", f"shape of {name}") for _ in range(rank))
        dtype_id = reader.unpack("<B", f"dtype of {name}")
        if dtype_id not in _DTYPES:
            raise reader.fail(f"variable {name} has unknown dtype id {dtype_id}", start)
        dtype = _DTYPES[dtype_id]
        n_bytes = reader.unpack("<I", f"size of {name}")
        expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if n_bytes != expected:
            raise reader.fail(f"variable {name} declares {n_bytes} bytes but shape {shape} needs {expected}", start)
        raw = reader.take(n_bytes, f"data of {name}")
        array = np.frombuffer(raw, dtype=dtype).reshape(shape)
        if dtype_id == 5:
            array = (array.astype(np.uint32) << 16).view(np.float32)
        variables[name] = array
    aliases: dict[str, str] = {}
    if reader.pos < len(data):
        for index in range(reader.unpack("<I", "alias count")):
            alias = reader.string(f"alias {index}")
            aliases[alias] = reader.string(f"target of alias {alias}")
    if reader.pos != len(data):
        raise reader.fail(f"{len(data) - reader.pos} unexpected trailing bytes", reader.pos)
    for alias, target in aliases.items():
        if target not in variables:
            raise NpuEpError(f"{path}: alias {alias} points to missing variable {target} (the file is corrupt)")
    return Ct2Model(spec_name, spec_revision, variables, aliases)


def write_model_bin(path: str | Path, model: Ct2Model) -> None:
    """Write `model` in the layout read_model_bin reads (used by tests to build small model.bin files)."""

    def string(text: str) -> bytes:
        raw = text.encode("utf-8") + b"\0"
        return struct.pack("<H", len(raw)) + raw

    parts = [struct.pack("<I", BINARY_VERSION), string(model.spec_name), struct.pack("<I", model.spec_revision)]
    parts.append(struct.pack("<I", len(model.variables)))
    for name, array in model.variables.items():
        array = np.asarray(array)  # (ascontiguousarray would turn 0-d flags into 1-d)
        dtype = array.dtype.newbyteorder("<") if array.dtype.itemsize > 1 else array.dtype
        if dtype not in _DTYPE_IDS:
            raise ValueError(f"{name}: dtype {array.dtype} has no CTranslate2 id")
        parts += [string(name), struct.pack("<B", array.ndim), struct.pack(f"<{array.ndim}I", *array.shape)]
        parts += [struct.pack("<BI", _DTYPE_IDS[dtype], array.nbytes), array.astype(dtype).tobytes()]
    parts.append(struct.pack("<I", len(model.aliases)))
    for alias, target in model.aliases.items():
        parts += [string(alias), string(target)]
    Path(path).write_bytes(b"".join(parts))
