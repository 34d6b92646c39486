"""The offline API: `LLM(...).generate(prompts, params)`, vLLM's calling convention.

`generate` queues every prompt on one engine and steps it until all are done, so the
prompts are batched together by the scheduler; results come back in prompt order.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence as Seq
from typing import Any

from tqdm import tqdm

from runtime.engine import EngineArgs, LLMEngine
from runtime.outputs import RequestOutput
from runtime.sampling_params import SamplingParams

Prompt = str | dict[str, Any]


class LLM:
    def __init__(self, model: str | None = None, dtype: str = "auto", device: str = "auto",
                 max_model_len: int = 2048, max_num_seqs: int = 64, max_num_batched_tokens: int = 2048,
                 block_size: int = 16, kv_cache_memory: int | str = "auto"):
        args = EngineArgs(model=model, dtype=dtype, device=device, max_model_len=max_model_len,
                          max_num_seqs=max_num_seqs, max_num_batched_tokens=max_num_batched_tokens,
                          block_size=block_size, kv_cache_memory=kv_cache_memory)
        self.engine = LLMEngine(args)
        self._ids = itertools.count()

    @classmethod
    def from_engine(cls, engine: LLMEngine) -> LLM:
        """Wrap an existing engine (e.g. one built on an already loaded model)."""
        llm = cls.__new__(cls)
        llm.engine, llm._ids = engine, itertools.count()
        return llm

    def get_tokenizer(self) -> Any:
        return self.engine.tokenizer

    def generate(self, prompts: Prompt | Seq[Prompt], sampling_params: SamplingParams | Seq[SamplingParams] | None = None,
                 use_tqdm: bool = False) -> list[RequestOutput]:
        """Complete every prompt; one `RequestOutput` per prompt, in order.

        A prompt is a string or `{"prompt_token_ids": [...]}` (or `{"prompt": "..."}`);
        `sampling_params` is one `SamplingParams` for all, or a list with one per prompt.
        """
        if not isinstance(prompts, (str, dict, list, tuple)):
            raise TypeError("prompts must be a string, a {\"prompt_token_ids\": [...]} dict or a list of them, "
                            f"got {type(prompts).__name__}")
        prompt_list = [prompts] if isinstance(prompts, (str, dict)) else list(prompts)
        params_list = _params_per_prompt(sampling_params, len(prompt_list))
        request_ids = [f"llm-{next(self._ids)}" for _ in prompt_list]
        queued: list[str] = []
        try:
            for request_id, prompt, params in zip(request_ids, prompt_list, params_list):
                self.engine.add_request(request_id, _prompt_input(prompt), params)
                queued.append(request_id)
        except Exception:
            for request_id in queued:
                self.engine.abort_request(request_id)
            raise
        return self._run(request_ids, use_tqdm)

    def _run(self, request_ids: list[str], use_tqdm: bool) -> list[RequestOutput]:
        done: dict[str, RequestOutput] = {}
        with tqdm(total=len(request_ids), desc="Processed prompts", disable=not use_tqdm) as bar:
            while self.engine.has_unfinished_requests():
                for out in self.engine.step():
                    if out.finished:
                        done[out.request_id] = out
                        bar.update(1)
        return [done[request_id] for request_id in request_ids]


def _prompt_input(prompt: Prompt) -> str | list[int]:
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, dict) and "prompt_token_ids" in prompt:
        return list(prompt["prompt_token_ids"])
    if isinstance(prompt, dict) and isinstance(prompt.get("prompt"), str):
        return prompt["prompt"]
    raise ValueError(f'a prompt must be a string or {{"prompt_token_ids": [...]}}, got {prompt!r}')


def _params_per_prompt(params: SamplingParams | Seq[SamplingParams] | None, n: int) -> list[SamplingParams]:
    if params is None:
        return [SamplingParams()] * n
    if isinstance(params, SamplingParams):
        return [params] * n
    params = list(params)
    if len(params) != n:
        raise ValueError(f"got {len(params)} SamplingParams for {n} prompts")
    return params
