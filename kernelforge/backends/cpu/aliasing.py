"""Pointer arguments that may be one tensor: a load's view copies only when they are.

A load that stays a view of its argument reads memory when its value is used, not when
the load runs. `trim.py` and `memory.py` make sure no write through the load's own
argument comes in between; but a caller may pass one tensor as two arguments (an
in-place `out` that is `x`), and a write through the other one would then change a
value already loaded (Triton: a loaded value is a value). `exposed_roots` lists, per
load, the other arguments written while its view may still be read; the generated
launch reads each such argument's storage pointer once and compares, and the load
copies only when one is shared. Calls with distinct tensors pay those reads (about
0.15 us each at 1 thread), never a copy.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

from kernelforge import ir
from kernelforge.backends.cpu.analysis import operand_names
from kernelforge.backends.cpu.fusion import may_alias, nested_blocks


def exposed_roots(kernel: ir.Kernel, deferred: Mapping[int, ir.Store]) -> dict[int, frozenset[str]]:
    """`id(load)` -> the other pointer arguments written while the load's view may be read.

    `deferred` maps the `id()` of an assignment a fused store computes to that store: its
    reads run at the store."""
    written = _written(kernel.body)
    reassigned = _reassigned(kernel.body)
    out: dict[int, frozenset[str]] = {}
    for block in nested_blocks(kernel.body):
        position = {id(st): i for i, st in enumerate(block.stmts)}
        for i, st in enumerate(block.stmts):
            if isinstance(st, ir.Assign) and st.op == "load":
                roots = _window_writes(block.stmts, i, position, deferred, reassigned, written)
                roots.discard(st.args[0].root)
                if roots:
                    out[id(st)] = frozenset(roots)
    return out


def _window_writes(stmts: list[ir.Stmt], pos: int, position: Mapping[int, int], deferred: Mapping[int, ir.Store],
                   reassigned: set[str], written: set[str]) -> set[str]:
    """Arguments written from the load at `pos` to the last read of its value or of a view of
    it; every written argument when a view escapes the block (a carried or merged name)."""
    aliases = {stmts[pos].dst.name}
    if aliases & reassigned:
        return set(written)
    last = pos
    for i, st in enumerate(stmts[pos + 1:], pos + 1):
        for inner in ir.walk(ir.Block([st])):
            if not set(operand_names(inner)) & aliases:
                continue
            last = i
            store = deferred.get(id(inner))
            if store is not None:
                last = max(last, position.get(id(store), len(stmts) - 1))
            if isinstance(inner, ir.Assign) and may_alias(inner):
                if inner.dst.name in reassigned:
                    return set(written)
                aliases.add(inner.dst.name)
    return _written(ir.Block(stmts[pos + 1:last + 1]))


def _written(block: ir.Block) -> set[str]:
    """Pointer arguments stored to (or atomically updated) in `block`."""
    out = {st.ptr.root for st in ir.walk(block) if isinstance(st, ir.Store)}
    return out | {st.args[0].root for st in ir.walk(block) if isinstance(st, ir.Assign) and st.op == "atomic_add"}


def _reassigned(block: ir.Block) -> set[str]:
    """Names assigned more than once: carried around a loop or merged after an `if`."""
    counts = Counter(st.dst.name for st in ir.walk(block) if isinstance(st, ir.Assign))
    return {name for name, n in counts.items() if n > 1}
