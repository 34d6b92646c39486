"""Scheduler: decode-first ordering, chunked prefill, admission limits, preemption, and a
stateful hypothesis test that drives it like the engine does (without a model).

The simulated model writes each computed token into a slot map and, when a sequence
samples, reads its whole context back through the block table, so a wrong prefix hit or
a resume from stale KV is caught; the next token is a fixed function of the context, so
every finished sequence must equal its uninterrupted greedy reference.
"""

from __future__ import annotations

import hypothesis.strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from runtime.block_manager import BlockManager
from runtime.sampling_params import SamplingParams
from runtime.scheduler import Scheduler, SchedulerOutput
from runtime.sequence import Sequence, SequenceStatus
from test_block_manager import check_invariants

BS = 4


def next_token(context: list[int]) -> int:
    return (sum((i + 1) * t for i, t in enumerate(context)) + len(context)) % 5


def reference(prompt: list[int], max_tokens: int) -> list[int]:
    tokens = list(prompt)
    for _ in range(max_tokens):
        tokens.append(next_token(tokens))
    return tokens[len(prompt):]


class SimulatedModel:
    def __init__(self):
        self.slots: dict[int, tuple[int, int]] = {}  # slot -> (position, token)

    def step(self, sched: Scheduler, out: SchedulerOutput) -> list[Sequence]:
        """Compute the scheduled tokens; return the sequences that finished."""
        due = []
        for seq, n in zip(out.seqs, out.num_new_tokens):
            for pos in range(seq.num_computed_tokens, seq.num_computed_tokens + n):
                slot = seq.block_table[pos // BS] * BS + pos % BS
                self.slots[slot] = (pos, seq.token_ids[pos])
            if seq.num_computed_tokens + n == seq.num_tokens:
                due.append(seq)
        sched.update(out)
        finished = []
        for seq in due:
            context = [self.slots[seq.block_table[p // BS] * BS + p % BS] for p in range(seq.num_tokens)]
            assert context == list(enumerate(seq.token_ids)), "the KV cache lost or mixed up tokens"
            seq.append_token(next_token(seq.token_ids))
            if seq.num_output_tokens >= seq.params.max_tokens:
                sched.finish(seq, "length")
                finished.append(seq)
        return finished


def make(num_blocks=16, max_num_seqs=4, budget=8):
    return Scheduler(BlockManager(num_blocks, BS), max_num_seqs, budget)


def new_seq(prompt, max_tokens=4) -> Sequence:
    return Sequence("r", prompt, SamplingParams(max_tokens=max_tokens, temperature=0.0))


def test_decodes_come_first_then_prefill_chunks_within_budget():
    sched, model = make(budget=6), SimulatedModel()
    a = new_seq([1, 2, 3])
    sched.add(a)
    model.step(sched, sched.schedule())
    b = new_seq(list(range(10)))
    sched.add(b)
    out = sched.schedule()
    assert out.seqs == [a, b] and out.num_new_tokens == [1, 5], "a decodes, b gets the rest of the budget"
    model.step(sched, out)
    out = sched.schedule()
    assert out.num_new_tokens == [1, 5] and b.num_computed_tokens == 5


def test_sequence_cap_limits_admission():
    sched = make(max_num_seqs=2, budget=100)
    seqs = [new_seq([1, 2]) for _ in range(3)]
    for s in seqs:
        sched.add(s)
    out = sched.schedule()
    assert out.seqs == seqs[:2] and list(sched.waiting) == seqs[2:]


def test_out_of_blocks_preempts_newest_and_requeues_it_first():
    sched, model = make(num_blocks=2, budget=64), SimulatedModel()
    old, new = new_seq([1, 2, 3, 4], max_tokens=8), new_seq([5, 6, 7], max_tokens=8)
    sched.add(old)
    sched.add(new)
    model.step(sched, sched.schedule())  # one block each; old's 5th token needs a second
    out = sched.schedule()
    assert out.preempted == [new] and out.seqs == [old]
    assert new.status is SequenceStatus.WAITING and new.num_computed_tokens == 0 and new.block_table == []
    assert sched.waiting[0] is new


def test_waiting_request_that_does_not_fit_waits():
    sched = make(num_blocks=2, budget=64)
    big, small = new_seq(list(range(9))), new_seq([1])
    sched.add(big)
    sched.add(small)
    assert sched.schedule().is_empty, "FCFS: the head of the queue blocks the rest"


class SchedulerMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.sched = make(num_blocks=10, max_num_seqs=3, budget=7)
        self.model = SimulatedModel()
        self.live: list[Sequence] = []
        self.done: list[Sequence] = []
        self.steps_without_progress = 0

    @rule(prompt=st.lists(st.integers(0, 2), min_size=1, max_size=14), max_tokens=st.integers(1, 10))
    def add(self, prompt, max_tokens):
        seq = new_seq(prompt, max_tokens)
        self.sched.add(seq)
        self.live.append(seq)

    @rule()
    def step(self):
        out = self.sched.schedule()
        assert out.num_batched_tokens <= self.sched.max_num_batched_tokens
        assert len(out.seqs) <= self.sched.max_num_seqs and len(self.sched.running) <= self.sched.max_num_seqs
        assert len({s.seq_id for s in out.seqs}) == len(out.seqs)
        assert all(n >= 1 and s.status is SequenceStatus.RUNNING for s, n in zip(out.seqs, out.num_new_tokens))
        assert not {s.seq_id for s in out.preempted} & {s.seq_id for s in out.seqs}
        for seq in self.model.step(self.sched, out):
            self.live.remove(seq)
            self.done.append(seq)
            assert seq.output_token_ids == reference(seq.prompt_token_ids, seq.params.max_tokens)
        self.steps_without_progress = 0 if out.seqs else self.steps_without_progress + 1
        assert self.steps_without_progress < 2 or not self.live, "work is waiting but nothing runs"

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def abort(self, data):
        seq = data.draw(st.sampled_from(self.live))
        self.sched.finish(seq, None)
        self.live.remove(seq)

    @invariant()
    def blocks_consistent(self):
        owners = [s for s in self.live if s.block_table]
        assert all(s.status is SequenceStatus.RUNNING for s in owners)
        check_invariants(self.sched.block_manager, owners)

    def teardown(self):
        for _ in range(500):
            if not self.live:
                break
            self.step()
        assert not self.live, "every request eventually finishes"


TestSchedulerMachine = SchedulerMachine.TestCase
