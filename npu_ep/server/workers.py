"""Loaded models, a bounded queue of transcription jobs and the worker threads that run them.

The event loop never runs inference: a request becomes a `Job` in the queue, a worker thread
transcribes it and hands segments back to the loop as they finish. A job whose client went away or
whose time ran out is skipped or stopped between windows.
"""
from __future__ import annotations

import asyncio
import logging
import os
import queue
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from npu_ep.errors import NpuEpError
from npu_ep.server.errors import ApiError
from npu_ep.whisper.decoding import DecodeOptions

log = logging.getLogger(__name__)

# OpenAI's clients name their model; any of these means the server's default model.
DEFAULT_ALIASES = ("whisper-1",)


def cpu_count() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def plan_workers(workers: int | None, threads: int | None, cores: int | None = None) -> tuple[int, int]:
    """(workers, ONNX Runtime threads per worker) with workers x threads about the cores: a request
    alone still gets several threads on a big machine, and two run side by side even on two cores."""
    cores = cores or cpu_count()
    if threads is None:
        threads = max(1, min(4, cores // max(1, workers or 2)))
    if workers is None:
        workers = max(1, cores // threads)
    return workers, threads


class Models:
    """One loaded Pipeline per model (and the server's one device), by the id clients ask for."""

    def __init__(self, names: list[str], device: str, threads: int) -> None:
        from npu_ep.whisper.pipeline import Pipeline

        self.device = device
        self.pipelines: dict[str, Any] = {}
        for name in names:
            pipeline = Pipeline(name, device=device, threads=threads)
            self.pipelines[pipeline.model_dir.name] = pipeline
            log.info("loaded %s on %s in %.1f s", pipeline.model_dir.name, device, pipeline.load_seconds)
        self.default = next(iter(self.pipelines))
        # The NPU provider keeps one set of device buffers per session: its runs take turns.
        self._locks = {name: threading.Lock() for name in self.pipelines} if device != "cpu" else {}

    def ids(self) -> list[str]:
        return [*self.pipelines, *DEFAULT_ALIASES]

    def resolve(self, model: str | None) -> str:
        """The loaded model `model` names; ApiError 404 for any other."""
        if not model or model in DEFAULT_ALIASES:
            return self.default
        if model in self.pipelines:
            return model
        raise ApiError(404, f"model {model!r} is not served here (use one of: {', '.join(self.ids())})",
                       param="model", code="model_not_found")

    def turn(self, model: str):
        """The context a run of `model` holds: exclusive on an NPU device, shared on the CPU."""
        lock = self._locks.get(model)
        return lock if lock is not None else nullcontext()


@dataclass
class Job:
    """One transcription: its audio file (removed when the job ends), options, and the way back."""

    path: Path
    model: str
    options: DecodeOptions
    deadline: float  # time.monotonic() after which the job stops
    filename: str = "upload"  # the client's name for the file, put in messages instead of `path`
    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.get_running_loop)
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)

    def cancel(self) -> None:
        self.cancelled.set()

    def stopped(self) -> bool:
        return self.cancelled.is_set() or time.monotonic() > self.deadline

    def emit(self, kind: str, value: Any = None) -> None:
        """Hand ("segment", Segment), ("done", info) or ("error", ApiError) to the waiting request."""
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, (kind, value))
        except RuntimeError:  # the loop is closed: the server is shutting down
            pass


@dataclass
class Stats:
    running: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0


class Workers:
    """`count` threads taking jobs from a queue of at most `queue_size` waiting jobs."""

    def __init__(self, models: Models, count: int, queue_size: int) -> None:
        self.models = models
        self.count = count
        self.queue_size = queue_size
        self.stats = Stats()
        self._queue: queue.Queue[Job] = queue.Queue(maxsize=queue_size)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._threads = [threading.Thread(target=self._loop, name=f"npu-ep-worker-{i}", daemon=True) for i in range(count)]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Stop taking jobs, drop the waiting ones and wait for the running ones to stop."""
        self._stopping.set()
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            job.cancel()
            self._finish(job, "cancelled")
        for thread in self._threads:
            thread.join()

    def waiting(self) -> int:
        return self._queue.qsize()

    def submit(self, job: Job) -> None:
        """Queue `job`, which the workers then own (and remove its file); ApiError 429/503 when they can't take it."""
        if self._stopping.is_set():
            raise ApiError(503, "the server is shutting down (try again once it is back)", code="shutting_down")
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise ApiError(429, f"the server is busy: {self.queue_size} requests are already waiting "
                                "(try again shortly, or start the server with a larger --queue-size)",
                           code="queue_full", headers={"Retry-After": "1"}) from None

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                job = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            self._run(job)

    def _finish(self, job: Job, outcome: str) -> None:
        job.path.unlink(missing_ok=True)
        with self._lock:
            setattr(self.stats, outcome, getattr(self.stats, outcome) + 1)

    def _run(self, job: Job) -> None:
        if job.stopped():  # its client left, or its time ran out, while it waited
            self._finish(job, "cancelled")
            return
        with self._lock:
            self.stats.running += 1
        outcome, final = "completed", None
        try:
            pipeline = self.models.pipelines[job.model]
            with self.models.turn(job.model):
                segments, info = pipeline.transcribe_iter(job.path, job.options, progress=False)
                try:
                    for segment in segments:  # decoding happens window by window as this loop asks
                        if job.stopped():
                            outcome = "cancelled"
                            break
                        job.emit("segment", segment)
                finally:
                    segments.close()  # a stopped job leaves the rest of its windows undecoded
            if outcome == "completed":
                final = ("done", info)
        except NpuEpError as error:
            outcome = "failed"
            message = str(error).replace(str(job.path), job.filename)
            final = ("error", ApiError(400, message, param="file", code="invalid_audio"))
        except Exception:
            outcome = "failed"
            log.exception("transcription of %s failed", job.filename)
            final = ("error", ApiError(500, "internal server error while transcribing (the server's log has the details)",
                                       code="internal_error"))
        finally:
            with self._lock:
                self.stats.running -= 1
            self._finish(job, outcome)
        if final is not None:  # only now: the file is gone and the counts are up to date when the client hears
            job.emit(*final)
