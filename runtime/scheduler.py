"""Continuous batching: which sequences run in the next step, and how many tokens each.

Every step gets a token budget (`max_num_batched_tokens`) and at most `max_num_seqs`
sequences hold KV blocks at once. The step is filled in this order:

1. running sequences that are decoding (one token each), oldest first;
2. running sequences still in prefill, each with the next chunk that fits the budget;
3. waiting sequences, first come first served, starting with the cached prefix the block
   manager finds, until the budget, the sequence cap or the free blocks run out.

When a running sequence needs a block and none is free, the newest running sequence not
yet scheduled in this step is preempted by recompute: its blocks are freed (cached full
blocks stay reusable) and it goes back to the front of the queue with all its tokens, so
it later re-prefills its prompt and the output it already has. No new request is admitted
in a step that preempted, so the preempted ones are first in line.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from runtime.block_manager import BlockManager
from runtime.sequence import Sequence, SequenceStatus


@dataclass
class SchedulerOutput:
    """One step's work: `seqs[i]` computes its next `num_new_tokens[i]` tokens."""

    seqs: list[Sequence] = field(default_factory=list)
    num_new_tokens: list[int] = field(default_factory=list)
    preempted: list[Sequence] = field(default_factory=list)

    @property
    def num_batched_tokens(self) -> int:
        return sum(self.num_new_tokens)

    @property
    def is_empty(self) -> bool:
        return not self.seqs


class Scheduler:
    def __init__(self, block_manager: BlockManager, max_num_seqs: int, max_num_batched_tokens: int):
        if max_num_seqs < 1 or max_num_batched_tokens < 1:
            raise ValueError("max_num_seqs and max_num_batched_tokens must be >= 1, got "
                             f"{max_num_seqs} and {max_num_batched_tokens}")
        self.block_manager = block_manager
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.num_preemptions = 0

    def add(self, seq: Sequence, front: bool = False) -> None:
        """Queue `seq`; `front` puts it ahead of everything waiting (an earlier arrival)."""
        seq.status = SequenceStatus.WAITING
        if front:
            self.waiting.appendleft(seq)
        else:
            self.waiting.append(seq)

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    def request_counts(self) -> tuple[int, int]:
        """(running, waiting) requests, as vLLM reports them: a request with any sequence in
        the batch is running; one whose sequences all wait (queued or preempted) is waiting."""
        running = {seq.request_id for seq in self.running}
        waiting = {seq.request_id for seq in self.waiting} - running
        return len(running), len(waiting)

    def schedule(self) -> SchedulerOutput:
        out = SchedulerOutput()
        scheduled: set[int] = set()
        budget = self.max_num_batched_tokens
        decoding = [s for s in self.running if s.num_uncomputed_tokens == 1]
        prefilling = [s for s in self.running if s.num_uncomputed_tokens > 1]
        for seq in decoding + prefilling:
            if budget == 0:
                break
            if seq.status is not SequenceStatus.RUNNING:
                continue  # preempted earlier in this step to make room
            num_new = min(seq.num_uncomputed_tokens, budget)
            if self._allocate_or_preempt(seq, seq.num_computed_tokens + num_new, scheduled, out):
                scheduled.add(seq.seq_id)
                out.seqs.append(seq)
                out.num_new_tokens.append(num_new)
                budget -= num_new
        if not out.preempted:
            budget = self._admit_waiting(budget, out)
        return out

    def _allocate_or_preempt(self, seq: Sequence, num_tokens: int, scheduled: set[int],
                             out: SchedulerOutput) -> bool:
        while not self.block_manager.allocate(seq, num_tokens):
            victim = next((s for s in reversed(self.running) if s.seq_id not in scheduled), seq)
            self._preempt(victim)
            out.preempted.append(victim)
            if victim is seq:
                return False
        return True

    def _admit_waiting(self, budget: int, out: SchedulerOutput) -> int:
        bm = self.block_manager
        while self.waiting and budget > 0 and len(self.running) < self.max_num_seqs:
            seq = self.waiting[0]
            cached = bm.match_prefix(seq)
            num_cached = len(cached) * bm.block_size
            num_new = min(seq.num_tokens - num_cached, budget)
            if not bm.allocate_prompt(seq, cached, num_cached + num_new):
                break
            self.waiting.popleft()
            seq.status = SequenceStatus.RUNNING
            self.running.append(seq)
            out.seqs.append(seq)
            out.num_new_tokens.append(num_new)
            budget -= num_new
        return budget

    def _preempt(self, seq: Sequence) -> None:
        self.running.remove(seq)
        self.block_manager.free(seq)
        seq.reset_for_recompute()
        self.waiting.appendleft(seq)
        self.num_preemptions += 1

    def update(self, out: SchedulerOutput) -> None:
        """Record that the model computed the scheduled tokens, and publish full blocks."""
        for seq, num_new in zip(out.seqs, out.num_new_tokens):
            seq.num_computed_tokens += num_new
            self.block_manager.commit(seq)

    def finish(self, seq: Sequence, reason: str | None) -> None:
        """End `seq` (done, or aborted with reason None) and return its blocks."""
        if seq.status is SequenceStatus.RUNNING:
            self.running.remove(seq)
        elif seq.status is SequenceStatus.WAITING:
            self.waiting.remove(seq)
        self.block_manager.free(seq)
        seq.status = SequenceStatus.FINISHED
        seq.finish_reason = reason
