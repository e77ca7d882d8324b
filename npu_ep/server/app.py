"""The FastAPI application: OpenAI's audio routes, the model list, health, and the page at `/`."""
from __future__ import annotations

import asyncio
import hmac
import logging
import math
import tempfile
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from starlette.requests import ClientDisconnect

from npu_ep.errors import NpuEpError
from npu_ep.server import responses
from npu_ep.server.errors import ApiError, install_handlers
from npu_ep.server.uploads import read_form
from npu_ep.server.workers import Job, Models, Workers
from npu_ep.whisper.decoding import TEMPERATURES, DecodeOptions

log = logging.getLogger(__name__)

_GRANULARITIES = ("word", "segment")
# How often a waiting request checks that its client is still there.
_DISCONNECT_POLL_SECONDS = 0.25


@dataclass
class Settings:
    """What `npu-ep serve` was started with (see its --help)."""

    models: list[str] = field(default_factory=lambda: ["tiny.en"])
    device: str = "cpu"
    workers: int = 1
    threads: int = 1
    api_key: str | None = None
    max_upload_bytes: int = 25_000_000
    queue_size: int = 64
    time_limit: float = 600.0


def create_app(settings: Settings, models: Models | None = None) -> FastAPI:
    """The app; it loads `settings.models` at start unless `models` are given already loaded."""
    page = resources.files("npu_ep.server").joinpath("static/index.html").read_text(encoding="utf-8")

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        loaded = models or await asyncio.to_thread(Models, settings.models, settings.device, settings.threads)
        workers = Workers(loaded, settings.workers, settings.queue_size)
        with tempfile.TemporaryDirectory(prefix="npu-ep-uploads-") as uploads:
            app.state.models, app.state.workers, app.state.uploads = loaded, workers, Path(uploads)
            workers.start()
            try:
                yield
            finally:
                await asyncio.to_thread(workers.stop)

    app = FastAPI(title="npu-ep", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    install_handlers(app)

    @app.exception_handler(ClientDisconnect)
    async def _client_left(request: Request, error: ClientDisconnect) -> Response:
        return Response(status_code=400)  # nobody reads it: the client is gone

    def check_key(request: Request) -> None:
        if settings.api_key is None:
            return
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(key.strip().encode(), settings.api_key.encode()):
            raise ApiError(401, "missing or wrong API key (send it as the header: Authorization: Bearer KEY)",
                           code="invalid_api_key")

    @app.get("/", response_class=HTMLResponse)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/health")
    async def health(request: Request) -> dict:
        workers: Workers = request.app.state.workers
        stats = workers.stats
        return {"status": "ok", "models": list(request.app.state.models.pipelines), "device": settings.device,
                "workers": workers.count, "threads_per_worker": settings.threads,
                "waiting": workers.waiting(), "queue_size": workers.queue_size, "running": stats.running,
                "completed": stats.completed, "failed": stats.failed, "cancelled": stats.cancelled}

    def model_card(model_id: str) -> dict:
        return {"id": model_id, "object": "model", "created": 0, "owned_by": "npu-ep"}

    @app.get("/v1/models")
    async def list_models(request: Request) -> dict:
        check_key(request)
        return {"object": "list", "data": [model_card(m) for m in request.app.state.models.ids()]}

    @app.get("/v1/models/{model_id}")
    async def get_model(model_id: str, request: Request) -> dict:
        check_key(request)
        request.app.state.models.resolve(model_id)
        return model_card(model_id)

    @app.post("/v1/audio/transcriptions")
    async def transcriptions(request: Request) -> Response:
        return await transcribe(request, "transcribe")

    @app.post("/v1/audio/translations")
    async def translations(request: Request) -> Response:
        return await transcribe(request, "translate")

    async def transcribe(request: Request, task: str) -> Response:
        check_key(request)
        state = request.app.state
        form = await read_form(request, settings.max_upload_bytes, state.uploads)
        try:
            model, options, fmt, stream = parse_options(form.fields, task, state.models)
            job = Job(form.path, model, options, time.monotonic() + settings.time_limit, form.filename)
            state.workers.submit(job)
            form.path = None  # the workers own the file now, and remove it
        finally:
            form.discard()
        events = job_events(job, request)
        if stream:
            # The first event decides the status: unreadable audio is a 400, not an error inside a 200 stream.
            first = await anext(events)
            return StreamingResponse(stream_events(first, events), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache"})
        segments = []
        async for kind, value in events:
            if kind == "segment":
                segments.append(value)
            elif kind == "done":
                return Response(responses.body(segments, value, fmt), media_type=responses.media_type(fmt))
        raise AssertionError("a job ends with done or an error")

    async def job_events(job: Job, request: Request) -> AsyncIterator[tuple[str, object]]:
        """The job's segments then ("done", info); raises its error, or 504 when its time runs out. The
        job is cancelled when this stops early (client gone, time up, consumer closed)."""
        watcher = asyncio.create_task(watch_disconnect(job, request))
        finished = False
        try:
            while True:
                remaining = job.deadline - time.monotonic()
                try:
                    kind, value = await asyncio.wait_for(job.events.get(), timeout=max(0.0, remaining))
                except (asyncio.TimeoutError, TimeoutError):
                    raise ApiError(504, f"the transcription took longer than this server's limit of "
                                        f"{settings.time_limit:g} s (send shorter audio, or start the server "
                                        "with a larger --time-limit)", code="timeout") from None
                if kind == "error":
                    finished = True
                    raise value
                finished = kind == "done"
                yield kind, value
                if finished:
                    return
        finally:
            watcher.cancel()
            if not finished:
                job.cancel()

    async def stream_events(first: tuple[str, object], events: AsyncIterator[tuple[str, object]]) -> AsyncIterator[str]:
        segments = []
        event = first
        try:
            while True:
                kind, value = event
                if kind == "segment":
                    yield responses.delta_event(len(segments), value)
                    segments.append(value)
                else:
                    yield responses.done_event(segments)
                    return
                event = await anext(events)
        except ApiError as error:  # the status line has gone already: the error travels as an event
            yield responses.event(error.body())
        finally:
            await events.aclose()

    return app


async def watch_disconnect(job: Job, request: Request) -> None:
    """Cancel `job` when its client disconnects (the body is read by now, so receive() only waits)."""
    while not job.cancelled.is_set():
        message = await request.receive()
        if message["type"] == "http.disconnect":
            log.info("client of %s left: its transcription is cancelled", job.filename)
            job.cancel()
            return
        await asyncio.sleep(_DISCONNECT_POLL_SECONDS)


def parse_options(fields: dict[str, list[str]], task: str, models: Models) -> tuple[str, DecodeOptions, str, bool]:
    """(model id, decoding options, response format, stream) from the form's fields; ApiError 400 or
    404 naming the field at fault."""

    def value(name: str) -> str | None:
        values = fields.get(name)
        return values[-1].strip() if values else None

    model = models.resolve(value("model"))
    fmt = value("response_format") or "json"
    if fmt not in responses.RESPONSE_FORMATS:
        raise ApiError(400, f"response_format {fmt!r} is not one of {', '.join(responses.RESPONSE_FORMATS)}",
                       param="response_format", code="invalid_value")
    language = value("language") or None
    if language is not None and task == "translate":
        raise ApiError(400, "language is not a translation parameter (translations always go into English)",
                       param="language", code="invalid_value")
    granularities = [g.strip() for g in fields.get("timestamp_granularities[]", []) + fields.get("timestamp_granularities", [])]
    for granularity in granularities:
        if granularity not in _GRANULARITIES:
            raise ApiError(400, f"timestamp_granularities[] {granularity!r} is not one of word, segment",
                           param="timestamp_granularities", code="invalid_value")
    if granularities and fmt != "verbose_json":
        raise ApiError(400, "timestamp_granularities[] needs response_format=verbose_json",
                       param="timestamp_granularities", code="invalid_value")
    stream = (value("stream") or "false").lower()
    if stream not in ("true", "false", "1", "0"):
        raise ApiError(400, f"stream {stream!r} is not true or false", param="stream", code="invalid_value")
    temperature = _temperatures(value("temperature"))
    try:
        options = DecodeOptions(task=task, language=language, temperature=temperature,
                                initial_prompt=value("prompt") or None, word_timestamps="word" in granularities)
        models.pipelines[model].check(options)
    except NpuEpError as error:
        raise ApiError(400, str(error), param="language" if language else "model", code="invalid_value") from None
    return model, options, fmt, stream in ("true", "1")


def _temperatures(text: str | None) -> tuple[float, ...]:
    """OpenAI's temperature (0 to 1) as the pipeline's schedule: 0 means Whisper's fallback from 0
    upwards, a higher value starts the fallback there."""
    if text is None or text == "":
        return TEMPERATURES
    try:
        temperature = float(text)
    except ValueError:
        temperature = math.nan
    if not 0.0 <= temperature <= 1.0:
        raise ApiError(400, f"temperature {text!r} is not a number from 0 to 1", param="temperature", code="invalid_value")
    return (temperature, *(t for t in TEMPERATURES if t > temperature))
