"""The FastAPI application: routes, API-key check, and client-disconnect handling.

Everything under /v1 needs the API key when one is set (as in vLLM); /health, /metrics,
/tokenize and /detokenize stay open so probes and scrapers need no secret.

A client that goes away must not leave its request running: a non-streaming request is
raced against the connection's disconnect message, and a streaming one is cancelled by
Starlette when the client disconnects; both paths close the output generators, whose
`finally` blocks abort the request in the engine.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import AsyncIterator, Awaitable
from contextlib import aclosing, asynccontextmanager
from typing import Any, TypeVar

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from runtime.server import chat, completions, sse
from runtime.server.context import ServerContext
from runtime.server.errors import APIError, install_error_handlers
from runtime.server.protocol import ChatCompletionRequest, CompletionRequest, DetokenizeRequest, TokenizeRequest
from runtime.server.responses import ModelCard, ModelList

T = TypeVar("T")

# Not an HTTP status a client sees (it is gone); nginx's "client closed request", for logs.
CLIENT_CLOSED = 499


class ClientGone(Exception):
    """The client disconnected before its answer was ready."""


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Await `work`, cancelling it (and so aborting its engine requests) if the client leaves."""
    task = asyncio.ensure_future(work)
    watch = asyncio.create_task(_disconnected(request))
    try:
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
        if not task.done():
            task.cancel()
        await asyncio.gather(task, watch, return_exceptions=True)
    if task.cancelled():
        raise ClientGone()
    return task.result()


async def _sse_response(request: Request, events: AsyncIterator[str]) -> Response:
    """Wait for the first event before answering, so that errors found before any output
    (bad input the engine rejects, engine failure) still get a proper status code."""
    try:
        first = await _unless_disconnected(request, anext(events))
    except ClientGone:
        return Response(status_code=CLIENT_CLOSED)

    async def body() -> AsyncIterator[str]:
        async with aclosing(events):
            yield first
            async for event in events:
                yield event

    return StreamingResponse(body(), media_type=sse.MEDIA_TYPE,
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def build_app(ctx: ServerContext, registry: Any = None) -> FastAPI:
    """The ASGI app over `ctx`; the engine thread starts and stops with the app's lifespan.
    `registry` is the prometheus registry /metrics exports (the default one if None)."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        ctx.engine.start()
        try:
            yield
        finally:
            await ctx.engine.shutdown()

    app = FastAPI(title="kernelforge", lifespan=lifespan)
    install_error_handlers(app)

    async def require_api_key(request: Request) -> None:
        if ctx.api_key is None:
            return
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {ctx.api_key}".encode()):
            raise APIError("Invalid or missing API key (send `Authorization: Bearer <key>`).", status=401)

    v1 = APIRouter(prefix="/v1", dependencies=[Depends(require_api_key)])

    @v1.get("/models")
    async def list_models() -> ModelList:
        return ModelList(data=[ModelCard(id=ctx.model_name, root=ctx.model_root,
                                         max_model_len=ctx.max_model_len)])

    async def respond(handler: Any, req: CompletionRequest | ChatCompletionRequest, request: Request) -> Response:
        """`handler` (the completions or chat module) prepares the job, then streams or answers whole."""
        job = handler.prepare(ctx, req)
        if req.stream:
            return await _sse_response(request, handler.stream(ctx, req, job))
        try:
            result = await _unless_disconnected(request, handler.complete(ctx, req, job))
        except ClientGone:
            return Response(status_code=CLIENT_CLOSED)
        return JSONResponse(result.model_dump())

    @v1.post("/completions")
    async def create_completion(req: CompletionRequest, request: Request) -> Response:
        return await respond(completions, req, request)

    @v1.post("/chat/completions")
    async def create_chat_completion(req: ChatCompletionRequest, request: Request) -> Response:
        return await respond(chat, req, request)

    app.include_router(v1)

    @app.get("/health")
    async def health() -> Response:
        return Response(status_code=200 if ctx.engine.is_alive else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        data = generate_latest(registry) if registry is not None else generate_latest()
        return Response(content=data, media_type=CONTENT_TYPE_LATEST)

    @app.post("/tokenize")
    async def tokenize(req: TokenizeRequest) -> dict[str, Any]:
        ctx.check_model(req.model)
        if req.messages is not None:
            ids = ctx.prompts.encode_chat([{"role": m.role, "content": m.text()} for m in req.messages],
                                          req.add_generation_prompt)
        else:
            ids = ctx.prompts.encode(req.prompt or "", add_special_tokens=req.add_special_tokens)
        return {"count": len(ids), "max_model_len": ctx.max_model_len, "tokens": ids}

    @app.post("/detokenize")
    async def detokenize(req: DetokenizeRequest) -> dict[str, str]:
        ctx.check_model(req.model)
        return {"prompt": ctx.prompts.decode(ctx.prompts.encode(req.tokens))}

    return app
