"""Files/hour and ×realtime of `npu-ep batch` layouts against a plain `npu-ep transcribe` of the same files,
and what a Ray worker costs (start-up seconds, RSS).

    python scripts/batch_speed.py AUDIO... [--copies 4] [--model tiny.en] [--cores 2] [--rounds 1]

Each configuration runs as its own process, start-up included, on COPIES copies of the given files.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import soundfile


def _rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as status:
            return next((int(line.split()[1]) for line in status if line.startswith("VmRSS:")), 0) / 1024
    except OSError:  # exited meanwhile
        return 0.0


def _descendants(root: int) -> list[int]:
    parents = {}
    for entry in os.listdir("/proc"):
        try:
            parents[int(entry)] = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    found, frontier = [], [root]
    while frontier:
        children = [pid for pid, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def ray_overhead(model: str) -> dict:
    """Start-up of a local Ray runtime, of an idle actor and of a batch worker loading `model`; the RSS of
    Ray's own processes, of an idle actor and of a loaded worker."""
    import ray

    from npu_ep.batch.worker import TranscribeWorker

    started = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    runtime = time.perf_counter() - started

    @ray.remote(num_cpus=1)
    class Idle:
        def pid(self) -> int:
            return os.getpid()

    started = time.perf_counter()
    idle_actor = Idle.remote()
    idle = ray.get(idle_actor.pid.remote())
    actor = time.perf_counter() - started
    started = time.perf_counter()
    worker = ray.remote(TranscribeWorker).options(num_cpus=1).remote(model, "cpu", 1, {}, ("txt",))
    assert ray.get(worker.ready.remote()) is None
    loaded_s = time.perf_counter() - started
    loaded = int(ray.get(worker.transcribe.remote("/nonexistent.wav"))["worker"].rsplit(":", 1)[1])
    system = [pid for pid in _descendants(os.getpid()) if pid not in (idle, loaded)]
    figures = {"runtime_start_s": runtime, "actor_start_s": actor, "worker_load_s": loaded_s,
               "ray_processes_rss_mb": sum(map(_rss_mb, system)),
               "idle_actor_rss_mb": _rss_mb(idle), "loaded_worker_rss_mb": _rss_mb(loaded)}
    ray.shutdown()
    return figures


def _timed(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("audio", nargs="+", type=Path)
    parser.add_argument("--copies", type=int, default=4)
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--cores", type=int, default=os.cpu_count())
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds; the median wall time is kept")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="batch-speed-"))
    files = []
    for copy in range(args.copies):
        for audio in args.audio:
            target = work / "in" / f"copy{copy}" / audio.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(audio, target)
            files.append(target)
    audio_seconds = sum(soundfile.info(str(f)).duration for f in files)
    npu_ep = [sys.executable, "-m", "npu_ep"]
    runs = {f"npu-ep transcribe, {args.cores} threads": [  # to stdout: one process, no output-name collisions
        *npu_ep, "transcribe", *map(str, files), "--model", args.model, "--threads", str(args.cores), "--quiet"]}
    layouts = [(1, args.cores)] + ([(args.cores, 1)] if args.cores > 1 else [])
    for workers, threads in layouts:
        runs[f"npu-ep batch, {workers} worker(s) x {threads} thread(s)"] = [
            *npu_ep, "batch", str(work / "in"), "--output-dir", str(work / "batch"),
            "--model", args.model, "--workers", str(workers), "--threads-per-worker", str(threads), "--quiet"]
    print(f"{len(files)} files, {audio_seconds:.1f} s of audio; load before: {os.getloadavg()[0]:.2f}")
    walls: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, command in runs.items():
            shutil.rmtree(work / "batch", ignore_errors=True)
            walls[name].append(_timed(command))
    for name, times in walls.items():
        wall = statistics.median(times)
        print(json.dumps({"run": name, "wall_s": round(wall, 2), "files_per_hour": round(len(files) * 3600 / wall),
                          "realtime": round(audio_seconds / wall, 2), "rounds": [round(t, 1) for t in times]}))
    print(f"load after: {os.getloadavg()[0]:.2f}")
    print(json.dumps({"ray": {key: round(value, 2) for key, value in ray_overhead(args.model).items()}}))
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
