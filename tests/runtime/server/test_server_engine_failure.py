"""An engine failure fails only the requests in flight (a 500, or an SSE error event once
streaming has begun), and the server goes on serving.

The failure is real: the default model runs in a real LLMEngine, and its forward pass is
made to raise at a chosen call, the way a device error would surface.
"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from models import load_model
from runtime.engine import EngineArgs, LLMEngine
from runtime.server import sse
from runtime.server.app import build_app
from runtime.server.context import ServerContext

pytestmark = pytest.mark.slow


class FaultyForward:
    """Wraps model.forward; raises on the call numbered `fail_at` (counting from 1)."""

    def __init__(self, forward):
        self.forward, self.calls, self.fail_at = forward, 0, None

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError("injected device fault")
        return self.forward(*args, **kwargs)

    def fail_in(self, steps: int) -> None:
        self.fail_at = self.calls + steps


@pytest.fixture(scope="module")
def served():
    model, tokenizer = load_model()
    fault = FaultyForward(model.forward)
    model.forward = fault
    engine = LLMEngine(EngineArgs(max_model_len=256, kv_cache_memory=16 * 2**20), model=model, tokenizer=tokenizer)
    app = build_app(ServerContext.for_engine(engine), registry=engine.metrics.registry)
    with TestClient(app) as client:
        yield client, fault, engine


BODY = {"prompt": "Once upon a time", "max_tokens": 8, "temperature": 0, "ignore_eos": True}


def test_failed_step_is_a_500_and_the_next_request_works(served):
    client, fault, engine = served
    fault.fail_in(1)
    r = client.post("/v1/completions", json=BODY)
    assert r.status_code == 500
    error = r.json()["error"]
    assert error["code"] == 500 and "injected device fault" in error["message"]
    assert engine.stats().running == 0 and engine.stats().waiting == 0
    ok = client.post("/v1/completions", json=BODY)
    assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] == 8


def test_failure_mid_stream_is_an_sse_error_event(served):
    client, fault, engine = served
    fault.fail_in(4)  # prefill and two decode steps succeed
    with client.stream("POST", "/v1/completions", json={**BODY, "stream": True}) as r:
        assert r.status_code == 200
        events = sse.parse_events(r.read().decode())
    assert events[-1] == "[DONE]"
    assert events[-2]["error"]["code"] == 500 and "injected device fault" in events[-2]["error"]["message"]
    texts = [e["choices"][0]["text"] for e in events[:-2]]
    assert texts and all(e["choices"][0]["finish_reason"] is None for e in events[:-2])
    assert engine.stats().running == 0
    chat = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4})
    assert chat.status_code == 200
