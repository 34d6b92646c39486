"""Identity arithmetic (`identities.fold_identities`) is emitted as its operand, the
folded alias is never updated in place, and a dtype-changing cast's fresh result is
reused in place (`fusion.makes_fresh_tensor`)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import kernelforge as kf
import kernelforge.language as kl
from kernelforge import ir
from kernelforge.backends.cpu import CPUBackend
from kernelforge.backends.cpu.codegen import generate
from kernelforge.backends.cpu.identities import identity_operand


pytestmark = pytest.mark.usefixtures("fresh_kernel_cache")


@kf.jit
def shifted_counts(out_ptr, n_ptr, start, OP: kl.constexpr, K: kl.constexpr):
    pid = kl.program_id(0)
    n = kl.load(n_ptr + pid)
    if OP == 0:
        t = n - K
    elif OP == 1:
        t = K + n
    elif OP == 2:
        t = n * K
    else:
        t = n | K
    tiles = t + 7  # would update `t` in place: after a fold `t` is `n` itself
    kl.store(out_ptr + pid, tiles * 2 + n + start)


_SIGNATURE = {"out_ptr": "*i32", "n_ptr": "*i32", "start": "i32"}
_IDENTITY = {0: 0, 1: 0, 2: 1, 3: 0}


@pytest.mark.parametrize("op", [0, 1, 2, 3])
def test_identity_ops_fold_to_their_operand_and_keep_it_intact(op):
    k = _IDENTITY[op]
    src = shifted_counts.source("cpu", **_SIGNATURE, OP=op, K=k)
    assert all(f" {sym} {k}\n" not in src and f"{k} {sym} " not in src for sym in "-+*|")
    n = torch.tensor([5, 0, 17, 3], dtype=torch.int32)
    out = torch.empty(4, dtype=torch.int32)
    shifted_counts[(4,)](out, n, 3, OP=op, K=k)
    assert out.tolist() == [(v + 7) * 2 + v + 3 for v in [5, 0, 17, 3]]
    assert n.tolist() == [5, 0, 17, 3]


@given(op=st.integers(0, 3), k=st.integers(-2, 2), values=st.lists(st.integers(-1000, 1000), min_size=1, max_size=9))
@settings(max_examples=30, deadline=None)
def test_folded_and_unfolded_constants_agree_with_python(op, k, values):
    n = torch.tensor(values, dtype=torch.int32)
    out = torch.empty_like(n)
    shifted_counts[(len(values),)](out, n, -1, OP=op, K=k)
    t = [(v - k, k + v, v * k, v | k)[op] for v in values]
    assert out.tolist() == [(a + 7) * 2 + v - 1 for a, v in zip(t, values)]


@kf.jit
def plus_zero(out_ptr, x_ptr, BLOCK: kl.constexpr):
    offs = kl.arange(0, BLOCK)
    kl.store(out_ptr + offs, kl.load(x_ptr + offs) + 0.0)


def test_float_plus_zero_is_not_folded():
    x = torch.tensor([-0.0, 1.5, -2.0, 0.0])
    out = torch.empty_like(x)
    plus_zero[(1,)](out, x, BLOCK=4)
    assert not torch.signbit(out[0])  # -0.0 + 0.0 is +0.0
    torch.testing.assert_close(out, x + 0.0)


def test_identity_operand_requires_the_result_type():
    i32, i64, f32 = (ir.BlockType(d, ()) for d in (ir.DType.int32, ir.DType.int64, ir.DType.float32))
    x = ir.Var("x", i32)

    def assign(op, a, b, t=i32):
        return ir.Assign(ir.Var("y", t), op, (a, b))

    assert identity_operand(assign("add", ir.Const(0, i32), x)) is x
    assert identity_operand(assign("sub", ir.Const(0, i32), x)) is None  # 0 - x negates
    assert identity_operand(assign("add", x, ir.Const(0, i32), i64)) is None  # widens
    assert identity_operand(assign("mul", x, ir.Const(2, i32))) is None
    assert identity_operand(assign("floordiv", x, ir.Const(1, i32))) is x
    assert identity_operand(assign("floordiv", ir.Const(1, i32), x)) is None  # 1 // x
    y = ir.Var("f", f32)
    assert identity_operand(assign("mul", y, ir.Const(1.0, f32), f32)) is y
    assert identity_operand(assign("add", y, ir.Const(0.0, f32), f32)) is None
    assert identity_operand(assign("truediv", y, ir.Const(1.0, f32), f32)) is y
    assert identity_operand(assign("floordiv", y, ir.Const(1.0, f32), f32)) is None  # floors


@kf.jit
def divided_by_one(out_ptr, x_ptr, n_ptr, BLOCK: kl.constexpr, ONE: kl.constexpr):
    offs = kl.arange(0, BLOCK)
    n = kl.load(n_ptr + offs)
    kl.store(out_ptr + offs, kl.load(x_ptr + offs) / ONE + (n // ONE).to(kl.float32) + n % ONE)


def test_division_by_one_folds_for_ints_and_float_true_division_only():
    x = torch.tensor([-0.0, 2.5, -7.25, float("nan")])
    n = torch.tensor([-7, 0, 9, 3], dtype=torch.int32)
    out = torch.empty(4)
    src = generate(divided_by_one.specialize((out, x, n), {"BLOCK": 4, "ONE": 1}))  # the torch tier
    assert "idiv" not in src and " / " not in src and "imod" in src
    CPUBackend().load(src, "divided-by-one")((1, 1, 1), [out, x, n])
    torch.testing.assert_close(out, x + n.float(), equal_nan=True)
    assert torch.signbit(out[0]) == torch.signbit(x[0] + n[0].float())


@kf.jit
def widened_offsets(out_ptr, slot_ptr, row, BLOCK: kl.constexpr):
    offs = kl.arange(0, BLOCK)
    slot = kl.load(slot_ptr + offs)
    kl.store(out_ptr + offs, slot.to(kl.int64) * row + 1)


def test_a_widening_cast_result_is_reused_in_place():
    src = widened_offsets.source("cpu", out_ptr="*i64", slot_ptr="*i32", row="i32", BLOCK=8)
    line = next(ln for ln in src.splitlines() if ".to(torch.int64)" in ln)
    widened = line.split("=")[0].strip()
    assert f"out={widened})" in src
    slot = torch.arange(8, dtype=torch.int32) * 1000
    out = torch.empty(8, dtype=torch.int64)
    widened_offsets[(1,)](out, slot, 3_000_000, BLOCK=8)
    assert out.tolist() == [v * 3_000_000 + 1 for v in range(0, 8000, 1000)]
    assert slot.tolist() == list(range(0, 8000, 1000))
