"""SamplingParams: vLLM defaults, normalisation, and a clear ValueError per bad field."""

from __future__ import annotations

import pytest

from runtime.sampling_params import SamplingParams


def test_vllm_defaults_and_normalisation():
    p = SamplingParams()
    assert (p.n, p.max_tokens, p.temperature, p.top_p, p.top_k, p.min_p) == (1, 16, 1.0, 1.0, 0, 0.0)
    assert not p.greedy and SamplingParams(temperature=0).greedy
    assert SamplingParams(stop="x").stop_strings == ("x",)
    assert SamplingParams(stop=["a", "b"]).stop_strings == ("a", "b")
    assert SamplingParams(top_k=-1).top_k == 0
    assert SamplingParams(stop_token_ids=None).stop_token_ids == []


@pytest.mark.parametrize("field,value", [
    ("n", 0), ("n", 1.5), ("max_tokens", 0), ("max_tokens", -3), ("temperature", -0.1),
    ("temperature", float("nan")), ("top_p", 0.0), ("top_p", 1.5), ("top_k", -2), ("top_k", 2.0),
    ("min_p", -0.1), ("min_p", 1.1), ("seed", "1"), ("stop", [""]), ("stop", [1]),
    ("stop_token_ids", [-1]), ("ignore_eos", 1), ("logprobs", -1), ("n", True),
    ("stop", 5), ("stop_token_ids", 7),
])
def test_bad_values_raise_a_value_error_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        SamplingParams(**{field: value})
