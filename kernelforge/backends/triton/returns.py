"""Removes early `return`s from a kernel's IR so it can be written as structured Triton.

Triton cannot `return` from inside a loop, and an early `return` inside an `if` makes
its code generator fall back to unstructured branches (`cf.cond_br`), which the Ascend
adapter (`triton-adapter-opt`) lowers poorly. So every `Return` is rewritten away:

- An `if` (outside any loop) with an arm that always returns: the statements that
  follow the `if` move into the other arm. `if n == 0: return; rest` becomes
  `if n == 0: pass; else: rest`. No extra state, and the common case stays readable.
- Everything else (a `return` inside a loop, or an arm that returns only sometimes):
  an int1 flag, set `True` at the start of the kernel, is cleared by the `return`;
  loop bodies and the statements after the loop or `if` run under `if flag:`.

The result has the same meaning, no `Return` statements, and only structured control
flow, so the emitter never has to write a `return`.
"""

from __future__ import annotations

import dataclasses

from kernelforge import ir

_INT1 = ir.BlockType(ir.DType.int1)


def lower_returns(kernel: ir.Kernel) -> ir.Kernel:
    """A copy of `kernel` whose body contains no `Return` (see the module docstring)."""
    if not _may_return(kernel.body):
        return kernel
    taken = {p.var.name for p in kernel.params} | set(kernel.constexprs)
    taken |= {s.dst.name for s in ir.walk(kernel.body) if isinstance(s, ir.Assign)}
    taken |= {s.var.name for s in ir.walk(kernel.body) if isinstance(s, ir.For)}
    name = "active"
    while name in taken:
        name += "_"
    lowering = _Lowering(ir.Var(name, _INT1))
    stmts = lowering.block(kernel.body.stmts, need_flag=False)
    if lowering.flag_used:
        stmts.insert(0, lowering.set_flag(True, None))
    return dataclasses.replace(kernel, body=ir.Block(stmts))


def _may_return(block: ir.Block) -> bool:
    return any(isinstance(s, ir.Return) for s in ir.walk(block))


def _always_returns(stmts: list[ir.Stmt]) -> bool:
    for s in stmts:
        if isinstance(s, ir.Return):
            return True
        if isinstance(s, ir.If) and _always_returns(s.then_body.stmts) and _always_returns(s.else_body.stmts):
            return True
    return False


class _Lowering:
    def __init__(self, flag: ir.Var) -> None:
        self.flag = flag
        self.flag_used = False

    def set_flag(self, value: bool, loc: ir.Loc | None) -> ir.Assign:
        return ir.Assign(self.flag, "full", (ir.Const(value, _INT1),), loc=loc)

    def guarded(self, stmts: list[ir.Stmt], loc: ir.Loc | None) -> ir.If:
        self.flag_used = True
        return ir.If(self.flag, ir.Block(stmts), ir.Block(), loc=loc)

    def block(self, stmts: list[ir.Stmt], need_flag: bool) -> list[ir.Stmt]:
        """Lowers `stmts`; `need_flag` says whether an enclosing construct reads the flag."""
        out: list[ir.Stmt] = []
        for i, stmt in enumerate(stmts):
            rest = stmts[i + 1:]
            if isinstance(stmt, ir.Return):
                if need_flag:
                    out.append(self.set_flag(False, stmt.loc))
                return out
            if isinstance(stmt, ir.If) and (_may_return(stmt.then_body) or _may_return(stmt.else_body)):
                out.extend(self._if(stmt, rest, need_flag))
                return out
            if isinstance(stmt, ir.For) and _may_return(stmt.body):
                body = self.block(stmt.body.stmts, need_flag=True)
                out.append(dataclasses.replace(stmt, body=ir.Block([self.guarded(body, stmt.loc)])))
                if rest:
                    out.append(self.guarded(self.block(rest, need_flag), stmt.loc))
                return out
            out.append(stmt)
        return out

    def _if(self, stmt: ir.If, rest: list[ir.Stmt], need_flag: bool) -> list[ir.Stmt]:
        then_stmts, else_stmts = stmt.then_body.stmts, stmt.else_body.stmts
        then_always, else_always = _always_returns(then_stmts), _always_returns(else_stmts)
        if (then_always or else_always) and not need_flag:
            # Outside loops: the code after the `if` belongs to the arm that falls through.
            then_new = self.block(then_stmts if then_always else then_stmts + rest, need_flag)
            else_new = self.block(else_stmts if else_always else else_stmts + rest, need_flag)
            return [dataclasses.replace(stmt, then_body=ir.Block(then_new), else_body=ir.Block(else_new))]
        lowered = dataclasses.replace(stmt, then_body=ir.Block(self.block(then_stmts, True)),
                                      else_body=ir.Block(self.block(else_stmts, True)))
        self.flag_used = True
        if not rest:
            return [lowered]
        return [lowered, self.guarded(self.block(rest, need_flag), stmt.loc)]
