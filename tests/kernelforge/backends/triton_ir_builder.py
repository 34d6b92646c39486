"""A tiny hand-written IR builder for backend tests that must not depend on the frontend."""

from __future__ import annotations

import contextlib
from typing import Iterator

from kernelforge import ir

D = ir.DType


def t(dtype: ir.DType, *shape: int, ptr: bool = False) -> ir.BlockType:
    return ir.BlockType(dtype, tuple(shape), ptr)


def c(value: object, dtype: ir.DType = D.int32) -> ir.Const:
    return ir.Const(value, t(dtype))


class KernelBuilder:
    """`kb.op("add", a, b)` appends `%tN = add(a, b)` with the result type inferred or given."""

    def __init__(self, name: str, **constexprs: object) -> None:
        self.kernel = ir.Kernel(name, [], dict(constexprs), ir.Block(), file="test.py", line=1)
        self._blocks = [self.kernel.body]
        self._n = 0
        self.line = 1

    def param(self, name: str, dtype: ir.DType, ptr: bool = False) -> ir.Var:
        var = ir.Var(name, t(dtype, ptr=ptr), name if ptr else None)
        self.kernel.params.append(ir.Param(name, var))
        return var

    def _loc(self) -> ir.Loc:
        self.line += 1
        return ir.Loc("test.py", self.line, 0, f"line {self.line}")

    def op(self, op: str, *args: ir.Operand, type: ir.BlockType | None = None, name: str | None = None,
           **attrs: object) -> ir.Var:
        if type is None:
            type = next(a.type for a in args if isinstance(a, ir.Var))
            if op in ("lt", "le", "gt", "ge", "eq", "ne"):
                type = type.with_dtype(D.int1)
        root = next((a.root for a in args if isinstance(a, ir.Var) and a.root), None)
        if op == "load":
            type = ir.BlockType(args[0].type.dtype, args[0].type.shape)
            root = None
        self._n += 1
        dst = ir.Var(name or f"t{self._n}", type, root if type.is_pointer else None)
        self._blocks[-1].stmts.append(ir.Assign(dst, op, tuple(args), dict(attrs), self._loc()))
        return dst

    def assign(self, dst: ir.Var, op: str, *args: ir.Operand, **attrs: object) -> ir.Var:
        """Re-assigns the mutable variable `dst`."""
        self._blocks[-1].stmts.append(ir.Assign(dst, op, tuple(args), dict(attrs), self._loc()))
        return dst

    def store(self, ptr: ir.Operand, value: ir.Operand, mask: ir.Operand | None = None) -> None:
        self._blocks[-1].stmts.append(ir.Store(ptr, value, mask, self._loc()))

    def ret(self) -> None:
        self._blocks[-1].stmts.append(ir.Return(self._loc()))

    @contextlib.contextmanager
    def for_(self, name: str, start: ir.Operand, stop: ir.Operand, step: ir.Operand = c(1)) -> Iterator[ir.Var]:
        var = ir.Var(name, t(D.int32))
        body = ir.Block()
        self._blocks[-1].stmts.append(ir.For(var, start, stop, step, body, self._loc()))
        self._blocks.append(body)
        try:
            yield var
        finally:
            self._blocks.pop()

    @contextlib.contextmanager
    def if_(self, cond: ir.Operand) -> Iterator[ir.If]:
        stmt = ir.If(cond, ir.Block(), ir.Block(), self._loc())
        self._blocks[-1].stmts.append(stmt)
        self._blocks.append(stmt.then_body)
        try:
            yield stmt
        finally:
            self._blocks.pop()

    @contextlib.contextmanager
    def else_(self, stmt: ir.If) -> Iterator[None]:
        self._blocks.append(stmt.else_body)
        try:
            yield
        finally:
            self._blocks.pop()

    def build(self) -> ir.Kernel:
        ir.verify(self.kernel)
        return self.kernel
