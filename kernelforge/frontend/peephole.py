"""Removes the copies the code generator inserts for mutable variables.

Loop-carried and if-merged values are written into their variable with a copy
(`home = cast(t)` of the same type, or `addptr(t, 0)` for pointers). When `t` is a
temporary computed just for that copy, computing it straight into `home` is the same
program with one op fewer per iteration — which is what the CPU backend pays for.
"""

from __future__ import annotations

from collections import Counter

from kernelforge import ir


def _is_copy(stmt: ir.Stmt) -> bool:
    if not isinstance(stmt, ir.Assign):
        return False
    if stmt.op == "cast":
        return isinstance(stmt.args[0], ir.Var) and stmt.args[0].type == stmt.dst.type
    if stmt.op == "addptr":
        src, off = stmt.args
        return (isinstance(src, ir.Var) and src.type == stmt.dst.type and isinstance(off, ir.Const)
                and off.value == 0)
    return False


def _touches(stmts: list[ir.Stmt], var: ir.Var) -> bool:
    """Whether any statement (nested ones included) reads or writes `var`."""
    for stmt in ir.walk(ir.Block(stmts)):
        if any(op is var for op in ir.operands(stmt)):
            return True
        if isinstance(stmt, ir.Assign) and stmt.dst is var:
            return True
        if isinstance(stmt, ir.For) and stmt.var is var:
            return True
    return False


def fold_copies(kernel: ir.Kernel) -> None:
    uses: Counter[int] = Counter()
    defs: Counter[int] = Counter()
    for stmt in ir.walk(kernel.body):
        for op in ir.operands(stmt):
            if isinstance(op, ir.Var):
                uses[id(op)] += 1
        if isinstance(stmt, ir.Assign):
            defs[id(stmt.dst)] += 1
        elif isinstance(stmt, ir.For):
            defs[id(stmt.var)] += 2  # never retarget a loop variable
    params = {id(p.var) for p in kernel.params}
    _fold_block(kernel.body, uses, defs, params)


def _fold_block(block: ir.Block, uses: Counter, defs: Counter, params: set[int]) -> None:
    stmts = block.stmts
    i = 0
    while i < len(stmts):
        stmt = stmts[i]
        if isinstance(stmt, ir.For):
            _fold_block(stmt.body, uses, defs, params)
        elif isinstance(stmt, ir.If):
            _fold_block(stmt.then_body, uses, defs, params)
            _fold_block(stmt.else_body, uses, defs, params)
        elif _is_copy(stmt):
            if stmt.args[0] is stmt.dst:
                del stmts[i]  # `x = x`, left behind when an arm kept a variable's value
                continue
            if _fold_one(stmts, i, uses, defs, params):
                continue  # stmts[i] was removed; the next statement now sits at i
        i += 1


def _fold_one(stmts: list[ir.Stmt], i: int, uses: Counter, defs: Counter, params: set[int]) -> bool:
    """Retargets the definition(s) of a copy's source to the copy's destination.

    Two shapes qualify: the source is defined once, earlier in the same block; or it is
    an if-merged variable, defined once at the top level of each arm of an `If` earlier
    in the block (what `x = ...` on both arms of a branch inside a loop produces).
    """
    copy = stmts[i]
    src, home = copy.args[0], copy.dst
    if id(src) in params or uses[id(src)] != 1 or src.root != home.root:
        return False
    for j in range(i - 1, -1, -1):
        cand = stmts[j]
        if isinstance(cand, ir.Assign) and cand.dst is src:
            if defs[id(src)] != 1 or _touches(stmts[j + 1:i], home):
                return False
            cand.dst = home
            del stmts[i]
            return True
        if not _defines(cand, src):
            continue
        if not isinstance(cand, ir.If):
            return False
        arm_defs = _arm_defs(cand, src, home)
        if arm_defs is None or len(arm_defs) != defs[id(src)] or _touches(stmts[j + 1:i], home):
            return False
        for d in arm_defs:
            d.dst = home
        for arm in (cand.then_body, cand.else_body):
            arm.stmts[:] = [s for s in arm.stmts if not (_is_copy(s) and s.args[0] is s.dst)]
        del stmts[i]
        return True
    return False


def _defines(stmt: ir.Stmt, var: ir.Var) -> bool:
    return any(isinstance(s, ir.Assign) and s.dst is var for s in ir.walk(ir.Block([stmt])))


def _arm_defs(branch: ir.If, src: ir.Var, home: ir.Var) -> list[ir.Assign] | None:
    """The assignments to `src` if each sits at the top level of an arm with nothing after
    it touching `home`; None when the shape does not qualify."""
    found = []
    for arm in (branch.then_body, branch.else_body):
        for k, stmt in enumerate(arm.stmts):
            if isinstance(stmt, ir.Assign) and stmt.dst is src:
                if _touches(arm.stmts[k + 1:], home):
                    return None
                found.append(stmt)
    return found
