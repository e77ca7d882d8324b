"""One progress bar for a batch: files and audio hours done, the whole run's ×realtime, and the ETA."""
from __future__ import annotations

import time

from tqdm import tqdm

_clock = tqdm.format_interval


class BatchProgress:
    """The bar advances by audio seconds, so tqdm's rate is audio per wall second and its ETA weighs
    files by their length."""

    def __init__(self, files: int, audio_seconds: float, enabled: bool = True) -> None:
        self.files = files
        self.done = 0
        self.audio = 0.0
        self.total_audio = audio_seconds
        self.started = time.perf_counter()
        self.bar = tqdm(total=max(audio_seconds, 1e-9), disable=not enabled, leave=True,
                        bar_format="batch {percentage:3.0f}%|{bar:20}| {desc} [{elapsed}<{remaining}]")
        self._show()

    def _show(self) -> None:
        elapsed = time.perf_counter() - self.started
        speed = self.audio / elapsed if elapsed > 0 else 0.0
        self.bar.set_description_str(f"{self.done}/{self.files} files, {_clock(self.audio)}/{_clock(self.total_audio)} "
                                     f"of audio, {speed:.1f}x realtime", refresh=True)

    def advance(self, audio_seconds: float) -> None:
        self.done += 1
        self.audio += audio_seconds
        self.bar.update(min(audio_seconds, self.bar.total - self.bar.n))
        self._show()

    def close(self) -> None:
        self.bar.close()
