"""tails.Tail: a divergent loop's ragged-tail program set, sliced when its programs are the first ones."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import kernelforge as kf
import kernelforge.language as kl
from kernelforge.backends.cpu import runtime as rt
from kernelforge.backends.cpu.tails import Tail, kept_rows


def first(n: int, of: int) -> torch.Tensor:
    return torch.arange(of) < n


def test_kept_rows_are_a_count_for_a_prefix_else_indices():
    assert kept_rows(first(5, 9)) == 5
    assert kept_rows(torch.zeros(4, dtype=torch.bool)) == 0
    assert kept_rows(torch.tensor([True, False, True])).tolist() == [0, 2]


def test_a_prefix_compacts_for_one_idle_program_and_takes_views():
    tail = Tail(rt.Programs((8, 1, 1)), first(7, 8))
    x = torch.arange(16.0).view(8, 2)
    taken = tail.take(x)
    assert taken.data_ptr() == x.data_ptr() and taken.shape == (7, 2)
    assert tail.programs.pid(0).tolist() == list(range(7))
    (done,) = tail.finish((x,), (taken * 0 - 1,))
    torch.testing.assert_close(done, torch.cat([-torch.ones(7, 2), x[7:]]))
    assert x[0, 1] == 1.0  # the full value is not written


@pytest.mark.parametrize(("running", "compacts"), [(40, True), (48, True), (56, False), (64, False)])
def test_scattered_programs_compact_with_an_eighth_and_min_idle_done(running, compacts):
    keep = torch.arange(64) >= 64 - running  # the last ones: not a prefix
    tail = Tail(rt.Programs((64, 1, 1)), keep)
    assert (tail.rows is not None) == compacts
    x = torch.arange(64.0)
    (done,) = tail.finish((x,), (tail.take(x) * 0 - 1,))
    torch.testing.assert_close(done, torch.where(keep, -1.0, x) if compacts else -torch.ones(64))


def test_scattered_programs_take_a_broadcast_value_as_a_view_and_finish_into_a_new_tensor():
    """A value broadcast over the grid (a loop's initial accumulator) is the same for every
    program: taking it copies nothing, and finishing writes a fresh tensor."""
    keep = torch.arange(64) % 2 == 1
    tail = Tail(rt.Programs((64, 1, 1)), keep)
    init = torch.full((3,), -1.0).expand(64, 3)
    taken = tail.take(init)
    assert taken.shape == (32, 3) and taken.stride(0) == 0 and taken.data_ptr() == init.data_ptr()
    (done,) = tail.finish((init,), (taken + torch.arange(32.0)[:, None],))
    want = torch.where(keep[:, None], torch.arange(64.0)[:, None] // 2 - 1.0, -1.0).expand(64, 3)
    torch.testing.assert_close(done, want)
    assert init.tolist() == [[-1.0] * 3] * 64


def test_a_prefix_narrows_whenever_a_program_finishes():
    tail = Tail(rt.Programs((64, 1, 1)), torch.ones(64, dtype=torch.bool))
    x, r = torch.arange(64.0), torch.arange(64) * 10
    assert tail.narrow(torch.ones(64, dtype=torch.bool), (x,), (r,)) is None
    (nx,), (nr,) = tail.narrow(first(63, 64), (x,), (r,))
    assert nr.data_ptr() == r.data_ptr() and nr.shape == (63,)
    assert tail.programs.G == 63
    torch.testing.assert_close(tail.finish((x,), (nx * 0 - 1,))[0], torch.cat([-torch.ones(63), x[63:]]))


def test_finish_undoes_prefix_and_indexed_narrowings_in_order():
    """Programs dropped at each narrowing keep the values they had then, in the carried
    dtype; programs the tail never took keep their values from before it."""
    tail = Tail(rt.Programs((100, 1, 1)), first(96, 100))
    x_all = torch.arange(100.0).view(100, 1).expand(100, 3)  # a broadcast view, as loops carry them
    x = tail.take(x_all)
    (x1,), _ = tail.narrow(first(64, 96), (x,), ())
    scattered = torch.arange(64) % 2 == 0
    (x2,), _ = tail.narrow(scattered, (x1 + 100,), ())
    (x3,), _ = tail.narrow(first(20, 32), ((x2 + 1000).double(),), ())
    assert tail.programs.idx.tolist() == list(range(0, 40, 2))
    (out,) = tail.finish((x_all,), (x3 + 10000,))
    want = torch.arange(100.0)
    want[:64] += 100
    want[0:40:2] += 11000
    want[40:64:2] += 1000
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, want.double()[:, None].expand(100, 3))


@kf.jit
def ragged_rows_kernel(x_ptr, lens_ptr, out_ptr, BLOCK: kl.constexpr):
    """Each program sums its row's first lens[pid] entries BLOCK at a time (a [2, BLOCK]
    carried block and a scalar counter), so programs run different trip counts."""
    pid = kl.program_id(0)
    n = kl.load(lens_ptr + pid)
    acc = kl.zeros([2, BLOCK], dtype=kl.float32)
    steps = 0
    for start in range(0, n, BLOCK):
        offs = start + kl.arange(0, BLOCK)
        acc += kl.load(x_ptr + pid * 256 + offs, mask=offs < n, other=0.0)[None, :]
        steps += 1
    kl.store(out_ptr + pid * 2 + kl.arange(0, 2), kl.sum(acc, axis=1) + steps)


@settings(max_examples=25, deadline=None)
@given(lens=st.lists(st.integers(0, 256), min_size=1, max_size=70), longest_first=st.booleans())
def test_divergent_loops_ordered_longest_first_or_not_match_python(lens, longest_first):
    if longest_first:
        lens = sorted(lens, reverse=True)
    x = torch.randn(len(lens), 256)
    out = torch.empty(len(lens), 2)
    with kf.backend("cpu"):
        ragged_rows_kernel[(len(lens),)](x, torch.tensor(lens, dtype=torch.int32), out, BLOCK=16)
    sums = torch.stack([x[i, :n].sum() + -(-n // 16) for i, n in enumerate(lens)])
    torch.testing.assert_close(out, sums[:, None].expand(-1, 2), atol=1e-4, rtol=1e-5)


def test_finish_undoes_indexed_levels_around_prefix_runs():
    """An indexed compaction, two prefix narrowings, an indexed one, another prefix one."""
    G = 64
    full = torch.arange(G, dtype=torch.float32)
    scattered = torch.arange(G) % 4 != 1  # 48 kept, not a prefix
    tail = Tail(rt.Programs((G, 1, 1)), scattered)
    assert tail.rows is not None and not isinstance(tail.rows, int)
    x = tail.take(full) + 1000
    keeps = [first(40, 48), first(36, 40), torch.arange(36) % 2 == 0, first(10, 18)]
    for k, keep in enumerate(keeps):
        (x,), _ = tail.narrow(keep, (x + 100 * (k + 1),), ())
    (out,) = tail.finish((full,), (x + 10000,))
    want = full.clone()
    index = scattered.nonzero().squeeze(1)  # full position of each program of the current set
    want[index] += 1000
    for k, keep in enumerate(keeps):
        want[index] += 100 * (k + 1)
        index = index[keep]
    want[index] += 10000
    torch.testing.assert_close(out, want)


@kf.jit
def returning_nested_kernel(trips_ptr, stop_ptr, out_ptr):
    """Program pid counts pid inner steps (a nested divergent loop) plus one per outer
    step, and returns early (leaving out untouched) at outer step stop[pid]."""
    pid = kl.program_id(0)
    n = kl.load(trips_ptr + pid)
    stop = kl.load(stop_ptr + pid)
    acc = 0.0
    for i in range(n):
        for _ in range(pid):
            acc += 1.0
        if i == stop:
            return
        acc += 1.0
    kl.store(out_ptr + pid, acc)


def returning_nested_reference(trips: list[int], stops: list[int]) -> list[float]:
    out = []
    for pid, (n, stop) in enumerate(zip(trips, stops)):
        returns = 0 <= stop < n
        out.append(-1.0 if returns else float(n * (pid + 1)))
    return out


def run_returning_nested(trips: list[int], stops: list[int]) -> list[float]:
    out = torch.full((len(trips),), -1.0)
    with kf.backend("cpu"):
        returning_nested_kernel[(len(trips),)](torch.tensor(trips, dtype=torch.int32),
                                               torch.tensor(stops, dtype=torch.int32), out)
    return out.tolist()


@pytest.mark.parametrize(("trips", "stops"), [([5, 4, 1], [2, -1, -1]), ([8, 2, 2, 1], [1, 0, -1, -1])])
def test_a_tail_stops_when_its_longest_programs_return_early(trips, stops):
    """Every program left in the tail returns before the longest trip count: the tail
    narrows to no programs and must not step on (the nested loop's bound of nothing)."""
    assert run_returning_nested(trips, stops) == returning_nested_reference(trips, stops)


@settings(max_examples=30, deadline=None)
@given(runs=st.lists(st.tuples(st.integers(0, 8), st.integers(-1, 8)), min_size=1, max_size=24),
       longest_first=st.booleans())
def test_divergent_loops_with_early_returns_and_nested_loops_match_python(runs, longest_first):
    if longest_first:
        runs = sorted(runs, reverse=True)
    trips, stops = [n for n, _ in runs], [s for _, s in runs]
    assert run_returning_nested(trips, stops) == returning_nested_reference(trips, stops)
