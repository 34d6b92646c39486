"""SIGTERM stops the server gracefully: in-flight streams finish, then the engine stops."""

import signal

import httpx
import pytest

from runtime.server import sse

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("openai-server")]


def test_sigterm_lets_an_inflight_stream_finish(start_server):
    server = start_server()
    body = {"prompt": "Count: 1, 2, 3,", "max_tokens": 24, "temperature": 0, "ignore_eos": True, "stream": True,
            "stream_options": {"include_usage": True}}
    with httpx.stream("POST", server.v1 + "/completions", json=body, timeout=120) as response:
        lines = response.iter_lines()
        first = next(line for line in lines if line)
        server.proc.send_signal(signal.SIGTERM)
        rest = "\n".join(lines)
    events = sse.parse_events(first + "\n\n" + rest.replace("\n", "\n\n"))
    assert events[-1] == "[DONE]"
    assert events[-2]["usage"]["completion_tokens"] == 24
    assert [e["choices"][0]["finish_reason"] for e in events[:-2] if e["choices"][0]["finish_reason"]] == ["length"]
    # uvicorn re-raises the captured SIGTERM once shutdown is complete.
    assert server.proc.wait(timeout=60) in (0, -signal.SIGTERM)
    log = server.log()
    assert "Application shutdown complete" in log and "Traceback" not in log
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.base_url + "/health", timeout=5)
