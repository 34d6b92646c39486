"""The embedded SmolLM2-135M-Instruct on our kernels gives transformers' logits and greedy tokens
for the same GGUF, through prefill, chunked prefill and decode over the paged cache."""

from __future__ import annotations

import pytest
import torch

from tests.models.paged import PagedRunner, replay

pytestmark = pytest.mark.slow

CHATS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": "Write a haiku about GPUs."}],
    [
        {"role": "system", "content": "You answer in one word."},
        {"role": "user", "content": "Is the sky blue?"},
    ],
]
DECODE_STEPS = 8
GREEDY_TOKENS = 12
ATOL, RTOL = 2e-3, 1e-3


def prompt_ids(tokenizer, chat) -> list[int]:
    encoded = tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=True, return_dict=True)
    return list(encoded["input_ids"])


def greedy_reference(reference_model, ids: list[int], new_tokens: int) -> list[int]:
    with torch.no_grad():
        out = reference_model.generate(
            torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            max_new_tokens=new_tokens, do_sample=False, eos_token_id=None, pad_token_id=0,
        )
    return out[0].tolist()


@pytest.fixture(scope="module")
def continuations(default_model, reference_model):
    """Each chat prompt followed by transformers' greedy continuation, and its logits at every position."""
    _, tokenizer = default_model
    result = []
    for chat in CHATS:
        ids = prompt_ids(tokenizer, chat)
        full = greedy_reference(reference_model, ids, GREEDY_TOKENS)
        with torch.no_grad():
            logits = reference_model(torch.tensor([full])).logits[0]
        result.append((len(ids), full, logits))
    return result


def test_weights_equal_transformers(default_model, reference_model):
    model, _ = default_model
    state = reference_model.state_dict()
    assert torch.equal(model.embed_tokens, state["model.embed_tokens.weight"])
    assert model.lm_head is model.embed_tokens
    for i, layer in enumerate(model.layers):
        prefix = f"model.layers.{i}."
        qkv = torch.cat([state[f"{prefix}self_attn.{p}_proj.weight"] for p in "qkv"])
        assert torch.equal(layer.self_attn.qkv.weight, qkv)
        assert torch.equal(layer.self_attn.o_proj.weight, state[f"{prefix}self_attn.o_proj.weight"])
        gate_up = torch.cat([state[f"{prefix}mlp.gate_proj.weight"], state[f"{prefix}mlp.up_proj.weight"]])
        assert torch.equal(layer.mlp.gate_up.weight, gate_up)
        assert torch.equal(layer.input_norm, state[f"{prefix}input_layernorm.weight"])


def test_config(default_model):
    config = default_model[0].config
    assert config.name == "SmolLM2-135M-Instruct"
    assert (config.num_layers, config.hidden_size, config.num_heads, config.num_kv_heads, config.head_size) == (
        30, 576, 9, 3, 64
    )
    assert (config.vocab_size, config.max_position_embeddings, config.rope_theta) == (49152, 8192, 100000.0)
    assert config.sliding_window is None and config.tie_word_embeddings
    assert config.dtype == torch.float32
    assert 2 in config.eos_token_ids  # <|im_end|>


def test_prefill_and_decode_logits_match_transformers(default_model, continuations):
    model, _ = default_model
    prompt_len, full, expected = continuations[0]
    runner = PagedRunner(model, 1, len(full))
    # Prefill asking for the logits of every prompt position at once.
    positions, attn = runner.metadata({0: prompt_len})
    logits = model.forward(torch.tensor(full[:prompt_len]), positions, attn, runner.kv_caches, torch.arange(prompt_len))
    runner.cached[0] = prompt_len
    torch.testing.assert_close(logits, expected[:prompt_len], atol=ATOL, rtol=RTOL)
    for position in range(prompt_len, prompt_len + DECODE_STEPS):
        logits = runner.step({0: [full[position]]})[0]
        torch.testing.assert_close(logits, expected[position], atol=ATOL, rtol=RTOL)


def test_mixed_batch_matches_transformers(default_model, continuations):
    """Three requests: chunked prefill beside full prefill, then decodes beside a prefill's tail."""
    model, _ = default_model
    sequences = [full for _, full, _ in continuations]
    lens = [n for n, _, _ in continuations]
    schedule = [
        {0: lens[0], 1: 7},
        {0: 1, 1: lens[1] - 7, 2: lens[2]},
        {2: 1, 1: 1, 0: 1},
        {1: 1, 2: 1},
    ]
    runner = PagedRunner(model, 3, max(len(s) for s in sequences))
    for seq, position, logits in replay(runner, sequences, schedule):
        torch.testing.assert_close(logits, continuations[seq][2][position], atol=ATOL, rtol=RTOL)


def test_greedy_tokens_match_transformers(default_model, continuations):
    model, _ = default_model
    for prompt_len, full, _ in continuations:
        runner = PagedRunner(model, 1, len(full))
        ours = full[:prompt_len]
        next_logits = runner.step({0: ours})[0]
        while len(ours) < len(full):
            ours.append(int(next_logits.argmax()))
            next_logits = runner.step({0: [ours[-1]]})[0]
        assert ours == full
