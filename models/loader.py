"""load_model: any supported checkpoint -> (LlamaForCausalLM, tokenizer) on the chosen device."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerFast

from models.config import ModelConfig
from models.default import DEFAULT_MODEL_NAME, default_gguf_path
from models.gguf_loader import cached_model_dir
from models.hf_loader import generation_eos_token_ids, load_weights, read_config
from models.llama import LlamaForCausalLM
from models.tokenizer import load_converted_tokenizer, load_tokenizer

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
}


def load_model(
    path: str | os.PathLike | None = None,
    dtype: str | torch.dtype = "auto",
    device: str | torch.device = "auto",
) -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast]:
    """Load a model and its tokenizer.

    path: None for the embedded SmolLM2-135M-Instruct, a `.gguf` file, or a Hugging Face
    directory (config.json + *.safetensors + tokenizer files). dtype: "auto" (float32 on
    CPU, bfloat16 on accelerators), a name like "bf16", or a torch.dtype. device: "auto"
    (cuda, else npu, else cpu) or anything torch.device accepts.
    """
    resolved_device = resolve_device(device)
    resolved_dtype = resolve_dtype(dtype, resolved_device)
    source = default_gguf_path() if path is None else Path(path)
    if source.is_file() and source.suffix == ".gguf":
        model_dir = cached_model_dir(source)
        name = DEFAULT_MODEL_NAME if path is None else source.name.removesuffix(".gguf")
        tokenizer = load_converted_tokenizer(model_dir)
    elif source.is_dir():
        model_dir, name = source, source.resolve().name
        tokenizer = load_tokenizer(model_dir)
    else:
        raise FileNotFoundError(f"{source} is neither a .gguf file nor a model directory")
    config = ModelConfig.from_hf(
        read_config(model_dir),
        dtype=resolved_dtype,
        name=name,
        extra_eos_token_ids=generation_eos_token_ids(model_dir),
    )
    return LlamaForCausalLM(config, load_weights(model_dir), resolved_device), tokenizer


def resolve_device(device: str | torch.device) -> torch.device:
    """"auto" picks cuda, then an Ascend NPU (torch_npu installed), then the CPU."""
    if device != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if importlib.util.find_spec("torch_npu") is not None:
        import torch_npu  # noqa: F401  (registers torch.npu)

        if torch.npu.is_available():
            return torch.device("npu")
    return torch.device("cpu")


def resolve_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    """"auto" is float32 on the CPU (exact, and CPU bf16 matmuls are slow) and bfloat16 elsewhere."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return torch.float32 if device.type == "cpu" else torch.bfloat16
    if dtype not in _DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; use 'auto' or one of {', '.join(_DTYPES)}")
    return _DTYPES[dtype]
