"""Row gathers of the CPU backend (`rows.load_rows`): masks per row, programs that are not
executing, and rows that leave the tensor."""

from __future__ import annotations

import pytest
import torch

import kernelforge as kf
import kernelforge.language as kl
from kernelforge.backends.cpu import rows
from kernelforge.backends.cpu.runtime import Programs

ROW = (0, (0, 0, 0), (0, 1))  # affine part of `start[:, None] + arange(L)[None, :]`


def load(t: torch.Tensor, starts: list[list[int]], length: int, *, masks=(), active=None, other=-1.0):
    """`t[start : start + length]` for every start of every program, as load_rows reads it."""
    starts_t = torch.tensor(starts, dtype=torch.int64)
    P = Programs((starts_t.shape[0], 1, 1))
    return rows.load_rows(t, P, ROW, (starts_t.shape[1], length), 1, True, dyn=((starts_t, 1, (0,), True),),
                          masks=masks, other=other, active=active)


def test_masked_rows_read_other():
    t = torch.arange(40.0)
    keep = torch.tensor([[True, False], [False, True]])
    got = load(t, [[0, 8], [16, 24]], 4, masks=((keep, 1, (0,), True),))
    want = torch.tensor([[[0.0, 1, 2, 3], [-1, -1, -1, -1]], [[-1, -1, -1, -1], [24, 25, 26, 27]]])
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("other", [0.0, float("-inf"), 2.5])
def test_masked_rows_read_other_whatever_the_memory_holds(other):
    """Rows that are off read offset 0 (NaN here) and are then filled row by row: no
    arithmetic may leak the NaN, and the rows that are on keep their exact values."""
    t = torch.arange(40.0)
    t[0] = float("nan")
    t[20] = float("inf")
    keep = torch.tensor([[False, True, False], [True, False, False]])
    got = load(t, [[0, 20, 4], [8, 0, 30]], 4, masks=((keep, 1, (0,), True),), other=other)
    want = torch.full((2, 3, 4), other)
    want[0, 1] = t[20:24]
    want[1, 0] = t[8:12]
    torch.testing.assert_close(got, want)


def test_rows_of_programs_not_executing_are_never_read():
    """Program 1 is not executing: its row start lies past the end, which must not fault;
    its values are unspecified (predication drops them), program 0's are exact."""
    t = torch.arange(40.0)
    got = load(t, [[4, 12], [1000, -50]], 4, active=torch.tensor([True, False]))
    torch.testing.assert_close(got[0], torch.tensor([[4.0, 5, 6, 7], [12, 13, 14, 15]]))
    assert got.shape == (2, 2, 4)


def test_row_masks_still_apply_to_executing_programs():
    t = torch.arange(40.0)
    keep = torch.tensor([[True, False], [True, True]])
    got = load(t, [[0, 500], [8, 12]], 4, masks=((keep, 1, (0,), True),), active=torch.tensor([True, False]))
    torch.testing.assert_close(got[0], torch.tensor([[0.0, 1, 2, 3], [-1, -1, -1, -1]]))


@pytest.mark.parametrize("start", [37, -4, 1000])
def test_an_unmasked_row_leaving_the_tensor_is_an_index_error(start):
    with pytest.raises(IndexError):
        load(torch.arange(40.0), [[0, start]], 4)


@kf.jit
def gather_rows_kernel(src_ptr, dst_ptr, rows_ptr, D: kl.constexpr):
    row = kl.load(rows_ptr + kl.program_id(0)).to(kl.int64)
    cols = kl.arange(0, D)
    kl.store(dst_ptr + kl.program_id(0) * D + cols, kl.load(src_ptr + row * D + cols))


def test_row_gather_past_the_end_is_reported():
    src, dst = torch.randn(4, 8), torch.zeros(2, 8)
    assert "rows.load_rows" in gather_rows_kernel.source("cpu", src_ptr="*fp32", dst_ptr="*fp32",
                                                         rows_ptr="*i32", D=8)
    with kf.backend("cpu"):
        gather_rows_kernel[(2,)](src, dst, torch.tensor([1, 3], dtype=torch.int32), D=8)
        torch.testing.assert_close(dst, src[[1, 3]])
        with pytest.raises(kf.KernelFault, match="out-of-bounds memory access"):
            gather_rows_kernel[(2,)](src, dst, torch.tensor([1, 4], dtype=torch.int32), D=8)


@pytest.mark.parametrize(("base", "coef"), [(0, 1), (2, 1), (0, 4), (3, 2)])
def test_row_starts_add_the_affine_base_and_scaled_terms(base, coef):
    t = torch.arange(100.0)
    starts = torch.tensor([[1, 5], [9, 0]], dtype=torch.int32)
    P = Programs((2, 1, 1))
    got = rows.load_rows(t, P, (base, (0, 0, 0), (0, 1)), (2, 3), 1, True, dyn=((starts, coef, (0,), True),))
    first = (base + coef * starts.long())[..., None]
    torch.testing.assert_close(got, (first + torch.arange(3)).float())


@pytest.mark.parametrize("base", [0, 5])
@pytest.mark.parametrize("pid_coefs", [(0, 0, 0), (0, 64, 0), (7, 0, 3)])
def test_row_starts_add_program_terms_and_scaled_rows(base, pid_coefs):
    """`base + sum(c_k * program_id(k)) + coef * slot` (K/V rows of a KV head's slots)."""
    t = torch.arange(2000.0)
    P = Programs((2, 3, 2))
    slots = torch.randint(0, 8, (P.G, 5), dtype=torch.int32)
    got = rows.load_rows(t, P, (base, pid_coefs, (0, 1)), (5, 4), 1, True, dyn=((slots, 192, (0,), True),))
    program = sum(c * P.pid(axis).long() for axis, c in enumerate(pid_coefs))
    first = base + program[:, None, None] + 192 * slots.long()[..., None]
    torch.testing.assert_close(got, (first + torch.arange(4)).float())


def test_program_terms_of_row_starts_are_made_once_per_grid():
    """A relaunch over the same grid (each decode step's K and V loads) reuses them."""
    t = torch.arange(2000.0)
    slots = torch.randint(0, 8, (6, 5), dtype=torch.int32)
    for _ in range(2):
        P = Programs((1, 3, 2))
        got = rows.load_rows(t, P, (7, (0, 64, 5), (0, 1)), (5, 4), 1, True, dyn=((slots, 192, (0,), True),))
        first = 7 + 64 * P.pid(1).long()[:, None, None] + 5 * P.pid(2).long()[:, None, None]
        torch.testing.assert_close(got, (first + 192 * slots.long()[..., None] + torch.arange(4)).float())
    assert ("offsets", 7, (0, 64, 5), 2) in P.cached


@pytest.mark.parametrize("pid_coefs", [(0, 0, 0), (0, 64, 0)])
def test_row_starts_of_int32_rows_are_computed_in_int64(pid_coefs):
    """An int32 slot times a row's element count passes 2**31 in a large cache: the start
    must not wrap (it would read another row, or fault)."""
    slots = torch.tensor([[2**24, 3]], dtype=torch.int32)
    starts = rows._evaluate(Programs((1, 1, 1)), (0, pid_coefs, (0,)), ((slots, 4096, (0,), True),), (2,))
    assert starts.dtype == torch.int64
    assert starts.reshape(-1).tolist() == [2**24 * 4096, 3 * 4096]


def test_a_constant_row_term_with_no_affine_part():
    P = Programs((2, 1, 1))
    got = rows.load_rows(torch.arange(20.0), P, (0, (0, 0, 0), (0, 1)), (1, 4), 1, True, dyn=((6, 1, (0,), True),))
    torch.testing.assert_close(got, torch.tensor([[[6.0, 7, 8, 9]], [[6.0, 7, 8, 9]]]))


# ---------------------------------------------------------------- cached plans
# Rows `start = base + coef * slot` of one row tensor `slot` are read and written through a
# window view planned once per signature: each call must still follow its own data.

RUN = (0, (0, 0, 0), (1,))  # affine part of `base + arange(L)`, one row per program


def slot_rows(G: int, base: int, coef: int, length: int, slots: torch.Tensor, box: int | None = None,
              **kwargs) -> dict:
    """load_rows / store_rows arguments for program g's row at `base + coef * slots[g]`,
    trimmed to `box` lanes by a run condition when given."""
    conds = () if box is None else ((-box, (0, 0, 0), (1,), ()),)
    return dict(P=Programs((G, 1, 1)), aff=(base, (0, 0, 0), (1,)), shape=(length,), inner=0, per_program=True,
                dyn=((slots, coef, (), True),), conds=conds, **kwargs)


def expected_store(t: torch.Tensor, base: int, coef: int, value: torch.Tensor, slots: list[int],
                   on: list[bool], box: int) -> torch.Tensor:
    want = t.clone()
    for g, (s, o) in enumerate(zip(slots, on)):
        if o:
            want[base + coef * s:base + coef * s + box] = value[g, :box]
    return want


@pytest.mark.parametrize("G", [1, 3, 6])
def test_a_cached_store_plan_follows_each_calls_slots_and_skips(G):
    t = torch.zeros(200)
    for call in range(3):
        slots = torch.randperm(200 // 12 - 1)[:G] if call != 1 else torch.arange(G).flip(0)
        on = [g % 3 != call for g in range(G)]
        value = torch.randn(G, 16)
        want = expected_store(t, 2, 12, value, slots.tolist(), on, 10)
        rows.store_rows(t, value=value, active=torch.tensor(on)[:, None],
                        **slot_rows(G, 2, 12, 16, slots, box=10))
        torch.testing.assert_close(t, want)


@pytest.mark.parametrize("G", [1, 4])
def test_a_cached_load_plan_follows_each_calls_slots_and_masks(G):
    t = torch.arange(300.0)
    for call in range(3):
        slots = torch.randint(0, 20, (G,), dtype=torch.int32)
        keep = torch.rand(G) > 0.4
        got = rows.load_rows(t, other=-1.0, masks=((keep, 1, (), True),),
                             **slot_rows(G, 5, 13, 8, slots, box=6))
        want = torch.full((G, 8), -1.0)
        for g in range(G):
            if keep[g]:
                want[g, :6] = t[5 + 13 * int(slots[g]):][:6]
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("as_list", [False, True])
def test_a_cached_plan_follows_each_calls_row_condition_tensor(as_list):
    """A row condition carrying a row tensor (`slot < 10`) keys the plan by its static part
    only: each call masks by its own tensor's values (also for conditions given as a list)."""
    t = torch.arange(300.0)
    for call in range(3):
        slots = torch.randint(0, 20, (4,))
        conds = [(-10, (0, 0, 0), (0,), ((slots, 1, (), True),))]
        args = slot_rows(4, 5, 13, 8, slots)
        args["conds"] = conds if as_list else tuple(conds)
        got = rows.load_rows(t, other=-1.0, **args)
        want = torch.full((4, 8), -1.0)
        for g, s in enumerate(slots.tolist()):
            if s < 10:
                want[g] = t[5 + 13 * s:][:8]
        torch.testing.assert_close(got, want)


def test_load_rows_of_programs_not_executing_may_lie_outside_the_window():
    t = torch.arange(100.0)
    slots = torch.tensor([3, 10_000, -7])
    got = rows.load_rows(t, active=torch.tensor([True, False, False]), **slot_rows(3, 1, 10, 4, slots))
    torch.testing.assert_close(got[0], torch.tensor([31.0, 32, 33, 34]))


def test_a_negative_slot_that_the_base_brings_into_the_tensor_is_read_and_written():
    """Row -1 lies before the window (which starts at the base) but inside the tensor."""
    t = torch.arange(40.0)
    slots = torch.tensor([-1, 2])
    got = rows.load_rows(t, **slot_rows(2, 8, 4, 4, slots))
    torch.testing.assert_close(got, torch.tensor([[4.0, 5, 6, 7], [16, 17, 18, 19]]))
    value = torch.tensor([[-1.0, -2, -3, -4], [-5, -6, -7, -8]])
    rows.store_rows(t, value=value, **slot_rows(2, 8, 4, 4, slots))
    torch.testing.assert_close(t[4:8], value[0])
    torch.testing.assert_close(t[16:20], value[1])


@pytest.mark.parametrize("slot", [-3, 10, 100])
def test_a_windowed_store_past_either_end_is_an_index_error(slot):
    t = torch.zeros(40)
    with pytest.raises(IndexError):
        rows.store_rows(t, value=torch.ones(2, 4), **slot_rows(2, 0, 4, 4, torch.tensor([1, slot])))


def test_a_windowed_store_takes_int32_slots_and_a_scalar_value():
    t = torch.zeros(30)
    rows.store_rows(t, value=7.0, **slot_rows(2, 1, 10, 3, torch.tensor([2, 0], dtype=torch.int32)))
    want = torch.zeros(30)
    want[21:24] = 7.0
    want[1:4] = 7.0
    torch.testing.assert_close(t, want)


@pytest.mark.parametrize("G", [1, 3])
def test_a_windowed_store_of_several_rows_per_program_writes_each_at_its_slot(G):
    """A [2, 6] block per program, row r of program g at 10 * slots[g, r], its first 4 lanes
    on: the rows are the (program, outer index) pairs, the values cut to the run box."""
    t = torch.zeros(10 * 2 * G + 10)
    slots = torch.randperm(2 * G).view(G, 2)
    value = torch.randn(G, 2, 6)
    rows.store_rows(t, Programs((G, 1, 1)), ROW, (2, 6), 1, True, value, dyn=((slots, 10, (0,), True),),
                    conds=((-4, (0, 0, 0), (0, 1), ()),))
    want = torch.zeros_like(t)
    for g in range(G):
        for r in range(2):
            want[10 * int(slots[g, r]):][:4] = value[g, r, :4]
    torch.testing.assert_close(t, want)


def test_an_overlapping_window_is_not_written_through():
    """coef 2 < run 4: rows overlap, so the store falls back to computed starts (one wins)."""
    t = torch.zeros(20)
    rows.store_rows(t, value=torch.tensor([[1.0, 1, 1, 1], [2.0, 2, 2, 2]]),
                    **slot_rows(2, 0, 2, 4, torch.tensor([0, 3])))
    torch.testing.assert_close(t[:10], torch.tensor([1.0, 1, 1, 1, 0, 0, 2, 2, 2, 2]))


def test_one_signature_on_tensors_of_different_extents():
    """The window's row count depends on the tensor's extent: a plan made for a longer
    tensor must not let a row past the end of a shorter one through."""
    for n in (200, 70, 64):
        t = torch.arange(float(n))
        last = (n - 8) // 16
        got = rows.load_rows(t, **slot_rows(2, 0, 16, 8, torch.tensor([0, last])))
        torch.testing.assert_close(got[1], t[16 * last:16 * last + 8])
        with pytest.raises(IndexError):
            rows.load_rows(t, **slot_rows(2, 0, 16, 8, torch.tensor([0, last + 1])))
        with pytest.raises(IndexError):
            rows.store_rows(t, value=torch.zeros(2, 8), **slot_rows(2, 0, 16, 8, torch.tensor([0, last + 1])))


def test_one_grid_with_all_programs_then_a_compacted_subset():
    t = torch.arange(100.0)
    args = dict(aff=(0, (0, 0, 0), (1,)), shape=(4,), inner=0, per_program=True)
    full = rows.load_rows(t, Programs((4, 1, 1)), dyn=((torch.tensor([0, 1, 2, 3]), 10, (), True),), **args)
    assert full.shape == (4, 4)
    some = rows.load_rows(t, Programs((4, 1, 1), idx=torch.tensor([1, 3])),
                          dyn=((torch.tensor([5, 7]), 10, (), True),), **args)
    torch.testing.assert_close(some, torch.stack([t[50:54], t[70:74]]))
