"""The OpenAI-compatible server end to end: the official `openai` client against a real
`python -m runtime.serve` subprocess on the default model (see conftest.py)."""

from __future__ import annotations

import asyncio
import time

import httpx
import openai
import pytest

from runtime.server import sse

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("openai-server")]

PROMPT = "The capital of France is"
MESSAGES = [{"role": "user", "content": "Name three colors."}]


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.v1, api_key=server.api_key, max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def model(client: openai.OpenAI) -> str:
    return client.models.list().data[0].id


def tokenize(server, **body) -> list[int]:
    return httpx.post(server.base_url + "/tokenize", json=body, timeout=30).json()["tokens"]


def auth(server) -> dict[str, str]:
    return {"Authorization": f"Bearer {server.api_key}"}


def post(server, path: str, body: dict | bytes, key: str | None = "server's") -> httpx.Response:
    """POST to /v1 with the server's API key (or `key`; None sends no Authorization)."""
    key = server.api_key if key == "server's" else key
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    if isinstance(body, bytes):
        headers["Content-Type"] = "application/json"
        return httpx.post(server.v1 + path, content=body, headers=headers, timeout=120)
    return httpx.post(server.v1 + path, json=body, headers=headers, timeout=120)


def test_models_lists_the_served_model(client, server):
    (card,) = client.models.list().data
    assert card.id == "SmolLM2-135M-Instruct"
    raw = httpx.get(server.v1 + "/models", headers=auth(server)).json()
    assert raw["data"][0]["max_model_len"] == server.max_model_len


def test_unknown_model_is_404(client):
    with pytest.raises(openai.NotFoundError) as info:
        client.completions.create(model="gpt-17", prompt=PROMPT, max_tokens=2)
    assert info.value.body["type"] == "NotFoundError" and info.value.body["param"] == "model"
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-17", messages=MESSAGES, max_tokens=2)


def test_api_key_is_required_on_v1_only(server, model):
    for key in (None, "wrong-key"):
        r = post(server, "/completions", {"model": model, "prompt": PROMPT, "max_tokens": 2}, key=key)
        assert r.status_code == 401 and r.json()["error"]["code"] == 401
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server.v1, api_key="wrong-key", max_retries=0).models.list()
    assert httpx.get(server.base_url + "/health").status_code == 200
    assert httpx.get(server.base_url + "/metrics").status_code == 200


def test_completion_usage_is_exact(client, server, model):
    r = client.completions.create(model=model, prompt=PROMPT, max_tokens=8, temperature=0,
                                  logprobs=0, extra_body={"ignore_eos": True})
    (choice,) = r.choices
    assert choice.finish_reason == "length" and choice.text
    assert len(choice.logprobs.tokens) == 8
    assert r.usage.prompt_tokens == len(tokenize(server, prompt=PROMPT))
    assert (r.usage.completion_tokens, r.usage.total_tokens) == (8, r.usage.prompt_tokens + 8)


def test_token_id_prompts_and_prompt_lists(client, server, model):
    ids = tokenize(server, prompt=PROMPT)
    by_ids = client.completions.create(model=model, prompt=ids, max_tokens=6, temperature=0)
    by_text = client.completions.create(model=model, prompt=[PROMPT, "Once upon a time"], max_tokens=6,
                                        temperature=0)
    assert [c.index for c in by_text.choices] == [0, 1]
    assert by_ids.choices[0].text == by_text.choices[0].text
    assert by_text.usage.prompt_tokens == len(ids) + len(tokenize(server, prompt="Once upon a time"))
    echoed = client.completions.create(model=model, prompt=PROMPT, max_tokens=6, temperature=0, echo=True)
    assert echoed.choices[0].text == PROMPT + by_ids.choices[0].text


def test_chat_completion_uses_the_chat_template(client, server, model):
    r = client.chat.completions.create(model=model, messages=MESSAGES, max_tokens=16, temperature=0)
    (choice,) = r.choices
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert r.usage.prompt_tokens == len(tokenize(server, messages=MESSAGES))
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_streamed_completion_equals_non_streamed(server, model):
    body = {"model": model, "prompt": PROMPT, "max_tokens": 24, "temperature": 0}
    full = post(server, "/completions", body).json()
    with httpx.stream("POST", server.v1 + "/completions", timeout=120,
                      json={**body, "stream": True, "stream_options": {"include_usage": True}},
                      headers=auth(server)) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = sse.parse_events(r.read().decode())
    assert events[-1] == "[DONE]"
    *chunks, usage_chunk = events[:-1]
    assert "".join(c["choices"][0]["text"] for c in chunks) == full["choices"][0]["text"]
    reasons = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"][0]["finish_reason"]]
    assert reasons == [full["choices"][0]["finish_reason"]]
    assert chunks[-1]["choices"][0]["finish_reason"] is not None
    assert usage_chunk["choices"] == [] and usage_chunk["usage"] == full["usage"]


def test_streamed_chat_equals_non_streamed(client, model):
    args = dict(model=model, messages=MESSAGES, max_tokens=24, temperature=0)
    full = client.chat.completions.create(**args)
    chunks = list(client.chat.completions.create(**args, stream=True, stream_options={"include_usage": True}))
    content = [c for c in chunks if c.choices]
    assert content[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in content) == full.choices[0].message.content
    assert [c.choices[0].finish_reason for c in content if c.choices[0].finish_reason] == \
        [full.choices[0].finish_reason]
    assert chunks[-1].usage == full.usage


def test_n_choices_are_reproducible_with_a_seed(client, model):
    args = dict(model=model, prompt="My favourite animal is", max_tokens=8, temperature=1.0, n=3, seed=1234,
                logprobs=0)
    first, again = client.completions.create(**args), client.completions.create(**args)
    assert [c.index for c in first.choices] == [0, 1, 2]
    assert [c.text for c in first.choices] == [c.text for c in again.choices]
    assert first.usage.completion_tokens == sum(len(c.logprobs.tokens) for c in first.choices)
    streamed: dict[int, str] = {}
    reasons: dict[int, list[str]] = {}
    for chunk in client.completions.create(**args, stream=True):
        for c in chunk.choices:
            streamed[c.index] = streamed.get(c.index, "") + c.text
            reasons.setdefault(c.index, []).extend([c.finish_reason] if c.finish_reason else [])
    assert [streamed[i] for i in range(3)] == [c.text for c in first.choices]
    assert [reasons[i] for i in range(3)] == [[c.finish_reason] for c in first.choices]
    chat = client.chat.completions.create(model=model, messages=MESSAGES, max_tokens=6, n=2, seed=5)
    assert [c.index for c in chat.choices] == [0, 1]


def test_stop_string_cuts_the_text(client, model):
    args = dict(model=model, prompt="1, 2, 3, 4, 5,", max_tokens=16, temperature=0)
    text = client.completions.create(**args).choices[0].text
    stop = text.strip()[2:5]
    assert stop and stop in text
    cut = client.completions.create(**args, stop=[stop, "never-appears"]).choices[0]
    assert (cut.text, cut.finish_reason) == (text[:text.index(stop)], "stop")
    streamed = client.completions.create(**args, stop=stop, stream=True)
    assert "".join(c.choices[0].text for c in streamed) == cut.text


def test_completion_logprobs(client, model):
    r = client.completions.create(model=model, prompt=PROMPT, max_tokens=6, temperature=0, logprobs=3)
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == r.usage.completion_tokens
    assert "".join(lp.tokens) == r.choices[0].text or r.choices[0].finish_reason == "stop"
    for sampled, top in zip(lp.token_logprobs, lp.top_logprobs):
        assert 1 <= len(top) <= 3 and sampled <= 0
        assert sampled == pytest.approx(max(top.values()), abs=1e-4)  # greedy picks the top token
    assert lp.text_offset[0] == 0 and lp.text_offset == sorted(lp.text_offset)


def test_chat_logprobs(client, model):
    r = client.chat.completions.create(model=model, messages=MESSAGES, max_tokens=6, temperature=0,
                                       logprobs=True, top_logprobs=2)
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens
    assert all(len(t.top_logprobs) == 2 and t.logprob <= 0 for t in content)


LONG = "hello " * 2000  # longer than the test server's context (conftest.MAX_MODEL_LEN)
BAD_REQUESTS = [
    ("/completions", {"prompt": PROMPT, "max_tokens": -1}, "max_tokens"),
    ("/completions", {"prompt": PROMPT, "max_tokens": 2.5}, "max_tokens"),
    ("/completions", {"prompt": PROMPT, "temperature": 7}, "temperature"),
    ("/completions", {"prompt": PROMPT, "top_p": 1.5}, "top_p"),
    ("/completions", {"prompt": PROMPT, "top_k": -5}, "top_k"),
    ("/completions", {"prompt": PROMPT, "n": 1000}, "n"),
    ("/completions", {"prompt": PROMPT, "logprobs": 50}, "logprobs"),
    ("/completions", {"prompt": LONG}, "prompt"),
    ("/completions", {"prompt": PROMPT, "max_tokens": 2000}, "max_tokens"),
    ("/completions", {"max_tokens": 4}, "prompt"),
    ("/completions", {"prompt": [10**9]}, "prompt"),
    ("/completions", b'{"prompt": "unterminated', None),
    ("/completions", {"prompt": PROMPT, "stream_options": {"include_usage": True}}, None),
    ("/chat/completions", {"max_tokens": 4}, "messages"),
    ("/chat/completions", {"messages": []}, "messages"),
    ("/chat/completions", {"messages": MESSAGES, "logprobs": True, "top_logprobs": 50}, "top_logprobs"),
    ("/chat/completions", {"messages": [{"role": "user", "content": LONG}]}, "messages"),
    ("/chat/completions", {"messages": MESSAGES, "max_completion_tokens": 0}, "max_completion_tokens"),
]


@pytest.mark.parametrize("path, body, param", BAD_REQUESTS)
def test_bad_request_is_400_and_the_server_keeps_serving(server, client, model, path, body, param):
    if isinstance(body, dict):
        body = {"model": model, **body}
    r = post(server, path, body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "BadRequestError" and error["code"] == 400 and error["message"]
    assert error["param"] == param
    ok = client.completions.create(model=model, prompt=PROMPT, max_tokens=2, temperature=0)
    assert ok.choices[0].text


def test_tokenize_and_detokenize_round_trip(server):
    ids = tokenize(server, prompt="Hello, world!")
    assert ids and all(isinstance(t, int) for t in ids)
    assert httpx.post(server.base_url + "/detokenize", json={"tokens": ids}).json() == {"prompt": "Hello, world!"}


def test_metrics_export_the_engine_registry(server, client, model):
    client.completions.create(model=model, prompt=PROMPT, max_tokens=2)
    text = httpx.get(server.base_url + "/metrics").text
    for name in ["num_requests_running", "num_requests_waiting", "kv_cache_usage_perc",
                 "prefix_cache_queries_total", "prefix_cache_hits_total", "prompt_tokens_total",
                 "generation_tokens_total", "request_success_total", "time_to_first_token_seconds_bucket",
                 "inter_token_latency_seconds_bucket", "e2e_request_latency_seconds_count"]:
        assert f"kernelforge:{name}" in text, name


def test_concurrent_burst_loses_nothing(server, model):
    async def burst() -> list:
        async with openai.AsyncOpenAI(base_url=server.v1, api_key=server.api_key, max_retries=0,
                                      timeout=240) as aclient:
            return await asyncio.gather(*[
                aclient.completions.create(model=model, prompt=f"Request number {i}:", max_tokens=4,
                                           temperature=0, extra_body={"ignore_eos": True})
                for i in range(48)])

    results = asyncio.run(burst())
    assert len({r.id for r in results}) == 48
    assert all(r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 4 for r in results)
    assert server.metric("kernelforge:num_requests_running") == 0


def wait_until_idle(server, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while server.metric("kernelforge:num_requests_running") + server.metric("kernelforge:num_requests_waiting"):
        assert time.monotonic() < deadline, "requests still in the engine after the client left"
        time.sleep(0.1)


def test_client_disconnect_mid_stream_aborts_the_request(server, client, model):
    before = server.metric("kernelforge:generation_tokens_total")
    stream = client.completions.create(model=model, prompt=PROMPT, max_tokens=400, temperature=0, stream=True,
                                       extra_body={"ignore_eos": True})
    for i, _ in enumerate(stream):
        if i == 2:
            break
    stream.close()
    wait_until_idle(server)
    generated = server.metric("kernelforge:generation_tokens_total") - before
    assert generated < 400  # stopped early, not run to completion
    assert client.completions.create(model=model, prompt=PROMPT, max_tokens=2).choices[0].text


def test_client_disconnect_while_waiting_for_a_full_response(server, model):
    before = server.metric("kernelforge:generation_tokens_total")
    with httpx.Client(timeout=1.0, headers=auth(server)) as impatient, pytest.raises(httpx.TimeoutException):
        impatient.post(server.v1 + "/completions",
                       json={"model": model, "prompt": PROMPT, "max_tokens": 400, "ignore_eos": True})
    wait_until_idle(server)
    assert server.metric("kernelforge:generation_tokens_total") - before < 400
