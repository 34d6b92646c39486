"""Trip counts of divergent loops with a constant power-of-two step (a shift of the span in
the generated code) match Python's range for every start, stop and step, empty ranges included."""

import linecache

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import kernelforge as kf
import kernelforge.language as kl


@kf.jit
def _count_const_start(stop_ptr, out_ptr, START: kl.constexpr, STEP: kl.constexpr):
    pid = kl.program_id(0)
    n = 0
    for _ in range(START, kl.load(stop_ptr + pid), STEP):
        n += 1
    kl.store(out_ptr + pid, n)


@kf.jit
def _count_varying_start(start_ptr, stop_ptr, out_ptr, STEP: kl.constexpr):
    pid = kl.program_id(0)
    n = 0
    last = -1
    for i in range(kl.load(start_ptr + pid), kl.load(stop_ptr + pid), STEP):
        n += 1
        last = i
    kl.store(out_ptr + 2 * pid, n)
    kl.store(out_ptr + 2 * pid + 1, last)


bounds = st.lists(st.integers(-40, 40), min_size=1, max_size=40)
steps = st.sampled_from([1, 2, 4, 16, 3])


def _generated_sources() -> str:
    return "".join("".join(v[2]) for k, v in linecache.cache.items() if k.startswith("<kernelforge-cpu _count"))


@settings(max_examples=30, deadline=None)
@given(stops=bounds, start=st.integers(-5, 5), step=steps)
def test_constant_start_counts_match_python(backend, stops, start, step):
    stop = torch.tensor(stops, dtype=torch.int32)
    out = torch.full_like(stop, -7)
    _count_const_start[(len(stops),)](stop, out, START=start, STEP=step)
    assert out.tolist() == [len(range(start, s, step)) for s in stops]


@settings(max_examples=30, deadline=None)
@given(pairs=st.lists(st.tuples(st.integers(-40, 40), st.integers(-40, 40)), min_size=1, max_size=40), step=steps)
def test_varying_start_counts_and_last_index_match_python(backend, pairs, step):
    start = torch.tensor([a for a, _ in pairs], dtype=torch.int32)
    stop = torch.tensor([b for _, b in pairs], dtype=torch.int32)
    out = torch.full((2 * len(pairs),), -7, dtype=torch.int32)
    _count_varying_start[(len(pairs),)](start, stop, out, STEP=step)
    want = [[len(range(a, b, step)), (list(range(a, b, step)) or [-1])[-1]] for a, b in pairs]
    assert out.view(-1, 2).tolist() == want


@pytest.mark.parametrize("backend", ["cpu"])
def test_a_power_of_two_step_shifts_and_another_divides(backend):
    stop = torch.tensor([5, 9], dtype=torch.int32)
    out = torch.empty_like(stop)
    _count_const_start[(2,)](stop, out, START=1, STEP=4)
    _count_const_start[(2,)](stop, out, START=1, STEP=3)
    source = _generated_sources()
    assert ".to(torch.int64) + 2) >> 2).clamp_(min=0)" in source
    assert "rt.trip_counts(1, " in source
