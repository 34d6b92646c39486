"""Tiny random models saved as Hugging Face directories load through our safetensors path and
produce transformers' logits, through the paged cache, in a ragged mixed batch."""

from __future__ import annotations

import json

import pytest
import torch

from models import UnsupportedModelError, load_model
from models.loader import resolve_dtype
from tests.models.paged import RAGGED_LENGTHS, RAGGED_SCHEDULE, PagedRunner, replay
from tests.models.tiny import TINY_CONFIGS, random_model, save_hf_dir


def reference_logits(model: torch.nn.Module, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0]


def random_sequences(vocab_size: int, lengths: tuple[int, ...], seed: int = 0) -> list[list[int]]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(0, vocab_size, (n,), generator=generator).tolist() for n in lengths]


@pytest.mark.parametrize("kind", sorted(TINY_CONFIGS))
@pytest.mark.parametrize("block_size", [16, 32])
def test_ragged_batch_matches_transformers(tmp_path, kind, block_size):
    reference = random_model(kind)
    model, tokenizer = load_model(save_hf_dir(reference, tmp_path / kind), device="cpu")
    assert tokenizer.chat_template
    sequences = random_sequences(reference.config.vocab_size, RAGGED_LENGTHS)
    expected = [reference_logits(reference, ids) for ids in sequences]
    runner = PagedRunner(model, len(sequences), max(RAGGED_LENGTHS), block_size)
    for seq, position, logits in replay(runner, sequences, RAGGED_SCHEDULE):
        assert logits.dtype == torch.float32
        torch.testing.assert_close(logits, expected[seq][position], atol=1e-4, rtol=1e-4)


def test_config_read_from_directory(tmp_path):
    reference = random_model("qwen2-sliding")
    model, _ = load_model(save_hf_dir(reference, tmp_path / "qwen"), device="cpu")
    config = model.config
    assert (config.architecture, config.num_layers, config.num_heads, config.num_kv_heads) == (
        "Qwen2ForCausalLM", 2, 4, 2
    )
    assert (config.head_size, config.hidden_size, config.vocab_size, config.qkv_bias) == (64, 256, 300, True)
    assert config.layer_types == ("full_attention", "sliding_attention")
    assert config.sliding_window == 6
    assert config.name == "qwen"


def test_bfloat16_load_stays_close_to_float32(tmp_path):
    reference = random_model("llama")
    model, _ = load_model(save_hf_dir(reference, tmp_path / "llama"), dtype="bf16", device="cpu")
    assert model.config.dtype == torch.bfloat16
    assert model.embed_tokens.dtype == torch.bfloat16
    runner = PagedRunner(model, 1, 32)
    assert runner.kv_caches[0][0].dtype == torch.bfloat16
    ids = random_sequences(reference.config.vocab_size, (12,))[0]
    logits = runner.step({0: ids})[0]
    assert logits.dtype == torch.float32
    expected = reference_logits(reference, ids)[-1]
    assert torch.nn.functional.cosine_similarity(logits, expected, dim=0) > 0.99


def test_kv_cache_layout_and_size(tmp_path):
    model, _ = load_model(save_hf_dir(random_model("llama"), tmp_path / "llama"), device="cpu")
    caches = model.allocate_kv_cache(num_blocks=5, block_size=16)
    assert len(caches) == model.config.num_layers
    key, value = caches[0]
    assert key.shape == value.shape == (5, 16, 2, 64)
    total = sum(t.numel() * t.element_size() for pair in caches for t in pair)
    assert model.kv_cache_bytes_per_block(16) * 5 == total


def test_unknown_architecture_lists_supported_ones(tmp_path):
    directory = save_hf_dir(random_model("llama"), tmp_path / "gpt2")
    config = json.loads((directory / "config.json").read_text())
    config.update(architectures=["GPT2LMHeadModel"], model_type="gpt2")
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(UnsupportedModelError, match="LlamaForCausalLM.*Qwen2ForCausalLM"):
        load_model(directory, device="cpu")


def test_unsupported_rope_type_is_refused(tmp_path):
    directory = save_hf_dir(random_model("llama"), tmp_path / "yarn")
    config = json.loads((directory / "config.json").read_text())
    config["rope_parameters"] = {"rope_type": "yarn", "factor": 4.0, "rope_theta": 10000.0}
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(UnsupportedModelError, match="yarn"):
        load_model(directory, device="cpu")


def test_directory_without_weights_is_refused(tmp_path):
    directory = save_hf_dir(random_model("llama"), tmp_path / "empty")
    (directory / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="safetensors"):
        load_model(directory, device="cpu")


def test_missing_path_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "nothing-here", device="cpu")


def test_step_without_sampled_tokens_still_fills_the_cache(tmp_path):
    reference = random_model("llama")
    model, _ = load_model(save_hf_dir(reference, tmp_path / "llama"), device="cpu")
    ids = random_sequences(reference.config.vocab_size, (20,))[0]
    runner = PagedRunner(model, 1, 32)
    positions, attn = runner.metadata({0: 12})
    no_samples = torch.tensor([], dtype=torch.int64)
    logits = model.forward(torch.tensor(ids[:12]), positions, attn, runner.kv_caches, no_samples)
    assert logits.shape == (0, reference.config.vocab_size) and logits.dtype == torch.float32
    runner.cached[0] = 12
    expected = reference_logits(reference, ids)[-1]
    torch.testing.assert_close(runner.step({0: ids[12:]})[0], expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    ("requested", "device", "expected"),
    [("auto", "cpu", torch.float32), ("auto", "cuda", torch.bfloat16), ("fp16", "cpu", torch.float16),
     ("bfloat16", "cpu", torch.bfloat16), (torch.float32, "cuda", torch.float32)],
)
def test_dtype_resolution(requested, device, expected):
    assert resolve_dtype(requested, torch.device(device)) == expected


def test_unknown_dtype_is_refused():
    with pytest.raises(ValueError, match="bf16"):
        resolve_dtype("float8", torch.device("cpu"))
