"""One engine in its own process, driven by the runner through a pipe (JSON lines).

Protocol: the first stdin line is {"engine", "source", "threads", "batch_size"}; the worker loads the engine and
answers {"load_seconds"}. Each further line {"audio": .npy path, "beam_size"} is answered with
{"seconds", "cpu_seconds", "text", "stages"}. On end of input it answers {"peak_rss_mb"} and exits. Any failure
is answered with {"error"}. Owning its process gives each engine its own peak-memory figure.
"""
from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np


def peak_rss_mb() -> float:
    """This process's peak resident memory since it started its program, in MB. Linux's VmHWM, not
    ru_maxrss: ru_maxrss survives exec, so a worker forked from a larger parent would report the parent's."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # no /proc: ru_maxrss, KiB on Linux


def main() -> int:
    # Libraries may print to stdout; keep the real stdout for the protocol and send the rest to stderr.
    channel = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())

    def send(message: dict) -> None:
        channel.write(json.dumps(message) + "\n")

    try:
        from npu_ep.bench.engines import ENGINES

        spec = json.loads(sys.stdin.readline())
        engine = ENGINES[spec["engine"]]
        engine.batch_size = int(spec.get("batch_size", 1))
        start = time.perf_counter()
        engine.load(Path(spec["source"]), int(spec["threads"]))
        send({"load_seconds": time.perf_counter() - start})

        audios: dict[str, np.ndarray] = {}
        for line in sys.stdin:
            request = json.loads(line)
            # Read each file once, before its first timing: disk and decoding stay outside the figure.
            audio = audios.get(request["audio"])
            if audio is None:
                audio = audios[request["audio"]] = np.load(request["audio"])
            start, cpu_start = time.perf_counter(), time.process_time()
            text, stages = engine.transcribe(audio, int(request["beam_size"]))
            seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
            send({"seconds": seconds, "cpu_seconds": cpu_seconds, "text": text, "stages": stages})
    except Exception as error:  # reported to the runner, which notes it and carries on with the others
        send({"error": f"{type(error).__name__}: {error}"})
        raise
    send({"peak_rss_mb": peak_rss_mb()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
