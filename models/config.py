"""ModelConfig: the one description of a model that the model code and the runtime read.

Both loaders (Hugging Face directories and GGUF files) first produce a Hugging Face style
`config.json` dict and then call `ModelConfig.from_hf`, so there is a single place that
knows the names, defaults and quirks of the supported architectures.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

# config.json "architectures" entry -> whether q/k/v carry a bias regardless of `attention_bias`.
SUPPORTED_ARCHITECTURES = {
    "LlamaForCausalLM": False,
    "MistralForCausalLM": False,
    "Qwen2ForCausalLM": True,
}

# How the rotary frequencies are scaled; see models/rotary.py. "freq_factors" is ours: the
# per-frequency divisors llama.cpp stores for Llama 3.1-style scaling (rope_freqs.weight).
SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3", "freq_factors")


class UnsupportedModelError(ValueError):
    """The checkpoint describes a model this package cannot run (and says which ones it can)."""


@dataclass(frozen=True)
class ModelConfig:
    """Shapes and hyper-parameters of a Llama-family decoder.

    `layer_types[i]` is "sliding_attention" for layers that only see the last
    `sliding_window` positions (Mistral: all layers; Qwen2: the layers past
    `max_window_layers` when `use_sliding_window`), else "full_attention".
    """

    name: str
    architecture: str
    num_layers: int
    hidden_size: int
    intermediate_size: int
    num_heads: int
    num_kv_heads: int
    head_size: int
    vocab_size: int
    max_position_embeddings: int
    rms_norm_eps: float
    rope_theta: float
    rope_scaling: dict[str, Any] | None
    sliding_window: int | None
    layer_types: tuple[str, ...]
    qkv_bias: bool
    tie_word_embeddings: bool
    eos_token_ids: tuple[int, ...]
    dtype: torch.dtype = torch.float32
    bos_token_id: int | None = None

    @classmethod
    def from_hf(
        cls,
        hf: dict[str, Any],
        dtype: torch.dtype = torch.float32,
        name: str | None = None,
        extra_eos_token_ids: tuple[int, ...] = (),
    ) -> ModelConfig:
        """Parse a Hugging Face `config.json` dict (transformers 4.x or 5.x spelling)."""
        architecture = _architecture(hf)
        num_heads = hf["num_attention_heads"]
        hidden_size = hf["hidden_size"]
        num_layers = hf["num_hidden_layers"]
        rope = dict(hf.get("rope_parameters") or hf.get("rope_scaling") or {})
        rope_theta = float(rope.pop("rope_theta", hf.get("rope_theta", 10000.0)))
        rope_type = rope.pop("rope_type", rope.pop("type", "default"))
        if rope_type not in SUPPORTED_ROPE_TYPES:
            raise UnsupportedModelError(
                f"rope type {rope_type!r} is not supported; supported: {', '.join(SUPPORTED_ROPE_TYPES)}"
            )
        sliding_window, layer_types = _sliding_layers(hf, architecture, num_layers)
        return cls(
            name=name or hf.get("_name_or_path") or architecture,
            architecture=architecture,
            num_layers=num_layers,
            hidden_size=hidden_size,
            intermediate_size=hf["intermediate_size"],
            num_heads=num_heads,
            num_kv_heads=hf.get("num_key_value_heads") or num_heads,
            head_size=hf.get("head_dim") or hidden_size // num_heads,
            vocab_size=hf["vocab_size"],
            max_position_embeddings=hf.get("max_position_embeddings", 2048),
            rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
            rope_theta=rope_theta,
            rope_scaling=None if rope_type == "default" else {"rope_type": rope_type, **rope},
            sliding_window=sliding_window,
            layer_types=layer_types,
            qkv_bias=SUPPORTED_ARCHITECTURES[architecture] or bool(hf.get("attention_bias", False)),
            tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
            eos_token_ids=_eos_ids(hf.get("eos_token_id"), extra_eos_token_ids),
            dtype=dtype,
            bos_token_id=hf.get("bos_token_id"),
        )

    def layer_sliding_window(self, layer: int) -> int | None:
        """The attention window of one layer, None for full attention."""
        return self.sliding_window if self.layer_types[layer] == "sliding_attention" else None


def _architecture(hf: dict[str, Any]) -> str:
    names = hf.get("architectures") or []
    for name in names:
        if name in SUPPORTED_ARCHITECTURES:
            return name
    model_type = hf.get("model_type")
    by_type = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM"}
    if not names and model_type in by_type:
        return by_type[model_type]
    raise UnsupportedModelError(
        f"unsupported architecture {names or model_type!r}; supported: {', '.join(SUPPORTED_ARCHITECTURES)}"
    )


def _sliding_layers(hf: dict[str, Any], architecture: str, num_layers: int) -> tuple[int | None, tuple[str, ...]]:
    """Which layers use a sliding window, following transformers' rules per architecture."""
    window = hf.get("sliding_window")
    if architecture == "Qwen2ForCausalLM" and not hf.get("use_sliding_window", False):
        window = None
    if not window:
        return None, ("full_attention",) * num_layers
    if hf.get("layer_types"):
        layer_types = tuple(hf["layer_types"])
    elif architecture == "Qwen2ForCausalLM":
        first_sliding = hf.get("max_window_layers", num_layers)
        layer_types = tuple(
            "sliding_attention" if i >= first_sliding else "full_attention" for i in range(num_layers)
        )
    else:
        layer_types = ("sliding_attention",) * num_layers
    if "sliding_attention" not in layer_types:
        return None, layer_types
    return int(window), layer_types


def _eos_ids(eos: int | list[int] | None, extra: tuple[int, ...]) -> tuple[int, ...]:
    ids = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
    return tuple(dict.fromkeys([*ids, *extra]))
