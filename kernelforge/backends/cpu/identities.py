"""Identity arithmetic folded away before code generation.

`kv_start = 0` (a disabled sliding window) leaves `context_len - kv_start` and
`kv_start + t` in a kernel; on the CPU backend each is a torch op over a `[G]` tensor
(a few microseconds per launch). `fold_identities` rewrites such an op into a cast of
its operand to its own type, which the code generator emits as the operand itself and
every pass already treats as an alias of it (never a fresh tensor to reuse in place).

An op folds when its result has exactly its operand's type and the constant leaves
every value unchanged bit for bit: `x + 0` and `0 + x` (integers only: `-0.0 + 0.0`
is `+0.0`), `x - 0`, `x * 1`, `1 * x`, `x / 1`, `x // 1` (integers only: a float's is
its floor), `x | 0`, `0 | x`, `x ^ 0`, `0 ^ x`, `x << 0` and `x >> 0`. A work item's
`work // NUM_SEGMENTS` with one segment is such a division.
"""

from __future__ import annotations

import dataclasses

from kernelforge import ir

# op -> (identity constant, whether it may stand on the left, floats allowed)
_IDENTITIES = {"add": (0, True, False), "sub": (0, False, True), "mul": (1, True, True),
               "truediv": (1, False, True), "floordiv": (1, False, False), "or": (0, True, False),
               "xor": (0, True, False), "shl": (0, False, False), "shr": (0, False, False)}


def fold_identities(kernel: ir.Kernel) -> ir.Kernel:
    """`kernel` with every identity op a same-type cast; the input is left as it is
    (other backends compile the same IR)."""
    return dataclasses.replace(kernel, body=_fold_block(kernel.body))


def _fold_block(block: ir.Block) -> ir.Block:
    return ir.Block([_fold_stmt(st) for st in block.stmts])


def _fold_stmt(st: ir.Stmt) -> ir.Stmt:
    if isinstance(st, ir.For):
        return dataclasses.replace(st, body=_fold_block(st.body))
    if isinstance(st, ir.If):
        return dataclasses.replace(st, then_body=_fold_block(st.then_body), else_body=_fold_block(st.else_body))
    if isinstance(st, ir.Assign):
        kept = identity_operand(st)
        if kept is not None:
            return dataclasses.replace(st, op="cast", args=(kept,), attrs={})
    return st


def identity_operand(s: ir.Assign) -> ir.Var | None:
    """The operand `s` returns unchanged, or None when `s` is no identity op."""
    if s.op not in _IDENTITIES or len(s.args) != 2:
        return None
    identity, commutes, floats = _IDENTITIES[s.op]
    dtype = s.dst.type.dtype
    if dtype.is_bool or s.dst.type.is_pointer or (dtype.is_float and not floats):
        return None
    pairs = [(s.args[0], s.args[1])] + ([(s.args[1], s.args[0])] if commutes else [])
    for kept, const in pairs:
        if (isinstance(kept, ir.Var) and isinstance(const, ir.Const) and kept.type == s.dst.type
                and not isinstance(const.value, bool) and const.value == identity):
            return kept
    return None
