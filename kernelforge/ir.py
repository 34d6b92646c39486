"""The kernel IR: typed, shaped, structured three-address code.

The frontend (`kernelforge.frontend`) lowers a `@kf.jit` function's AST into a
`Kernel`; every backend (`cpu`, `triton`/`interpret`) consumes the same `Kernel`.
Constexprs are already folded, `static_range` loops unrolled and called jit
functions inlined, so a backend only sees the ops listed in `OPS` plus four
statements: `Assign`, `Store`, `For`, `If` and `Return`.

Conventions every producer and consumer relies on:

- A `Var` is a mutable, typed variable (not SSA): it may be assigned several times,
  always with the same `BlockType`. Variables used after an `If` are assigned on both
  arms or before it; variables carried around a `For` are assigned before it.
- Shapes are block shapes *without* any grid axis; `()` is a scalar.
- Elementwise operands either have the result's exact shape or are scalars `()`;
  the frontend inserts `broadcast_to` / `expand_dims` for every other broadcast and
  `cast` for every dtype promotion, so operand dtypes of arithmetic ops equal the
  result dtype (comparisons: operands share a dtype, result is int1).
- Pointers are `BlockType(pointee_dtype, shape, is_pointer=True)`; each pointer
  `Var` records in `.root` the kernel parameter it derives from (offsets are in
  elements of the pointee dtype, as in Triton).
- Integer division and remainder follow C (and Triton): truncate toward zero.
"""

from __future__ import annotations

import dataclasses
import enum
import itertools
from dataclasses import dataclass, field
from typing import Any, Union

import torch


class DType(enum.Enum):
    """Element types of the DSL, with their torch and triton spellings."""

    int1 = ("int1", torch.bool, "tl.int1", 1)
    int8 = ("int8", torch.int8, "tl.int8", 8)
    int16 = ("int16", torch.int16, "tl.int16", 16)
    int32 = ("int32", torch.int32, "tl.int32", 32)
    int64 = ("int64", torch.int64, "tl.int64", 64)
    uint8 = ("uint8", torch.uint8, "tl.uint8", 8)
    float16 = ("float16", torch.float16, "tl.float16", 16)
    bfloat16 = ("bfloat16", torch.bfloat16, "tl.bfloat16", 16)
    float32 = ("float32", torch.float32, "tl.float32", 32)
    float64 = ("float64", torch.float64, "tl.float64", 64)

    def __init__(self, dsl_name: str, torch_dtype: torch.dtype, triton_name: str, bits: int):
        self.dsl_name = dsl_name
        self.torch_dtype = torch_dtype
        self.triton_name = triton_name
        self.bits = bits

    @property
    def is_float(self) -> bool:
        return self in (DType.float16, DType.bfloat16, DType.float32, DType.float64)

    @property
    def is_int(self) -> bool:
        return not self.is_float

    @property
    def is_bool(self) -> bool:
        return self is DType.int1

    @property
    def is_signed(self) -> bool:
        return self in (DType.int8, DType.int16, DType.int32, DType.int64)

    @property
    def itemsize(self) -> int:
        return max(1, self.bits // 8)

    def __repr__(self) -> str:
        return self.dsl_name


@dataclass(frozen=True)
class BlockType:
    """Element dtype plus block shape; `is_pointer` marks a (block of) pointer(s) to `dtype`."""

    dtype: DType
    shape: tuple[int, ...] = ()
    is_pointer: bool = False

    @property
    def is_scalar(self) -> bool:
        return self.shape == ()

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    def with_shape(self, shape: tuple[int, ...]) -> "BlockType":
        return dataclasses.replace(self, shape=tuple(shape))

    def with_dtype(self, dtype: DType) -> "BlockType":
        return dataclasses.replace(self, dtype=dtype)

    def __str__(self) -> str:
        base = f"*{self.dtype.dsl_name}" if self.is_pointer else self.dtype.dsl_name
        return base if self.is_scalar else f"{base}[{','.join(map(str, self.shape))}]"


@dataclass(eq=False)
class Var:
    """A named, typed variable. `root` names the parameter a pointer derives from."""

    name: str
    type: BlockType
    root: str | None = None

    def __str__(self) -> str:
        return f"%{self.name}"


@dataclass(frozen=True)
class Const:
    """A literal scalar; `type.shape` is always `()`."""

    value: Any
    type: BlockType

    def __str__(self) -> str:
        return f"{self.value!r}:{self.type.dtype.dsl_name}"


Operand = Union[Var, Const]


@dataclass(frozen=True)
class Loc:
    """Where a statement came from, for error messages and sanitizer faults."""

    file: str
    line: int
    col: int
    source: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.source.strip()}"


# Op name -> (number of operands or None for variadic, attribute names).
OPS: dict[str, tuple[int | None, tuple[str, ...]]] = {
    # grid
    "program_id": (0, ("axis",)),
    "num_programs": (0, ("axis",)),
    # creation (result type gives shape and dtype)
    "arange": (0, ("start", "end")),
    "full": (1, ()),  # operand: scalar fill value already cast to the result dtype
    # elementwise binary arithmetic (C semantics for integer div/mod)
    "add": (2, ()), "sub": (2, ()), "mul": (2, ()),
    "truediv": (2, ()), "floordiv": (2, ()), "mod": (2, ()),
    "and": (2, ()), "or": (2, ()), "xor": (2, ()), "shl": (2, ()), "shr": (2, ()),
    "minimum": (2, ()), "maximum": (2, ()),
    # comparisons: result dtype int1
    "lt": (2, ()), "le": (2, ()), "gt": (2, ()), "ge": (2, ()), "eq": (2, ()), "ne": (2, ()),
    # elementwise unary
    "neg": (1, ()), "not": (1, ()), "invert": (1, ()),
    "exp": (1, ()), "exp2": (1, ()), "log": (1, ()), "log2": (1, ()),
    "sqrt": (1, ()), "rsqrt": (1, ()), "sigmoid": (1, ()), "abs": (1, ()),
    "cos": (1, ()), "sin": (1, ()),
    "cast": (1, ()),  # to the result dtype
    "where": (3, ()),  # cond (int1), a, b
    # shape ops
    "broadcast_to": (1, ()),  # to the result shape
    "expand_dims": (1, ("axis",)),
    "reshape": (1, ()),  # to the result shape (same numel)
    "trans": (1, ("perm",)),
    # reductions over `axis` (None: all axes -> scalar); argmax result is int32
    "sum": (1, ("axis", "keep_dims")), "max": (1, ("axis", "keep_dims")),
    "min": (1, ("axis", "keep_dims")), "argmax": (1, ("axis", "keep_dims")),
    # dot(a [M,K], b [K,N], acc [M,N]) -> [M,N]; acc operand may be omitted (2 operands)
    "dot": (None, ()),
    # memory
    "addptr": (2, ()),  # pointer + integer offsets (elements)
    "load": (None, ()),  # ptr [, mask [, other]]
    "atomic_add": (None, ()),  # ptr, value [, mask] -> old values
}


@dataclass(eq=False)
class Assign:
    """`dst = op(*args, **attrs)`."""

    dst: Var
    op: str
    args: tuple[Operand, ...]
    attrs: dict[str, Any] = field(default_factory=dict)
    loc: Loc | None = None


@dataclass(eq=False)
class Store:
    """`store(ptr, value, mask)`; `value` has the pointer's shape and pointee dtype."""

    ptr: Operand
    value: Operand
    mask: Operand | None = None
    loc: Loc | None = None


@dataclass(eq=False)
class For:
    """`for var in range(start, stop, step): body` with runtime (per-program) bounds."""

    var: Var
    start: Operand
    stop: Operand
    step: Operand
    body: "Block"
    loc: Loc | None = None


@dataclass(eq=False)
class If:
    """`if cond: then_body else: else_body`; `cond` is a scalar int1 (may vary per program)."""

    cond: Operand
    then_body: "Block"
    else_body: "Block"
    loc: Loc | None = None


@dataclass(eq=False)
class Return:
    """Ends the program instance (kernels return nothing)."""

    loc: Loc | None = None


Stmt = Union[Assign, Store, For, If, Return]


@dataclass(eq=False)
class Block:
    stmts: list[Stmt] = field(default_factory=list)


@dataclass(frozen=True)
class Param:
    """A runtime kernel parameter: a tensor (pointer) or a scalar."""

    name: str
    var: Var

    @property
    def is_pointer(self) -> bool:
        return self.var.type.is_pointer


@dataclass(eq=False)
class Kernel:
    """One specialised kernel: runtime params, folded constexprs and the body."""

    name: str
    params: list[Param]
    constexprs: dict[str, Any]
    body: Block
    file: str = "<unknown>"
    line: int = 0


def walk(block: Block):
    """Yields every statement of `block`, recursively, in program order."""
    for stmt in block.stmts:
        yield stmt
        if isinstance(stmt, For):
            yield from walk(stmt.body)
        elif isinstance(stmt, If):
            yield from walk(stmt.then_body)
            yield from walk(stmt.else_body)


def operands(stmt: Stmt) -> list[Operand]:
    """What `stmt` reads (not what it assigns; a `For` its bounds, an `If` its condition)."""
    if isinstance(stmt, Assign):
        return list(stmt.args)
    if isinstance(stmt, Store):
        return [x for x in (stmt.ptr, stmt.value, stmt.mask) if x is not None]
    if isinstance(stmt, For):
        return [stmt.start, stmt.stop, stmt.step]
    if isinstance(stmt, If):
        return [stmt.cond]
    return []


class VerificationError(Exception):
    """The IR breaks one of the conventions in this module's docstring."""


def verify(kernel: Kernel) -> None:
    """Checks op arity, known ops, operand/result shape rules and variable typing."""
    types: dict[str, BlockType] = {p.var.name: p.var.type for p in kernel.params}

    def bind(var: Var, where: str) -> None:
        seen = types.setdefault(var.name, var.type)
        if seen != var.type:
            raise VerificationError(f"{where}: {var} assigned {var.type}, earlier {seen}")
        if var.type.is_pointer and var.root is None:
            raise VerificationError(f"{where}: pointer {var} has no root parameter")

    for stmt in walk(kernel.body):
        where = str(stmt.loc) if stmt.loc else type(stmt).__name__
        if isinstance(stmt, Assign):
            if stmt.op not in OPS:
                raise VerificationError(f"{where}: unknown op {stmt.op!r}")
            arity, attr_names = OPS[stmt.op]
            if arity is not None and len(stmt.args) != arity:
                raise VerificationError(f"{where}: {stmt.op} takes {arity} operands, got {len(stmt.args)}")
            missing = [a for a in attr_names if a not in stmt.attrs]
            if missing:
                raise VerificationError(f"{where}: {stmt.op} lacks attributes {missing}")
            for a in stmt.args:
                if isinstance(a, Const) and a.type.shape != ():
                    raise VerificationError(f"{where}: constant {a} is not a scalar")
            if stmt.op in _ELEMENTWISE:
                for a in stmt.args:
                    if a.type.shape not in ((), stmt.dst.type.shape):
                        raise VerificationError(
                            f"{where}: operand {a} shape {a.type.shape} != result {stmt.dst.type.shape}")
            bind(stmt.dst, where)
        elif isinstance(stmt, For):
            bind(stmt.var, where)
        elif isinstance(stmt, Store):
            if not stmt.ptr.type.is_pointer:
                raise VerificationError(f"{where}: store to non-pointer {stmt.ptr}")


_ELEMENTWISE = {
    "add", "sub", "mul", "truediv", "floordiv", "mod", "and", "or", "xor", "shl", "shr",
    "minimum", "maximum", "lt", "le", "gt", "ge", "eq", "ne", "neg", "not", "invert",
    "exp", "exp2", "log", "log2", "sqrt", "rsqrt", "sigmoid", "abs", "cos", "sin",
    "cast", "where", "addptr",
}


def verify_definitions(kernel: Kernel) -> None:
    """Checks that every variable is assigned on every path before it is read.

    Paths that end in `Return` do not reach the code after their `If`; a `For` body may
    run zero times, so what it alone assigns is not defined after the loop.
    """

    def run(block: Block, defined: set[int]) -> set[int] | None:
        """The variables defined after `block`, or None when every path through it returns."""
        for stmt in block.stmts:
            for op in operands(stmt):
                if isinstance(op, Var) and id(op) not in defined:
                    where = str(stmt.loc) if stmt.loc else type(stmt).__name__
                    raise VerificationError(f"{where}: {op} is read before it is assigned")
            if isinstance(stmt, Assign):
                defined = defined | {id(stmt.dst)}
            elif isinstance(stmt, For):
                run(stmt.body, defined | {id(stmt.var)})
            elif isinstance(stmt, If):
                arms = [run(stmt.then_body, defined), run(stmt.else_body, defined)]
                live = [a for a in arms if a is not None]
                if not live:
                    return None
                defined = set.intersection(*live)
            elif isinstance(stmt, Return):
                return None
        return defined

    run(kernel.body, {id(p.var) for p in kernel.params})


def format_kernel(kernel: Kernel) -> str:
    """Human-readable listing of the IR (`python -m kernelforge show --backend ir`)."""
    params = ", ".join(f"{p.name}: {p.var.type}" for p in kernel.params)
    consts = ", ".join(f"{k}={v!r}" for k, v in kernel.constexprs.items())
    lines = [f"kernel {kernel.name}({params})" + (f" [{consts}]" if consts else "") + " {"]
    _format_block(kernel.body, 1, lines)
    lines.append("}")
    return "\n".join(lines)


def _format_block(block: Block, depth: int, lines: list[str]) -> None:
    pad = "  " * depth
    for stmt in block.stmts:
        if isinstance(stmt, Assign):
            args = ", ".join(map(str, stmt.args))
            attrs = "".join(f", {k}={v!r}" for k, v in stmt.attrs.items())
            lines.append(f"{pad}{stmt.dst}: {stmt.dst.type} = {stmt.op}({args}{attrs})")
        elif isinstance(stmt, Store):
            mask = f", mask={stmt.mask}" if stmt.mask is not None else ""
            lines.append(f"{pad}store({stmt.ptr}, {stmt.value}{mask})")
        elif isinstance(stmt, For):
            lines.append(f"{pad}for {stmt.var} in range({stmt.start}, {stmt.stop}, {stmt.step}) {{")
            _format_block(stmt.body, depth + 1, lines)
            lines.append(pad + "}")
        elif isinstance(stmt, If):
            lines.append(f"{pad}if {stmt.cond} {{")
            _format_block(stmt.then_body, depth + 1, lines)
            if stmt.else_body.stmts:
                lines.append(pad + "} else {")
                _format_block(stmt.else_body, depth + 1, lines)
            lines.append(pad + "}")
        elif isinstance(stmt, Return):
            lines.append(f"{pad}return")


class NameSupply:
    """Fresh, readable, Python-identifier-safe variable names."""

    def __init__(self) -> None:
        self._counter = itertools.count()
        self._used: set[str] = set()

    def fresh(self, hint: str = "t") -> str:
        base = hint if hint.isidentifier() else "t"
        name = base
        while name in self._used:
            name = f"{base}_{next(self._counter)}"
        self._used.add(name)
        return name
