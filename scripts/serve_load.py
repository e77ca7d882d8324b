"""Load and soak figures for `npu-ep serve` on this machine, loopback only.

    python scripts/serve_load.py CLIP [--model tiny.en] [--concurrent 32] [--soak 300]

With `--concurrent 0` only the soak runs (it then takes a fraction of the time on a loaded machine).

1. `npu-ep transcribe` of CLIP x N in one process (the same work without a server): wall time.
2. N concurrent requests to a fresh `npu-ep serve` (default workers and threads): p50/p95 latency,
   wall time and throughput against step 1, the server's peak RSS, and whether every answer is right.
3. `--soak` sequential requests: the server's RSS after the first 10 and at the end.
Prints a Markdown summary naming the CPU and the load average beside the figures.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

from npu_ep.machine import read_cpu


def _rss_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} for process {pid}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _load() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("clip", type=Path)
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--concurrent", type=int, default=32)
    parser.add_argument("--soak", type=int, default=300)
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    print(f"CPU: {read_cpu().describe()}, {cores} cores; {_load()} at start", flush=True)

    if args.concurrent:
        # 1. The same files through one `npu-ep transcribe` process, all cores.
        started = time.perf_counter()
        command = [sys.executable, "-m", "npu_ep", "transcribe", *[str(args.clip)] * args.concurrent,
                   "--model", args.model, "--threads", str(cores), "--quiet"]
        subprocess.run(command, capture_output=True, text=True, check=True)
        cli_wall = time.perf_counter() - started
        print(f"npu-ep transcribe x{args.concurrent}: {cli_wall:.1f} s ({_load()})", flush=True)

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "npu_ep", "serve", "--port", str(port), "--model", args.model],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        while True:
            try:
                health = httpx.get(f"{url}/health", timeout=2).json()
                break
            except httpx.TransportError:
                time.sleep(0.3)
        audio = args.clip.read_bytes()

        def request() -> tuple[float, str]:
            begun = time.perf_counter()
            answer = httpx.post(f"{url}/v1/audio/transcriptions", files={"file": (args.clip.name, audio)},
                                data={"response_format": "text"}, timeout=3600)
            answer.raise_for_status()
            return time.perf_counter() - begun, answer.text.strip()

        # Warm-up (first-run allocations are not the steady state); its answer is the one all must give.
        reference = request()[1]
        print(f"transcript: {reference}")
        if args.concurrent:  # 2. All at once.
            started = time.perf_counter()
            with concurrent.futures.ThreadPoolExecutor(args.concurrent) as pool:
                results = list(pool.map(lambda _: request(), range(args.concurrent)))
            wall = time.perf_counter() - started
            latencies = sorted(r[0] for r in results)
            right = sum(r[1] == reference for r in results)
            p95 = latencies[min(len(latencies) - 1, round(0.95 * (len(latencies) - 1)))]
            peak = _rss_mb(server.pid, "VmHWM")
            print(f"\n| {args.concurrent} concurrent requests ({health['workers']} workers x "
                  f"{health['threads_per_worker']} threads) | |\n|---|---:|")
            print(f"| right transcripts | {right}/{args.concurrent} |")
            print(f"| latency p50 / p95 | {statistics.median(latencies):.2f} s / {p95:.2f} s |")
            print(f"| wall | {wall:.1f} s (npu-ep transcribe, one process: {cli_wall:.1f} s) |")
            print(f"| throughput | {args.concurrent / wall:.2f} requests/s, {cli_wall / wall:.2f}x the CLI's |")
            print(f"| server peak RSS | {peak:.0f} MB |")
            print(f"| {_load()} | |", flush=True)

        # 3. Soak: one after another.
        if args.soak:
            first = None
            started = time.perf_counter()
            for i in range(args.soak):
                request()
                if i == 9:
                    first = _rss_mb(server.pid, "VmRSS")
                if (i + 1) % 50 == 0:
                    print(f"  after {i + 1}: RSS {_rss_mb(server.pid, 'VmRSS'):.0f} MB", flush=True)
            last = _rss_mb(server.pid, "VmRSS")
            print(f"\nsoak: {args.soak} sequential requests in {time.perf_counter() - started:.0f} s; RSS after 10: "
                  f"{first:.0f} MB, after {args.soak}: {last:.0f} MB, growth {last - first:+.1f} MB ({_load()})")
    finally:
        server.terminate()
        server.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
