"""Repeated `expand_dims` of one value (`shared_views.share_views`) is emitted once, and
never shared across a reassignment of its operand or across blocks."""

from __future__ import annotations

import pytest
import torch

import kernelforge as kf
import kernelforge.language as kl
from kernelforge import ir
from kernelforge.backends.cpu import shared_views
from kernelforge.backends.cpu.shared_views import share_views


@pytest.fixture(autouse=True)
def _fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KF_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("KF_SANITIZE", raising=False)
    monkeypatch.delenv("KF_BACKEND", raising=False)


@kf.jit
def rotate_pairs(x_ptr, cs_ptr, out_ptr, ROWS: kl.constexpr, COLS: kl.constexpr):
    pid = kl.program_id(0)
    cols = kl.arange(0, COLS)
    rows = kl.arange(0, ROWS)
    c = kl.load(cs_ptr + pid * 2 * COLS + cols)
    s = kl.load(cs_ptr + pid * 2 * COLS + COLS + cols)
    base = x_ptr + pid * ROWS * 2 * COLS + rows[:, None] * 2 * COLS + cols[None, :]
    x1 = kl.load(base)
    x2 = kl.load(base + COLS)
    out = out_ptr + pid * ROWS * 2 * COLS + rows[:, None] * 2 * COLS + cols[None, :]
    kl.store(out, x1 * c[None, :] - x2 * s[None, :])
    kl.store(out + COLS, x2 * c[None, :] + x1 * s[None, :])


@kf.jit
def doubled_in_a_loop(x_ptr, out_ptr, steps, COLS: kl.constexpr):
    pid = kl.program_id(0)
    cols = kl.arange(0, COLS)
    acc = kl.load(x_ptr + pid * COLS + cols)
    before = acc[None, :] + 0.5
    for _ in range(0, steps):
        acc = acc * 2.0  # the loop assigns the same variable `acc` again
    after = acc[None, :] + 0.25  # so this is not `before`'s expand_dims
    out = out_ptr + pid * 2 * COLS + kl.arange(0, 1)[:, None] * COLS + cols[None, :]
    kl.store(out, before)
    kl.store(out + COLS, after)


def test_a_repeated_expand_dims_is_emitted_once_and_computes_the_same():
    G, R, C = 3, 4, 8
    x = torch.randn(G, R, 2 * C)
    cs = torch.randn(G, 2, C)
    out = torch.empty_like(x)
    rotate_pairs[(G,)](x, cs, out, ROWS=R, COLS=C)
    c, s = cs[:, None, 0], cs[:, None, 1]
    x1, x2 = x[..., :C], x[..., C:]
    torch.testing.assert_close(out, torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], dim=-1))
    source = rotate_pairs.source("cpu", ROWS=R, COLS=C)
    assert source.count("c.unsqueeze(") == 1 and source.count("s.unsqueeze(") == 1


@pytest.mark.parametrize("steps", [0, 3])
def test_an_operand_a_loop_assigns_again_gets_its_own_expand_dims(steps):
    G, C = 2, 8
    x = torch.randn(G, C)
    out = torch.empty(G, 2, C)
    doubled_in_a_loop[(G,)](x, out, steps, COLS=C)
    torch.testing.assert_close(out, torch.stack([x + 0.5, x * 2.0 ** steps + 0.25], dim=1))


def test_share_views_rewrites_only_repeats_and_leaves_its_input_alone():
    kernel = rotate_pairs.specialize({"x_ptr": "*fp32", "cs_ptr": "*fp32", "out_ptr": "*fp32"},
                                     {"ROWS": 4, "COLS": 8})
    ops_before = [getattr(st, "op", None) for st in kernel.body.stmts]
    shared = share_views(kernel)
    assert [getattr(st, "op", None) for st in kernel.body.stmts] == ops_before
    ops_after = [getattr(st, "op", None) for st in shared.body.stmts]
    # cols[None, :] twice, c[None, :] twice, s[None, :] twice, rows[:, None] twice
    assert ops_before.count("expand_dims") - ops_after.count("expand_dims") == 4
    assert ops_after.count("cast") - ops_before.count("cast") == 4


def _expand(dst: ir.Var, src: ir.Var) -> ir.Assign:
    return ir.Assign(dst, "expand_dims", (src,), {"axis": 0})


@pytest.mark.parametrize("reassign", ["operand", "first result", "in a nested loop"])
def test_a_repeat_after_its_operand_or_first_result_is_assigned_again_is_kept(reassign):
    """The frontend gives merged values fresh names, but a loop body assigns its carried
    variables again: a repeat after such an assignment reads a different value."""
    row, wide = ir.BlockType(ir.DType.float32, (8,)), ir.BlockType(ir.DType.float32, (1, 8))
    a, first, again = ir.Var("a", row), ir.Var("t1", wide), ir.Var("t2", wide)
    if reassign == "operand":
        between: ir.Stmt = ir.Assign(a, "mul", (a, ir.Const(2.0, ir.BlockType(ir.DType.float32))))
    elif reassign == "first result":
        between = ir.Assign(first, "add", (first, ir.Const(1.0, ir.BlockType(ir.DType.float32))))
    else:
        i = ir.Var("i", ir.BlockType(ir.DType.int32))
        one = ir.Const(1, ir.BlockType(ir.DType.int32))
        between = ir.For(i, ir.Const(0, one.type), one, one,
                         ir.Block([ir.Assign(a, "mul", (a, ir.Const(2.0, ir.BlockType(ir.DType.float32))))]))
    block = shared_views._share_block(ir.Block([_expand(first, a), between, _expand(again, a)]))
    assert block.stmts[2].op == "expand_dims"
    shared = shared_views._share_block(ir.Block([_expand(first, a), _expand(again, a)]))
    assert shared.stmts[1].op == "cast" and shared.stmts[1].args == (first,)
