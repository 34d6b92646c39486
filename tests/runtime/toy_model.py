"""Test double for the model (tests only): a tiny deterministic "language model" that
really uses the paged KV cache, so engine tests run in milliseconds without weights.

It implements the design.md "Models -> runtime" interface. `forward` writes each new
token id (and its position) into the cache at `slot_mapping`, and computes the logits of
a sampled row from the context it reads back through `block_table`, checking that every
position it reads holds the position it expects. Wrong slot mappings, block tables,
prefix-cache hits or a preemption that resumed from stale KV therefore change the output
or fail loudly, and `reference_greedy` gives the output a correct engine must produce.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

VOCAB = 48
EOS = 0
ALPHABET = "".join(chr(ord("A") + i) for i in range(26)) + "abcdefghijklmnopqrstuv"


@dataclass(frozen=True)
class ToyConfig:
    vocab_size: int = VOCAB
    eos_token_ids: tuple[int, ...] = (EOS,)
    name: str = "toy"
    dtype: torch.dtype = torch.float32


def toy_logits(context: list[int]) -> torch.Tensor:
    """A fixed pseudo-random distribution for each context (sharp enough to be no tie)."""
    h = 17
    for t in context:
        h = (h * 1_000_003 + t + 1) % (2**61 - 1)
    gen = torch.Generator().manual_seed(h)
    return torch.randn(VOCAB, generator=gen) * 4.0


def reference_greedy(prompt: list[int], max_tokens: int, ignore_eos: bool = False) -> list[int]:
    tokens, out = list(prompt), []
    while len(out) < max_tokens:
        nxt = int(toy_logits(tokens).argmax())
        tokens.append(nxt)
        out.append(nxt)
        if nxt == EOS and not ignore_eos:
            break
    return out


class ToyModel:
    def __init__(self) -> None:
        self.config = ToyConfig()
        self.device = torch.device("cpu")
        self.num_forward_tokens = 0

    def kv_cache_bytes_per_block(self, block_size: int) -> int:
        return 2 * block_size * 8

    def allocate_kv_cache(self, num_blocks: int, block_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        shape = (num_blocks, block_size, 1, 1)
        return [(torch.full(shape, -1, dtype=torch.int64), torch.full(shape, -1, dtype=torch.int64))]

    def forward(self, input_ids, positions, attn, kv_caches, logits_indices) -> torch.Tensor:
        keys, values = (c.view(-1) for c in kv_caches[0])
        block_size = kv_caches[0][0].shape[1]
        self.num_forward_tokens += len(input_ids)
        keep = attn.slot_mapping >= 0
        keys[attn.slot_mapping[keep]] = input_ids[keep]
        values[attn.slot_mapping[keep]] = positions[keep]
        cu = attn.cu_seqlens_q.tolist()
        rows = []
        for t in logits_indices.tolist():
            s = max(i for i in range(len(cu) - 1) if cu[i] <= t)
            pos = int(positions[t])
            assert pos == int(attn.seqused_k[s]) - (cu[s + 1] - t), "position disagrees with seqused_k"
            ctx_pos = torch.arange(pos + 1)
            slots = attn.block_table[s].long()[ctx_pos // block_size] * block_size + ctx_pos % block_size
            assert torch.equal(values[slots], ctx_pos), "KV cache holds the wrong positions"
            rows.append(toy_logits(keys[slots].tolist()))
        return torch.stack(rows) if rows else torch.empty(0, VOCAB)


class ToyTokenizer:
    """One character per token id; EOS decodes to nothing (a special token)."""

    eos_token_id = EOS

    def __call__(self, text: str):
        return type("Encoding", (), {"input_ids": [ALPHABET.index(c) for c in text]})()

    def decode(self, token_ids: list[int], skip_special_tokens: bool = True) -> str:
        return "".join("" if (t == EOS and skip_special_tokens) else ALPHABET[t] for t in token_ids)
