"""Repeated `expand_dims` of one value shared before code generation.

A kernel that writes `cos[None, :]` in two expressions (rotary embedding's
`x1 * cos[None, :] - ...` and `x2 * cos[None, :] + ...`) gets one `expand_dims` per
use; on the CPU backend each is an `unsqueeze` (~0.6 us per launch). `share_views`
rewrites a repeat into a same-type cast of the first result, which the code generator
emits as that tensor itself (the alias `identities.py` relies on too).

A repeat is shared only within one block and while neither its operand nor the first
result has been assigned again (a loop-carried value is reassigned in the loop body).
"""

from __future__ import annotations

import dataclasses

from kernelforge import ir

_SHARED_OPS = frozenset({"expand_dims"})


def share_views(kernel: ir.Kernel) -> ir.Kernel:
    """`kernel` with each repeated `expand_dims` a cast of the first; the input is left
    as it is (other backends compile the same IR)."""
    return dataclasses.replace(kernel, body=_share_block(kernel.body))


def _share_block(block: ir.Block) -> ir.Block:
    seen: dict[tuple, ir.Var] = {}
    out: list[ir.Stmt] = []
    for st in block.stmts:
        st = _share_nested(st)
        key = _view_key(st)
        first = seen.get(key) if key is not None else None
        if first is not None and first.type == st.dst.type:
            st = dataclasses.replace(st, op="cast", args=(first,), attrs={})
        _forget(seen, assigned_vars(st))
        if key is not None and first is None:
            seen[key] = st.dst
        out.append(st)
    return ir.Block(out)


def _share_nested(st: ir.Stmt) -> ir.Stmt:
    if isinstance(st, ir.For):
        return dataclasses.replace(st, body=_share_block(st.body))
    if isinstance(st, ir.If):
        return dataclasses.replace(st, then_body=_share_block(st.then_body), else_body=_share_block(st.else_body))
    return st


def _view_key(st: ir.Stmt) -> tuple | None:
    """What makes two view ops equal: op, operands (by identity) and attributes."""
    if not isinstance(st, ir.Assign) or st.op not in _SHARED_OPS or not all(isinstance(a, ir.Var) for a in st.args):
        return None
    return (st.op, tuple(id(a) for a in st.args), repr(sorted(st.attrs.items())))


def _forget(seen: dict[tuple, ir.Var], assigned: set[int]) -> None:
    """Drops the entries whose operands or first result `assigned` (var ids) holds."""
    for key in [k for k, v in seen.items() if id(v) in assigned or any(a in assigned for a in k[1])]:
        del seen[key]


def assigned_vars(st: ir.Stmt) -> set[int]:
    """Ids of the variables `st` assigns, nested blocks included."""
    if isinstance(st, ir.Assign):
        return {id(st.dst)}
    if isinstance(st, ir.For):
        return {id(st.var)} | _block_assigned(st.body)
    if isinstance(st, ir.If):
        return _block_assigned(st.then_body) | _block_assigned(st.else_body)
    return set()


def _block_assigned(block: ir.Block) -> set[int]:
    out: set[int] = set()
    for st in block.stmts:
        out |= assigned_vars(st)
    return out
