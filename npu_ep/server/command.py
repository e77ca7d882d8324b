"""`npu-ep serve`: OpenAI's audio transcription API on a local port, with a page at `/`."""
from __future__ import annotations

import argparse
import ipaddress
import socket
import sys

from npu_ep.errors import NpuEpError


def _positive(kind):
    def parse(text: str):
        value = kind(text)
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be greater than 0, got {text}")
        return value

    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default: 127.0.0.1; any other needs --api-key)")
    parser.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    parser.add_argument("--model", action="append", dest="models", metavar="MODEL",
                        help="tiny.en, base or an exported model folder; repeat to serve several, the first "
                             "answers to whisper-1 (default: tiny.en)")
    parser.add_argument("--device", default="cpu", help="auto, cpu, npu or emulator (default: cpu)")
    parser.add_argument("--workers", type=_positive(int),
                        help="transcriptions run at once (default: cores / threads)")
    parser.add_argument("--threads", type=_positive(int),
                        help="ONNX Runtime threads per worker (default: so that workers x threads = cores, at most 4)")
    parser.add_argument("--api-key", help="require this key (Authorization: Bearer KEY) on /v1 routes")
    parser.add_argument("--max-upload-mb", type=_positive(float), default=25.0, help="largest upload in MB (default: 25)")
    parser.add_argument("--queue-size", type=_positive(int), default=64,
                        help="requests that may wait for a worker; more get 429 (default: 64)")
    parser.add_argument("--time-limit", type=_positive(float), default=600.0,
                        help="seconds a request may take, waiting included (default: 600)")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: what it resolves to decides
        try:
            return all(ipaddress.ip_address(info[4][0]).is_loopback for info in socket.getaddrinfo(host, None))
        except OSError:
            return False


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from npu_ep.server.app import Settings, create_app
    except ImportError as error:
        raise NpuEpError(f"npu-ep serve needs {error.name} (install the server extra: pip install 'npu-ep[server]')") from None
    from npu_ep.server.workers import Models, plan_workers

    if not _is_loopback(args.host) and not args.api_key:
        raise NpuEpError(f"--host {args.host}: refusing to serve beyond this machine without a key "
                         "(add --api-key KEY, or keep the default --host 127.0.0.1)")
    workers, threads = plan_workers(args.workers, args.threads)
    settings = Settings(models=args.models or ["tiny.en"], device=args.device, workers=workers, threads=threads,
                        api_key=args.api_key, max_upload_bytes=int(args.max_upload_mb * 1e6),
                        queue_size=args.queue_size, time_limit=args.time_limit)
    models = Models(settings.models, settings.device, settings.threads)  # load errors are one line, before binding
    print(f"npu-ep: serving {', '.join(models.pipelines)} on {settings.device} with {workers} workers x {threads} "
          f"threads at http://{args.host}:{args.port}/", file=sys.stderr, flush=True)
    try:
        uvicorn.run(create_app(settings, models), host=args.host, port=args.port, log_level="info",
                    timeout_graceful_shutdown=5)
    except SystemExit as exit_:  # uvicorn exits when it cannot bind
        if exit_.code:
            raise NpuEpError(f"--port {args.port}: cannot listen on {args.host}:{args.port} "
                             "(the port is taken or not allowed: choose another --port)") from None
    return 0
