"""Trimmed lanes: blocks computed on the valid lanes of a `col < n` mask only.

A load masked by `cols < n` with n below the block size (a 576-wide row in a 1024-lane
block) would be padded to the block with `other`, every op would run on all lanes and
the store would cut the result back to n lanes. When nothing observes the padded lanes
the generated code skips them: the load returns the valid box (`views.load(trim=True)`),
the ops run on it and the store writes it as it is. That saves the padding copy and up
to half the arithmetic of a block.

A value is trimmed, with a *class* (the block shape and the mask's conditions), when it is

- a load through a strided view whose mask form is made only of conditions that each
  bound one block axis from above (`base + c * index < 0`, c > 0, no program id), and
  whose `other` is absent or a constant;
- or an elementwise op whose block operands are trimmed values of one class, or
  broadcasts of size 1 along that class's trimmed axes, and whose other operands are
  scalars;

and when every read of it, all in the block that assigns it (once, in the whole kernel), is

- an operand of a trimmed op;
- the stored value of a store through a strided view, or a row store whose conditions
  bound its run axes, with the same class;
- or the operand of a `sum` over all its trimmed axes whose padded lanes would hold 0
  (`other=0.0` followed through the ops that keep a zero exactly zero; a max would be
  exact for `other=-inf` too, but on an empty box torch's `amax` raises where the
  padded block gives its identity);

and every read comes after the assignment (a read before it would see the previous
loop iteration's box).

Equal conditions mean equal boxes only while their atoms keep their values: no
condition atom may be assigned in the block. A broadcast's trimmed axes stay size 1
(`expand(-1, ...)`) so that torch broadcasts it against the box.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from kernelforge import ir
from kernelforge.backends.cpu.affine import Access, Form
from kernelforge.backends.cpu.analysis import Facts, assigned, operand_names, references
from kernelforge.backends.cpu.fusion import may_alias, nested_blocks

_ELEMENTWISE = {"add", "sub", "mul", "truediv", "minimum", "maximum", "neg", "abs", "cast", "where",
                "exp", "exp2", "log", "log2", "sqrt", "rsqrt", "sigmoid", "cos", "sin",
                "lt", "le", "gt", "ge", "eq", "ne", "and", "or", "xor", "invert"}


@dataclass(frozen=True)
class TrimClass:
    """Trimmed values of one class share their valid box at run time."""

    shape: tuple[int, ...]
    conds: tuple[Form, ...]
    axes: frozenset[int]


@dataclass
class Trimmed:
    """What the code generator changes: `id()`s of the loads and stores to emit with
    `trim=True`, of the trimmed ops, and of the broadcasts with the axes they keep at 1."""

    accesses: set[int] = field(default_factory=set)
    stmts: set[int] = field(default_factory=set)
    broadcasts: dict[int, frozenset[int]] = field(default_factory=dict)
    uncopied: set[int] = field(default_factory=set)  # loads that may stay views of a written tensor


@dataclass
class _Candidate:
    stmt: ir.Assign
    cls: TrimClass | None  # None: a broadcast, whose class its readers fix
    zero_pad: bool  # the padded lanes would hold exactly 0
    free: frozenset[int] = frozenset()  # a broadcast's size-1 axes


def _bounded_axis(cond: Form) -> int | None:
    """The block axis `cond` bounds from above (`base + c * index < 0`, constant c > 0)."""
    axes = [(k[1], dict(p)) for k, p in cond.terms if k is not None and k[0] == "blk"]
    if len(axes) != 1 or any(k is not None and k[0] != "blk" for k, _ in cond.terms):
        return None
    poly = axes[0][1]
    return axes[0][0] if set(poly) == {()} and poly[()] > 0 else None


def _access_class(acc: Access | None, shape: tuple[int, ...], block_assigns: set[str],
                  rows: bool = False) -> TrimClass | None:
    """The class of a view access (with `rows`, also of a row store) whose mask only cuts
    block axes (a row store's: its run axes), else None."""
    if acc is None or acc.mask is None or acc.mask.tensors or not acc.mask.conds:
        return None
    if acc.rows is not None and not rows:
        return None
    axes = [_bounded_axis(c) for c in acc.mask.conds]
    if None in axes or any(c.atoms() & block_assigns for c in acc.mask.conds):
        return None
    if acc.rows is not None and min(axes) < acc.rows:
        return None
    return TrimClass(tuple(shape), tuple(acc.mask.conds), frozenset(axes))


def _zero_pad(s: ir.Assign, candidates: dict[str, _Candidate]) -> bool:
    """Whether `s`'s padded lanes are exactly 0: zeros added, subtracted, negated or cast,
    or a zero times a zero or a finite constant (any other constant could round differently
    in the block's dtype, so no other value is followed). A constant 0 zeroes nothing by
    itself: the other operand's padded lanes may be inf or NaN (1 / 0), and 0 * inf is NaN."""
    padded = sum(isinstance(a, ir.Var) and a.name in candidates and candidates[a.name].zero_pad for a in s.args)
    consts = [float(a.value) for a in s.args if isinstance(a, ir.Const)]
    if s.op in ("add", "sub"):
        return padded + consts.count(0.0) == 2 and padded >= 1
    if s.op in ("neg", "cast"):
        return padded == 1 and (s.op == "neg" or s.dst.type.dtype.is_float)
    return s.op == "mul" and padded >= 1 and padded + sum(map(math.isfinite, consts)) == 2


class _BlockTrim:
    """The analysis of one block's straight-line statements."""

    def __init__(self, block: ir.Block, facts: Facts, accesses: dict[int, Access], refs: Counter,
                 excluded: set[int]) -> None:
        self.block, self.facts, self.accesses, self.refs, self.excluded = block, facts, accesses, refs, excluded
        self.assigns = assigned(block)
        self.candidates: dict[str, _Candidate] = {}
        self.readers: dict[str, list[ir.Stmt]] = {}
        self.position = {id(st): i for i, st in enumerate(block.stmts)}

    def run(self) -> dict[str, _Candidate]:
        for st in self.block.stmts:
            for n in dict.fromkeys(operand_names(st)):
                self.readers.setdefault(n, []).append(st)
            if isinstance(st, ir.Assign) and id(st) not in self.excluded:
                found = self._candidate(st)
                if found is not None:
                    self.candidates[st.dst.name] = found
        while True:
            dropped = [n for n in self.candidates if not self._keeps(n)]
            if not dropped:
                return self.candidates
            for n in dropped:
                del self.candidates[n]

    def _candidate(self, s: ir.Assign) -> _Candidate | None:
        if s.op == "load":
            other = s.args[2] if len(s.args) > 2 else None
            acc = self.accesses.get(id(s))
            cls = _access_class(acc, tuple(s.args[0].type.shape), self.assigns)
            if cls is None or not (other is None or isinstance(other, ir.Const)):
                return None
            if self.facts.is_varying(s.dst) != acc.ptr.gridded:
                return None
            return _Candidate(s, cls, other is not None and float(other.value) == 0.0)
        if s.op == "broadcast_to":
            return self._broadcast(s)
        if s.op not in _ELEMENTWISE or not s.dst.type.shape:
            return None
        if self.facts.is_varying(s.dst) != any(self.facts.is_varying(a) for a in s.args):
            return None
        classes = {self._operand_class(a) for a in s.args}
        classes.discard(None)
        trimmed = [c for c in classes if isinstance(c, TrimClass)]
        if "block" in classes or len(trimmed) != 1 or trimmed[0].shape != tuple(s.dst.type.shape):
            return None
        return _Candidate(s, trimmed[0], _zero_pad(s, self.candidates))

    def _operand_class(self, a: ir.Operand) -> TrimClass | str | None:
        """A trimmed operand's class; "broadcast" or None (a scalar) for the operands a
        trimmed op may also read; "block" for any other block."""
        if not a.type.shape:
            return None
        found = self.candidates.get(a.name) if isinstance(a, ir.Var) else None
        if found is None:
            return "block"
        return found.cls if found.cls is not None else "broadcast"

    def _broadcast(self, s: ir.Assign) -> _Candidate | None:
        src, dst = s.args[0], tuple(s.dst.type.shape)
        shape = tuple(src.type.shape)
        if not isinstance(src, ir.Var) or len(shape) != len(dst) or src.name in self.candidates:
            return None
        if any(a != b and a != 1 for a, b in zip(shape, dst)):
            return None
        return _Candidate(s, None, False, frozenset(d for d, (a, b) in enumerate(zip(shape, dst)) if a == 1 < b))

    def _keeps(self, name: str) -> bool:
        """Whether every read of `name` still allows its lanes to be trimmed."""
        found = self.candidates[name]
        readers = self.readers.get(name, [])
        if self.refs[name] != 1 + sum(operand_names(r).count(name) for r in readers):
            return False  # read elsewhere, or assigned more than once
        if any(self.position[id(r)] <= self.position[id(found.stmt)] for r in readers):
            return False
        if found.cls is None:
            return self._broadcast_keeps(found, readers)
        if not self._operands_kept(found.stmt):
            return False
        return all(self._reads_trimmed(found, name, r) for r in readers)

    def _operands_kept(self, s: ir.Assign) -> bool:
        if s.op == "load":
            return True
        return all(not a.type.shape or a.name in self.candidates for a in s.args if isinstance(a, ir.Var))

    def _broadcast_keeps(self, found: _Candidate, readers: list[ir.Stmt]) -> bool:
        classes = set()
        for r in readers:
            user = self.candidates.get(r.dst.name) if isinstance(r, ir.Assign) else None
            if user is None or user.stmt is not r or user.cls is None:
                return False
            classes.add(user.cls)
        if len(classes) != 1:
            return False
        cls = classes.pop()
        return cls.axes <= found.free and cls.shape == tuple(found.stmt.dst.type.shape)

    def _reads_trimmed(self, found: _Candidate, name: str, r: ir.Stmt) -> bool:
        if id(r) in self.excluded or not isinstance(r, (ir.Assign, ir.Store)):
            return False
        if isinstance(r, ir.Store):
            value = r.value
            return (isinstance(value, ir.Var) and value.name == name and operand_names(r).count(name) == 1
                    and _access_class(self.accesses.get(id(r)), tuple(r.ptr.type.shape), self.assigns, rows=True)
                    == found.cls)
        user = self.candidates.get(r.dst.name)
        if user is not None and user.stmt is r:
            return True
        return self._neutral_reduction(found, r)

    @staticmethod
    def _neutral_reduction(found: _Candidate, r: ir.Assign) -> bool:
        if r.op != "sum" or not found.zero_pad or len(r.args) != 1:
            return False
        axis = r.attrs.get("axis")
        return axis is None or found.cls.axes == {axis}


def _writes_root(stmt: ir.Stmt, root: str) -> bool:
    """Whether `stmt` (or a statement nested in it) may write the tensor `root`."""
    for st in ir.walk(ir.Block([stmt])):
        if isinstance(st, ir.Store) and st.ptr.root == root:
            return True
        if isinstance(st, ir.Assign) and st.op == "atomic_add" and st.args[0].root == root:
            return True
    return False


def _same_access(load: ir.Assign, store: ir.Store, accesses: dict[int, Access]) -> bool:
    """Whether `store` writes exactly the lanes `load` reads (so an op that reads the load's
    view while writing the store's reads each lane before writing it)."""
    a, b = accesses.get(id(load)), accesses.get(id(store))
    return (a is not None and b is not None and load.args[0].root == store.ptr.root
            and a.ptr == b.ptr and a.mask == b.mask and a.rows is None and b.rows is None)


def _uncopied(block: ir.Block, candidates: dict[str, _Candidate], deferred: Mapping[int, ir.Store],
              accesses: dict[int, Access]) -> set[int]:
    """Trimmed loads whose view may be read as it is although its tensor is written: no
    write to that tensor comes before their (and their views') last read, and
    no read is deferred into a fused store (it would run at the store) unless that store
    writes exactly the lanes the load reads."""
    position = {id(st): i for i, st in enumerate(block.stmts)}
    out: set[int] = set()
    for name, found in candidates.items():
        if found.stmt.op != "load":
            continue
        aliases, last, deferred_read = {name}, position[id(found.stmt)], False
        for i, st in enumerate(block.stmts[last + 1:], last + 1):
            if set(operand_names(st)) & aliases:
                last = i
                deferred_read = deferred_read or (id(st) in deferred
                                                  and not _same_access(found.stmt, deferred[id(st)], accesses))
                if isinstance(st, ir.Assign) and may_alias(st):
                    aliases.add(st.dst.name)
        start = position[id(found.stmt)]
        root = found.stmt.args[0].root
        if not deferred_read and not any(_writes_root(st, root) for st in block.stmts[start:last + 1]):
            out.add(id(found.stmt))
    return out


def find_trimmed(kernel: ir.Kernel, facts: Facts, accesses: dict[int, Access], excluded: set[int],
                 deferred: Mapping[int, ir.Store] = MappingProxyType({})) -> Trimmed:
    """The loads, ops, stores and broadcasts that run on valid lanes only (see the module
    docstring); `excluded` are `id()`s of statements another rewrite owns, `deferred` maps
    the `id()` of an assignment a fused store computes to that store (see `uncopied`)."""
    refs = references(kernel.body)
    out = Trimmed()
    for block in nested_blocks(kernel.body):
        candidates = _BlockTrim(block, facts, accesses, refs, excluded).run()
        trimmed_names = {n for n, c in candidates.items() if c.cls is not None}
        for name, found in candidates.items():
            out.stmts.add(id(found.stmt))
            if found.stmt.op == "load":
                out.accesses.add(id(found.stmt))
            elif found.cls is None:
                axes = set()
                for user in candidates.values():
                    if user.cls is not None and any(isinstance(a, ir.Var) and a.name == name for a in user.stmt.args):
                        axes |= user.cls.axes
                out.broadcasts[id(found.stmt)] = frozenset(axes)
        for st in block.stmts:
            if isinstance(st, ir.Store) and isinstance(st.value, ir.Var) and st.value.name in trimmed_names:
                out.accesses.add(id(st))
        out.uncopied |= _uncopied(block, candidates, deferred, accesses)
    return out
