"""The compiled loops of word alignment: dynamic time warping and the median filter (numba).

Imported only when word timestamps are asked for, so plain transcription never loads numba.
"""
from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def _dtw(cost_in: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = cost_in.shape
    cost = np.full((rows + 1, cols + 1), np.inf, dtype=np.float32)
    trace = np.zeros((rows + 1, cols + 1), dtype=np.int8)
    cost[0, 0] = 0.0
    for j in range(1, cols + 1):
        for i in range(1, rows + 1):
            diagonal, up, left = cost[i - 1, j - 1], cost[i - 1, j], cost[i, j - 1]
            # Ties go left (to a later frame), as in openai/whisper.
            if diagonal < up and diagonal < left:
                best, step = diagonal, 0
            elif up < diagonal and up < left:
                best, step = up, 1
            else:
                best, step = left, 2
            cost[i, j] = cost_in[i - 1, j - 1] + best
            trace[i, j] = step
    trace[0, :] = 2
    trace[:, 0] = 1
    path_rows = np.empty(rows + cols, dtype=np.int64)
    path_cols = np.empty(rows + cols, dtype=np.int64)
    i, j, n = rows, cols, 0
    while i > 0 or j > 0:
        path_rows[n], path_cols[n] = i - 1, j - 1
        n += 1
        step = trace[i, j]
        if step == 0:
            i -= 1
            j -= 1
        elif step == 1:
            i -= 1
        else:
            j -= 1
    return path_rows[:n][::-1].copy(), path_cols[:n][::-1].copy()


@numba.njit(cache=True, nogil=True)
def _median_rows(padded: np.ndarray, width: int, out: np.ndarray) -> None:
    window = np.empty(width, dtype=padded.dtype)
    for r in range(out.shape[0]):
        for c in range(out.shape[1]):
            # Insertion sort: for a handful of values far cheaper than a general sort call.
            for k in range(width):
                value = padded[r, c + k]
                m = k
                while m > 0 and window[m - 1] > value:
                    window[m] = window[m - 1]
                    m -= 1
                window[m] = value
            out[r, c] = window[width // 2]


def dtw(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The cheapest monotonic path through `cost` [tokens, frames] from its first cell to its last:
    (token indices, frame indices) along the path."""
    return _dtw(np.ascontiguousarray(cost, dtype=np.float32))


def median_filter(x: np.ndarray, width: int) -> np.ndarray:
    """Median over a sliding odd `width` along the last axis, edges reflected (scipy's "reflect")."""
    pad = width // 2
    if x.shape[-1] <= pad:
        return x
    padded = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(pad, pad)], mode="reflect")
    flat = np.ascontiguousarray(padded.reshape(-1, padded.shape[-1]), dtype=np.float32)
    out = np.empty((flat.shape[0], x.shape[-1]), dtype=np.float32)
    _median_rows(flat, width, out)
    return out.reshape(x.shape)
