"""POST /v1/chat/completions: the conversation goes through the model's chat template
(rendered by the tokenizer) and becomes one engine request with `n` choices."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

from runtime.server import sse
from runtime.server.context import Job, ServerContext
from runtime.server.errors import APIError, error_body
from runtime.server.formatting import DeltaTracker, chat_logprobs
from runtime.server.protocol import ChatCompletionRequest
from runtime.server.responses import (ChatChoice, ChatChunkChoice, ChatCompletionChunk, ChatCompletionResponse,
                                      ChatDelta, ChatLogprobs, ChatMessageOut, Usage, new_id, now)


def prepare(ctx: ServerContext, req: ChatCompletionRequest) -> Job:
    """The engine job for the conversation. Raises APIError."""
    ctx.check_model(req.model)
    ids = ctx.prompts.encode_chat(req.chat_messages(), req.add_generation_prompt)
    max_tokens = ctx.prompts.completion_budget(len(ids), req.requested_max_tokens(), "messages")
    params = ctx.sampling_params(req.sampling_kwargs(max_tokens, req.requested_logprobs()))
    return new_id("chatcmpl"), ids, params


async def complete(ctx: ServerContext, req: ChatCompletionRequest, job: Job) -> ChatCompletionResponse:
    (out,) = await ctx.final_outputs([job])
    choices = [
        ChatChoice(index=c.index, message=ChatMessageOut(content=c.text),
                   logprobs=_logprobs(ctx, req, c.token_ids, c.logprobs), finish_reason=c.finish_reason)
        for c in out.outputs
    ]
    return ChatCompletionResponse(id=job[0], model=ctx.model_name, choices=choices, usage=_usage(job, out))


async def stream(ctx: ServerContext, req: ChatCompletionRequest, job: Job) -> AsyncIterator[str]:
    """SSE chunks: each choice's first chunk carries the role, its last the finish_reason.
    A failure before the first chunk raises; after it, it becomes an SSE error event."""
    created, tracker, final, started = now(), DeltaTracker(), None, False
    try:
        async with aclosing(ctx.outputs([job])) as outputs:
            async for _, out in outputs:
                final = out
                for c in out.outputs:
                    d = tracker.update(c.index, c)
                    if d is None:
                        continue
                    delta = ChatDelta(role="assistant" if d.first else None, content=d.text)
                    chunk = ChatCompletionChunk(
                        id=job[0], created=created, model=ctx.model_name,
                        choices=[ChatChunkChoice(index=d.index, delta=delta,
                                                 logprobs=_logprobs(ctx, req, d.token_ids, d.logprobs),
                                                 finish_reason=d.finish_reason)])
                    started = True
                    yield sse.event(chunk)
        if req.include_usage:
            yield sse.event(ChatCompletionChunk(id=job[0], created=created, model=ctx.model_name,
                                                choices=[], usage=_usage(job, final)))
    except APIError as exc:
        if not started:
            raise
        yield sse.event(error_body(exc.message, exc.status, exc.param))
    yield sse.DONE


def _logprobs(ctx: ServerContext, req: ChatCompletionRequest, token_ids: list[int],
              logprobs: list | None) -> ChatLogprobs | None:
    k = req.requested_logprobs()
    if k is None:
        return None
    return chat_logprobs(token_ids, logprobs or [], k, ctx.prompts.token_text)


def _usage(job: Job, out: Any) -> Usage:
    completion = 0 if out is None else sum(len(c.token_ids) for c in out.outputs)
    return Usage.of(len(job[1]), completion)
