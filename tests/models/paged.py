"""Test helper: run our model over sequences through a paged KV cache, like the runtime would.

The runtime engineer owns the real block manager; this gives each sequence its own
consecutive blocks (sequence s owns blocks s*blocks_per_seq ...), deliberately in reverse
order inside a sequence so that a kernel reading the block table wrong cannot pass.
"""

from __future__ import annotations

import torch

from models import AttentionMetadata, LlamaForCausalLM


class PagedRunner:
    """Holds a KV cache and each sequence's cached length; `step` feeds new tokens for some sequences."""

    def __init__(self, model: LlamaForCausalLM, num_seqs: int, max_len: int, block_size: int = 16) -> None:
        self.model, self.block_size = model, block_size
        self.blocks_per_seq = -(-max_len // block_size)
        self.kv_caches = model.allocate_kv_cache(num_seqs * self.blocks_per_seq, block_size)
        self.block_table = torch.tensor(
            [list(reversed(range(s * self.blocks_per_seq, (s + 1) * self.blocks_per_seq))) for s in range(num_seqs)],
            dtype=torch.int32,
        )
        self.cached = [0] * num_seqs

    def metadata(self, new_tokens: dict[int, int]) -> tuple[torch.Tensor, AttentionMetadata]:
        """(positions, metadata) for `new_tokens[seq] = count` tokens appended to each listed sequence."""
        seqs = list(new_tokens)
        positions, slots, cu = [], [], [0]
        for s in seqs:
            for p in range(self.cached[s], self.cached[s] + new_tokens[s]):
                block = int(self.block_table[s, p // self.block_size])
                positions.append(p)
                slots.append(block * self.block_size + p % self.block_size)
            cu.append(cu[-1] + new_tokens[s])
        seqused = [self.cached[s] + new_tokens[s] for s in seqs]
        attn = AttentionMetadata(
            slot_mapping=torch.tensor(slots, dtype=torch.int64),
            block_table=self.block_table[seqs],
            cu_seqlens_q=torch.tensor(cu, dtype=torch.int32),
            seqused_k=torch.tensor(seqused, dtype=torch.int32),
            max_seqlen_q=max(new_tokens.values()),
            max_seqlen_k=max(seqused),
        )
        return torch.tensor(positions, dtype=torch.int64), attn

    def step(self, tokens: dict[int, list[int]]) -> torch.Tensor:
        """Feed `tokens[seq]` (new token ids) for each listed sequence; logits [S, vocab] of each one's last token."""
        positions, attn = self.metadata({s: len(t) for s, t in tokens.items()})
        input_ids = torch.tensor([i for t in tokens.values() for i in t], dtype=torch.int64)
        logits_indices = attn.cu_seqlens_q[1:].long() - 1
        device = self.model.device
        logits = self.model.forward(
            input_ids.to(device), positions.to(device), attn.to(device), self.kv_caches, logits_indices.to(device)
        )
        for s, t in tokens.items():
            self.cached[s] += len(t)
        return logits


def replay(
    runner: PagedRunner, sequences: list[list[int]], schedule: list[dict[int, int]]
) -> list[tuple[int, int, torch.Tensor]]:
    """Feed the sequences in the chunks `schedule` gives (step -> {seq: new token count}).

    Returns (sequence, position, logits) for the last token fed to each sequence at each step,
    so a caller can compare with a reference model's logits at that position.
    """
    results = []
    for step in schedule:
        tokens = {s: sequences[s][runner.cached[s] : runner.cached[s] + n] for s, n in step.items()}
        logits = runner.step(tokens)
        results.extend((s, runner.cached[s] - 1, logits[row]) for row, s in enumerate(step))
    return results


# A mixed batch the way a continuous-batching scheduler forms one: a chunked prefill next to
# a full prefill, decodes next to prefills, a step with only some sequences, in another order.
RAGGED_LENGTHS = (11, 21, 14)
RAGGED_SCHEDULE = [
    {0: 9, 1: 12},
    {0: 1, 1: 8, 2: 13},
    {2: 1, 0: 1, 1: 1},
]
