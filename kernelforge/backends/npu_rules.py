"""Ascend NPU rules checked on the IR before a kernel is compiled for an NPU.

An Ascend 910B vector core keeps every block tensor of a program in its Unified
Buffer (UB): 192 KB, halved by the double buffering the compiler applies to loads, so
96 KB of live blocks per program (`KF_NPU_UB_BYTES` overrides). A config whose blocks
do not fit fails deep inside the vendor compiler, or spills; catching it here gives the
author a message in their own terms and lets the autotuner skip the config cheaply.

`estimate_ub` is a liveness analysis over the structured IR: each block variable is
live from its first definition to its last use, stretched over a whole loop when its
value crosses the loop's back edge (used in the loop and defined before it, or used
in the body before being redefined). The estimate is the largest sum of live block
bytes at any statement, counting loaded blocks twice (double buffering); an
elementwise result may take the place of an operand that dies there. Not counted:
scalars, pointer blocks, and offset blocks used only to form addresses, since
triton-ascend's adapter folds address arithmetic into the memory accesses.

`alignment_warnings` flags what compiles but runs badly: a last axis that is not a
multiple of 32 bytes (512 bytes for `dot` operands), fp64, and `dot` dtypes the cube
unit does not take.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

from kernelforge import ir
from kernelforge.errors import CompilationError

DEFAULT_UB_BYTES = 96 * 1024
_DOT_INPUTS = {ir.DType.int8, ir.DType.float16, ir.DType.bfloat16, ir.DType.float32}
_DOT_ACCUMULATORS = {ir.DType.float32, ir.DType.int32}


class NPUResourceError(CompilationError):
    """The kernel's live blocks exceed the NPU on-chip buffer (the autotuner skips such configs)."""


class NPUPerformanceWarning(UserWarning):
    """The kernel compiles for the NPU but breaks one of its performance rules."""


@dataclass(frozen=True)
class LiveTensor:
    name: str
    type: ir.BlockType
    bytes: int
    loc: ir.Loc | None

    def __str__(self) -> str:
        where = f" at {self.loc}" if self.loc else ""
        return f"%{self.name}: {self.type} ({_kib(self.bytes)}){where}"


@dataclass(frozen=True)
class UBEstimate:
    """Peak live block bytes of one program, where the peak is, and what is live there."""

    peak_bytes: int
    limit_bytes: int
    peak_loc: ir.Loc | None
    live: tuple[LiveTensor, ...]  # at the peak, largest first

    @property
    def fits(self) -> bool:
        return self.peak_bytes <= self.limit_bytes


def ub_limit() -> int:
    """The per-program UB budget in bytes (`KF_NPU_UB_BYTES`, default 96 KiB)."""
    return int(os.environ.get("KF_NPU_UB_BYTES", DEFAULT_UB_BYTES))


def estimate_ub(kernel: ir.Kernel, limit: int | None = None) -> UBEstimate:
    """The UB estimate of `kernel` (see the module docstring); never raises."""
    limit = ub_limit() if limit is None else limit
    liveness = _Liveness(kernel)
    intervals = liveness.intervals()
    best: tuple[int, int] = (0, -1)
    points = sorted({p for start, end, _ in intervals.values() for p in (start, end)})
    for p in points:
        total = sum(t.bytes for start, end, t in intervals.values() if start <= p <= end)
        if total > best[0]:
            best = (total, p)
    peak, at = best
    live = sorted((t for start, end, t in intervals.values() if start <= at <= end),
                  key=lambda t: -t.bytes)
    peak_loc = liveness.locs.get(at)
    return UBEstimate(peak, limit, peak_loc, tuple(live))


def check_ub(kernel: ir.Kernel, limit: int | None = None) -> UBEstimate:
    """`estimate_ub`, raising `NPUResourceError` when the estimate exceeds the budget."""
    est = estimate_ub(kernel, limit)
    if est.fits:
        return est
    largest = "\n".join(f"  {t}" for t in est.live[:5])
    loc = est.peak_loc
    raise NPUResourceError(
        f"needs about {_kib(est.peak_bytes)} of NPU on-chip buffer (UB) per program, over the "
        f"{_kib(est.limit_bytes)} budget (KF_NPU_UB_BYTES; loads count twice for double "
        f"buffering). Largest live block tensors there:\n{largest}\n"
        "Use smaller block sizes or split the work across more loop iterations.",
        kernel=kernel.name, file=loc.file if loc else kernel.file, line=loc.line if loc else kernel.line,
        source_line=loc.source if loc else "", col=loc.col if loc else 0)


def alignment_warnings(kernel: ir.Kernel) -> list[str]:
    """Messages for blocks that break the NPU's alignment, dtype and `dot` rules."""
    messages: dict[str, None] = {}

    def note(loc: ir.Loc | None, text: str) -> None:
        messages[f"{loc}: {text}" if loc else text] = None

    for stmt in ir.walk(kernel.body):
        if isinstance(stmt, ir.Assign):
            if stmt.dst.type.dtype is ir.DType.float64 or any(
                    a.type.dtype is ir.DType.float64 for a in stmt.args):
                note(stmt.loc, "fp64 is not supported by Ascend vector units")
            if stmt.op == "dot":
                a, b = stmt.args[:2]
                for x in (a, b):
                    _check_last_axis(x.type, 512, "dot operand", stmt.loc, note)
                if a.type.dtype not in _DOT_INPUTS or stmt.dst.type.dtype not in _DOT_ACCUMULATORS:
                    note(stmt.loc, f"dot {a.type.dtype}x{b.type.dtype}->{stmt.dst.type.dtype}: the cube "
                                   "unit takes int8/fp16/bf16/fp32 inputs with fp32 or int32 accumulation")
            elif stmt.op in ("load", "atomic_add"):
                _check_last_axis(stmt.args[0].type, 32, "memory access", stmt.loc, note)
        elif isinstance(stmt, ir.Store):
            _check_last_axis(stmt.ptr.type, 32, "memory access", stmt.loc, note)
    return list(messages)


def check(kernel: ir.Kernel) -> UBEstimate:
    """Everything the `triton` backend checks before compiling for an NPU."""
    for message in alignment_warnings(kernel):
        warnings.warn(f"kernel '{kernel.name}': {message}", NPUPerformanceWarning, stacklevel=2)
    return check_ub(kernel)


def _check_last_axis(type: ir.BlockType, align: int, what: str, loc: ir.Loc | None, note) -> None:
    if type.is_scalar:
        return
    nbytes = type.shape[-1] * type.dtype.itemsize
    if nbytes % align:
        note(loc, f"{what} {type}: last axis is {nbytes} bytes, not a multiple of {align} "
                  "(NPU vector loads and stores move 32-byte units; the cube unit 512-byte rows)")


def _kib(n: int) -> str:
    return f"{n / 1024:.1f} KiB"


class _Liveness:
    """Live intervals of block variables over a linear numbering of the structured IR.

    Statement n sits at position 2n; a result that may overwrite an operand dying at the
    same statement (an elementwise op, operand at least as large) starts at 2n + 1, after
    that operand's interval ends, as the compiler computes such ops in place.
    """

    def __init__(self, kernel: ir.Kernel) -> None:
        self.pos = 0
        self.defs: dict[str, list[int]] = {}
        self.uses: dict[str, list[int]] = {}
        self.consumers: dict[str, list[tuple[ir.Stmt, int]]] = {}
        self.assigns: list[tuple[int, ir.Assign]] = []
        self.info: dict[str, tuple[ir.BlockType, ir.Loc | None, bool]] = {}
        self.loops: list[tuple[int, int]] = []
        self.locs: dict[int, ir.Loc | None] = {}
        self._block(kernel.body)

    def _block(self, block: ir.Block) -> None:
        for stmt in block.stmts:
            self.pos += 2
            self.locs[self.pos] = stmt.loc
            if isinstance(stmt, ir.Assign):
                self._uses(stmt, stmt.args)
                dst = stmt.dst
                self.defs.setdefault(dst.name, []).append(self.pos)
                self.assigns.append((self.pos, stmt))
                self.info.setdefault(dst.name, (dst.type, stmt.loc, stmt.op == "load"))
            elif isinstance(stmt, ir.Store):
                self._uses(stmt, (stmt.ptr, stmt.value, stmt.mask))
            elif isinstance(stmt, ir.For):
                self._uses(stmt, (stmt.start, stmt.stop, stmt.step))
                start = self.pos
                self._block(stmt.body)
                self.pos += 2
                self.loops.append((start, self.pos))
            elif isinstance(stmt, ir.If):
                self._uses(stmt, (stmt.cond,))
                self._block(stmt.then_body)
                self._block(stmt.else_body)

    def _uses(self, stmt: ir.Stmt, operands: tuple[ir.Operand | None, ...]) -> None:
        for i, x in enumerate(operands):
            if isinstance(x, ir.Var):
                self.uses.setdefault(x.name, []).append(self.pos)
                self.consumers.setdefault(x.name, []).append((stmt, i))

    def address_only(self) -> set[str]:
        """Blocks used only to form addresses: the adapter folds them into the accesses."""
        only = {n for n, (t, _, _) in self.info.items() if not t.is_pointer and n in self.consumers}
        changed = True
        while changed:
            changed = False
            for name in list(only):
                for stmt, i in self.consumers[name]:
                    feeds_address = isinstance(stmt, ir.Assign) and (
                        (stmt.op == "addptr" and i == 1) or stmt.dst.name in only)
                    if not feeds_address:
                        only.discard(name)
                        changed = True
                        break
        return only

    def intervals(self) -> dict[str, tuple[int, int, LiveTensor]]:
        skip = self.address_only()
        spans: dict[str, tuple[int, int]] = {}
        for name, defs in self.defs.items():
            type, _, _ = self.info[name]
            if type.is_scalar or type.is_pointer or name in skip:
                continue
            uses = self.uses.get(name, [])
            start, end = min(defs), max(defs + uses)
            for lo, hi in self.loops:
                inner_uses = [u for u in uses if lo < u < hi]
                if not inner_uses:
                    continue
                inner_defs = [d for d in defs if lo < d < hi]
                if not inner_defs or min(inner_uses) <= min(inner_defs):
                    start, end = min(start, lo), max(end, hi)
            spans[name] = (start, end)
        for pos, stmt in self.assigns:
            name = stmt.dst.name
            if name in spans and spans[name][0] == pos and stmt.op in _IN_PLACE and any(
                    isinstance(a, ir.Var) and a.name in spans and spans[a.name][1] == pos
                    and _nbytes(a.type) >= _nbytes(stmt.dst.type) for a in stmt.args):
                spans[name] = (pos + 1, max(pos + 1, spans[name][1]))
        out = {}
        for name, (start, end) in spans.items():
            type, loc, loaded = self.info[name]
            out[name] = (start, end, LiveTensor(name, type, _nbytes(type) * (2 if loaded else 1), loc))
        return out


def _nbytes(type: ir.BlockType) -> int:
    return type.numel * type.dtype.itemsize


_IN_PLACE = {
    "add", "sub", "mul", "truediv", "floordiv", "mod", "and", "or", "xor", "shl", "shr",
    "minimum", "maximum", "lt", "le", "gt", "ge", "eq", "ne", "neg", "not", "invert",
    "exp", "exp2", "log", "log2", "sqrt", "rsqrt", "sigmoid", "abs", "cos", "sin", "cast", "where",
}
