"""What every route needs: the async engine, the tokenizer front, the served name, and
the plumbing that turns engine failures into HTTP answers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

from runtime.server.async_engine import AsyncEngine, EngineError
from runtime.server.errors import APIError
from runtime.server.prompts import PromptProcessor

Job = tuple[str, list[int], Any]  # (engine request id, prompt token ids, SamplingParams)


@dataclass
class ServerContext:
    engine: AsyncEngine
    prompts: PromptProcessor
    model_name: str
    model_root: str | None
    max_model_len: int
    make_params: Callable[..., Any]
    api_key: str | None = None

    @classmethod
    def for_engine(cls, engine: Any, model_name: str | None = None, model_root: str | None = None,
                   api_key: str | None = None) -> ServerContext:
        """The context for serving an `LLMEngine` (named after its model unless renamed)."""
        from runtime.sampling_params import SamplingParams

        max_len = engine.args.max_model_len
        return cls(engine=AsyncEngine(engine), prompts=PromptProcessor(engine.tokenizer, max_len),
                   model_name=model_name or engine.model_config.name, model_root=model_root,
                   max_model_len=max_len, make_params=SamplingParams, api_key=api_key)

    def check_model(self, model: str | None) -> None:
        """OpenAI answers a request for a model it does not serve with 404; so do we.
        An omitted model means the one we serve (vLLM's behaviour)."""
        if model is not None and model != self.model_name:
            raise APIError(f"The model `{model}` does not exist.", status=404, param="model")

    def sampling_params(self, kwargs: dict[str, Any]) -> Any:
        try:
            return self.make_params(**kwargs)
        except ValueError as exc:
            raise APIError(str(exc)) from exc

    async def outputs(self, jobs: list[Job]) -> AsyncIterator[tuple[int, Any]]:
        """Run `jobs` in the engine together; yield (job index, RequestOutput) as they come.

        A rejected job (ValueError) becomes a 400 and an engine failure a 500; either way
        the other jobs are cancelled, which aborts them in the engine.
        """
        queue: asyncio.Queue = asyncio.Queue()

        async def pump(i: int, job: Job) -> None:
            try:
                async with aclosing(self.engine.generate(*job)) as stream:
                    async for out in stream:
                        queue.put_nowait((i, out))
                queue.put_nowait((i, None))
            except Exception as exc:
                queue.put_nowait((i, exc))

        tasks = [asyncio.create_task(pump(i, job)) for i, job in enumerate(jobs)]
        try:
            remaining = len(tasks)
            while remaining:
                i, item = await queue.get()
                if item is None:
                    remaining -= 1
                elif isinstance(item, ValueError):
                    raise APIError(str(item)) from item
                elif isinstance(item, EngineError):
                    raise APIError(str(item), status=500) from item
                elif isinstance(item, Exception):
                    raise item
                else:
                    yield i, item
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def final_outputs(self, jobs: list[Job]) -> list[Any]:
        """The finished RequestOutput of each job, in job order."""
        finals: list[Any] = [None] * len(jobs)
        async with aclosing(self.outputs(jobs)) as stream:
            async for i, out in stream:
                finals[i] = out
        return finals
