"""POST /v1/completions: one engine request per prompt, `n` choices each.

Choice `i * n + j` is completion `j` of prompt `i`, as in OpenAI and vLLM. Usage counts
each prompt once and every generated token of every choice.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass

from runtime.server import sse
from runtime.server.context import Job, ServerContext
from runtime.server.errors import APIError, error_body
from runtime.server.formatting import DeltaTracker, completion_logprobs
from runtime.server.protocol import CompletionRequest
from runtime.server.responses import CompletionChoice, CompletionResponse, Usage, new_id, now


@dataclass
class Prepared:
    """A validated request: its response id, one engine job per prompt, each prompt's
    text to echo ("" without echo)."""

    request_id: str
    jobs: list[Job]
    echoes: list[str]


def prepare(ctx: ServerContext, req: CompletionRequest) -> Prepared:
    """Tokenize, budget and build SamplingParams for every prompt. Raises APIError."""
    ctx.check_model(req.model)
    request_id = new_id("cmpl")
    jobs: list[Job] = []
    echoes: list[str] = []
    for i, prompt in enumerate(req.prompt_list):
        ids = ctx.prompts.encode(prompt)
        max_tokens = ctx.prompts.completion_budget(len(ids), req.requested_max_tokens(), "prompt")
        params = ctx.sampling_params(req.sampling_kwargs(max_tokens, req.requested_logprobs()))
        jobs.append((f"{request_id}-{i}", ids, params))
        if req.echo:
            echoes.append(prompt if isinstance(prompt, str) else ctx.prompts.decode(ids))
        else:
            echoes.append("")
    return Prepared(request_id, jobs, echoes)


async def complete(ctx: ServerContext, req: CompletionRequest, prep: Prepared) -> CompletionResponse:
    echoes = prep.echoes
    finals = await ctx.final_outputs(prep.jobs)
    choices = []
    for i, out in enumerate(finals):
        for c in out.outputs:
            logprobs = None
            if req.logprobs is not None:
                logprobs = completion_logprobs(c.token_ids, c.logprobs or [], req.logprobs,
                                               ctx.prompts.token_text, len(echoes[i]))
            choices.append(CompletionChoice(index=i * req.n + c.index, text=echoes[i] + c.text,
                                            logprobs=logprobs, finish_reason=c.finish_reason))
    choices.sort(key=lambda ch: ch.index)
    return CompletionResponse(id=prep.request_id, model=ctx.model_name,
                              choices=choices, usage=_usage(prep.jobs, finals))


async def stream(ctx: ServerContext, req: CompletionRequest, prep: Prepared) -> AsyncIterator[str]:
    """SSE events for the request. A failure before the first event raises (the route
    answers with a status code); after it, it becomes an SSE error event."""
    response_id, created, jobs, echoes = prep.request_id, now(), prep.jobs, prep.echoes
    tracker = DeltaTracker()
    started = False
    finals: list = [None] * len(jobs)
    try:
        async with aclosing(ctx.outputs(jobs)) as outputs:
            async for i, out in outputs:
                finals[i] = out
                for c in out.outputs:
                    d = tracker.update(i * req.n + c.index, c)
                    if d is None:
                        continue
                    prefix = echoes[i] if d.first else ""
                    logprobs = None
                    if req.logprobs is not None:
                        logprobs = completion_logprobs(d.token_ids, d.logprobs or [], req.logprobs,
                                                       ctx.prompts.token_text,
                                                       len(echoes[i]) + d.text_offset)
                    chunk = CompletionResponse(
                        id=response_id, created=created, model=ctx.model_name,
                        choices=[CompletionChoice(index=d.index, text=prefix + d.text, logprobs=logprobs,
                                                  finish_reason=d.finish_reason)])
                    started = True
                    yield sse.event(chunk)
        if req.include_usage:
            yield sse.event(CompletionResponse(id=response_id, created=created, model=ctx.model_name,
                                               choices=[], usage=_usage(jobs, finals)))
    except APIError as exc:
        if not started:
            raise
        yield sse.event(error_body(exc.message, exc.status, exc.param))
    yield sse.DONE


def _usage(jobs: list[Job], finals: list) -> Usage:
    prompt = sum(len(ids) for _, ids, _ in jobs)
    completion = sum(len(c.token_ids) for out in finals if out is not None for c in out.outputs)
    return Usage.of(prompt, completion)
