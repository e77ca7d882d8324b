"""Errors as OpenAI's API sends them: `{"error": {"message", "type", "param", "code"}}` with a status."""
from __future__ import annotations

import logging

log = logging.getLogger(__name__)

# The `type` OpenAI's API gives each status.
_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "server_error",
    504: "server_error",
}


class ApiError(Exception):
    """A request the server answers with `status` and OpenAI's error body."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": _TYPES.get(self.status, "invalid_request_error"),
                          "param": self.param, "code": self.code}}


def install_handlers(app) -> None:
    """Every failure leaves as OpenAI's error body: ours, the framework's (404, 405) and unexpected ones
    (a 500 whose body says nothing of the code; the traceback goes to the log)."""
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException

    def respond(error: ApiError) -> JSONResponse:
        return JSONResponse(error.body(), status_code=error.status, headers=error.headers)

    @app.exception_handler(ApiError)
    async def _api_error(request, error: ApiError) -> JSONResponse:
        return respond(error)

    @app.exception_handler(HTTPException)
    async def _http_error(request, error: HTTPException) -> JSONResponse:
        message = "no such route (see /v1/audio/transcriptions)" if error.status_code == 404 else str(error.detail)
        return respond(ApiError(error.status_code, message, code=f"http_{error.status_code}"))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0] if error.errors() else {}
        param = str(first.get("loc", ["", ""])[-1]) or None
        return respond(ApiError(400, f"{param}: {first.get('msg', 'invalid request')}", param=param, code="invalid_value"))

    @app.exception_handler(Exception)
    async def _unexpected(request, error: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return respond(ApiError(500, "internal server error (the server's log has the details)", code="internal_error"))
