"""GGUF -> a Hugging Face style model directory, converted once and cached on disk.

A GGUF holds llama.cpp names, quantized blocks and tokenizer metadata. We turn it into
what `hf_loader` already reads: `config.json`, `model.safetensors` (dequantized float32
weights under transformers' names, with llama.cpp's q/k row permutation undone) and
the tokenizer files. Reading and dequantizing a GGUF and converting its tokenizer take
several seconds; the cached directory loads in well under one, so it is keyed by the
file's path, size and modification time and reused.

The conversion follows transformers' GGUF loader (`modeling_gguf_pytorch_utils`) so that
our weights equal the ones `AutoModelForCausalLM.from_pretrained(..., gguf_file=...)`
produces: gguf's own numpy dequantization, and the same inverse permutation.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

from models.config import UnsupportedModelError
from models.tokenizer import convert_gguf_tokenizer

# Bump when the cached layout or the conversion changes, so stale caches are ignored.
_CACHE_FORMAT = 1

# GGUF general.architecture -> transformers class name.
GGUF_ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}

_LAYER_NAMES = {
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
_GLOBAL_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}


def cache_root() -> Path:
    """$KF_CACHE_DIR or ~/.cache/kernelforge: shared with the kernel caches, in its own subfolder."""
    return Path(os.environ.get("KF_CACHE_DIR") or Path.home() / ".cache" / "kernelforge") / "models"


def cached_model_dir(gguf_path: str | os.PathLike) -> Path:
    """The converted directory for this GGUF, converting it first if no valid cache exists."""
    path = Path(gguf_path).resolve()
    stat = path.stat()
    key = hashlib.sha256(f"{_CACHE_FORMAT}:{path}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:20]
    target = cache_root() / f"gguf-{key}"
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = target.parent / f".{target.name}.{os.getpid()}.tmp"
    shutil.rmtree(scratch, ignore_errors=True)
    try:
        convert_gguf(path, scratch)
        (scratch / "source").write_text(str(path))
        try:
            scratch.rename(target)
        except OSError:  # another process finished the same conversion first; use theirs
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    _remove_stale_conversions(path, keep=target)
    return target


def _remove_stale_conversions(gguf_path: Path, keep: Path) -> None:
    """Delete this GGUF's older conversions (made before the file was reinstalled or
    changed, or by an older cache format), each the size of the fp32 weights. Only
    conversions that recorded their `source` are recognised; a process still loading
    one keeps its open files (POSIX unlinks them once closed)."""
    for old in keep.parent.glob("gguf-*"):
        source = old / "source"
        if old != keep and source.is_file() and source.read_text() == str(gguf_path):
            shutil.rmtree(old, ignore_errors=True)


def convert_gguf(gguf_path: Path, out_dir: Path) -> None:
    """Write config.json, model.safetensors and the tokenizer files for `gguf_path` into out_dir."""
    from gguf import GGUFReader

    reader = GGUFReader(gguf_path)
    if "tokenizer.ggml.tokens" not in reader.fields:
        raise UnsupportedModelError(f"{gguf_path} carries no tokenizer (tokenizer.ggml.tokens)")
    metadata = {name: field.contents() for name, field in reader.fields.items() if not _is_bulky(name)}
    tensor_names = {t.name for t in reader.tensors}
    hf_config = gguf_to_hf_config(metadata, tensor_names, len(reader.fields["tokenizer.ggml.tokens"].data))
    weights = {}
    for tensor in reader.tensors:
        values = torch.from_numpy(dequantize(tensor))
        if tensor.name == "rope_freqs.weight":
            # llama.cpp's form of Llama 3.1 rope scaling: per-frequency divisors, not config keys.
            hf_config["rope_scaling"] = {"rope_type": "freq_factors", "factors": values.tolist()}
            continue
        name = hf_tensor_name(tensor.name)
        if metadata["general.architecture"] == "llama":
            values = undo_llama_qk_permutation(name, values, hf_config)
        weights[name] = values
    out_dir.mkdir(parents=True)
    save_file(weights, out_dir / "model.safetensors")
    convert_gguf_tokenizer(gguf_path).save_pretrained(out_dir)
    # config.json last: its presence marks a complete conversion.
    (out_dir / "config.json").write_text(json.dumps(hf_config, indent=2))


def _is_bulky(name: str) -> bool:
    """Per-token tokenizer arrays: slow to materialise and only needed by the tokenizer converter."""
    return name.removeprefix("tokenizer.ggml.") in ("tokens", "merges", "token_type", "scores")


def gguf_to_hf_config(metadata: dict[str, Any], tensor_names: set[str], num_tokens: int) -> dict[str, Any]:
    """A transformers-style config.json dict from llama.cpp's metadata keys."""
    arch = metadata["general.architecture"]
    if arch not in GGUF_ARCHITECTURES:
        raise UnsupportedModelError(
            f"unsupported GGUF architecture {arch!r}; supported: {', '.join(GGUF_ARCHITECTURES)}"
        )

    def get(key: str, default: Any = None) -> Any:
        return metadata.get(f"{arch}.{key}", default)

    num_heads = get("attention.head_count")
    hidden_size = get("embedding_length")
    head_dim = get("attention.key_length") or hidden_size // num_heads
    if get("rope.dimension_count", head_dim) != head_dim:
        raise UnsupportedModelError("partial rotary embeddings (rope.dimension_count != head size) are not supported")
    config: dict[str, Any] = {
        "architectures": [GGUF_ARCHITECTURES[arch]],
        "model_type": arch,
        "hidden_size": hidden_size,
        "intermediate_size": get("feed_forward_length"),
        "num_hidden_layers": get("block_count"),
        "num_attention_heads": num_heads,
        "num_key_value_heads": get("attention.head_count_kv", num_heads),
        "head_dim": head_dim,
        "max_position_embeddings": get("context_length", 2048),
        "rms_norm_eps": get("attention.layer_norm_rms_epsilon", 1e-6),
        "rope_theta": get("rope.freq_base", 10000.0),
        "vocab_size": get("vocab_size", num_tokens),
        "tie_word_embeddings": "output.weight" not in tensor_names,
        "bos_token_id": metadata.get("tokenizer.ggml.bos_token_id"),
        "eos_token_id": [
            metadata[f"tokenizer.ggml.{key}"]
            for key in ("eos_token_id", "eot_token_id", "eom_token_id")
            if f"tokenizer.ggml.{key}" in metadata
        ],
        "_name_or_path": metadata.get("general.name", ""),
    }
    if get("attention.sliding_window"):
        config["sliding_window"] = get("attention.sliding_window")
        config["use_sliding_window"] = True
    if get("rope.scaling.type") not in (None, "none"):
        config["rope_scaling"] = {"rope_type": get("rope.scaling.type"), "factor": get("rope.scaling.factor")}
    return config


def hf_tensor_name(gguf_name: str) -> str:
    """llama.cpp tensor name -> transformers name: blk.3.attn_q.weight -> model.layers.3.self_attn.q_proj.weight."""
    stem, _, kind = gguf_name.rpartition(".")
    if stem in _GLOBAL_NAMES:
        return f"{_GLOBAL_NAMES[stem]}.{kind}"
    parts = stem.split(".")
    if len(parts) == 3 and parts[0] == "blk" and parts[2] in _LAYER_NAMES:
        return f"model.layers.{parts[1]}.{_LAYER_NAMES[parts[2]]}.{kind}"
    raise UnsupportedModelError(f"unexpected GGUF tensor {gguf_name!r}")


def dequantize(tensor: Any) -> np.ndarray:
    """A GGUF tensor as a float32 array in transformers' [rows, cols] layout."""
    from gguf.quants import dequantize as gguf_dequantize

    try:
        values = gguf_dequantize(tensor.data, tensor.tensor_type)
    except NotImplementedError as error:
        raise UnsupportedModelError(f"{tensor.name}: {error}") from error
    shape = tuple(int(d) for d in reversed(tensor.shape))
    return np.array(values, dtype=np.float32).reshape(shape)


def undo_llama_qk_permutation(name: str, values: torch.Tensor, hf_config: dict[str, Any]) -> torch.Tensor:
    """Undo the row interleaving llama.cpp's converter applies to llama q/k projections.

    llama.cpp reorders each head's rows from the [first half | second half] rotary layout
    that Hugging Face uses into (even, odd) pairs; this is the inverse, as transformers
    does it (`LlamaTensorProcessor._reverse_permute_weights`).
    """
    if ".self_attn.q_proj." in name:
        heads = hf_config["num_attention_heads"]
    elif ".self_attn.k_proj." in name:
        heads = hf_config["num_key_value_heads"]
    else:
        return values
    half = values.shape[0] // heads // 2
    return values.reshape(heads, half, 2, *values.shape[1:]).transpose(1, 2).reshape(values.shape).contiguous()
