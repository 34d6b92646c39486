"""LLMEngine: requests in, one batched model step at a time, outputs out.

`step()` asks the scheduler for the next batch, runs it through the model runner (which
samples), then for every sequence that got a token: detokenizes it, checks the stop
conditions and finishes it if done. It returns one cumulative `RequestOutput` per request
that gained a token or finished in that step.

Threading: the engine is meant to be driven by one thread. `add_request` and
`abort_request` validate immediately (bad input raises `ValueError` in the caller) and
then apply the change at once if no step is in flight, else at the start of the next step,
so a caller on another thread never waits for a model step.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

import autotune
from models import load_model
from runtime.block_manager import BlockManager
from runtime.detokenizer import IncrementalDetokenizer
from runtime.kv_cache import num_kv_blocks
from runtime.metrics import EngineMetrics
from runtime.model_runner import ModelRunner
from runtime.outputs import CompletionOutput, Logprob, RequestOutput
from runtime.sampler import SamplerOutput
from runtime.sampling_params import SamplingParams
from runtime.scheduler import Scheduler
from runtime.sequence import Sequence, SequenceStatus
from runtime.stop_checker import check_stop, visible_text


@dataclass
class EngineArgs:
    model: str | None = None
    dtype: str = "auto"
    device: str = "auto"
    max_model_len: int = 2048
    max_num_seqs: int = 64
    max_num_batched_tokens: int = 2048
    block_size: int = 16
    kv_cache_memory: int | str = "auto"
    enable_prefix_caching: bool = True


@dataclass
class EngineStats:
    """A snapshot for monitoring; running and waiting count requests (n siblings are one)."""

    running: int
    waiting: int
    kv_usage: float
    prefix_cache_queries: int
    prefix_cache_hits: int
    num_blocks: int
    num_free_blocks: int
    num_preemptions: int
    prompt_tokens: int
    generation_tokens: int


@dataclass
class _Request:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    params: SamplingParams
    seqs: list[Sequence]
    arrival_time: float
    first_token_time: float | None = None
    last_token_time: float | None = None
    deferred: list[Sequence] = field(default_factory=list)  # n > 1 siblings not yet scheduled


def _validate_args(args: EngineArgs) -> None:
    """Rejects bad sizes before anything is loaded, naming the argument."""
    def positive_int(name: str, value: Any, minimum: int = 1) -> None:
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")

    positive_int("max_model_len", args.max_model_len, 2)
    positive_int("max_num_seqs", args.max_num_seqs)
    positive_int("max_num_batched_tokens", args.max_num_batched_tokens)
    positive_int("block_size", args.block_size)
    if args.block_size & (args.block_size - 1):
        raise ValueError(f"block_size must be a power of two (16, 32, 64, 128 are typical), got {args.block_size}")


class LLMEngine:
    def __init__(self, args: EngineArgs, model: Any = None, tokenizer: Any = None):
        """Load `args.model` (or use an already loaded `model`/`tokenizer` pair) and size the
        KV cache. `args.device` and `args.dtype` only apply when loading."""
        _validate_args(args)
        autotune.install()  # tuned kernel configs from the cache (never tunes on the hot path)
        if model is None:
            model, tokenizer = load_model(args.model, dtype=args.dtype, device=args.device)
        self.args = args
        self.model_config = model.config
        self.tokenizer = tokenizer
        self.device = torch.device(model.device)
        num_blocks = num_kv_blocks(args.kv_cache_memory, model.kv_cache_bytes_per_block(args.block_size),
                                   args.block_size, args.max_num_seqs, args.max_model_len, self.device)
        self.block_manager = BlockManager(num_blocks, args.block_size, args.enable_prefix_caching)
        self.scheduler = Scheduler(self.block_manager, args.max_num_seqs, args.max_num_batched_tokens)
        self.runner = ModelRunner(model, num_blocks, args.block_size, args.max_num_seqs,
                                  args.max_num_batched_tokens, args.max_model_len, self.device)
        self.eos_token_ids = frozenset(self.model_config.eos_token_ids)
        self.metrics = EngineMetrics(self.model_config.name)
        self._requests: dict[str, _Request] = {}
        self._request_ids: set[str] = set()  # live or queued ids, guarded by _inbox_lock
        self._inbox: deque[Callable[[], None]] = deque()
        self._inbox_lock = threading.Lock()
        self._step_lock = threading.Lock()
        self._prompt_tokens = 0
        self._generation_tokens = 0

    # -- requests ------------------------------------------------------------------------
    def add_request(self, request_id: str, prompt: str | list[int], params: SamplingParams,
                    arrival_time: float | None = None) -> None:
        """Queue a request. Raises ValueError for an empty or too long prompt, token ids
        outside the vocabulary, or a request id that is already in use. `arrival_time` is
        wall-clock `time.time()` (as in vLLM); latency metrics are measured from it."""
        if isinstance(prompt, str):
            prompt_text: str | None = prompt
            token_ids = list(self.tokenizer(prompt).input_ids)
        else:
            prompt_text, token_ids = None, list(prompt)
        self._validate(request_id, token_ids, params)
        arrival = time.time() if arrival_time is None else arrival_time
        seqs = [Sequence(request_id, token_ids, params, index=i) for i in range(params.n)]
        for seq in seqs:
            seq.detokenizer = IncrementalDetokenizer(self.tokenizer, token_ids)
            if params.seed is not None:
                seq.generator = torch.Generator(self.device).manual_seed((params.seed + seq.index) % 2**64)
            if params.logprobs is not None:
                seq.logprobs = []
        request = _Request(request_id, prompt_text, token_ids, params, seqs, arrival)
        with self._inbox_lock:
            if request_id in self._request_ids:
                raise ValueError(f"request id {request_id!r} is already in use")
            self._request_ids.add(request_id)
        self._submit(lambda: self._add(request))

    def _validate(self, request_id: str, token_ids: list[int], params: SamplingParams) -> None:
        if not isinstance(params, SamplingParams):
            raise ValueError(f"params must be a SamplingParams, got {type(params).__name__}")
        if not token_ids:
            raise ValueError("the prompt is empty")
        max_len = self.args.max_model_len
        if len(token_ids) + 1 > max_len:
            raise ValueError(f"the prompt has {len(token_ids)} tokens but max_model_len is {max_len}: "
                             "the prompt plus at least one generated token must fit")
        vocab = self.model_config.vocab_size
        if not all(isinstance(t, int) and 0 <= t < vocab for t in token_ids):
            raise ValueError(f"prompt token ids must be integers in [0, {vocab})")
        if params.logprobs is not None and params.logprobs > vocab:
            raise ValueError(f"logprobs={params.logprobs} exceeds the vocabulary size {vocab}")

    def abort_request(self, request_id: str) -> None:
        """Drop a request and free its blocks; unknown or finished ids are ignored."""
        self._submit(lambda: self._abort(request_id))

    def _add(self, request: _Request) -> None:
        """Schedule the request. With n > 1 only the first completion starts; its siblings
        join once its prompt is in the cache (at its first token), so they reuse every full
        prompt block instead of prefilling the same prompt n times."""
        self._requests[request.request_id] = request
        self.scheduler.add(request.seqs[0])
        request.deferred = request.seqs[1:]

    def _release_siblings(self, request: _Request) -> None:
        for seq in reversed(request.deferred):
            self.scheduler.add(seq, front=True)
        request.deferred = []

    def _abort(self, request_id: str) -> None:
        request = self._requests.get(request_id)
        if request is not None:
            self._forget(request_id)
            for seq in request.seqs:
                if seq in request.deferred:
                    seq.status = SequenceStatus.FINISHED
                elif not seq.is_finished:
                    self.scheduler.finish(seq, None)

    def _forget(self, request_id: str) -> None:
        del self._requests[request_id]
        with self._inbox_lock:
            self._request_ids.discard(request_id)

    def _submit(self, action: Callable[[], None]) -> None:
        with self._inbox_lock:
            self._inbox.append(action)
        if self._step_lock.acquire(blocking=False):
            try:
                self._drain_inbox()
            finally:
                self._step_lock.release()

    def _drain_inbox(self) -> None:
        while True:
            with self._inbox_lock:
                if not self._inbox:
                    break
                action = self._inbox.popleft()
            action()
        self._update_gauges()

    def has_unfinished_requests(self) -> bool:
        return bool(self._inbox) or self.scheduler.has_unfinished()

    # -- stepping ------------------------------------------------------------------------
    def step(self) -> list[RequestOutput]:
        with self._step_lock:
            self._drain_inbox()
            sched = self.scheduler.schedule()
            if sched.preempted:
                self.metrics.num_preemptions.inc(len(sched.preempted))
            if sched.is_empty:
                return []
            sampled_seqs, sampled = self.runner.execute(sched)
            self.scheduler.update(sched)
            outputs = self._process_samples(sampled_seqs, sampled) if sampled is not None else []
            self._update_gauges()
            return outputs

    def _process_samples(self, seqs: list[Sequence], sampled: SamplerOutput) -> list[RequestOutput]:
        now = time.time()
        token_ids = sampled.token_ids.tolist()
        logprob_rows = _logprob_rows(sampled) if sampled.logprobs is not None else None
        touched: dict[str, _Request] = {}
        for row, (seq, token_id) in enumerate(zip(seqs, token_ids)):
            seq.append_token(token_id)
            if seq.logprobs is not None and logprob_rows is not None:
                seq.logprobs.append(self._logprob_dict(token_id, logprob_rows[row], seq.params.logprobs))
            new_text = seq.detokenizer.step(token_id)
            reason = check_stop(seq, new_text, self.eos_token_ids, self.args.max_model_len)
            if reason == "length":
                seq.output_text += seq.detokenizer.flush()
            if reason is not None:
                self.scheduler.finish(seq, reason)
            request = touched[seq.request_id] = self._requests[seq.request_id]
            if request.deferred:
                self._release_siblings(request)
        self._generation_tokens += len(token_ids)
        self.metrics.generation_tokens.inc(len(token_ids))
        return [self._request_output(request, now) for request in touched.values()]

    def _request_output(self, request: _Request, now: float) -> RequestOutput:
        if request.first_token_time is None:
            request.first_token_time = now
            self._prompt_tokens += len(request.prompt_token_ids)
            self.metrics.prompt_tokens.inc(len(request.prompt_token_ids))
            self.metrics.time_to_first_token.observe(now - request.arrival_time)
        else:
            self.metrics.inter_token_latency.observe(now - request.last_token_time)
        request.last_token_time = now
        finished = all(s.is_finished for s in request.seqs)
        if finished:
            self._forget(request.request_id)
            self.metrics.e2e_request_latency.observe(now - request.arrival_time)
            for seq in request.seqs:
                self.metrics.request_success(seq.finish_reason)
        return RequestOutput(
            request_id=request.request_id,
            prompt=request.prompt,
            prompt_token_ids=request.prompt_token_ids,
            outputs=[CompletionOutput(index=s.index, text=visible_text(s), token_ids=s.output_token_ids,
                                      finish_reason=s.finish_reason,
                                      logprobs=list(s.logprobs) if s.logprobs is not None else None)
                     for s in request.seqs],
            finished=finished,
        )

    def _logprob_dict(self, token_id: int, row: tuple[float, int, list[int], list[float]], k: int
                      ) -> dict[int, Logprob]:
        sampled_logprob, rank, top_ids, top_logprobs = row
        entries = {tid: Logprob(lp, i + 1, self.tokenizer.decode([tid]))
                   for i, (tid, lp) in enumerate(zip(top_ids[:k], top_logprobs[:k]))}
        if token_id not in entries:
            entries[token_id] = Logprob(sampled_logprob, rank, self.tokenizer.decode([token_id]))
        return entries

    # -- observability ---------------------------------------------------------------------
    def _update_gauges(self) -> None:
        self.metrics.set_queue(*self.scheduler.request_counts(), self.block_manager.usage)

    def stats(self) -> EngineStats:
        bm = self.block_manager
        running, waiting = self.scheduler.request_counts()
        return EngineStats(
            running=running,
            waiting=waiting,
            kv_usage=bm.usage,
            prefix_cache_queries=bm.prefix_cache_queries,
            prefix_cache_hits=bm.prefix_cache_hits,
            num_blocks=bm.num_blocks,
            num_free_blocks=bm.num_free_blocks,
            num_preemptions=self.scheduler.num_preemptions,
            prompt_tokens=self._prompt_tokens,
            generation_tokens=self._generation_tokens,
        )


def _logprob_rows(sampled: SamplerOutput) -> list[tuple[float, int, list[int], list[float]]]:
    return list(zip(sampled.logprobs.tolist(), sampled.ranks.tolist(),
                    sampled.top_ids.tolist(), sampled.top_logprobs.tolist()))
