"""Llama-family models on kernelforge's kernels, loaded from GGUF files or Hugging Face directories.

    model, tokenizer = models.load_model()          # embedded SmolLM2-135M-Instruct
    logits = model.forward(input_ids, positions, attn, kv_caches, logits_indices)

See docs/design.md ("Models -> runtime") for the interface the runtime builds against.
"""

from models.attention import AttentionMetadata
from models.config import SUPPORTED_ARCHITECTURES, ModelConfig, UnsupportedModelError
from models.llama import LlamaForCausalLM
from models.loader import load_model

__all__ = [
    "SUPPORTED_ARCHITECTURES",
    "AttentionMetadata",
    "LlamaForCausalLM",
    "ModelConfig",
    "UnsupportedModelError",
    "load_model",
]
