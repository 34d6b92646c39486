"""OpenAI-style error bodies, and the FastAPI handlers that make every failure use them.

OpenAI clients parse `{"error": {"message", "type", "param", "code"}}` and raise a typed
exception from the status (400 -> BadRequestError, 401 -> AuthenticationError, ...).
FastAPI's own validation answer is a 422 with a different body, which those clients
report as an opaque error, so it is replaced here by a 400 in OpenAI's shape.
"""

from __future__ import annotations

import json
import logging
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

log = logging.getLogger(__name__)

_ERROR_TYPES = {
    400: "BadRequestError",
    401: "AuthenticationError",
    404: "NotFoundError",
    500: "InternalServerError",
    503: "ServiceUnavailableError",
}


class APIError(Exception):
    """Raised by route code to answer with an OpenAI error body."""

    def __init__(self, message: str, status: int = 400, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.param = param


def error_body(message: str, status: int, param: str | None = None) -> dict:
    """The JSON body OpenAI returns for an error, also used for SSE error events."""
    err_type = _ERROR_TYPES.get(status, HTTPStatus(status).phrase.replace(" ", "") + "Error")
    return {"error": {"message": message, "type": err_type, "param": param, "code": status}}


def error_response(message: str, status: int, param: str | None = None) -> JSONResponse:
    return JSONResponse(error_body(message, status, param), status_code=status)


def _describe_validation_error(exc: RequestValidationError) -> tuple[str, str | None]:
    """One readable message for the first problem, and the offending field as `param`."""
    first = exc.errors()[0]
    if first.get("type") == "json_invalid":
        return f"Request body is not valid JSON: {first.get('ctx', {}).get('error', '')}".strip(), None
    # loc is ("body", field, ...); what follows the field (list indexes, union-member
    # names) is noise to a client, and OpenAI's `param` names only the field.
    loc = [p for p in first.get("loc", ()) if p != "body"]
    param = str(loc[0]) if loc else None
    message = first.get("msg", "invalid request").removeprefix("Value error, ")
    if param:
        message = f"{param}: {message}"
    return message, param


def install_error_handlers(app: FastAPI) -> None:
    """Route every error path (ours, validation, unknown routes, bugs) to OpenAI bodies."""

    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        return error_response(exc.message, exc.status, exc.param)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = _describe_validation_error(exc)
        return error_response(message, 400, param)

    @app.exception_handler(HTTPException)
    async def _http_error(_: Request, exc: HTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        return error_response(detail, exc.status_code)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error while serving a request")
        return error_response(f"internal error: {type(exc).__name__}: {exc}", 500)
