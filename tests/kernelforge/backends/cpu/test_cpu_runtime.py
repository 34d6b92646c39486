"""Run-time helpers of the CPU backend's generated code (`kernelforge.backends.cpu.runtime`)."""

from __future__ import annotations

import pytest
import torch

import kernelforge as kf
import kernelforge.language as kl
from kernelforge.backends.cpu import runtime as rt


@pytest.mark.parametrize("mask", [
    torch.ones(0, dtype=torch.bool),
    torch.ones(5, dtype=torch.bool),
    torch.tensor([True, False, True]),
    torch.ones(3, 1, dtype=torch.bool).expand(3, 4),
    torch.tensor([[True, True], [False, True]]).t(),
    torch.rand(7, 9, 33) > 0.01,
])
def test_all_true_agrees_with_all(mask):
    assert rt.all_true(mask) == bool(mask.all())


@pytest.mark.parametrize("lanes", [1, rt._SMALL_MASK - 1, rt._SMALL_MASK, rt._SMALL_MASK + 1, 5000])
@pytest.mark.parametrize("false_at", [None, 0, -1])
def test_all_true_on_either_side_of_the_small_mask_bound(lanes, false_at):
    mask = torch.ones(lanes, dtype=torch.bool)
    if false_at is not None:
        mask[false_at] = False
    assert rt.all_true(mask) == (false_at is None)
    assert rt.all_true(mask[:, None].expand(lanes, 3)) == (false_at is None)
    assert rt.all_true(mask.view(1, -1).t()) == (false_at is None)


def test_keep_where_leaves_an_all_true_tensor_untouched_and_fills_the_rest():
    x = torch.arange(6.0).view(2, 3)
    assert rt.keep_where(x, torch.ones(2, 1, dtype=torch.bool).expand(2, 3), -1.0) is x
    cond = torch.tensor([[True], [False]]).expand(2, 3)
    torch.testing.assert_close(rt.keep_where(x.clone(), cond, float("-inf")),
                               torch.tensor([[0.0, 1.0, 2.0], [float("-inf")] * 3]))


@kf.jit
def ragged_sum_kernel(x_ptr, lens_ptr, out_ptr, BLOCK: kl.constexpr):
    pid = kl.program_id(0)
    n = kl.load(lens_ptr + pid)
    acc = kl.zeros([BLOCK], dtype=kl.float32)
    for start in range(0, n, BLOCK):
        offs = start + kl.arange(0, BLOCK)
        acc += kl.load(x_ptr + pid * 256 + offs, mask=offs < n, other=0.0)
    kl.store(out_ptr + pid, kl.sum(acc, axis=0))


@pytest.mark.parametrize("long_programs", [1, 20, 60])
def test_divergent_loop_with_a_compacted_tail_matches_python(long_programs):
    """64 programs, most done after one step: the tail runs compacted (or not), same result."""
    lens = torch.full((64,), 5, dtype=torch.int32)
    lens[torch.randperm(64)[:long_programs]] = 250
    x = torch.randn(64, 256)
    out = torch.empty(64)
    with kf.backend("cpu"):
        ragged_sum_kernel[(64,)](x, lens, out, BLOCK=16)
    want = torch.stack([x[i, :n].sum() for i, n in enumerate(lens.tolist())])
    torch.testing.assert_close(out, want, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("step", [1, 3, 16, -1, -5])
def test_trip_counts_with_a_constant_step_match_range(step):
    starts = torch.tensor([0, 5, 17, -4, 9, 0], dtype=torch.int32)
    stops = torch.tensor([0, 40, 3, 11, 9, -7], dtype=torch.int32)
    want = [len(range(a, b, step)) for a, b in zip(starts.tolist(), stops.tolist())]
    assert rt.trip_counts(starts, stops, step).tolist() == want
    assert rt.trip_counts(starts, stops, torch.tensor(step)).tolist() == want
    assert rt.trip_counts(5, stops, step).tolist() == [len(range(5, b, step)) for b in stops.tolist()]


@pytest.mark.parametrize("offset", [-1, 16])
def test_scatter_outside_the_tensor_raises_instead_of_wrapping(offset):
    t = torch.zeros(16)
    with pytest.raises(IndexError):
        rt.scatter(t, torch.tensor([0, offset]), torch.tensor([1.0, 2.0]))
    with pytest.raises(IndexError):
        rt.scatter(t, torch.tensor([offset, 3]), 5.0, mask=torch.tensor([True, False]))
    assert t[-1] == 0 and t[0] in (0, 1)


@kf.jit
def _store_at(out_ptr, idx_ptr, BLOCK: kl.constexpr):
    offs = kl.arange(0, BLOCK)
    kl.store(out_ptr + kl.load(idx_ptr + offs), offs.to(kl.float32))


def test_a_store_at_a_negative_offset_is_a_kernel_fault():
    out = torch.zeros(8)
    with pytest.raises(kf.KernelFault, match="out-of-bounds"):
        _store_at[(1,)](out, torch.tensor([0, 1, 2, -1], dtype=torch.int32), BLOCK=4)
    assert out[-1] == 0, "nothing was written at the end of the tensor"


@kf.jit
def _load_at(out_ptr, x_ptr, idx_ptr):
    pid = kl.program_id(0)
    kl.store(out_ptr + pid, kl.load(x_ptr + kl.load(idx_ptr + pid)))


def test_a_scalar_load_at_a_negative_offset_is_a_kernel_fault():
    """Advanced indexing would read x[-1] (the tensor's end) instead of faulting."""
    out = torch.zeros(3)
    x = torch.arange(8.0)
    _load_at[(3,)](out, x, torch.tensor([5, 0, 7], dtype=torch.int32))
    assert out.tolist() == [5.0, 0.0, 7.0]
    with pytest.raises(kf.KernelFault, match="out-of-bounds"):
        _load_at[(3,)](out, x, torch.tensor([5, -1, 7], dtype=torch.int32))


def test_take_faults_outside_the_tensor_for_tensor_and_int_offsets():
    t = torch.arange(4.0)
    assert rt.take(t, torch.tensor([[3, 0]], dtype=torch.int32)).tolist() == [[3.0, 0.0]]
    assert rt.take(t, 2).item() == 2.0
    for offs in (torch.tensor([0, -1]), torch.tensor([4]), -1, 4):
        with pytest.raises(IndexError):
            rt.take(t, offs)


def test_program_ids_of_a_grid_are_made_once_and_shared_by_later_launches():
    first, again = rt.Programs((3, 2, 2)), rt.Programs((3, 2, 2))
    assert again.pid(1) is first.pid(1) and again.pid_index(2) is first.pid_index(2)
    flat = torch.arange(12)
    assert first.pid(0).tolist() == (flat % 3).tolist()
    assert first.pid(1).tolist() == (flat // 3 % 2).tolist()
    assert first.pid_index(2).tolist() == (flat // 6).tolist()
    assert rt.Programs((3, 2, 3)).pid(1) is not first.pid(1)


def test_a_subset_of_programs_computes_its_own_ids():
    whole = rt.Programs((4, 2, 1))
    some = whole.subset(torch.tensor([1, 6]))
    assert some.pid(0).tolist() == [1, 2] and some.pid(1).tolist() == [0, 1]
    assert whole.pid(0).tolist() == [0, 1, 2, 3, 0, 1, 2, 3]  # the shared ids are untouched
    assert rt.Programs((4, 2, 1), idx=torch.tensor([1, 6])).cached is not some.cached


def test_the_cache_of_derived_tensors_is_bounded():
    P = rt.Programs((5, 7, 1))
    for key in range(rt._GRID_LIMIT + 3):
        P.remember(("test", key), torch.zeros(1))
    assert len(P.cached) <= rt._GRID_LIMIT
    assert P.pid(1).tolist() == [i // 5 for i in range(35)]
