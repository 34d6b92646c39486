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
by copies of dot results that feed it, and it is not merged by predication. A dot
whose acc operand is a fresh temporary only it reads (the online softmax's
`acc * alpha[:, None]`) accumulates into that temporary (`find_dots_into_temporaries`).

One peephole: the softmax idiom (`max`, subtract, `exp`, `sum`, divide along one
block axis, the Triton tutorial's row softmax) becomes one `torch.softmax`, a single
fused pass instead of five (`find_softmaxes`; `codegen.generate(peepholes=False)`
keeps the op-by-op chain, which the tests compare it with).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Set as AbstractSet
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kernelforge import ir
from kernelforge.backends.cpu.analysis import Facts, assigned, operand_names, references

if TYPE_CHECKING:
    from kernelforge.backends.cpu.codegen import CodeGen

_BINARY = {"add": "torch.add", "sub": "torch.sub", "mul": "torch.mul", "truediv": "torch.div",
           "minimum": "torch.minimum", "maximum": "torch.maximum"}
_UNARY = {"exp": "torch.exp", "exp2": "torch.exp2", "log": "torch.log", "log2": "torch.log2",
          "sqrt": "torch.sqrt", "rsqrt": "torch.rsqrt", "sigmoid": "torch.sigmoid", "cos": "torch.cos",
          "sin": "torch.sin", "abs": "torch.abs", "neg": "torch.neg"}


def nested_blocks(block: ir.Block, into_loops: bool = True) -> Iterator[ir.Block]:
    """`block` and every block nested in it: both branches of each `if` and, unless
    `into_loops` is False, loop bodies. Each pass below looks at one block at a time."""
    yield block
    for st in block.stmts:
        if isinstance(st, ir.For) and into_loops:
            yield from nested_blocks(st.body, into_loops)
        elif isinstance(st, ir.If):
            yield from nested_blocks(st.then_body, into_loops)
            yield from nested_blocks(st.else_body, into_loops)


def find_pairs(kernel: ir.Kernel, facts: Facts, accesses: dict) -> dict[int, ir.Assign]:
    """`id(store)` -> the assignment whose result it stores, for every fusable pair."""
    refs = references(kernel.body)
    pairs: dict[int, ir.Assign] = {}

    for block in nested_blocks(kernel.body):
        for pos, st in enumerate(block.stmts):
            if isinstance(st, ir.Store) and id(st) in accesses and isinstance(st.value, ir.Var):
                d = _definition(block.stmts[:pos], st.value, refs, facts, _later_reads(block.stmts[pos + 1:], st))
                if d is not None and accesses[id(st)].ptr.gridded:
                    pairs[id(st)] = d
    return pairs


def _later_reads(after: list[ir.Stmt], store: ir.Store) -> int:
    """How often the stored value is read after the store before anything but tensor math
    runs: computed into the store's view, it is then read back from memory unchanged.
    Only when the view holds the value exactly (same dtype) and no read may alias it (a
    view op's result would outlive the window and see a later store); else 0."""
    value = store.value
    if store.ptr.type.dtype != value.type.dtype:
        return 0
    reads = 0
    for st in after:
        if not isinstance(st, ir.Assign) or st.op in ("load", "atomic_add"):
            break
        count = operand_names(st).count(value.name)
        if count and may_alias(st):
            return 0
        reads += count
        if st.dst.name == value.name:
            break
    return reads


def may_alias(s: ir.Assign) -> bool:
    """Whether `s`'s result may share its operand's tensor (`_VIEWS`; a cast only when it
    keeps the dtype)."""
    if s.op == "cast":
        return s.args[0].type.dtype == s.dst.type.dtype
    return s.op in _VIEWS


def _definition(before: list[ir.Stmt], value: ir.Var, refs, facts: Facts, later_reads: int = 0
                ) -> ir.Assign | None:
    # single assignment, read by the store and, after it, by `later_reads` reads of tensor math
    if refs[value.name] not in (2, 2 + later_reads) or value.name not in facts.varying:
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


def out_call(gen: "CodeGen", s: ir.Assign, target: str | None, shared: bool = False) -> str:
    """The statement computing `s` into `target`, which is `shared` when it views an
    argument (None: a new tensor, for a softmax)."""
    rank = len(s.dst.type.shape)
    if id(s) in gen.softmaxes:
        return _softmax_call(gen, s, gen.softmaxes[id(s)], target, shared)
    if s.op == "cast":
        return f"{target}.copy_({gen.val(s.args[0], rank)})"
    fn = _BINARY.get(s.op) or _UNARY[s.op]
    args = ", ".join(gen.elementwise_val(s, a, rank) for a in s.args)
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

    for block in nested_blocks(kernel.body):
        stmts = block.stmts
        for pos, st in enumerate(stmts):
            if isinstance(st, ir.Assign) and st.op == "dot" and len(st.args) == 3:
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
    for st in ir.walk(kernel.body):
        if not isinstance(st, ir.Assign):
            continue
        if st.dst.name in candidates and id(st) not in candidates[st.dst.name]:
            if st.dst.name in inits:
                rejected.add(st.dst.name)
            inits[st.dst.name] = id(st)
        if may_alias(st) and isinstance(st.args[0], ir.Var) and id(st) not in {
                i for ids in candidates.values() for i in ids}:
            rejected.add(st.args[0].name)  # another variable may share the tensor
    names = {n for n in candidates if n not in rejected and n not in merged and n in inits}
    dots = {i for n in names for i in candidates[n] if i in dot_ids}
    return names, dots, {inits[n] for n in names}


# Ops whose result is a fresh tensor of its own (never a view of an operand or argument).
_FRESH = set(_BINARY) | set(_UNARY) | {"where", "sum", "max", "min", "argmax", "dot"}


def makes_fresh_tensor(d: ir.Assign, facts: Facts) -> bool:
    """Whether `d`'s result is a new tensor nothing else holds: an op of `_FRESH`, or a
    cast that changes a tensor's dtype (`.to` then copies; a same-dtype cast is the
    operand itself)."""
    if d.op == "cast":
        return (not d.dst.type.is_pointer and d.args[0].type.dtype != d.dst.type.dtype
                and not facts.is_py(d.args[0]))
    return d.op in _FRESH


def find_dots_into_temporaries(kernel: ir.Kernel, facts: Facts, refs: Counter,
                               private: AbstractSet[int] = frozenset()) -> set[int]:
    """`id()`s of `dot(a, b, t)` that may accumulate into the temporary `t` in place.

    The online softmax rescales its accumulator as the dot's acc operand
    (`dot(p, v, acc * alpha[:, None])`); out of place, `torch.baddbmm` copies that
    rescaled block first. The copy is needless when `t` is read only by the dot, has its
    type and per-program layout, and was made in the same block by an op returning a
    fresh tensor (so no variable, constant, argument or view of a load shares it, and
    the dot cannot run more often than it). `refs` and `private` are as for `find_inplace`.
    """
    out: set[int] = set()

    for block in nested_blocks(kernel.body):
        defs: dict[str, ir.Assign] = {}
        for st in block.stmts:
            if not isinstance(st, ir.Assign):
                continue
            acc = st.args[2] if st.op == "dot" and len(st.args) == 3 else None
            d = defs.get(acc.name) if isinstance(acc, ir.Var) else None
            if d is not None and _private_temporary(acc, d, st, facts, refs, private):
                out.add(id(st))
            defs[st.dst.name] = st
    return out


def _private_temporary(value: ir.Var, d: ir.Assign, reader: ir.Assign, facts: Facts, refs: Counter,
                       private: AbstractSet[int] = frozenset()) -> bool:
    """Whether `value` (assigned by `d`: an op making a fresh tensor, or a load in `private`)
    is a per-program tensor nothing else holds, read only by `reader`, with `reader`'s
    result type and layout, which `reader` may therefore overwrite."""
    return (refs[value.name] == 2 and value.type == reader.dst.type
            and facts.is_varying(value) == facts.is_varying(reader.dst)
            and (makes_fresh_tensor(d, facts) or id(d) in private)
            and (facts.is_varying(d.dst) == any(facts.is_varying(x) for x in d.args) or d.op == "dot"))


def find_inplace(kernel: ir.Kernel, facts: Facts, refs: Counter, private: AbstractSet[int] = frozenset()) -> set[int]:
    """`id()`s of elementwise ops that may overwrite their first operand.

    The operand must be a temporary read only here, defined by an op that returns a
    fresh tensor or by a load in `private` (a row gather, whose result is a private copy;
    other loads may be views of the argument), in the same block (so neither runs more
    often than the other), with the result's dtype and per-program layout: reusing its
    buffer then saves an allocation, which for large blocks is mostly page faults (a
    Llama-2-7B prefill launch's queries, scaled once: 3 MB). `refs` counts every read,
    those through the affine forms of accesses included (a row store's start may read a
    temporary the IR no longer names there).
    """
    out: set[int] = set()

    for block in nested_blocks(kernel.body):
        defs: dict[str, ir.Assign] = {}
        for st in block.stmts:
            if isinstance(st, ir.Assign):
                a = st.args[0] if st.args else None
                d = defs.get(a.name) if isinstance(a, ir.Var) else None
                if (d is not None and _has_out_form(st, facts) and st.op != "cast"
                        and _private_temporary(a, d, st, facts, refs, private)):
                    out.add(id(st))
                defs[st.dst.name] = st
    return out


def find_free_broadcasts(kernel: ir.Kernel, facts: Facts, refs: Counter) -> set[int]:
    """`id()`s of `broadcast_to`s that torch's own broadcasting makes redundant.

    `cos[None, :] * x` broadcasts `cos` to x's shape first; an `expand` costs a dispatch
    and the multiply would broadcast anyway. A broadcast qualifies when every read of it
    is an elementwise arithmetic op of its shape whose other operand already has that
    shape and is no broadcast (so the op's result keeps it), and its source has its rank
    or is a scalar (a varying scalar gets trailing axes, a block keeps its grid axis
    first). `refs` counts every read, those through access forms included.
    """
    broadcasts = {st.dst.name: st for st in ir.walk(kernel.body)
                  if isinstance(st, ir.Assign) and st.op == "broadcast_to"}
    reads: Counter = Counter()
    for st in ir.walk(kernel.body):
        if isinstance(st, ir.Assign) and st.op in _BINARY and len(st.args) == 2:
            for mine, other in (st.args, st.args[::-1]):
                if (isinstance(mine, ir.Var) and mine.name in broadcasts and isinstance(other, ir.Var)
                        and other.name not in broadcasts and not facts.is_py(other)
                        and other.type.shape == mine.type.shape == st.dst.type.shape):
                    reads[mine.name] += 1
    free: set[int] = set()
    for name, st in broadcasts.items():
        source = st.args[0]
        if (isinstance(source, ir.Var) and not facts.is_py(source) and refs[name] == 1 + reads[name]
                and (source.type.is_scalar or len(source.type.shape) == len(st.dst.type.shape))):
            free.add(id(st))
    return free


def find_scratch(kernel: ir.Kernel, facts: Facts, inplace: set[int], refs: Counter) -> set[int]:
    """`id()`s of ops outside loops whose single-use result may live in a reused buffer.

    A fresh multi-megabyte temporary costs a page fault per 4 KiB on first touch, more
    than the arithmetic. An op that runs once per launch (not inside a loop), whose result
    is read once by an op that makes a new tensor of it (not a view), can write into a
    buffer kept from the previous launch (`rt.scratch`): by then that value is dead.
    `refs` counts reads as for `find_inplace`.
    """
    readers: dict[str, str] = {}  # variable -> the op reading it ("store" for stores)
    for st in ir.walk(kernel.body):
        if isinstance(st, (ir.Assign, ir.Store)):
            for n in operand_names(st):
                readers[n] = st.op if isinstance(st, ir.Assign) else "store"
    out: set[int] = set()

    for block in nested_blocks(kernel.body, into_loops=False):
        for st in block.stmts:
            if (isinstance(st, ir.Assign) and id(st) not in inplace and _has_out_form(st, facts)
                  and st.op != "cast" and refs[st.dst.name] == 2 and st.dst.name in readers
                  and readers[st.dst.name] not in _VIEWS and st.dst.type.shape
                  and facts.is_varying(st.dst) == any(facts.is_varying(a) for a in st.args)):
                out.add(id(st))
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

    for block in nested_blocks(kernel.body):
        defs: dict[str, ir.Assign] = {}
        for st in block.stmts:
            if isinstance(st, ir.Assign):
                if st.op == "where" and isinstance(st.args[2], ir.Const) and isinstance(st.args[1], ir.Var):
                    c, x = st.args[0], st.args[1]
                    d = defs.get(x.name)
                    if (d is not None and not facts.is_py(c) and refs[x.name] == 2 and x.type == st.dst.type
                            and facts.is_varying(x) == facts.is_varying(st.dst)
                            and (id(d) in private or makes_fresh_tensor(d, facts) and d.op != "dot"
                                 and facts.is_varying(d.dst) == any(facts.is_varying(a) for a in d.args))):
                        out.add(id(st))
                defs[st.dst.name] = st
    return out


# ------------------------------------------------------------------ softmax peephole


@dataclass(frozen=True)
class Softmax:
    """A recognised `exp(x - max(x)) / sum(exp(x - max(x)))` along one block axis.

    `source` is `x`, `axis` its block axis, `covered` the `id()`s of the chain's other
    statements (max, subtract, exp, sum, their casts and broadcasts): dead once the
    division is computed as one `torch.softmax`.
    """

    source: ir.Var
    axis: int
    covered: frozenset[int]


def find_softmaxes(kernel: ir.Kernel) -> dict[int, Softmax]:
    """`id()` of each division that ends a softmax chain -> the chain (a peephole).

    Eagerly the chain is five passes over the block, torch's softmax one. The result is
    the same function, computed in the division's float type (the DSL's fp32 upcast for
    fp16/bf16 blocks) and rounded once instead of after every op. Masked lanes need no
    special case: they hold `other` in both forms. Every intermediate must be a
    single-use temporary of the same block, so nothing else observes it, and the source
    must not be reassigned before the division, which reads it in their place.
    """
    refs = references(kernel.body)
    out: dict[int, Softmax] = {}

    for block in nested_blocks(kernel.body):
        defs: dict[str, ir.Assign] = {}
        for pos, st in enumerate(block.stmts):
            if isinstance(st, ir.Assign):
                found = _match_softmax(st, defs, refs) if st.op == "truediv" else None
                if found is not None and not _reassigned_before(block.stmts[:pos], found):
                    out[id(st)] = found
                defs[st.dst.name] = st
    return out


def _reassigned_before(stmts: list[ir.Stmt], found: Softmax) -> bool:
    """Whether the source changes between the chain's first statement and the division."""
    first = min(i for i, st in enumerate(stmts) if id(st) in found.covered)
    return any(found.source.name in assigned(ir.Block([st])) for st in stmts[first:])


class _Chain:
    """Walks a value back through the single-use definitions of one block."""

    def __init__(self, defs: dict[str, ir.Assign], refs: Counter) -> None:
        self.defs, self.refs = defs, refs
        self.covered: list[int] = []
        self.expanded: list[int] = []  # axes of the `expand_dims` passed by `unwrap`

    def unwrap(self, op: ir.Operand, broadcasts: bool = False) -> ir.Operand:
        """The source of `op` through single-use float casts (and broadcasts if asked)."""
        while isinstance(op, ir.Var) and self.refs[op.name] == 2 and op.name in self.defs:
            d = self.defs[op.name]
            if d.op in ("broadcast_to", "expand_dims") and broadcasts:
                if d.op == "expand_dims":
                    self.expanded.append(d.attrs["axis"])
            elif not _is_float_cast(d):
                break
            self.covered.append(id(d))
            op = d.args[0]
        return op

    def defined_by(self, op: ir.Operand, kind: str, uses: int = 1) -> ir.Assign | None:
        """The `kind` statement defining `op`, when `op` is read exactly `uses` times."""
        if not isinstance(op, ir.Var) or self.refs[op.name] != uses + 1 or op.name not in self.defs:
            return None
        d = self.defs[op.name]
        if d.op != kind:
            return None
        self.covered.append(id(d))
        return d

    def broadcast_back(self, op: ir.Operand, reduction: str, axis: int | None) -> ir.Assign | None:
        """The `reduction` whose result `op` broadcasts back along `axis` (None: any axis)."""
        self.expanded.clear()
        d = self.defined_by(self.unwrap(op, broadcasts=True), reduction)
        if d is None or (axis is not None and _axis(d) != axis) or _axis(d) is None:
            return None
        keep, rank = bool(d.attrs.get("keep_dims", False)), len(d.args[0].type.shape)
        ok = (self.expanded == [] if keep else
              self.expanded in ([], [_axis(d)]) if rank == 1 else self.expanded == [_axis(d)])
        return d if ok else None


def _is_float_cast(d: ir.Assign) -> bool:
    return d.op == "cast" and d.args[0].type.dtype.is_float and d.dst.type.dtype.is_float


def _axis(d: ir.Assign) -> int | None:
    """The block axis a reduction runs along (a whole 1-D block counts as axis 0)."""
    axis = d.attrs.get("axis")
    if axis is None:
        return 0 if len(d.args[0].type.shape) == 1 else None
    return axis


def _match_softmax(div: ir.Assign, defs: dict[str, ir.Assign], refs: Counter) -> Softmax | None:
    if not div.dst.type.dtype.is_float or not div.dst.type.shape:
        return None
    chain = _Chain(defs, refs)
    total = chain.broadcast_back(div.args[1], "sum", None)
    if total is None:
        return None
    exp = chain.unwrap(div.args[0])  # the exp result, shared by the sum and the division
    if not isinstance(exp, ir.Var) or chain.unwrap(total.args[0]) != exp:
        return None
    exp_def = chain.defined_by(exp, "cast", uses=2) or chain.defined_by(exp, "exp", uses=2)
    if exp_def is not None and exp_def.op == "cast":
        exp_def = chain.defined_by(chain.unwrap(exp_def.args[0]), "exp") if _is_float_cast(exp_def) else None
    shifted = chain.defined_by(chain.unwrap(exp_def.args[0]), "sub") if exp_def is not None else None
    if shifted is None or not isinstance(shifted.args[0], ir.Var):
        return None
    source = shifted.args[0]
    peak = chain.broadcast_back(shifted.args[1], "max", _axis(total))
    if (peak is None or peak.args[0] != source or not source.type.dtype.is_float
            or source.type.shape != div.dst.type.shape):
        return None
    return Softmax(source, _axis(total), frozenset(chain.covered))


def _softmax_call(gen: "CodeGen", s: ir.Assign, chain: Softmax, target: str | None, shared: bool) -> str:
    """`torch.softmax` of the chain's source in the division's dtype, into `target` if given.

    With another dtype than the source's it computes in the wider of the two (fp32 for
    fp16 against bf16), so a narrow result never narrows the input first. A target takes
    `out=` only when it is contiguous (`_softmax.out` writes a strided one as if it were
    dense) and, when `shared` (a view of an argument), when the source lives in other
    memory: the chain reads all of its block before it writes, one softmax row by row.
    """
    dim = chain.axis + gen.dims(chain.source)
    x = gen.val(chain.source)
    src, dst = chain.source.type.dtype, s.dst.type.dtype
    if src != dst:
        wide = max(src, dst, key=lambda d: d.bits)
        compute = wide if wide.bits >= 32 else ir.DType.float32
        value = f"torch.softmax({x}, dim={dim}, dtype={gen.store_dtype(ir.BlockType(compute))})"
        if compute != dst:
            value += f".to({gen.store_dtype(s.dst.type)})"
        return value if target is None else f"{target}.copy_({value})"
    if target is None:
        return f"torch.softmax({x}, dim={dim})"
    fits = f"{target}.is_contiguous()"
    if shared:
        fits += f" and {x}.untyped_storage().data_ptr() != {target}.untyped_storage().data_ptr()"
    return (f"torch._softmax({x}, {dim}, False, out={target}) if {fits} "
            f"else {target}.copy_(torch.softmax({x}, dim={dim}))")
