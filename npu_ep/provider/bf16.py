"""float32 <-> bf16 bit patterns (uint16), rounding to nearest even as the AIE cores do.

Packing an activation for a bf16 kernel is the largest host cost of a dispatch, so the rounding is
compiled (numba) into one pass over memory, faster than numpy's best form (three whole-array
passes) and about as fast as a plain copy (figures: docs/measurements.md).
"""
from __future__ import annotations

import numba
import numpy as np


@numba.njit("void(uint32[:, ::1], uint16[:, ::1])", nogil=True, cache=True)
def _round_rows(bits: np.ndarray, out: np.ndarray) -> None:
    # Both C-contiguous (the signature refuses others): `out` is the whole device buffer and only its
    # top-left corner is written, as a sliced view would compile to slower strided indexing. No NaN check
    # (it costs time): the quiet NaNs arithmetic produces stay NaN without it (a payload only in the low
    # 16 bits does not).
    rows, cols = bits.shape
    for i in range(rows):
        for j in range(cols):
            u = bits[i, j]
            out[i, j] = (u + 0x7FFF + ((u >> 16) & 1)) >> 16


def pack(values: np.ndarray, out: np.ndarray) -> None:
    """float32 [M, K] -> bf16 bits written into out[:M, :K] (out: C-contiguous, may be wider and taller)."""
    _round_rows(np.ascontiguousarray(values, dtype=np.float32).view(np.uint32), out)


def from_f32(values: np.ndarray) -> np.ndarray:
    """bf16 bits of a float32 array (any shape)."""
    flat = np.ascontiguousarray(values, dtype=np.float32).reshape(1, -1)
    out = np.empty(flat.shape, np.uint16)
    pack(flat, out)
    return out.reshape(np.shape(values))


def to_f32(bits: np.ndarray) -> np.ndarray:
    """float32 values of bf16 bits: exact (bf16 is float32 with the low 16 mantissa bits zero)."""
    return (bits.astype(np.uint32) << 16).view(np.float32)
