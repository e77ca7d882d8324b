"""What runs inside one batch worker: a Pipeline loaded once, then one file after another."""
from __future__ import annotations

import os
import socket
import time

from npu_ep.errors import NpuEpError, first_line


class TranscribeWorker:
    """Loads the model on construction; a load failure is kept and reported by `ready()` instead of
    killing the worker, so the run stops with the one-line cause."""

    def __init__(self, model: str, device: str, threads: int, options: dict, formats: tuple[str, ...]) -> None:
        from npu_ep.whisper.decoding import DecodeOptions
        from npu_ep.whisper.pipeline import Pipeline

        self.formats = formats
        self.where = f"{socket.gethostname()}:{os.getpid()}"
        self.error: str | None = None
        try:
            self.pipeline = Pipeline(model, device, threads)
            self.decode_options = DecodeOptions.from_kwargs(None, **options)
            self.pipeline.check(self.decode_options)  # once: options the model cannot follow stop the run
        except NpuEpError as error:
            self.error = str(error)
        except Exception as error:  # any load failure ends the run with its cause
            self.error = f"{model}: the model does not load on {self.where} ({first_line(error)})"

    def ready(self) -> str | None:
        """None once the model is loaded, else why it is not."""
        return self.error

    def transcribe(self, path: str) -> dict:
        """{"status": "done", "outputs": {format: text}, ...} or {"status": "failed", "error": one line}."""
        from npu_ep.whisper.formats import render

        started = time.perf_counter()
        try:
            segments, info = self.pipeline.transcribe(path, self.decode_options, progress=False)
            outputs = {fmt: render(segments, info, fmt) for fmt in self.formats}
        except NpuEpError as error:
            return {"status": "failed", "error": str(error), "seconds": time.perf_counter() - started,
                    "worker": self.where}
        except Exception as error:  # one file's unexpected failure must not stop the rest
            return {"status": "failed", "error": f"{path}: {first_line(error)}",
                    "seconds": time.perf_counter() - started, "worker": self.where}
        return {"status": "done", "outputs": outputs, "duration": info.duration,
                "seconds": time.perf_counter() - started, "worker": self.where}
