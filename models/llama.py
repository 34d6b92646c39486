"""The Llama-family decoder (Llama 2/3, SmolLM2, Mistral, Qwen2) on kernelforge's kernels.

Every norm, rotary embedding, KV-cache write and attention goes through
`kernelforge.kernels`; matmuls, the embedding lookup and SiLU stay in torch. The batch
is flat: T tokens of S sequences back to back, described by an `AttentionMetadata`.
q/k/v and gate/up are each stored as one merged weight, so a layer runs four matmuls
instead of seven. Qwen2 is Llama with a q/k/v bias; Mistral is
Llama with a sliding window.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kernelforge.kernels import (
    fused_add_rms_norm,
    paged_attention,
    reshape_and_cache,
    rms_norm,
    rotary_embedding,
)
from models.attention import AttentionMetadata
from models.config import ModelConfig
from models.rotary import cos_sin_cache

KVCache = tuple[Tensor, Tensor]


def _frozen(tensor: Tensor) -> nn.Parameter:
    return nn.Parameter(tensor, requires_grad=False)


def _optional(tensor: Tensor | None) -> nn.Parameter | None:
    return None if tensor is None else _frozen(tensor)


class Projection(nn.Module):
    """x @ weight.T + bias, with the weight kept transposed: [in, out], row-major.

    On the CPU, MKL's sgemm runs decode-sized batches (4-31 rows) 5-35% faster against a
    row-major [in, out] operand than against the [out, in] layout checkpoints use, and no
    slower at prefill sizes (`python -m benchmarks.projection`); GPU BLAS takes either.
    """

    def __init__(self, weight: Tensor, bias: Tensor | None = None) -> None:
        super().__init__()
        self.weight_t = _frozen(weight.t().contiguous())
        self.bias = _optional(bias)

    @property
    def weight(self) -> Tensor:
        """[out, in], as the checkpoint stores it (a view)."""
        return self.weight_t.t()

    def forward(self, x: Tensor) -> Tensor:
        if self.bias is None:
            return torch.mm(x, self.weight_t)
        return torch.addmm(self.bias, x, self.weight_t)


class Attention(nn.Module):
    """qkv projection, rotary, KV-cache write, paged attention, output projection."""

    def __init__(self, config: ModelConfig, layer: int, weights: _LayerWeights) -> None:
        super().__init__()
        self.num_heads, self.num_kv_heads = config.num_heads, config.num_kv_heads
        self.head_size = config.head_size
        self.q_size = self.num_heads * self.head_size
        self.kv_size = self.num_kv_heads * self.head_size
        self.scale = self.head_size**-0.5
        self.sliding_window = config.layer_sliding_window(layer)
        qkv_bias = weights.cat_bias("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")
        if config.qkv_bias and qkv_bias is None:
            raise ValueError(f"{config.architecture} needs q/k/v biases; layer {layer} has none")
        self.qkv = Projection(weights.cat("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"), qkv_bias)
        self.o_proj = Projection(
            weights.take("self_attn.o_proj.weight"), weights.take_optional("self_attn.o_proj.bias")
        )

    def forward(
        self, positions: Tensor, x: Tensor, attn: AttentionMetadata, kv_cache: KVCache, cos_sin: Tensor
    ) -> Tensor:
        num_tokens = x.shape[0]
        qkv = self.qkv(x)
        # Views into the fused projection: the kernels take each tensor's row stride.
        q, k, v = qkv.split([self.q_size, self.kv_size, self.kv_size], dim=-1)
        rotary_embedding(positions, q, k, self.head_size, cos_sin, True)
        q = q.view(num_tokens, self.num_heads, self.head_size)
        k = k.view(num_tokens, self.num_kv_heads, self.head_size)
        v = v.view(num_tokens, self.num_kv_heads, self.head_size)
        key_cache, value_cache = kv_cache
        reshape_and_cache(k, v, key_cache, value_cache, attn.slot_mapping)
        out = torch.empty(num_tokens, self.num_heads, self.head_size, dtype=q.dtype, device=q.device)
        paged_attention(
            out,
            q,
            key_cache,
            value_cache,
            attn.block_table,
            attn.cu_seqlens_q,
            attn.seqused_k,
            attn.max_seqlen_q,
            attn.max_seqlen_k,
            self.scale,
            causal=True,
            sliding_window=self.sliding_window,
        )
        return self.o_proj(out.view(num_tokens, self.q_size))


class MLP(nn.Module):
    """down(silu(gate(x)) * up(x)) with gate and up in one matmul."""

    def __init__(self, weights: _LayerWeights) -> None:
        super().__init__()
        gate_up = ("mlp.gate_proj", "mlp.up_proj")
        self.gate_up = Projection(weights.cat(*gate_up), weights.cat_bias(*gate_up))
        self.down = Projection(weights.take("mlp.down_proj.weight"), weights.take_optional("mlp.down_proj.bias"))

    def forward(self, x: Tensor) -> Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


class DecoderLayer(nn.Module):
    """Pre-norm attention and MLP; the residual add is fused into the next norm."""

    def __init__(self, config: ModelConfig, layer: int, weights: _LayerWeights) -> None:
        super().__init__()
        self.eps = config.rms_norm_eps
        self.input_norm = _frozen(weights.take("input_layernorm.weight"))
        self.post_attention_norm = _frozen(weights.take("post_attention_layernorm.weight"))
        self.self_attn = Attention(config, layer, weights)
        self.mlp = MLP(weights)

    def forward(
        self,
        positions: Tensor,
        hidden: Tensor,
        residual: Tensor | None,
        attn: AttentionMetadata,
        kv_cache: KVCache,
        cos_sin: Tensor,
    ) -> tuple[Tensor, Tensor]:
        """Returns (this layer's MLP output, the residual stream before adding it)."""
        if residual is None:
            residual = hidden
            hidden = torch.empty_like(residual)
            rms_norm(hidden, residual, self.input_norm, self.eps)
        else:
            fused_add_rms_norm(hidden, residual, self.input_norm, self.eps)
        hidden = self.self_attn(positions, hidden, attn, kv_cache, cos_sin)
        fused_add_rms_norm(hidden, residual, self.post_attention_norm, self.eps)
        return self.mlp(hidden), residual


class LlamaForCausalLM(nn.Module):
    """The model the runtime drives: `forward` over a flat varlen batch, plus KV-cache sizing."""

    def __init__(self, config: ModelConfig, weights: dict[str, Tensor], device: torch.device) -> None:
        """Build from Hugging Face-named weights (consumed from `weights`), cast to config.dtype on device."""
        super().__init__()
        self.config = config
        self.device = torch.device(device)
        convert = _Converter(weights, config.dtype, self.device)
        self.embed_tokens = _frozen(convert.take("model.embed_tokens.weight"))
        self.layers = nn.ModuleList(
            DecoderLayer(config, i, _LayerWeights(convert, f"model.layers.{i}.")) for i in range(config.num_layers)
        )
        self.norm = _frozen(convert.take("model.norm.weight"))
        tied = config.tie_word_embeddings or "lm_head.weight" not in weights
        self.lm_head = self.embed_tokens if tied else _frozen(convert.take("lm_head.weight"))
        convert.check_consumed()
        self.cos_sin_cache = cos_sin_cache(config, config.dtype, self.device)

    @torch.inference_mode()
    def forward(
        self,
        input_ids: Tensor,
        positions: Tensor,
        attn: AttentionMetadata,
        kv_caches: list[KVCache],
        logits_indices: Tensor,
    ) -> Tensor:
        """Logits [S, vocab] float32 of the tokens at `logits_indices`; writes the new K/V into kv_caches."""
        hidden = F.embedding(input_ids, self.embed_tokens)
        residual = None
        for layer, kv_cache in zip(self.layers, kv_caches, strict=True):
            hidden, residual = layer(positions, hidden, residual, attn, kv_cache, self.cos_sin_cache)
        # Only the sampled rows need the final norm and the (vocab-sized) head; a step that
        # only advances chunked prefills samples nothing.
        if logits_indices.numel() == 0:
            return torch.empty(0, self.config.vocab_size, dtype=torch.float32, device=hidden.device)
        hidden, residual = hidden[logits_indices], residual[logits_indices]
        fused_add_rms_norm(hidden, residual, self.norm, self.config.rms_norm_eps)
        return F.linear(hidden, self.lm_head).float()

    def allocate_kv_cache(self, num_blocks: int, block_size: int) -> list[KVCache]:
        """One zeroed (key_cache, value_cache) per layer, each [num_blocks, block_size, num_kv_heads, head_size]."""
        shape = (num_blocks, block_size, self.config.num_kv_heads, self.config.head_size)
        return [
            (
                torch.zeros(shape, dtype=self.config.dtype, device=self.device),
                torch.zeros(shape, dtype=self.config.dtype, device=self.device),
            )
            for _ in range(self.config.num_layers)
        ]

    def kv_cache_bytes_per_block(self, block_size: int) -> int:
        """Bytes one block takes across all layers, keys and values."""
        c = self.config
        element = torch.empty((), dtype=c.dtype).element_size()
        return 2 * c.num_layers * block_size * c.num_kv_heads * c.head_size * element


class _Converter:
    """Hands out checkpoint tensors by name, cast and moved, and notices leftovers."""

    # Buffers some checkpoints carry that the model recomputes.
    _IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)

    def __init__(self, weights: dict[str, Tensor], dtype: torch.dtype, device: torch.device) -> None:
        self.weights, self.dtype, self.device = weights, dtype, device

    def take(self, name: str) -> Tensor:
        if name not in self.weights:
            raise KeyError(f"checkpoint has no tensor {name!r}")
        return self.weights.pop(name).to(device=self.device, dtype=self.dtype)

    def take_optional(self, name: str) -> Tensor | None:
        return self.take(name) if name in self.weights else None

    def check_consumed(self) -> None:
        left = [n for n in self.weights if not n.endswith(self._IGNORED_SUFFIXES) and n != "lm_head.weight"]
        if left:
            raise ValueError(f"checkpoint tensors this model does not use: {sorted(left)[:8]}")


class _LayerWeights:
    """One layer's view of the converter: short names, merged projections."""

    def __init__(self, convert: _Converter, prefix: str) -> None:
        self.convert, self.prefix = convert, prefix

    def take(self, name: str) -> Tensor:
        return self.convert.take(self.prefix + name)

    def take_optional(self, name: str) -> Tensor | None:
        return self.convert.take_optional(self.prefix + name)

    def cat(self, *projections: str) -> Tensor:
        return torch.cat([self.take(f"{p}.weight") for p in projections])

    def cat_bias(self, *projections: str) -> Tensor | None:
        biases = [self.take_optional(f"{p}.bias") for p in projections]
        if all(b is None for b in biases):
            return None
        if any(b is None for b in biases):
            raise ValueError(f"{self.prefix}: bias on some of {projections} but not all")
        return torch.cat(biases)
