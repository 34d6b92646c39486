"""Store fusion and in-place accumulators: fewer temporaries and copies.

Store fusion computes a stored value straight into the destination.

`y = a / b; store(out + offs, y)` would allocate `y` and copy it into `out`. When the
store is affine and, at run time, writes every lane of one in-bounds view
(`views.store_target`), the op runs with `out=` that view instead: no temporary, no
copy. That halves the memory traffic of a streaming kernel such as a vector add.

A pair qualifies when the value is a single-use temporary defined earlier in the same
block by an op that has an `out=` form, nothing between them touches memory or
reassigns the op's operands, and the value is per-program (its grid axis lines up with
the view's).

An accumulator (`acc = kl.dot(a, b, acc)` in a loop) is updated in place by
`baddbmm_` when nothing else can hold its tensor: it is assigned only by its
initialisation (which is then copied once, so no constant or argument is shared) and
by copies of dot results that feed it, and it is not merged by predication.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kernelforge import ir
from kernelforge.backends.cpu.analysis import Facts, operand_names, references

if TYPE_CHECKING:
    from kernelforge.backends.cpu.codegen import CodeGen

_BINARY = {"add": "torch.add", "sub": "torch.sub", "mul": "torch.mul", "truediv": "torch.div",
           "minimum": "torch.minimum", "maximum": "torch.maximum"}
_UNARY = {"exp": "torch.exp", "exp2": "torch.exp2", "log": "torch.log", "log2": "torch.log2",
          "sqrt": "torch.sqrt", "rsqrt": "torch.rsqrt", "sigmoid": "torch.sigmoid", "cos": "torch.cos",
          "sin": "torch.sin", "abs": "torch.abs", "neg": "torch.neg"}


def find_pairs(kernel: ir.Kernel, facts: Facts, accesses: dict) -> dict[int, ir.Assign]:
    """`id(store)` -> the assignment whose result it stores, for every fusable pair."""
    refs = references(kernel.body)
    pairs: dict[int, ir.Assign] = {}

    def visit(block: ir.Block) -> None:
        for pos, st in enumerate(block.stmts):
            if isinstance(st, ir.For):
                visit(st.body)
            elif isinstance(st, ir.If):
                visit(st.then_body)
                visit(st.else_body)
            elif isinstance(st, ir.Store) and id(st) in accesses and isinstance(st.value, ir.Var):
                d = _definition(block.stmts[:pos], st.value, refs, facts)
                if d is not None and accesses[id(st)].ptr.gridded:
                    pairs[id(st)] = d

    visit(kernel.body)
    return pairs


def _definition(before: list[ir.Stmt], value: ir.Var, refs, facts: Facts) -> ir.Assign | None:
    # single use (the store) and single assignment: references == 2
    if refs[value.name] != 2 or value.name not in facts.varying:
        return None
    touched: set[str] = set()
    for st in reversed(before):
        if isinstance(st, ir.Assign) and st.dst.name == value.name:
            ok = _has_out_form(st, facts) and not touched & set(operand_names(st))
            return st if ok else None
        if not isinstance(st, ir.Assign) or st.op in ("load", "atomic_add"):
            return None
        touched.add(st.dst.name)
    return None


def _has_out_form(s: ir.Assign, facts: Facts) -> bool:
    first = s.args[0] if s.args else None
    if first is None or not isinstance(first, ir.Var) or first.type.shape != s.dst.type.shape:
        return False
    if s.op in _BINARY:
        return not (s.op in ("minimum", "maximum") and facts.is_py(s.args[1]))
    if s.op in _UNARY:
        return True
    if s.op == "cast":
        return first.type.dtype != s.dst.type.dtype
    return False


def out_call(gen: "CodeGen", s: ir.Assign, target: str) -> str:
    """The statement computing `s` into `target`."""
    rank = len(s.dst.type.shape)
    if s.op == "cast":
        return f"{target}.copy_({gen.val(s.args[0], rank)})"
    fn = _BINARY.get(s.op) or _UNARY[s.op]
    args = ", ".join(gen.val(a, rank) for a in s.args)
    return f"{fn}({args}, out={target})"


# Ops whose result may share its operand's tensor (a same-dtype cast is a copy by name only).
_VIEWS = {"cast", "broadcast_to", "expand_dims", "reshape", "trans"}


def find_accumulators(kernel: ir.Kernel, facts: Facts) -> tuple[set[str], set[int], set[int]]:
    """Variables that may be accumulated in place, `id()`s of the dots that may do it, and
    of the initialisations that must copy."""
    merged = {v for names in facts.merges.values() for v in names}
    refs = references(kernel.body)
    candidates: dict[str, list[int]] = {}
    rejected: set[str] = set()
    inits: dict[str, int] = {}
    dot_ids: set[int] = set()

    def visit(block: ir.Block) -> None:
        stmts = block.stmts
        for pos, st in enumerate(stmts):
            if isinstance(st, ir.For):
                visit(st.body)
            elif isinstance(st, ir.If):
                visit(st.then_body)
                visit(st.else_body)
            elif isinstance(st, ir.Assign) and st.op == "dot" and len(st.args) == 3:
                acc = st.args[2]
                nxt = stmts[pos + 1] if pos + 1 < len(stmts) else None
                if isinstance(acc, ir.Var) and st.dst.name == acc.name:  # acc = dot(a, b, acc)
                    candidates.setdefault(acc.name, []).append(id(st))
                    dot_ids.add(id(st))
                elif (isinstance(acc, ir.Var) and isinstance(nxt, ir.Assign) and nxt.op == "cast"
                        and nxt.dst.name == acc.name and isinstance(nxt.args[0], ir.Var)
                        and nxt.args[0].name == st.dst.name and refs[st.dst.name] == 2
                        and acc.type == st.dst.type):
                    candidates.setdefault(acc.name, []).extend((id(st), id(nxt)))
                    dot_ids.add(id(st))

    visit(kernel.body)
    for st in ir.walk(kernel.body):
        if not isinstance(st, ir.Assign):
            continue
        if st.dst.name in candidates and id(st) not in candidates[st.dst.name]:
            if st.dst.name in inits:
                rejected.add(st.dst.name)
            inits[st.dst.name] = id(st)
        if st.op in _VIEWS and isinstance(st.args[0], ir.Var) and (
                st.op != "cast" or st.args[0].type.dtype == st.dst.type.dtype) and id(st) not in {
                i for ids in candidates.values() for i in ids}:
            rejected.add(st.args[0].name)  # another variable may share the tensor
    names = {n for n in candidates if n not in rejected and n not in merged and n in inits}
    dots = {i for n in names for i in candidates[n] if i in dot_ids}
    return names, dots, {inits[n] for n in names}


# Ops whose result is a fresh tensor of its own (never a view of an operand or argument).
_FRESH = set(_BINARY) | set(_UNARY) | {"where", "sum", "max", "min", "argmax", "dot"}


def find_inplace(kernel: ir.Kernel, facts: Facts) -> set[int]:
    """`id()`s of elementwise ops that may overwrite their first operand.

    The operand must be a temporary read only here, defined by an op that returns a
    fresh tensor, in the same block (so neither runs more often than the other), with
    the result's dtype and per-program layout: reusing its buffer then saves an
    allocation, which for large blocks is mostly page faults.
    """
    refs = references(kernel.body)
    out: set[int] = set()

    def visit(block: ir.Block) -> None:
        defs: dict[str, ir.Assign] = {}
        for st in block.stmts:
            if isinstance(st, ir.For):
                visit(st.body)
            elif isinstance(st, ir.If):
                visit(st.then_body)
                visit(st.else_body)
            elif isinstance(st, ir.Assign):
                a = st.args[0] if st.args else None
                d = defs.get(a.name) if isinstance(a, ir.Var) else None
                if (d is not None and _has_out_form(st, facts) and st.op != "cast" and refs[a.name] == 2
                        and a.type == st.dst.type and facts.is_varying(a) == facts.is_varying(st.dst)
                        and d.op in _FRESH and (facts.is_varying(d.dst) == any(facts.is_varying(x) for x in d.args)
                                                or d.op == "dot")):
                    out.add(id(st))
                defs[st.dst.name] = st

    visit(kernel.body)
    return out


def find_scratch(kernel: ir.Kernel, facts: Facts, inplace: set[int]) -> set[int]:
    """`id()`s of ops outside loops whose single-use result may live in a reused buffer.

    A fresh multi-megabyte temporary costs a page fault per 4 KiB on first touch, more
    than the arithmetic. An op that runs once per launch (not inside a loop), whose result
    is read once by an op that makes a new tensor of it (not a view), can write into a
    buffer kept from the previous launch (`rt.scratch`): by then that value is dead.
    """
    refs = references(kernel.body)
    readers: dict[str, str] = {}  # variable -> the op reading it ("store" for stores)
    for st in ir.walk(kernel.body):
        if isinstance(st, (ir.Assign, ir.Store)):
            for n in operand_names(st):
                readers[n] = st.op if isinstance(st, ir.Assign) else "store"
    out: set[int] = set()

    def visit(block: ir.Block) -> None:
        for st in block.stmts:
            if isinstance(st, ir.If):
                visit(st.then_body)
                visit(st.else_body)
            elif (isinstance(st, ir.Assign) and id(st) not in inplace and _has_out_form(st, facts)
                  and st.op != "cast" and refs[st.dst.name] == 2 and st.dst.name in readers
                  and readers[st.dst.name] not in _VIEWS and st.dst.type.shape
                  and facts.is_varying(st.dst) == any(facts.is_varying(a) for a in st.args)):
                out.add(id(st))

    visit(kernel.body)
    return out


def find_fill_wheres(kernel: ir.Kernel, facts: Facts, refs: dict[str, int], private: set[int]) -> set[int]:
    """`id()`s of `where(cond, x, scalar)` that may fill `x` in place (`rt.keep_where`).

    `x` must be a temporary read only here, made in the same block by an op returning a
    fresh tensor (or a load in `private`, whose result is a private copy), with the
    result's type and per-program layout. Masking a loaded tile (`where(valid[:, None],
    load(...), 0.0)`) then costs nothing when every lane is valid, and a `masked_fill_`
    by the un-broadcast condition otherwise, instead of a full-size `where`.
    """
    out: set[int] = set()

    def visit(block: ir.Block) -> None:
        defs: dict[str, ir.Assign] = {}
        for st in block.stmts:
            if isinstance(st, ir.For):
                visit(st.body)
            elif isinstance(st, ir.If):
                visit(st.then_body)
                visit(st.else_body)
            elif isinstance(st, ir.Assign):
                if st.op == "where" and isinstance(st.args[2], ir.Const) and isinstance(st.args[1], ir.Var):
                    c, x = st.args[0], st.args[1]
                    d = defs.get(x.name)
                    if (d is not None and not facts.is_py(c) and refs[x.name] == 2 and x.type == st.dst.type
                            and facts.is_varying(x) == facts.is_varying(st.dst)
                            and (id(d) in private or d.op in _FRESH and d.op != "dot"
                                 and facts.is_varying(d.dst) == any(facts.is_varying(a) for a in d.args))):
                        out.add(id(st))
                defs[st.dst.name] = st

    visit(kernel.body)
    return out
