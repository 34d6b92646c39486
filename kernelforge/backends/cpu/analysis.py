"""Static facts the CPU code generator needs about a kernel.

- *Uniformity*: which variables can differ between program instances ("varying",
  carried with a leading grid axis) and which are provably the same for all of them
  ("uniform", computed once without the grid axis and broadcast lazily by torch).
- *Divergence*: which `For`/`If` statements have per-program bounds or conditions and
  must be predicated, and which variables escape such a region and so need merging.
- *Scalar kinds*: uniform scalars are kept as plain Python numbers (no tensor
  dispatch at all) unless some assignment produces a tensor (a load, a reduction).

Variables are mutable in the IR, so every fact is a fixpoint over all assignments.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from kernelforge import ir

# Ops whose result differs between programs whatever their operands.
_ALWAYS_VARYING = {"program_id", "atomic_add"}
# Ops that keep Python-number scalars as Python numbers.
_PY_OPS = {
    "add", "sub", "mul", "truediv", "floordiv", "mod", "and", "or", "xor", "shl", "shr",
    "minimum", "maximum", "lt", "le", "gt", "ge", "eq", "ne", "neg", "not", "invert", "abs",
    "cast", "where", "addptr", "full", "num_programs", "broadcast_to", "reshape",
}


def operand_names(stmt: ir.Stmt) -> list[str]:
    """Names of the variables a statement reads (not those of nested blocks)."""
    if isinstance(stmt, ir.Assign):
        ops = list(stmt.args)
    elif isinstance(stmt, ir.Store):
        ops = [stmt.ptr, stmt.value] + ([stmt.mask] if stmt.mask is not None else [])
    elif isinstance(stmt, ir.For):
        ops = [stmt.start, stmt.stop, stmt.step]
    elif isinstance(stmt, ir.If):
        ops = [stmt.cond]
    else:
        ops = []
    return [o.name for o in ops if isinstance(o, ir.Var)]


def references(block: ir.Block) -> Counter:
    """How often each variable is read or assigned in `block`, recursively."""
    refs: Counter = Counter()
    for stmt in ir.walk(block):
        refs.update(operand_names(stmt))
        if isinstance(stmt, ir.Assign):
            refs[stmt.dst.name] += 1
        elif isinstance(stmt, ir.For):
            refs[stmt.var.name] += 1
    return refs


def assigned(block: ir.Block) -> set[str]:
    """Variables assigned anywhere in `block` (loop variables included)."""
    out: set[str] = set()
    for stmt in ir.walk(block):
        if isinstance(stmt, ir.Assign):
            out.add(stmt.dst.name)
        elif isinstance(stmt, ir.For):
            out.add(stmt.var.name)
    return out


def contains_return(block: ir.Block) -> bool:
    return any(isinstance(s, ir.Return) for s in ir.walk(block))


@dataclass
class Facts:
    varying: set[str] = field(default_factory=set)
    tensor_scalars: set[str] = field(default_factory=set)  # uniform scalars held as 0-d tensors
    divergent: set[int] = field(default_factory=set)  # id() of predicated For/If statements
    merges: dict[int, list[str]] = field(default_factory=dict)  # region id -> vars to merge
    divergent_return: bool = False  # some `return` only ends some programs

    def is_varying(self, op: ir.Operand) -> bool:
        return isinstance(op, ir.Var) and op.name in self.varying

    def is_py(self, op: ir.Operand) -> bool:
        """Held as a Python number at run time (constants, scalar args, their arithmetic)."""
        if isinstance(op, ir.Const):
            return True
        return (op.type.is_scalar and op.name not in self.varying
                and op.name not in self.tensor_scalars)


def analyze(kernel: ir.Kernel) -> Facts:
    facts = Facts()
    total = references(kernel.body)
    region_refs: dict[int, Counter] = {}

    def escapes(name: str, region: ir.For | ir.If) -> bool:
        key = id(region)
        if key not in region_refs:
            bodies = [region.body] if isinstance(region, ir.For) else [region.then_body, region.else_body]
            counts: Counter = Counter()
            for b in bodies:
                counts.update(references(b))
            region_refs[key] = counts
        return total[name] > region_refs[key][name]

    def visit(block: ir.Block, regions: list) -> bool:
        changed = False
        for stmt in block.stmts:
            if isinstance(stmt, ir.Assign):
                vary = (stmt.op in _ALWAYS_VARYING or any(facts.is_varying(a) for a in stmt.args)
                        or any(escapes(stmt.dst.name, r) for r in regions))
                if vary and stmt.dst.name not in facts.varying:
                    facts.varying.add(stmt.dst.name)
                    changed = True
            elif isinstance(stmt, ir.For):
                if facts.is_varying(stmt.start) or facts.is_varying(stmt.step):
                    if stmt.var.name not in facts.varying:
                        facts.varying.add(stmt.var.name)
                        changed = True
                div = any(facts.is_varying(o) for o in (stmt.start, stmt.stop, stmt.step))
                if div:
                    facts.divergent.add(id(stmt))
                changed |= visit(stmt.body, regions + [stmt] if div else regions)
            elif isinstance(stmt, ir.If):
                div = facts.is_varying(stmt.cond)
                if div:
                    facts.divergent.add(id(stmt))
                inner = regions + [stmt] if div else regions
                changed |= visit(stmt.then_body, inner)
                changed |= visit(stmt.else_body, inner)
            elif isinstance(stmt, ir.Return) and regions:
                facts.divergent_return = True
        return changed

    while visit(kernel.body, []):
        pass

    def kinds(block: ir.Block) -> bool:
        changed = False
        for stmt in ir.walk(block):
            if not isinstance(stmt, ir.Assign) or not stmt.dst.type.is_scalar:
                continue
            name = stmt.dst.name
            if name in facts.varying or name in facts.tensor_scalars:
                continue
            if stmt.op not in _PY_OPS or not all(facts.is_py(a) for a in stmt.args):
                facts.tensor_scalars.add(name)
                changed = True
        return changed

    while kinds(kernel.body):
        pass

    for stmt in ir.walk(kernel.body):
        if id(stmt) in facts.divergent:
            bodies = [stmt.body] if isinstance(stmt, ir.For) else [stmt.then_body, stmt.else_body]
            names: set[str] = set()
            for b in bodies:
                names |= assigned(b)
            if isinstance(stmt, ir.For):
                names.discard(stmt.var.name)
            facts.merges[id(stmt)] = sorted(n for n in names if escapes(n, stmt))
    return facts
