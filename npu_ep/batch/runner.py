"""The batch runner: Ray actors, each holding one loaded Pipeline, fed one file at a time from the driver,
which writes every output and the results manifest itself (so workers need no access to the output folder,
and a worker that dies leaves nothing half-written)."""
from __future__ import annotations

import logging
import os
import socket
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from npu_ep.batch.inputs import BatchFile, discover, output_names
from npu_ep.batch.manifest import ResultsManifest, settings_key, write_output
from npu_ep.batch.progress import BatchProgress
from npu_ep.batch.worker import TranscribeWorker
from npu_ep.errors import NpuEpError
from npu_ep.paths import sha256_file
from npu_ep.whisper.formats import FORMATS

log = logging.getLogger(__name__)

# Loading a worker that keeps dying (out of memory while loading, a crashing driver) is given up after this.
_MAX_LOAD_DEATHS = 3


@dataclass
class BatchSummary:
    done: int = 0
    failed: int = 0
    skipped: int = 0  # already done with the same content, model and settings
    audio_seconds: float = 0.0  # transcribed in this run
    wall_seconds: float = 0.0
    workers: int = 0
    manifest: Path | None = None
    failures: list[str] = field(default_factory=list)


@dataclass
class _Job:
    file: BatchFile
    output: Path
    record: dict  # the manifest fields known before transcribing
    duration: float  # probed from the header; 0 when unreadable
    attempts: int = 0
    died_on: set[int] = field(default_factory=set)


@dataclass
class WorkerPlan:
    device: str
    threads: int
    resources: dict


def _import_ray():
    try:
        import ray
    except ImportError:
        raise NpuEpError('npu-ep batch needs Ray, which is not installed (pip install "npu-ep[cluster]")') from None
    return ray


def _probe_duration(path: Path) -> float:
    from npu_ep.whisper.audio import AudioSource

    try:
        source = AudioSource(path)
    except NpuEpError:
        return 0.0  # its worker records why
    source.close()
    return source.duration


def _check_reachable(address: str) -> None:
    """A HOST:PORT that nothing answers on is a one-line error now, not minutes of Ray's connection retries."""
    host, _, port = address.rpartition(":")
    if address == "auto" or "://" in address or not port.isdigit():
        return
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=5).close()
    except OSError as error:
        raise NpuEpError(f"--ray {address}: no Ray cluster answers there ({error.strerror or error}; "
                         "start one with `ray start --head` or leave out --ray)") from None


def _start_ray(ray, address: str | None, cpus: int | None) -> bool:
    """Connect to `address` ("auto" or host:port), or start a local Ray runtime; True when it is ours to stop."""
    if ray.is_initialized():
        return False
    quiet = {"logging_level": logging.ERROR, "log_to_driver": True}
    if address is not None:
        _check_reachable(address)
        try:
            ray.init(address=address, **quiet)
        except (ConnectionError, RuntimeError, ValueError) as error:
            raise NpuEpError(f"--ray {address}: no Ray cluster there ({str(error).splitlines()[0]}; "
                             "start one with `ray start --head` or leave out --ray)") from None
        return True
    from npu_ep.provider.device import npu_present

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # a local runtime has no business phoning home
    resources = {"npu": 1} if npu_present()[0] else {}
    # "local": a runtime of our own even when RAY_ADDRESS names a cluster (that is what --ray auto is for).
    ray.init(address="local", num_cpus=cpus, resources=resources, include_dashboard=False, **quiet)
    return True


def plan_workers(cluster: dict, device: str, workers: int | None, threads: int) -> list[WorkerPlan]:
    """One worker per NPU (custom resource "npu") for device npu or auto, CPU workers of `threads` cores each
    on the cores left (device cpu, emulator or auto); `workers` caps the total."""
    cpus, npus = int(cluster.get("CPU", 0)), int(cluster.get("npu", 0))
    plans: list[WorkerPlan] = []
    if device in ("npu", "auto"):
        plans += [WorkerPlan("npu", threads, {"npu": 1}) for _ in range(npus)]
        if device == "npu" and not npus:
            raise NpuEpError("--device npu: no Ray node offers an NPU (start NPU nodes with "
                             "ray start --resources '{\"npu\": 1}', or use --device cpu)")
    if device != "npu":
        cpu_device = "cpu" if device == "auto" else device
        left = max(0, cpus - len(plans) * threads)
        plans += [WorkerPlan(cpu_device, threads, {}) for _ in range(left // threads)]
    if not plans:
        raise NpuEpError(f"--threads-per-worker {threads}: no Ray node has that many CPUs ({cpus} in all; "
                         "give fewer threads per worker)")
    return plans[:workers] if workers else plans


def transcribe_batch(
    inputs: list[str | Path],
    output_dir: str | Path,
    *,
    model: str = "tiny.en",
    device: str = "cpu",
    format: str = "txt",
    workers: int | None = None,
    threads_per_worker: int = 1,
    ray_address: str | None = None,
    retries: int = 2,
    progress: bool = True,
    **options,
) -> BatchSummary:
    """Transcribe every audio file `inputs` name (files, folders, .txt/.csv lists) into `output_dir`,
    keeping each file's relative path, on Ray workers that each load the model once.

    Without `ray_address` (and no Ray connection already open) a local Ray runtime is started for the
    run; "auto" or host:port runs on an existing cluster. `options` go to `Pipeline.transcribe`
    (language, task, beam_size, ...). Each finished file is appended to `output_dir/npu-ep-batch.jsonl`;
    a file already done there with the same content, model and settings is skipped. A file whose worker
    dies is retried on another worker up to `retries` times, then recorded as failed.
    """
    from npu_ep.whisper.decoding import DecodeOptions

    ray = _import_ray()
    DecodeOptions.from_kwargs(None, **options)  # a bad option is one line now, not one per worker
    if format not in FORMATS:
        raise NpuEpError(f"format {format!r}: unknown (use one of {', '.join(FORMATS)})")
    started = time.perf_counter()
    output_dir = Path(output_dir)
    files = discover(inputs, exclude=output_dir)
    names = output_names(files, format)
    model_id = os.path.abspath(model) if Path(model).is_dir() else str(model)
    settings = {"format": format, **dict(sorted(options.items()))}
    summary = BatchSummary()
    with ResultsManifest(output_dir) as manifest:
        summary.manifest = manifest.path
        done = manifest.done()
        jobs: deque[_Job] = deque()
        for f in files:
            output = output_dir / names[f]
            try:
                digest = f"sha256:{sha256_file(f.path)}"
            except OSError:
                digest = None  # missing or unreadable: its worker records why
            record = {"path": str(f.rel), "hash": digest, "model": model_id, "settings": settings}
            if digest is not None and settings_key(record) in done and output.is_file():
                summary.skipped += 1
                continue
            jobs.append(_Job(f, output, record, _probe_duration(f.path)))
        if not jobs:
            summary.wall_seconds = time.perf_counter() - started
            return summary
        # A local runtime offers every core, or as many as the asked-for workers need.
        cpus = max(os.cpu_count() or 1, workers * threads_per_worker) if workers else None
        owned = _start_ray(ray, ray_address, cpus)
        actors: list = []
        bar = BatchProgress(len(jobs), sum(job.duration for job in jobs), enabled=progress)
        try:
            plans = plan_workers(ray.cluster_resources(), device, workers, threads_per_worker)
            summary.workers = len(plans)
            remote = ray.remote(TranscribeWorker)
            actors = [remote.options(num_cpus=plan.threads, resources=plan.resources, max_restarts=-1)
                      .remote(model, plan.device, plan.threads, options, (format,)) for plan in plans]
            _run(ray, actors, jobs, manifest, bar, summary, retries)
        finally:
            bar.close()
            for actor in actors:
                ray.kill(actor)
            if owned:
                ray.shutdown()
    summary.wall_seconds = time.perf_counter() - started
    return summary


def _run(ray, actors: list, jobs: deque[_Job], manifest: ResultsManifest, bar: BatchProgress,
         summary: BatchSummary, retries: int) -> None:
    """Hand each idle worker the next file, record results as they come, retry files whose worker died."""
    from ray.exceptions import ActorUnavailableError, RayError, RayTaskError

    loading = {actor.ready.remote(): i for i, actor in enumerate(actors)}
    load_deaths = [0] * len(actors)
    idle: list[int] = []
    running: dict = {}  # ObjectRef -> (worker index, job)

    def finish(job: _Job, result: dict, worker: int) -> None:
        record = {**job.record, "status": result["status"], "duration": result.get("duration", job.duration),
                  "seconds": round(result.get("seconds", 0.0), 3), "error": result.get("error"),
                  "output": str(job.output.relative_to(manifest.path.parent)) if result["status"] == "done" else None,
                  "attempts": job.attempts, "worker": result.get("worker", f"worker {worker}")}
        if result["status"] == "done":
            for text in result["outputs"].values():
                try:
                    write_output(job.output, text)
                except OSError as error:
                    raise NpuEpError(f"{job.output}: cannot write the transcript ({error.strerror or error}; "
                                     "choose another --output-dir)") from None
            summary.done += 1
            summary.audio_seconds += record["duration"]
        else:
            summary.failed += 1
            summary.failures.append(record["error"])
            log.warning("%s", record["error"])
        manifest.append(record)
        bar.advance(job.duration)

    while jobs or running:
        for worker in list(idle):  # a file whose worker died goes to another worker when there is one
            job = next((j for j in jobs if worker not in j.died_on or len(j.died_on) >= len(actors)), None)
            if job is not None:
                jobs.remove(job)
                idle.remove(worker)
                job.attempts += 1
                running[actors[worker].transcribe.remote(str(job.file.path))] = (worker, job)
        waiting = [*running, *loading]
        if not waiting:
            raise NpuEpError("no batch worker is left to take the remaining files (check the Ray cluster)")
        [ref], _ = ray.wait(waiting, num_returns=1)
        if ref in loading:
            worker = loading.pop(ref)
            try:
                error = ray.get(ref)
            except ActorUnavailableError:  # still restarting: ask again shortly
                time.sleep(0.2)
                loading[actors[worker].ready.remote()] = worker
                continue
            except RayError as died:
                load_deaths[worker] += 1
                if load_deaths[worker] >= _MAX_LOAD_DEATHS:
                    raise NpuEpError(f"a batch worker died {_MAX_LOAD_DEATHS} times while loading the model "
                                     f"({str(died).splitlines()[0]})") from None
                loading[actors[worker].ready.remote()] = worker
                continue
            if error:
                raise NpuEpError(error)
            idle.append(worker)
            continue
        worker, job = running.pop(ref)
        try:
            result = ray.get(ref)
        except RayTaskError as error:  # the worker code itself failed (it catches a file's own errors)
            result = {"status": "failed", "error": f"{job.file.path}: {str(error).splitlines()[0]}"}
        except RayError as died:  # the worker process died: killed, out of memory, node lost
            job.died_on.add(worker)
            cause = str(died).splitlines()[0]
            if job.attempts > retries:
                finish(job, {"status": "failed", "error": f"{job.file.path}: its worker died {job.attempts} times "
                             f"while transcribing it (last: {cause})"}, worker)
            else:
                log.warning("%s: worker died while transcribing it (%s); trying again", job.file.path, cause)
                jobs.appendleft(job)
            loading[actors[worker].ready.remote()] = worker  # back once Ray has restarted it
            continue
        finish(job, result, worker)
        idle.append(worker)
