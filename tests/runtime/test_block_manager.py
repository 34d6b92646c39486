"""Block manager: accounting, prefix caching with token checks, LRU reuse, and a stateful
hypothesis test of its invariants under random allocate / grow / commit / free."""

from __future__ import annotations

import hypothesis.strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from runtime.block_manager import BlockManager
from runtime.sampling_params import SamplingParams
from runtime.sequence import Sequence

BS = 4


def seq_of(tokens: list[int]) -> Sequence:
    return Sequence("r", tokens, SamplingParams())


def admit(bm: BlockManager, seq: Sequence) -> bool:
    """Admit `seq` with its cached prefix and compute all its tokens (publish full blocks)."""
    if not bm.allocate_prompt(seq, bm.match_prefix(seq), seq.num_tokens):
        return False
    seq.num_computed_tokens = seq.num_tokens
    bm.commit(seq)
    return True


def check_invariants(bm: BlockManager, owners: list[Sequence]) -> None:
    holders: dict[int, int] = {}
    for seq in owners:
        assert len(set(seq.block_table)) == len(seq.block_table), "a sequence holds a block twice"
        for b in seq.block_table:
            holders[b] = holders.get(b, 0) + 1
    free, evictable = set(bm._free), set(bm._evictable)
    assert len(free) == len(bm._free) and not free & evictable
    for block in bm.blocks:
        assert block.ref_count == holders.get(block.block_id, 0), f"ref count of block {block.block_id}"
        in_pool = block.block_id in free or block.block_id in evictable
        assert in_pool == (block.ref_count == 0), f"block {block.block_id} is both used and free (or neither)"
        assert (block.block_id in evictable) <= (block.hash is not None)
    assert bm.num_free_blocks + len(holders) == bm.num_blocks
    for h, b in bm._hash_to_block.items():
        assert bm.blocks[b].hash == h and len(bm.blocks[b].token_ids) == BS


def test_allocate_grow_free_accounting():
    bm = BlockManager(num_blocks=4, block_size=BS)
    seq = seq_of([1, 2, 3, 4, 5])
    assert bm.allocate_prompt(seq, [], 5) and len(seq.block_table) == 2
    assert bm.num_used_blocks == 2 and bm.usage == 0.5
    assert bm.allocate(seq, 12) and len(seq.block_table) == 3
    assert not bm.allocate(seq, 17), "more than the cache holds"
    assert len(seq.block_table) == 3, "a failed allocation must change nothing"
    bm.free(seq)
    assert bm.num_free_blocks == 4 and seq.block_table == []


def test_prefix_hit_shares_full_blocks_and_leaves_one_token_to_compute():
    bm = BlockManager(num_blocks=8, block_size=BS)
    first = seq_of(list(range(10)))
    assert admit(bm, first)
    second = seq_of(list(range(8)) + [99, 98])
    hits = bm.match_prefix(second)
    assert hits == first.block_table[:2]
    assert bm.allocate_prompt(second, hits, second.num_tokens)
    assert second.num_computed_tokens == 8 and bm.blocks[hits[0]].ref_count == 2
    exact = seq_of(list(range(8)))
    assert len(bm.match_prefix(exact)) == 1, "the last block of an identical prompt is recomputed"
    assert bm.prefix_cache_queries == 20 and bm.prefix_cache_hits == 8


def test_hash_collision_is_caught_by_the_token_check(monkeypatch):
    monkeypatch.setattr("runtime.block_manager.chain_hash", lambda parent, tokens: 42)
    bm = BlockManager(num_blocks=8, block_size=BS)
    first = seq_of([1, 2, 3, 4, 5])
    assert admit(bm, first) and bm.num_cached_blocks == 1
    assert bm.match_prefix(seq_of([9, 9, 9, 9, 9])) == [], "same hash, other tokens: no hit"
    assert bm.match_prefix(seq_of([1, 2, 3, 4, 5])) == first.block_table[:1]


def test_freed_cached_blocks_are_reused_lru_and_evicted_only_when_needed():
    bm = BlockManager(num_blocks=4, block_size=BS)
    a, b = seq_of([1] * 4), seq_of([2] * 4)
    assert admit(bm, a) and admit(bm, b) and bm.num_cached_blocks == 2
    a_block = a.block_table[0]
    bm.free(a)
    bm.free(b)
    assert bm.num_free_blocks == 4 and bm.num_cached_blocks == 2
    for filler in ([3] * 3, [4] * 3):
        assert admit(bm, seq_of(filler))
    assert bm.num_cached_blocks == 2, "plain free blocks are used before any cached one"
    e = seq_of([5] * 3)
    assert admit(bm, e)
    assert e.block_table == [a_block] and bm.num_cached_blocks == 1, "least recently freed goes first"
    assert len(bm.match_prefix(seq_of([2] * 5))) == 1
    assert bm.match_prefix(seq_of([1] * 5)) == []


def test_prefix_caching_disabled_never_hits():
    bm = BlockManager(num_blocks=8, block_size=BS, enable_prefix_caching=False)
    assert admit(bm, seq_of(list(range(9))))
    assert bm.match_prefix(seq_of(list(range(9)))) == [] and bm.num_cached_blocks == 0


class BlockManagerMachine(RuleBasedStateMachine):
    """Random sequences over a 2-token alphabet so prefixes are shared often."""

    def __init__(self):
        super().__init__()
        self.bm = BlockManager(num_blocks=12, block_size=BS)
        self.live: list[Sequence] = []
        self.content: dict[int, int] = {}  # slot -> token id written there

    def _write(self, seq: Sequence, start: int, end: int) -> None:
        for pos in range(start, end):
            self.content[seq.block_table[pos // BS] * BS + pos % BS] = seq.token_ids[pos]

    @rule(tokens=st.lists(st.integers(0, 1), min_size=1, max_size=14))
    def add(self, tokens):
        seq = seq_of(tokens)
        hits = self.bm.match_prefix(seq)
        for i, b in enumerate(hits):
            assert self.bm.blocks[b].token_ids == tuple(tokens[i * BS:(i + 1) * BS])
            assert [self.content[b * BS + j] for j in range(BS)] == tokens[i * BS:(i + 1) * BS], \
                "a prefix hit must serve the KV of exactly these tokens"
        if self.bm.allocate_prompt(seq, hits, seq.num_tokens):
            assert seq.num_computed_tokens == len(hits) * BS < seq.num_tokens
            self._write(seq, seq.num_computed_tokens, seq.num_tokens)
            seq.num_computed_tokens = seq.num_tokens
            self.bm.commit(seq)
            self.live.append(seq)

    @precondition(lambda self: self.live)
    @rule(data=st.data(), extra=st.lists(st.integers(0, 1), min_size=1, max_size=6))
    def grow(self, data, extra):
        seq = data.draw(st.sampled_from(self.live))
        before = list(seq.block_table)
        if self.bm.allocate(seq, seq.num_tokens + len(extra)):
            start = seq.num_tokens
            seq.token_ids.extend(extra)
            self._write(seq, start, seq.num_tokens)
            seq.num_computed_tokens = seq.num_tokens
            self.bm.commit(seq)
        else:
            assert seq.block_table == before

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def free(self, data):
        seq = data.draw(st.sampled_from(self.live))
        self.live.remove(seq)
        self.bm.free(seq)

    @invariant()
    def consistent(self):
        check_invariants(self.bm, self.live)


TestBlockManagerMachine = BlockManagerMachine.TestCase
