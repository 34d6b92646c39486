"""Appends IR statements to the block being filled, with fresh names and locations.

The code generator and the semantic rules share one `Builder` per kernel, inlined jit
functions included, so names never collide and every statement gets the `ir.Loc` of
the source line being compiled.
"""

from __future__ import annotations

from typing import Any

from kernelforge import ir
from kernelforge.frontend.values import Tensor


class Builder:
    def __init__(self) -> None:
        self.names = ir.NameSupply()
        self.loc: ir.Loc | None = None
        self._root = ir.Block()
        self._blocks: list[ir.Block] = [self._root]
        self._temps: set[int] = set()

    @property
    def body(self) -> ir.Block:
        """The kernel's top-level block (insertion may have moved into a nested one)."""
        return self._root

    @property
    def current(self) -> ir.Block:
        return self._blocks[-1]

    def push(self, block: ir.Block) -> None:
        """Makes `block` the insertion point until the matching `pop`."""
        self._blocks.append(block)

    def pop(self) -> ir.Block:
        """Leaves the innermost insertion point; returns the block control fell through to."""
        return self._blocks.pop()

    def move_to(self, block: ir.Block) -> None:
        """Continues the current region in `block` (the live arm of an `if` whose other
        arm returned: the rest of the region runs only there)."""
        self._blocks[-1] = block

    def emit(self, stmt: ir.Stmt) -> None:
        self.current.stmts.append(stmt)

    def new_var(self, type: ir.BlockType, hint: str = "t", root: str | None = None) -> ir.Var:
        return ir.Var(self.names.fresh(hint), type, root)

    def op(self, op: str, args: tuple[ir.Operand | Tensor, ...], type: ir.BlockType,
           root: str | None = None, **attrs: Any) -> Tensor:
        """Emits `dst = op(*args, **attrs)` into a fresh temporary and returns it."""
        operands = tuple(a.handle if isinstance(a, Tensor) else a for a in args)
        dst = self.new_var(type, "t", root)
        self._temps.add(id(dst))
        self.emit(ir.Assign(dst, op, operands, dict(attrs), self.loc))
        return Tensor(dst)

    def name_temp(self, value: Tensor, name: str) -> None:
        """Gives a compiler temporary the user's variable name, once, for readable output."""
        var = value.handle
        if isinstance(var, ir.Var) and id(var) in self._temps:
            self._temps.discard(id(var))
            var.name = self.names.fresh(name)
