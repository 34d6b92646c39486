"""Paged KV-cache bookkeeping: which block holds which tokens, and who uses it.

The KV cache is `num_blocks` blocks of `block_size` token slots. A block is in one of
three states:

- *free*: no owner, no content worth keeping (in `_free`, FIFO);
- *cached*: no owner, but it holds a full block of KV that a later prompt may reuse
  (in `_evictable`, least recently freed first); it still counts as free space and is
  evicted only when no plain free block is left;
- *used*: `ref_count > 0` sequences list it in their block tables.

Prefix caching: once every token of a full block has its KV computed, the block is
published under a chain hash `hash((parent_hash, *token_ids))`, so a hash names a whole
prefix, not one block. A new sequence walks its prompt block by block through that map
and takes over every hit (checking the stored token ids, so a hash collision can never
serve wrong KV), stopping at the first miss. At least one prompt token is always left to
compute, because the model must produce logits for the last position.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field

from runtime.sequence import Sequence


@dataclass
class Block:
    block_id: int
    ref_count: int = 0
    hash: int | None = None
    token_ids: tuple[int, ...] = field(default=())


def chain_hash(parent: int | None, token_ids: tuple[int, ...]) -> int:
    """Hash of a full block given the hash of the block before it (None for the first)."""
    return hash((parent, token_ids))


class BlockManager:
    """Lends KV blocks to sequences, with ref counts, prefix caching and LRU reuse."""

    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True):
        if num_blocks < 1 or block_size < 1:
            raise ValueError(f"need num_blocks >= 1 and block_size >= 1, got {num_blocks}, {block_size}")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.blocks = [Block(i) for i in range(num_blocks)]
        self._free: deque[int] = deque(range(num_blocks))
        self._evictable: OrderedDict[int, None] = OrderedDict()
        self._hash_to_block: dict[int, int] = {}
        self.prefix_cache_queries = 0
        self.prefix_cache_hits = 0

    # -- accounting --------------------------------------------------------------------
    @property
    def num_free_blocks(self) -> int:
        """Blocks that can be handed out now (plain free plus evictable cached)."""
        return len(self._free) + len(self._evictable)

    @property
    def num_used_blocks(self) -> int:
        return self.num_blocks - self.num_free_blocks

    @property
    def usage(self) -> float:
        """Fraction of blocks owned by sequences (vLLM's kv_cache_usage_perc, in [0, 1])."""
        return self.num_used_blocks / self.num_blocks

    @property
    def num_cached_blocks(self) -> int:
        return len(self._hash_to_block)

    def blocks_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    # -- prefix cache --------------------------------------------------------------------
    def match_prefix(self, seq: Sequence) -> list[int]:
        """Cached blocks holding a prefix of `seq`'s tokens (no state change)."""
        if not self.enable_prefix_caching:
            return []
        hits: list[int] = []
        parent: int | None = None
        bs = self.block_size
        for i in range((seq.num_tokens - 1) // bs):
            tokens = tuple(seq.token_ids[i * bs:(i + 1) * bs])
            parent = chain_hash(parent, tokens)
            block_id = self._hash_to_block.get(parent)
            if block_id is None or self.blocks[block_id].token_ids != tokens:
                break
            hits.append(block_id)
        return hits

    # -- allocation ------------------------------------------------------------------------
    def allocate_prompt(self, seq: Sequence, cached: list[int], num_tokens: int) -> bool:
        """Give a waiting `seq` the `cached` prefix blocks plus fresh blocks for `num_tokens`
        slots in total, and mark the cached tokens computed. All or nothing."""
        assert not seq.block_table, "sequence already holds blocks"
        revived = sum(1 for b in cached if self.blocks[b].ref_count == 0)
        fresh = self.blocks_for(num_tokens) - len(cached)
        if fresh > self.num_free_blocks - revived:
            return False
        for block_id in cached:
            block = self.blocks[block_id]
            if block.ref_count == 0:
                del self._evictable[block_id]
            block.ref_count += 1
            seq.block_table.append(block_id)
            seq.block_hashes.append(block.hash)
        for _ in range(fresh):
            seq.block_table.append(self._take_block())
        seq.num_computed_tokens = seq.num_cached_tokens = len(cached) * self.block_size
        self.prefix_cache_queries += seq.num_tokens
        self.prefix_cache_hits += seq.num_cached_tokens
        return True

    def allocate(self, seq: Sequence, num_tokens: int) -> bool:
        """Grow `seq`'s block table to hold `num_tokens` slots; False (and no change) if
        there are not enough free blocks."""
        fresh = self.blocks_for(num_tokens) - len(seq.block_table)
        if fresh > self.num_free_blocks:
            return False
        for _ in range(fresh):
            seq.block_table.append(self._take_block())
        return True

    def free(self, seq: Sequence) -> None:
        """Return `seq`'s blocks. Freed in reverse so that a prefix chain is evicted from
        its tail first and its (more shareable) head stays cached longest."""
        for block_id in reversed(seq.block_table):
            block = self.blocks[block_id]
            block.ref_count -= 1
            assert block.ref_count >= 0, f"block {block_id} freed twice"
            if block.ref_count == 0:
                if block.hash is not None:
                    self._evictable[block_id] = None
                else:
                    self._free.append(block_id)
        seq.block_table = []
        seq.block_hashes = []

    def commit(self, seq: Sequence) -> None:
        """Publish the blocks that `seq` has completely computed since the last call."""
        if not self.enable_prefix_caching:
            return
        bs = self.block_size
        for i in range(len(seq.block_hashes), seq.num_computed_tokens // bs):
            tokens = tuple(seq.token_ids[i * bs:(i + 1) * bs])
            h = chain_hash(seq.block_hashes[-1] if seq.block_hashes else None, tokens)
            seq.block_hashes.append(h)
            block = self.blocks[seq.block_table[i]]
            if block.hash is None and h not in self._hash_to_block:
                block.hash, block.token_ids = h, tokens
                self._hash_to_block[h] = block.block_id

    def _take_block(self) -> int:
        if self._free:
            block_id = self._free.popleft()
        else:
            block_id, _ = self._evictable.popitem(last=False)
            block = self.blocks[block_id]
            del self._hash_to_block[block.hash]
            block.hash, block.token_ids = None, ()
        self.blocks[block_id].ref_count = 1
        return block_id
