"""One LLMEngine driven by one background thread, shared by every HTTP request.

Why a thread: `engine.step()` is a long, blocking forward pass; run on the event loop it
would stall every other connection (including /health and /metrics). Why only one:
continuous batching only helps if all requests meet in the same engine, and the engine
is not thread-safe — so the thread is the only caller of the engine, and coroutines talk
to it through a command queue (add / abort) and per-request asyncio queues (outputs).

Life of a request: `generate()` registers a queue, queues an `add`, waits for the
engine's verdict (a ValueError becomes the caller's 400), then yields each
RequestOutput as the thread publishes it. If the consumer stops early (client gone,
task cancelled), the generator's `finally` queues an `abort`, so the engine frees the
request's blocks. If `step()` raises, every request in the engine fails with
`EngineError` and is aborted, and the loop keeps going for new requests.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)


class EngineError(RuntimeError):
    """The engine failed while working on this request (or was shut down under it)."""


@dataclass
class _Add:
    request_id: str
    prompt: list[int]
    params: Any
    accepted: asyncio.Future
    # Stamped when the request reaches us, so the engine's TTFT/E2E histograms include
    # the wait for the engine thread to pick the request up between steps.
    arrival_time: float = field(default_factory=time.time)


@dataclass
class _Abort:
    request_id: str


class AsyncEngine:
    """Async front of an `LLMEngine`: call `start()` inside the event loop, then `generate()`."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self._commands: collections.deque[_Add | _Abort] = collections.deque()
        self._wakeup = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queues: dict[str, asyncio.Queue] = {}  # touched only on the event loop
        self._live: set[str] = set()  # requests inside the engine; touched only by the thread

    # ---- event-loop side -------------------------------------------------------------

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="engine-loop", daemon=True)
        self._thread.start()

    @property
    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stopping

    async def generate(self, request_id: str, prompt: list[int], params: Any) -> AsyncIterator[Any]:
        """Yield the request's RequestOutputs until it finishes. Raises ValueError when the
        engine rejects the request and EngineError when the engine fails under it."""
        assert self._loop is not None, "start() first"
        queue: asyncio.Queue = asyncio.Queue()
        self._queues[request_id] = queue
        finished = False
        try:
            accepted = self._loop.create_future()
            self._send(_Add(request_id, prompt, params, accepted))
            await accepted
            while not finished:
                item = await queue.get()
                if isinstance(item, BaseException):
                    finished = True  # the engine already dropped it
                    raise item
                finished = bool(item.finished)
                yield item
        finally:
            self._queues.pop(request_id, None)
            if not finished:
                self._send(_Abort(request_id))

    async def shutdown(self) -> None:
        """Stop the loop; requests still in the engine (or queued for it) fail with EngineError."""
        with self._wakeup:
            self._stopping = True
            self._wakeup.notify()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)

    def _send(self, command: _Add | _Abort) -> None:
        with self._wakeup:
            if not self._stopping:
                self._commands.append(command)
                self._wakeup.notify()
                return
        if isinstance(command, _Add):  # the thread is gone or going: nobody would answer
            _settle(command.accepted, EngineError("the engine is not running"))

    def _deliver(self, outputs: list[Any]) -> None:
        for out in outputs:
            queue = self._queues.get(out.request_id)
            if queue is not None:
                queue.put_nowait(out)

    def _fail(self, request_ids: list[str], error: EngineError) -> None:
        for request_id in request_ids:
            queue = self._queues.get(request_id)
            if queue is not None:
                queue.put_nowait(error)

    # ---- engine-thread side ----------------------------------------------------------

    def _run(self) -> None:
        reason = EngineError("the server is shutting down")
        try:
            self._serve_until_stopped()
        except Exception as exc:  # a bug outside step(): nothing can be served any more
            log.exception("engine loop crashed")
            reason = EngineError(f"engine loop crashed: {type(exc).__name__}: {exc}")
        finally:
            with self._wakeup:
                self._stopping = True
                leftover = list(self._commands)
                self._commands.clear()
            for command in leftover:
                if isinstance(command, _Add):
                    self._call(_settle, command.accepted, reason)
            self._abort_all(reason)

    def _serve_until_stopped(self) -> None:
        while True:
            busy = self.engine.has_unfinished_requests()
            with self._wakeup:
                while not (self._commands or busy or self._stopping):
                    self._wakeup.wait()
                if self._stopping:
                    return
                commands = list(self._commands)
                self._commands.clear()
            for command in commands:
                self._apply(command)
            if self.engine.has_unfinished_requests():
                self._step()

    def _apply(self, command: _Add | _Abort) -> None:
        if isinstance(command, _Abort):
            if command.request_id in self._live:
                self._live.discard(command.request_id)
                self.engine.abort_request(command.request_id)
            return
        try:
            self.engine.add_request(command.request_id, command.prompt, command.params,
                                    arrival_time=command.arrival_time)
        except Exception as exc:  # ValueError is bad input; anything else is still this request's
            self._call(_settle, command.accepted, exc)
            return
        self._live.add(command.request_id)
        self._call(_settle, command.accepted, None)

    def _step(self) -> None:
        try:
            outputs = self.engine.step()
        except Exception as exc:
            log.exception("engine step failed; failing the requests it held")
            self._abort_all(EngineError(f"engine step failed: {type(exc).__name__}: {exc}"))
            return
        for out in outputs:
            if out.finished:
                self._live.discard(out.request_id)
        if outputs:
            self._call(self._deliver, outputs)

    def _abort_all(self, error: EngineError) -> None:
        victims = list(self._live)
        self._live.clear()
        for request_id in victims:
            try:
                self.engine.abort_request(request_id)
            except Exception:
                log.exception("abort of %s failed after an engine error", request_id)
        if victims:
            self._call(self._fail, victims, error)

    def _call(self, fn: Any, *args: Any) -> None:
        assert self._loop is not None
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(fn, *args)


def _settle(future: asyncio.Future, error: BaseException | None) -> None:
    """Resolve an `accepted` future unless its waiter has already gone away."""
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
