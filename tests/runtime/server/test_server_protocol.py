"""Request validation without a server: each bad field is refused with a message naming it,
and good requests map onto vLLM's SamplingParams names."""

import pytest
from pydantic import ValidationError

from runtime.sampling_params import SamplingParams
from runtime.server.protocol import MAX_LOGPROBS, MAX_N, ChatCompletionRequest, CompletionRequest, TokenizeRequest


def completion(**fields):
    return CompletionRequest.model_validate({"prompt": "hi", **fields})


@pytest.mark.parametrize("fields, field", [
    ({"max_tokens": -1}, "max_tokens"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_tokens": 1.5}, "max_tokens"),
    ({"max_tokens": "8"}, "max_tokens"),
    ({"temperature": -0.1}, "temperature"),
    ({"temperature": 2.5}, "temperature"),
    ({"temperature": "hot"}, "temperature"),
    ({"top_p": 0.0}, "top_p"),
    ({"top_p": 1.01}, "top_p"),
    ({"top_k": -2}, "top_k"),
    ({"min_p": 1.5}, "min_p"),
    ({"n": 0}, "n"),
    ({"n": MAX_N + 1}, "n"),
    ({"logprobs": MAX_LOGPROBS + 1}, "logprobs"),
    ({"logprobs": -1}, "logprobs"),
    ({"stop_token_ids": [-1]}, "stop_token_ids"),
    ({"prompt": 5}, "prompt"),
    ({"prompt": [1, "a"]}, "prompt"),
])
def test_bad_completion_field_is_named(fields, field):
    with pytest.raises(ValidationError) as info:
        completion(**fields)
    assert info.value.errors()[0]["loc"][0] == field


@pytest.mark.parametrize("fields, message", [
    ({"prompt": ""}, "prompt must not be empty"),
    ({"prompt": []}, "prompt must not be empty"),
    ({"prompt": ["ok", ""]}, "prompt must not be empty"),
    ({"stream_options": {"include_usage": True}}, "stream_options can only be set"),
    ({"stop": ["", "x"]}, "stop strings must not be empty"),
    ({"presence_penalty": 0.5}, "presence_penalty is not supported"),
    ({"echo": True, "logprobs": 1}, "echo together with logprobs"),
    ({"logit_bias": {"50": 5}}, "logit_bias is not supported"),
    ({"best_of": 3}, "best_of is not supported"),
    ({"suffix": "end"}, "suffix is not supported"),
])
def test_bad_completion_combination(fields, message):
    with pytest.raises(ValidationError, match=message):
        completion(**fields)


def test_missing_prompt_and_missing_messages():
    with pytest.raises(ValidationError, match="prompt"):
        CompletionRequest.model_validate({"max_tokens": 3})
    with pytest.raises(ValidationError, match="messages"):
        ChatCompletionRequest.model_validate({"max_tokens": 3})
    with pytest.raises(ValidationError, match="messages"):
        ChatCompletionRequest.model_validate({"messages": []})


@pytest.mark.parametrize("prompt, expected", [
    ("one", ["one"]),
    (["one", "two"], ["one", "two"]),
    ([1, 2, 3], [[1, 2, 3]]),
    ([[1, 2], [3]], [[1, 2], [3]]),
])
def test_prompt_forms_become_one_entry_per_engine_request(prompt, expected):
    assert completion(prompt=prompt).prompt_list == expected


def test_sampling_kwargs_build_valid_sampling_params():
    req = completion(n=2, temperature=0, top_p=0.9, top_k=5, min_p=0.1, seed=7, stop="\n",
                     stop_token_ids=[2], ignore_eos=True, logprobs=3)
    params = SamplingParams(**req.sampling_kwargs(max_tokens=12, logprobs=req.requested_logprobs()))
    assert (params.n, params.max_tokens, params.temperature, params.top_p, params.top_k) == (2, 12, 0.0, 0.9, 5)
    assert (params.min_p, params.seed, params.stop_strings, params.stop_token_ids) == (0.1, 7, ("\n",), [2])
    assert params.ignore_eos and params.logprobs == 3


def test_openai_defaults_temperature_one_and_sixteen_completion_tokens():
    req = completion()
    kwargs = req.sampling_kwargs(max_tokens=req.requested_max_tokens(), logprobs=None)
    assert kwargs["temperature"] == 1.0 and kwargs["max_tokens"] == 16 and "logprobs" not in kwargs
    assert "top_k" not in completion(top_k=0).sampling_kwargs(4, None)


def test_chat_fields():
    req = ChatCompletionRequest.model_validate({
        "messages": [{"role": "system", "content": "be brief"},
                     {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}],
        "max_tokens": 5, "max_completion_tokens": 9, "logprobs": True, "top_logprobs": 2})
    assert req.requested_max_tokens() == 9
    assert req.requested_logprobs() == 2
    assert req.chat_messages() == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "ab"}]
    assert ChatCompletionRequest.model_validate({"messages": [{"role": "user", "content": "x"}],
                                                 "logprobs": True}).requested_logprobs() == 0
    with pytest.raises(ValidationError, match="tools are not supported"):
        ChatCompletionRequest.model_validate({"messages": [{"role": "user", "content": "x"}],
                                              "tools": [{"type": "function"}]})
    with pytest.raises(ValidationError, match="top_logprobs requires logprobs"):
        ChatCompletionRequest.model_validate({"messages": [{"role": "user", "content": "x"}], "top_logprobs": 2})
    with pytest.raises(ValidationError) as info:
        ChatCompletionRequest.model_validate({"messages": [{"role": "wizard", "content": "x"}]})
    assert info.value.errors()[0]["loc"][0] == "messages"


def test_tokenize_wants_exactly_one_input():
    assert TokenizeRequest.model_validate({"prompt": "x"}).prompt == "x"
    with pytest.raises(ValidationError, match="exactly one"):
        TokenizeRequest.model_validate({})
    with pytest.raises(ValidationError, match="exactly one"):
        TokenizeRequest.model_validate({"prompt": "x", "messages": [{"role": "user", "content": "y"}]})
