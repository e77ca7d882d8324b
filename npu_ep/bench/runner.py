"""Measure engines side by side: one worker process per engine and model, rounds interleaved.

Every engine gets the same decoded audio, thread count and beam size. Round 0 warms each engine up
and is not timed; rounds 1..repeat are, and each figure is the median over them. Requests go to one
worker at a time, so engines never compete with each other for the cores.
"""
from __future__ import annotations

import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
from tqdm import tqdm

from npu_ep.bench.engines import ENGINES, STAGES, EngineUnavailable
from npu_ep.metrics import corpus_wer, word_errors

logger = logging.getLogger(__name__)


class WorkerFailed(Exception):
    """The worker process reported an error or died; the message is its last words."""


class Worker:
    """A running `npu_ep.bench.worker` process with one engine loaded."""

    def __init__(self, engine: str, source: Path, threads: int, log: IO[str], batch_size: int = 1) -> None:
        env = dict(os.environ, OMP_NUM_THREADS=str(threads))
        self.log = log
        self.process = subprocess.Popen(
            [sys.executable, "-m", "npu_ep.bench.worker"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True, bufsize=1, env=env,
        )
        spec = {"engine": engine, "source": str(source), "threads": threads, "batch_size": batch_size}
        self.load_seconds = self._ask(spec)["load_seconds"]

    def _ask(self, message: dict | None) -> dict:
        try:
            if message is None:
                self.process.stdin.close()
            else:
                self.process.stdin.write(json.dumps(message) + "\n")
                self.process.stdin.flush()
            line = self.process.stdout.readline()
        except BrokenPipeError:
            line = ""
        answer = json.loads(line) if line.strip() else {"error": f"worker exited (code {self.process.wait()})"}
        if "error" in answer:
            self.process.kill()
            self.process.wait()
            raise WorkerFailed(answer["error"])
        return answer

    def transcribe(self, audio_npy: Path, beam_size: int) -> dict:
        return self._ask({"audio": str(audio_npy), "beam_size": beam_size})

    def close(self) -> float:
        """End the worker; return its peak resident memory in MB."""
        peak = self._ask(None)["peak_rss_mb"]
        self.process.wait()
        return peak


@dataclass
class Run:
    """One engine on one model at one beam size: its measurements or why it has none."""

    model: str
    engine: str
    beam_size: int
    status: str = "ok"  # ok | skipped | failed
    note: str = ""
    source: str = ""
    load_seconds: float | None = None
    peak_rss_mb: float | None = None
    round_seconds: list[float] = field(default_factory=list)
    round_cpu_seconds: list[float] = field(default_factory=list)
    file_seconds: dict[str, list[float]] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)
    stage_rounds: list[dict[str, float]] = field(default_factory=list)


def _cpu_busy_seconds() -> float | None:
    """Seconds of CPU time all processes on the machine have used (Linux /proc/stat), or None."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _own_cpu_seconds() -> float:
    return sum(
        usage.ru_utime + usage.ru_stime
        for usage in (resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN))
    )


def measure(
    files: list[Path],
    models: dict[str, Path],
    engines: list[str],
    beam_sizes: list[int],
    threads: int,
    repeat: int,
    log_dir: Path,
    batch_size: int = 1,
) -> tuple[list[Run], dict[str, Any]]:
    """Run every engine on every model (fp32 folders in `models`) over `files`; return runs and run facts.
    `batch_size`: windows per batch of the batched engines."""
    from npu_ep.whisper.audio import SAMPLE_RATE, load_audio

    log_dir.mkdir(parents=True, exist_ok=True)
    runs: list[Run] = []
    facts: dict[str, Any] = {"load_average_before": os.getloadavg()}
    busy_start, own_start, wall_start = _cpu_busy_seconds(), _own_cpu_seconds(), time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="npu-ep-bench-") as scratch:
        # Decode once for all engines, so file reading and resampling stay outside every figure.
        decoded: list[Path] = []
        durations: dict[str, float] = {}
        for index, path in enumerate(files):
            audio = load_audio(path)
            durations[path.name] = len(audio) / SAMPLE_RATE
            decoded.append(Path(scratch) / f"{index}.npy")
            np.save(decoded[-1], audio.astype(np.float32))
        facts["durations"] = durations
        # One model at a time: its engines interleave, and only one model's workers hold memory.
        for model, fp32_dir in models.items():
            runs += _measure_model(model, fp32_dir, list(zip(files, decoded)), engines, beam_sizes, threads, repeat, log_dir,
                                   batch_size)

    wall = time.perf_counter() - wall_start
    busy_end = _cpu_busy_seconds()
    facts["load_average_after"] = os.getloadavg()
    facts["cpus"] = os.cpu_count()
    if busy_start is not None and busy_end is not None:
        # CPU time that other processes took while we measured, as a share of the machine.
        other = (busy_end - busy_start) - (_own_cpu_seconds() - own_start)
        facts["other_processes_cpu_share"] = max(0.0, other / (wall * (os.cpu_count() or 1)))
    return runs, facts


def _measure_model(
    model: str,
    fp32_dir: Path,
    inputs: list[tuple[Path, Path]],
    engines: list[str],
    beam_sizes: list[int],
    threads: int,
    repeat: int,
    log_dir: Path,
    batch_size: int,
) -> list[Run]:
    runs: list[Run] = []
    workers: list[tuple[Worker, list[Run]]] = []
    try:
        for engine in engines:
            group = [Run(model, engine, beam) for beam in beam_sizes]
            runs += group
            try:
                source = ENGINES[engine].locate(model, fp32_dir)
            except EngineUnavailable as error:
                _mark(group, "skipped", str(error))
                continue
            logger.info("loading %s on %s (%s)", engine, model, source)
            log = open(log_dir / f"{engine}-{model}.log", "w")
            try:
                worker = Worker(engine, source, threads, log, batch_size)
            except WorkerFailed as error:
                log.close()
                _mark(group, "failed", f"{error} (log: {log.name})")
                continue
            for run in group:
                run.source, run.load_seconds = str(source), worker.load_seconds
            workers.append((worker, group))

        steps = (repeat + 1) * len(inputs) * len(beam_sizes) * len(workers)
        with tqdm(total=steps, desc=f"bench {model}", unit="file", file=sys.stderr) as progress:
            for round_index in range(repeat + 1):
                for _, group in workers:
                    for run in group:
                        run.stage_rounds.append(dict.fromkeys(STAGES, 0.0))
                        run.round_seconds.append(0.0)
                        run.round_cpu_seconds.append(0.0)
                # Rotate who goes first each round, so no engine always follows the same neighbour.
                shift = round_index % max(len(workers), 1)
                order = workers[shift:] + workers[:shift]
                for path, npy in inputs:
                    for beam_index, beam in enumerate(beam_sizes):
                        for worker, group in list(order):
                            if (worker, group) not in workers:
                                continue  # failed earlier in this round
                            run = group[beam_index]
                            progress.set_postfix_str(f"{run.engine} {path.name}")
                            try:
                                answer = worker.transcribe(npy, beam)
                            except WorkerFailed as error:
                                _mark(group, "failed", f"{error} (log: {worker.log.name})")
                                workers.remove((worker, group))
                                continue
                            finally:
                                progress.update(1)
                            run.round_seconds[-1] += answer["seconds"]
                            run.round_cpu_seconds[-1] += answer["cpu_seconds"]
                            for stage, seconds in answer["stages"].items():
                                run.stage_rounds[-1][stage] += seconds
                            if round_index:  # round 0 is the untimed warm-up
                                run.file_seconds.setdefault(path.name, []).append(answer["seconds"])
                            run.texts[path.name] = answer["text"]
        for worker, group in workers:
            try:
                peak = worker.close()
            except WorkerFailed as error:
                _mark(group, "failed", f"{error} (log: {worker.log.name})")
                continue
            for run in group:
                run.peak_rss_mb = peak
    finally:
        for worker, _ in workers:
            if worker.process.poll() is None:
                worker.process.kill()
                worker.process.wait()
            worker.log.close()
    for run in runs:
        # Drop the untimed warm-up round.
        run.round_seconds, run.round_cpu_seconds = run.round_seconds[1:], run.round_cpu_seconds[1:]
        run.stage_rounds = run.stage_rounds[1:]
    return runs


def _mark(group: list[Run], status: str, note: str) -> None:
    for run in group:
        run.status, run.note = status, note


def summarize(run: Run, durations: dict[str, float], references: dict[str, str]) -> dict[str, Any]:
    """The figures of one run: medians over the timed rounds, WER over the files with references."""
    summary: dict[str, Any] = {
        "model": run.model, "engine": run.engine, "beam_size": run.beam_size,
        "status": run.status, "note": run.note, "source": run.source,
        "description": ENGINES[run.engine].description,
    }
    if run.status != "ok":
        return summary
    audio_seconds = sum(durations[name] for name in run.file_seconds)
    wall = statistics.median(run.round_seconds)
    stages = {stage: statistics.median(r[stage] for r in run.stage_rounds) for stage in STAGES}
    files = []
    for name, seconds in run.file_seconds.items():
        entry: dict[str, Any] = {
            "file": name, "audio_seconds": durations[name], "median_seconds": statistics.median(seconds),
            "seconds": seconds, "text": run.texts[name],
        }
        if name in references:
            entry["word_errors"], entry["reference_words"] = word_errors(references[name], run.texts[name])
        files.append(entry)
    counts = [(entry["word_errors"], entry["reference_words"]) for entry in files if "word_errors" in entry]
    summary.update(
        load_seconds=run.load_seconds,
        peak_rss_mb=run.peak_rss_mb,
        audio_seconds=audio_seconds,
        wall_seconds=wall,
        round_seconds=run.round_seconds,
        x_realtime=audio_seconds / wall if wall > 0 else None,
        # CPU seconds of the engine's process (all threads): steadier than wall time on a busy machine.
        cpu_seconds=statistics.median(run.round_cpu_seconds),
        # Corpus WER: all errors over all reference words (silence adds insertions only).
        wer=corpus_wer(counts) if counts else None,
        stages=stages if any(stages.values()) else None,
        files=files,
    )
    return summary
