"""Divergent loops whose programs finish at many different steps.

The CPU backend narrows a loop's ragged tail to the programs still iterating as others
finish (`rt.Compaction.narrow`); grids of tens of programs with trip counts spread over
many steps make it narrow several times. Every program must still see exactly its own
iterations, keep the loop-carried values it had when it finished (scalars, vectors and
2-D blocks alike), and stop at an early return.
"""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import kernelforge as kf
import kernelforge.language as kl

BLOCK = 4
MAX_TRIPS = 12


@kf.jit
def _ragged_accumulate(x_ptr, trips_ptr, count_ptr, vec_ptr, mat_ptr, BLOCK: kl.constexpr, ROW: kl.constexpr):
    pid = kl.program_id(0)
    offs = kl.arange(0, BLOCK)
    count = 0
    vec = kl.zeros([BLOCK], dtype=kl.float32)
    mat = kl.full([2, BLOCK], 1.0, dtype=kl.float32)
    for j in range(0, kl.load(trips_ptr + pid)):
        x = kl.load(x_ptr + pid * ROW + j * BLOCK + offs)
        count += 1
        vec = vec + x
        mat = kl.maximum(mat, x[None, :] * (kl.arange(0, 2)[:, None] + 1.0))
    kl.store(count_ptr + pid, count)
    kl.store(vec_ptr + pid * BLOCK + offs, vec)
    kl.store(mat_ptr + pid * 2 * BLOCK + kl.arange(0, 2)[:, None] * BLOCK + offs[None, :], mat)


@kf.jit
def _ragged_return(x_ptr, trips_ptr, out_ptr, seen_ptr, ROW: kl.constexpr):
    pid = kl.program_id(0)
    total = 0.0
    for j in range(0, kl.load(trips_ptr + pid)):
        v = kl.load(x_ptr + pid * ROW + j)
        kl.store(seen_ptr + pid * ROW + j, 1.0)
        if v < 0:
            return
        total += v
    kl.store(out_ptr + pid, total)


trips_lists = st.lists(st.integers(0, MAX_TRIPS), min_size=1, max_size=150)


@settings(max_examples=25, deadline=None)
@given(trips=trips_lists, seed=st.integers(0, 2**16))
def test_ragged_loop_carries_every_program_own_values(backend, trips, seed):
    g = torch.Generator().manual_seed(seed)
    n = len(trips)
    x = torch.randn(n, MAX_TRIPS * BLOCK, generator=g)
    counts = torch.zeros(n, dtype=torch.int32)
    vec, mat = torch.zeros(n, BLOCK), torch.zeros(n, 2, BLOCK)
    with kf.backend(backend):
        _ragged_accumulate[(n,)](x, torch.tensor(trips, dtype=torch.int32), counts, vec, mat,
                                 BLOCK=BLOCK, ROW=MAX_TRIPS * BLOCK)
    assert counts.tolist() == trips
    for p, t in enumerate(trips):
        rows = x[p, : t * BLOCK].view(t, BLOCK)
        torch.testing.assert_close(vec[p], rows.sum(0), atol=1e-5, rtol=1e-5)
        scaled = torch.cat([torch.ones(1, 2, BLOCK), rows[:, None, :] * torch.tensor([1.0, 2.0])[:, None]])
        torch.testing.assert_close(mat[p], scaled.amax(0))


@settings(max_examples=25, deadline=None)
@given(trips=trips_lists, seed=st.integers(0, 2**16))
def test_ragged_loop_stops_each_program_at_its_early_return(backend, trips, seed):
    g = torch.Generator().manual_seed(seed)
    n = len(trips)
    x = torch.rand(n, MAX_TRIPS, generator=g)
    x[torch.rand(n, MAX_TRIPS, generator=g) < 0.08] = -1.0
    out, seen = torch.full((n,), -7.0), torch.zeros(n, MAX_TRIPS)
    with kf.backend(backend):
        _ragged_return[(n,)](x, torch.tensor(trips, dtype=torch.int32), out, seen, ROW=MAX_TRIPS)
    for p, t in enumerate(trips):
        row = x[p, :t].tolist()
        stop = next((j for j, v in enumerate(row) if v < 0), None)
        ran = t if stop is None else stop + 1
        assert seen[p].tolist() == [1.0] * ran + [0.0] * (MAX_TRIPS - ran)
        want = -7.0 if stop is not None else sum(row)
        assert abs(out[p].item() - want) < 1e-4
