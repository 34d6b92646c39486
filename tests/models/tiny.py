"""Test helpers: tiny random Llama/Qwen2/Mistral models, saved as HF directories or written as GGUF files.

Weights are drawn with a large spread (not transformers' 0.02 init) so that attention is
far from uniform and a wrong mask, rotary layout or block lookup changes the logits.
GGUF files are written the way llama.cpp's converter writes them (llama q/k rows
permuted, tensors in several quant types) so the loader is tested against the format,
and the reference model gets the dequantized values (by transformers' own torch
dequantization, independent of the gguf package our loader uses).
"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import torch
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import Whitespace
from transformers import AutoModelForCausalLM, LlamaConfig, MistralConfig, PreTrainedTokenizerFast, Qwen2Config
from transformers.convert_slow_tokenizer import bytes_to_unicode
from transformers.integrations.gguf.kernels import dequantize_blocks
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

Q = gguf.GGMLQuantizationType
CHAT_TEMPLATE = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}</s>{% endfor %}"

# Shapes every kernel supports (head size 64); hidden 256 so K-quants (256-wide blocks) fit.
_COMMON = dict(
    hidden_size=256,
    intermediate_size=512,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=64,
    max_position_embeddings=256,
    rms_norm_eps=1e-5,
    vocab_size=300,
)

TINY_CONFIGS = {
    "llama": lambda: LlamaConfig(**_COMMON),
    "llama-tied-llama3-rope": lambda: LlamaConfig(
        **{**_COMMON, "max_position_embeddings": 512},
        tie_word_embeddings=True,
        rope_theta=50000.0,
        rope_scaling={
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64,
        },
    ),
    "llama-biases-wide-heads": lambda: LlamaConfig(
        **{**_COMMON, "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 128},
        attention_bias=True,
        mlp_bias=True,
    ),
    "qwen2": lambda: Qwen2Config(**_COMMON),
    "qwen2-sliding": lambda: Qwen2Config(
        **_COMMON, use_sliding_window=True, sliding_window=6, max_window_layers=1
    ),
    "mistral-sliding": lambda: MistralConfig(**_COMMON, sliding_window=5),
}


# The kinds our writer expresses as GGUF (llama.cpp keeps no qwen2 sliding window in its
# metadata; llama biases are left out here). llama3 rope scaling becomes a rope_freqs tensor.
GGUF_KINDS = ("llama", "llama-tied-llama3-rope", "qwen2")


def random_model(kind: str, seed: int = 0) -> torch.nn.Module:
    """A transformers model of one of TINY_CONFIGS with widely spread random weights, float32, eval mode."""
    torch.manual_seed(seed)
    config = TINY_CONFIGS[kind]()
    config._attn_implementation = "eager"
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.uniform_(0.5, 1.5)
            else:
                param.normal_(0.0, 0.15)
    return model


def word_tokenizer(vocab_size: int) -> PreTrainedTokenizerFast:
    """A small word-level fast tokenizer with a chat template, for directories that need one."""
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"w{i}": i for i in range(3, vocab_size)}}
    backend = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def save_hf_dir(model: torch.nn.Module, directory: Path) -> Path:
    """config.json + model.safetensors + tokenizer files, as a Hugging Face checkpoint has them."""
    model.save_pretrained(directory)
    word_tokenizer(model.config.vocab_size).save_pretrained(directory)
    return directory


# --- GGUF -----------------------------------------------------------------------------

# Offsets of the fp16 scale fields inside one block (everything else is quant bits), and a
# scale magnitude that keeps dequantized values around 0.1 given each type's quant range.
_FP16_FIELDS = {
    Q.Q8_0: ((0,), 1e-3),
    Q.Q4_0: ((0,), 2e-2),
    Q.Q4_1: ((0, 2), 2e-2),
    Q.Q4_K: ((0, 2), 5e-4),
    Q.Q6_K: ((208,), 5e-5),
}
QUANT_TYPES = tuple(_FP16_FIELDS)


def random_blocks(qtype: Q, rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    """Random quantized rows [rows, bytes]: random quant bits, small finite fp16 scales."""
    block_elems, block_bytes = gguf.GGML_QUANT_SIZES[qtype]
    blocks = rng.integers(0, 256, size=(rows, cols // block_elems, block_bytes), dtype=np.uint8)
    offsets, magnitude = _FP16_FIELDS[qtype]
    for offset in offsets:
        scales = rng.uniform(0.5, 1.5, size=blocks.shape[:2]) * magnitude * rng.choice([-1, 1], blocks.shape[:2])
        blocks[..., offset : offset + 2] = scales.astype(np.float16)[..., None].view(np.uint8)
    return blocks.reshape(rows, -1)


def transformers_dequantize(qtype: Q, blocks: np.ndarray) -> torch.Tensor:
    """Float32 rows from quantized rows with transformers' torch kernels (the independent reference)."""
    block_elems, block_bytes = gguf.GGML_QUANT_SIZES[qtype]
    rows, cols = blocks.shape[0], blocks.shape[1] // block_bytes * block_elems
    return dequantize_blocks(torch.from_numpy(blocks.copy()), int(qtype), rows, cols, torch.float32).reshape(rows, cols)


def llama_cpp_permute(rows: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's convert_hf_to_gguf permutation of llama q/k rows (works on float or block rows)."""
    return rows.reshape(heads, 2, rows.shape[0] // heads // 2, *rows.shape[1:]).swapaxes(1, 2).reshape(rows.shape)


# Which storage type each tensor gets, so one file exercises every supported type.
_TENSOR_TYPES = {
    "token_embd": Q.Q8_0,
    "attn_q": Q.Q4_K,
    "attn_k": Q.Q6_K,
    "attn_v": Q.Q4_0,
    "attn_output": Q.Q4_1,
    "ffn_gate": Q.F16,
    "ffn_up": Q.BF16,
    "ffn_down": Q.Q8_0,
    "output": Q.Q6_K,
}
_HF_NAMES = {
    "token_embd": "model.embed_tokens",
    "output": "lm_head",
    "output_norm": "model.norm",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}


def byte_level_vocab() -> tuple[list[str], list[str], list[int]]:
    """A GPT-2 style vocabulary: the 256 byte symbols, a few merges, and one control token."""
    tokens = list(bytes_to_unicode().values())
    merges = ["Ġ t", "h e", "Ġt he", "i n", "Ġ a"]
    tokens += [m.replace(" ", "") for m in merges]
    types = [1] * len(tokens)
    tokens.append("<|endoftext|>")
    types.append(3)
    return tokens, merges, types


def write_gguf(model: torch.nn.Module, path: Path, seed: int = 0) -> None:
    """Write `model` as llama.cpp would (arch llama or qwen2), quantizing per _TENSOR_TYPES.

    The model's weights are replaced by what the file stores (dequantized), so afterwards
    `model` is the exact reference for whatever loads the file.
    """
    rng = np.random.default_rng(seed)
    config = model.config
    arch = config.model_type
    writer = gguf.GGUFWriter(path, arch=arch)
    writer.add_name(f"tiny-{arch}")
    writer.add_block_count(config.num_hidden_layers)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_key_length(config.head_dim)
    writer.add_value_length(config.head_dim)
    writer.add_rope_dimension_count(config.head_dim)
    writer.add_rope_freq_base(config.rope_parameters["rope_theta"])
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    tokens, merges, types = byte_level_vocab()
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(len(tokens) - 1)
    writer.add_eos_token_id(len(tokens) - 1)
    writer.add_chat_template(CHAT_TEMPLATE)

    if config.rope_parameters["rope_type"] == "llama3":
        writer.add_tensor("rope_freqs.weight", _llama3_freq_factors(config))

    state = model.state_dict()
    for name, hf_name in _gguf_names(config):
        stem = name.split(".")[-2]
        values = state[hf_name].numpy()
        qtype = _TENSOR_TYPES.get(stem, Q.F32) if name.endswith(".weight") else Q.F32
        heads = {"attn_q": config.num_attention_heads, "attn_k": config.num_key_value_heads}.get(stem)
        stored, exact = _encode(values, qtype, rng)
        if arch == "llama" and heads is not None:
            stored = llama_cpp_permute(stored, heads)
        state[hf_name].copy_(exact)
        writer.add_tensor(name, stored, raw_dtype=qtype if qtype in QUANT_TYPES or qtype == Q.BF16 else None)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _llama3_freq_factors(config) -> np.ndarray:
    """What llama.cpp's converter stores for Llama 3.1 scaling: unscaled / scaled inverse frequencies."""
    dim = config.head_dim
    unscaled = 1.0 / (config.rope_parameters["rope_theta"] ** (torch.arange(0, dim, 2).float() / dim))
    return (unscaled / LlamaRotaryEmbedding(config).inv_freq).numpy()


def _gguf_names(config) -> list[tuple[str, str]]:
    names = [("token_embd.weight", "model.embed_tokens.weight"), ("output_norm.weight", "model.norm.weight")]
    if not config.tie_word_embeddings:
        names.append(("output.weight", "lm_head.weight"))
    for i in range(config.num_hidden_layers):
        for stem in sorted(_HF_NAMES.keys() - {"token_embd", "output", "output_norm"}):
            names.append((f"blk.{i}.{stem}.weight", f"model.layers.{i}.{_HF_NAMES[stem]}.weight"))
        if config.model_type == "qwen2":
            for stem in ("attn_q", "attn_k", "attn_v"):
                names.append((f"blk.{i}.{stem}.bias", f"model.layers.{i}.{_HF_NAMES[stem]}.bias"))
    return names


def _encode(values: np.ndarray, qtype: Q, rng: np.random.Generator) -> tuple[np.ndarray, torch.Tensor]:
    """(what the file stores, the float32 values it stands for)."""
    if qtype == Q.F32:
        return values.astype(np.float32), torch.from_numpy(values.astype(np.float32))
    if qtype == Q.F16:
        half = values.astype(np.float16)
        return half, torch.from_numpy(half.astype(np.float32))
    if qtype == Q.BF16:
        bf16 = torch.from_numpy(values).to(torch.bfloat16)
        return bf16.view(torch.uint8).numpy().reshape(values.shape[0], -1), bf16.float()
    blocks = random_blocks(qtype, values.shape[0], values.shape[1], rng)
    return blocks, transformers_dequantize(qtype, blocks)
