"""The CPU backend's native tier: a kernel's IR as one C function.

At decode sizes the grid-vectorised torch code costs a fixed ~30-60 us per launch (a
dozen torch calls, each ~1-3 us of dispatch) where the arithmetic takes well under a
microsecond. A kernel without `dot` is therefore also emitted as C: the function walks
the grid program by program, and every run of consecutive elementwise statements over
blocks of one size becomes a single loop over the block's lanes. A block value used only
inside its loop is a register there (the C compiler sees `base + start + i` and emits
contiguous vector loads); the others are arrays on the stack.

Semantics, where the two tiers could differ:
- Accesses are checked against the tensor's element count: a lane that is on and out
  of bounds is never performed, and the function returns the access's site number
  (1-based) so the launcher raises `KernelFault` naming its source line.
- Within one program, lanes are processed in order, statement by statement per lane.
  A block whose lanes read what another lane of the same block writes is a data race
  under Triton too; only such kernels can see a difference.
- float16/bfloat16 values (constants included) are held as float and rounded after
  every op, what torch does for one op on half tensors; their sums accumulate in float
  and round once, in a different order than torch's.
- Where C and Triton leave a result undefined the tiers may differ: integer division
  or remainder by zero gives 0 here (torch raises), shifts by the bit width or more
  follow the CPU's masking (torch gives 0 or -1). `x // -1` wraps like torch.
- `program_id(axis)` loops axis 0 innermost.

`emit(kernel)` returns the C source, or None when the kernel uses what this tier does
not cover (`dot`, blocks over the stack budget): the torch tier then runs it alone.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import torch

from kernelforge import ir
from kernelforge.backends.cpu.identities import fold_identities
from kernelforge.ir import DType

FUNCTION = "kf_kernel"
# Bytes of block arrays a program may keep on the stack (worker threads have small stacks).
STACK_BUDGET = 512 * 1024

_VALUE_TYPE = {
    DType.int1: "unsigned char", DType.int8: "signed char", DType.int16: "short",
    DType.int32: "int", DType.int64: "long long", DType.uint8: "unsigned char",
    DType.float16: "float", DType.bfloat16: "float", DType.float32: "float", DType.float64: "double",
}
# float16 travels as its bits, converted by the prelude's functions.
_MEMORY_TYPE = {**_VALUE_TYPE, DType.float16: "unsigned short", DType.bfloat16: "unsigned short"}
_ROUND = {DType.float16: "kf_round_f16", DType.bfloat16: "kf_round_bf16"}
_F16_CONVERSIONS = ("kf_f16_to_float", "kf_float_to_f16", "kf_round_f16")
_INFIX = {"add": "+", "sub": "-", "mul": "*", "and": "&", "or": "|", "xor": "^", "shl": "<<", "shr": ">>",
          "lt": "<", "le": "<=", "gt": ">", "ge": ">=", "eq": "==", "ne": "!="}
_MATH = {"exp": "exp", "exp2": "exp2", "log": "log", "log2": "log2", "sqrt": "sqrt", "cos": "cos", "sin": "sin",
         "abs": "fabs"}
# Ops computed lane by lane inside a block loop: every operand is the result's shape
# (read at the same lane) or a scalar.
_LANEWISE = {"add", "sub", "mul", "truediv", "floordiv", "mod", "and", "or", "xor", "shl", "shr", "minimum",
             "maximum", "lt", "le", "gt", "ge", "eq", "ne", "neg", "not", "invert", "exp", "exp2", "log",
             "log2", "sqrt", "rsqrt", "sigmoid", "abs", "cos", "sin", "cast", "where", "addptr", "arange",
             "full", "load", "reshape", "expand_dims", "broadcast_to", "trans", "atomic_add"}
# Lane ops that read their operand at another lane (must be a finished array).
_REMAPPED = {"broadcast_to", "trans"}
_REDUCTIONS = {"sum", "max", "min", "argmax"}
_UNSUPPORTED = {"dot"}

_PRELUDE = r"""#include <math.h>
#include <string.h>
/* float16 <-> float. The CPU's conversions (one instruction each) serve scalar code, but gcc
   (12) vectorises no loop that converts _Float16; the _bits versions are selects over
   integer ops that it does vectorise, for the loops that `c_emit` expects to vectorise.
   Both are exact and agree bit for bit: subnormal halves scale their mantissa by 2^-24; a
   float below the smallest normal half lands on its subnormal grid by adding 0.5 (the
   float add rounds to nearest even); a normal one rounds its 13 dropped bits to nearest
   even, carrying into the exponent (65520 and up become infinity); NaN stays NaN, quiet. */
static inline float kf_f16_to_float(unsigned short h) { _Float16 v; memcpy(&v, &h, 2); return (float)v; }
static inline unsigned short kf_float_to_f16(float f) { _Float16 v = (_Float16)f; unsigned short h; memcpy(&h, &v, 2); return h; }
static inline float kf_round_f16(float x) { return (float)(_Float16)x; }
static inline float kf_f16_to_float_bits(unsigned short h) {
    unsigned int exponent = h & 0x7c00u;
    unsigned int bits = ((unsigned int)(h & 0x7fffu) << 13) + 0x38000000u;
    bits += exponent == 0x7c00u ? 0x38000000u : 0u;
    bits |= exponent == 0x7c00u && (h & 0x3ffu) ? 0x400000u : 0u;
    float tiny = (float)(h & 0x3ffu) * 5.9604644775390625e-08f;
    unsigned int tiny_bits; memcpy(&tiny_bits, &tiny, 4);
    bits = (exponent == 0 ? tiny_bits : bits) | (unsigned int)(h & 0x8000u) << 16;
    float f; memcpy(&f, &bits, 4);
    return f;
}
static inline unsigned short kf_float_to_f16_bits(float f) {
    unsigned int u; memcpy(&u, &f, 4);
    unsigned int sign = (u >> 16) & 0x8000u, a = u & 0x7fffffffu;
    float af; memcpy(&af, &a, 4);
    float shifted = af + 0.5f;
    unsigned int sub; memcpy(&sub, &shifted, 4);
    unsigned int normal = (a + 0xc8000fffu + ((a >> 13) & 1u)) >> 13;
    unsigned int h = a > 0x7f800000u ? 0x7e00u : a >= 0x47800000u ? 0x7c00u
                   : a < 0x38800000u ? sub - 0x3f000000u : normal;
    return (unsigned short)(h | sign);
}
static inline float kf_round_f16_bits(float x) { return kf_f16_to_float_bits(kf_float_to_f16_bits(x)); }
static inline float kf_bf16_to_float(unsigned short b) {
    unsigned int u = (unsigned int)b << 16; float f; memcpy(&f, &u, 4); return f;
}
static inline unsigned short kf_float_to_bf16(float f) {
    unsigned int u; memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (unsigned short)(u >> 16);
}
static inline float kf_round_bf16(float x) { return kf_bf16_to_float(kf_float_to_bf16(x)); }
/* How many lanes i >= 0 (at most `lanes`) have step * i < room, for step > 0. */
static inline long long kf_prefix(long long room, long long step, long long lanes) {
    if (room <= 0) return 0;
    long long k = (room + step - 1) / step;
    return k < lanes ? k : lanes;
}
"""


class Unsupported(Exception):
    """The kernel needs the torch tier."""


@dataclass(frozen=True)
class Native:
    """A kernel's native tier: the C source and what its launcher must know."""

    source: str  # defines `int kf_kernel(const char *kf_args)`
    kinds: list[str]  # per runtime parameter: 'ptr' (data pointer, element count), 'int' or 'float'
    sites: list[str]  # source line of each checked access, by the site number a fault returns


def emit(kernel: ir.Kernel) -> Native | None:
    """The kernel's native tier, or None when it needs the torch tier (see module docstring)."""
    folded = fold_identities(kernel)
    try:
        source = _Emitter(folded).source()
    except Unsupported:
        return None
    kinds = ["ptr" if p.is_pointer else ("float" if p.var.type.dtype.is_float else "int") for p in folded.params]
    return Native(source, kinds, [str(s.loc) if s.loc else "" for s in _accesses(folded.body)])


def _accesses(block: ir.Block) -> list[ir.Assign | ir.Store]:
    return [s for s in ir.walk(block)
            if isinstance(s, ir.Store) or (isinstance(s, ir.Assign) and s.op in ("load", "atomic_add"))]


@dataclass
class _Group:
    """Consecutive lane statements over blocks of `numel` lanes: one C loop."""

    numel: int
    stmts: list = field(default_factory=list)
    written: set = field(default_factory=set)  # a lane reading another lane must wait for the loop's end
    remapped: set = field(default_factory=set)  # read at other lanes: must not change within the loop

    def accepts(self, s: ir.Stmt) -> bool:
        src = _remapped_source(s)
        if src is not None and src.name in self.written:
            return False
        return not (isinstance(s, ir.Assign) and s.dst.name in self.remapped)

    def add(self, s: ir.Stmt) -> None:
        self.stmts.append(s)
        if isinstance(s, ir.Assign):
            self.written.add(s.dst.name)
        src = _remapped_source(s)
        if src is not None:
            self.remapped.add(src.name)


class _Emitter:
    def __init__(self, kernel: ir.Kernel) -> None:
        self.kernel = kernel
        for s in ir.walk(kernel.body):
            if isinstance(s, ir.Assign) and s.op in _UNSUPPORTED:
                raise Unsupported(s.op)
        self.sites = {id(s): n + 1 for n, s in enumerate(_accesses(kernel.body))}
        self.params = {p.var.name for p in kernel.params}
        self.root_dtypes = {p.name: p.var.type.dtype for p in kernel.params if p.is_pointer}
        self.defs = Counter(s.dst.name for s in ir.walk(kernel.body) if isinstance(s, ir.Assign))
        self.types: dict[str, ir.BlockType] = {}
        self.locals: set[str] = set()
        self.lines: list[str] = []
        self.unchecked: set[int] = set()  # accesses proved in bounds for the loop being emitted
        # Affine forms of arrays whose every lane is fixed by constants (an arange, 2 * i + 1),
        # valid in any later loop that reads them lane by lane. Only arrays filled outside
        # any `for`/`if` count: one filled inside may be read where it was never filled.
        self.constant_forms: dict[str, tuple[str, int, tuple[str, ...]]] = {}
        self.access_steps: dict[int, int] = {}  # per access with an affine offset, its lane coefficient
        self.nesting = 0
        self.depth = 1
        self.counter = 0
        self.plan = self._plan_block(kernel.body)
        self._find_locals()

    # ------------------------------------------------------------------ planning

    def _plan_block(self, block: ir.Block) -> list:
        """The block's statements with lane statements gathered into `_Group`s.

        A pure statement (no memory access) that neither reads nor feeds the open loop
        moves before it: a scalar, or a lane statement of another size (the `[:, None]`
        and `[None, :]` of a 2-D block), which then joins the loop just before when it
        can. The open loop then stays one loop.
        """
        out: list = []
        group: _Group | None = None
        for s in block.stmts:
            numel = _lane_numel(s)
            if group is not None and _movable(s) and not (_operand_names(s) & group.written) \
                    and s.dst.name not in _group_reads(group) | group.written:
                before = out[-2] if len(out) > 1 else None
                if numel is None:
                    out.insert(len(out) - 1, s)
                elif numel != group.numel:
                    if not (isinstance(before, _Group) and before.numel == numel and before.accepts(s)):
                        before = _Group(numel)
                        out.insert(len(out) - 1, before)
                    before.add(s)
                if numel != group.numel:
                    continue
            if numel is not None:
                if group is None or group.numel != numel or not group.accepts(s):
                    group = _Group(numel)
                    out.append(group)
                group.add(s)
                continue
            group = None
            if isinstance(s, ir.For):
                out.append((s, self._plan_block(s.body)))
            elif isinstance(s, ir.If):
                out.append((s, self._plan_block(s.then_body), self._plan_block(s.else_body)))
            else:
                out.append(s)
        return out

    def _find_locals(self) -> None:
        """Block values defined once and read only at their own lane of their own loop."""
        home: dict[str, int] = {}
        uses: dict[str, set] = defaultdict(set)

        def visit(plan: list) -> None:
            for item in plan:
                if isinstance(item, _Group):
                    for s in item.stmts:
                        if isinstance(s, ir.Assign):
                            home[s.dst.name] = id(item)
                        for a in ir.operands(s):
                            if isinstance(a, ir.Var):
                                lanewise = not (isinstance(s, ir.Assign) and s.op in _REMAPPED)
                                uses[a.name].add(id(item) if lanewise else None)
                elif isinstance(item, tuple):
                    stmt = item[0]
                    for a in ir.operands(stmt):
                        if isinstance(a, ir.Var):
                            uses[a.name].add(None)
                    for sub in item[1:]:
                        visit(sub)
                else:
                    for a in ir.operands(item):
                        if isinstance(a, ir.Var):
                            uses[a.name].add(None)

        visit(self.plan)
        self.locals = {name for name, g in home.items()
                       if self.defs[name] == 1 and name not in self.params and uses[name] <= {g}}

    # ------------------------------------------------------------------ output

    def source(self) -> str:
        body_start = len(self.lines)
        self.emit("for (long long kf_pid2 = 0; kf_pid2 < kf_g2; kf_pid2++)")
        self.emit("for (long long kf_pid1 = 0; kf_pid1 < kf_g1; kf_pid1++)")
        self.emit("for (long long kf_pid0 = 0; kf_pid0 < kf_g0; kf_pid0++) {")
        self.depth += 1
        self.block(self.plan)
        self.emit("kf_next_program: ;")
        self.depth -= 1
        self.emit("}")
        self.emit("return 0;")
        body = self.lines[body_start:]
        decls = self.declarations()
        fields = [("long long", "kf_g0"), ("long long", "kf_g1"), ("long long", "kf_g2")]
        for p in self.kernel.params:
            t = p.var.type
            if p.is_pointer:
                fields += [(f"{_MEMORY_TYPE[t.dtype]} *", f"p_{p.name}"), ("long long", f"n_{p.name}")]
            else:
                fields.append(("double" if t.dtype.is_float else "long long", f"a_{p.name}"))
        # One packed argument record (`c_build` packs it with `struct`): a ctypes call
        # converts each argument separately, ~0.15 us apiece.
        head = [f"int {FUNCTION}(const char *kf_args) {{"]
        head += [f"    {ctype} {name}; memcpy(&{name}, kf_args + {8 * n}, 8);" for n, (ctype, name) in enumerate(fields)]
        return _PRELUDE + "\n".join(head + decls + body + ["}"]) + "\n"

    def declarations(self) -> list[str]:
        out, stack = [], 0
        for p in self.kernel.params:
            if p.is_pointer:  # a pointer value is an element offset from its parameter
                out.append(f"    long long v_{p.var.name} = 0;")
            else:
                ctype = _VALUE_TYPE[p.var.type.dtype]
                out.append(f"    {ctype} v_{p.var.name} = ({ctype})a_{p.name};")
        for name, t in sorted(self.types.items()):
            if name in self.params or name in self.locals:
                continue
            ctype = "long long" if t.is_pointer else _VALUE_TYPE[t.dtype]
            if t.shape == ():
                out.append(f"    {ctype} v_{name} = 0;")
            else:
                stack += t.numel * (8 if t.is_pointer or t.dtype is DType.float64 else
                                    4 if t.dtype.is_float else t.dtype.itemsize)
                out.append(f"    {ctype} v_{name}[{t.numel}] __attribute__((aligned(64)));")
        if stack > STACK_BUDGET:
            raise Unsupported(f"{stack} bytes of block arrays")
        return out

    def emit(self, line: str) -> None:
        self.lines.append("    " * self.depth + line)

    def fresh(self, hint: str) -> str:
        self.counter += 1
        return f"kf_{hint}{self.counter}"

    # ------------------------------------------------------------------ statements

    def block(self, plan: list) -> None:
        for item in plan:
            if isinstance(item, _Group):
                self.group(item)
            elif isinstance(item, tuple) and isinstance(item[0], ir.For):
                self.for_loop(*item)
            elif isinstance(item, tuple):
                self.if_else(*item)
            elif isinstance(item, ir.Return):
                self.emit("goto kf_next_program;")
            elif isinstance(item, ir.Store):
                self.scalar_store(item)
            elif item.op in _REDUCTIONS and item.args[0].type.shape != ():
                self.reduction(item)
            else:
                self.note(item.dst)
                self.emit(f"{self.ref(item.dst)} = {self.expr(item, None)};")

    def for_loop(self, s: ir.For, body: list) -> None:
        self.note(s.var)
        lo, hi, step, it = self.fresh("lo"), self.fresh("hi"), self.fresh("step"), self.fresh("it")
        self.emit("{")
        self.depth += 1
        self.emit(f"long long {lo} = {self.val(s.start)}, {hi} = {self.val(s.stop)}, {step} = {self.val(s.step)};")
        self.emit(f"if ({step} == 0) return -{self.loop_site(s)};")
        self.emit(f"for (long long {it} = {lo}; {step} > 0 ? {it} < {hi} : {it} > {hi}; {it} += {step}) {{")
        self.depth += 1
        self.emit(f"v_{s.var.name} = ({_VALUE_TYPE[s.var.type.dtype]}){it};")
        self.nesting += 1
        self.block(body)
        self.nesting -= 1
        self.depth -= 1
        self.emit("}")
        self.depth -= 1
        self.emit("}")

    def loop_site(self, s: ir.For) -> int:
        return 1 + [x for x in ir.walk(self.kernel.body) if isinstance(x, ir.For)].index(s)

    def if_else(self, s: ir.If, then_plan: list, else_plan: list) -> None:
        self.nesting += 1
        self.emit(f"if ({self.val(s.cond)}) {{")
        self.depth += 1
        self.block(then_plan)
        self.depth -= 1
        if else_plan:
            self.emit("} else {")
            self.depth += 1
            self.block(else_plan)
            self.depth -= 1
        self.emit("}")
        self.nesting -= 1

    def group(self, g: _Group) -> None:
        """The group's loop; when some accesses' offsets are affine in the lane, a second
        copy without their per-lane bounds checks runs if both ends are in bounds. A loop
        whose float16 accesses are all contiguous converts with `_bits` (see the prelude)."""
        proven = self.affine_bounds(g)
        vector_f16 = self.contiguous_f16(g)
        if vector_f16:
            self.lines += [f"#define {name} {name}_bits" for name in _F16_CONVERSIONS]
        if not proven:
            self.group_loop(g)
        else:
            conditions = dict.fromkeys(c for conds in proven.values() for c in conds)
            self.emit(f"if ({' && '.join(conditions)}) {{")
            self.depth += 1
            self.unchecked = set(proven)
            self.group_loop(g)
            self.unchecked = set()
            self.depth -= 1
            self.emit("} else {")
            self.depth += 1
            self.group_loop(g)
            self.depth -= 1
            self.emit("}")
        if vector_f16:
            self.lines += [f"#undef {name}" for name in _F16_CONVERSIONS]

    def contiguous_f16(self, g: _Group) -> bool:
        """Whether the group moves float16 data, every access at consecutive elements."""
        f16 = [s for s in g.stmts if id(s) in self.sites
               and (s.ptr if isinstance(s, ir.Store) else s.args[0]).type.dtype is DType.float16]
        return bool(f16) and all(abs(self.access_steps.get(id(s), 0)) == 1 for s in f16)

    def group_loop(self, g: _Group) -> None:
        flags = [self.sites[id(s)] for s in g.stmts if id(s) in self.sites and id(s) not in self.unchecked]
        for site in flags:
            self.emit(f"int kf_bad{site} = 0;")
        self.emit(f"for (long long i = 0; i < {g.numel}; i++) {{")
        self.depth += 1
        for s in g.stmts:
            if isinstance(s, ir.Store):
                self.store(s, "i")
                continue
            self.note(s.dst)
            value = self.expr(s, "i")
            if s.dst.name in self.locals:
                ctype = "long long" if s.dst.type.is_pointer else _VALUE_TYPE[s.dst.type.dtype]
                self.emit(f"{ctype} v_{s.dst.name} = {value};")
            else:
                self.emit(f"v_{s.dst.name}[i] = {value};")
        self.depth -= 1
        self.emit("}")
        for site in flags:
            self.emit(f"if (kf_bad{site}) return {site};")

    def affine_bounds(self, g: _Group) -> dict[int, tuple[str, ...]]:
        """Per access whose offset is `base + coef * lane` (base uniform over the loop), the C
        conditions that its first and last on lanes are in bounds: then every on lane is.

        Without a mask (or with another mask) the last on lane is the block's last lane;
        under a mask that is on exactly for the first k lanes (`cols < n` with `cols` rising
        in the lane) it is lane k - 1, so the masked-off tail of a row's last chunk does not
        send the chunk to the checked loop. Records on the way each access's lane step and,
        outside any for/if, the group's constant forms for later loops."""
        forms: dict[str, tuple[str, int, tuple[str, ...]]] = {}
        prefixes: dict[str, tuple[str, tuple[str, ...]]] = {}

        def form(a: ir.Operand) -> tuple[str, int, tuple[str, ...]] | None:
            if a.type.dtype.is_float and not a.type.is_pointer:
                return None
            if isinstance(a, ir.Const):
                return (_literal(a), 0, ())
            if a.type.shape == ():
                return (f"v_{a.name}", 0, ())
            return forms.get(a.name, self.constant_forms.get(a.name))

        proven = {}
        for s in g.stmts:
            if id(s) in self.sites:
                ptr = s.ptr if isinstance(s, ir.Store) else s.args[0]
                mask = s.mask if isinstance(s, ir.Store) else (s.args[1] if len(s.args) > 1 else None)
                f = form(ptr)
                if f is not None:
                    self.access_steps[id(s)] = f[1]
                    prefix = prefixes.get(mask.name) if isinstance(mask, ir.Var) else None
                    proven[id(s)] = _in_bounds(f, f"n_{_root(ptr)}", g.numel, prefix)
            if isinstance(s, ir.Assign):
                f = _affine(s, form, g.numel)
                if f is None:
                    forms.pop(s.dst.name, None)
                else:
                    forms[s.dst.name] = f
                p = _prefix(s, form, g.numel)
                if p is None:
                    prefixes.pop(s.dst.name, None)
                else:
                    prefixes[s.dst.name] = p
        if self.nesting == 0:
            self.constant_forms.update((name, f) for name, f in forms.items()
                                       if self.defs[name] == 1 and name not in self.locals and _constant_form(f))
        return {k: v for k, v in proven.items() if v is not None}

    def note(self, var: ir.Var) -> None:
        self.types[var.name] = var.type

    # ------------------------------------------------------------------ memory

    def access(self, s: ir.Stmt, ptr: ir.Operand, mask: ir.Operand | None, lane: str | None
               ) -> tuple[str, str, str]:
        """(offset variable, 'lane on and in bounds' variable, its declarations) for one access."""
        root = _root(ptr)
        if self.root_dtypes.get(root) != ptr.type.dtype:
            raise Unsupported(f"a pointer to {ptr.type.dtype} into parameter {root}")
        off, ok = self.fresh("off"), self.fresh("ok")
        on = self.val(mask, lane) if mask is not None else "1"
        bounds = "" if id(s) in self.unchecked else f" && (unsigned long long){off} < (unsigned long long)n_{root}"
        decl = f"long long {off} = {self.val(ptr, lane)}; int {ok} = ({on}){bounds};"
        return off, ok, decl

    def load_expr(self, s: ir.Assign, lane: str | None) -> str:
        ptr = s.args[0]
        mask = s.args[1] if len(s.args) > 1 else None
        other = self.val(s.args[2], lane) if len(s.args) > 2 else "0"
        off, ok, decl = self.access(s, ptr, mask, lane)
        self.emit(decl)
        site = self.sites[id(s)]
        on = self.val(mask, lane) if mask is not None else "1"
        if lane is None:
            self.emit(f"if (({on}) && !{ok}) return {site};")
        elif id(s) not in self.unchecked:
            self.emit(f"kf_bad{site} |= ({on}) && !{ok};")
        return f"({ok} ? {_from_memory(s.dst.type.dtype, f'p_{_root(ptr)}[{off}]')} : {other})"

    def store(self, s: ir.Store, lane: str | None) -> None:
        off, ok, decl = self.access(s, s.ptr, s.mask, lane)
        self.emit(decl)
        site = self.sites[id(s)]
        on = self.val(s.mask, lane) if s.mask is not None else "1"
        dtype = s.ptr.type.dtype
        if lane is None:
            self.emit(f"if (({on}) && !{ok}) return {site};")
        elif id(s) not in self.unchecked:
            self.emit(f"kf_bad{site} |= ({on}) && !{ok};")
        self.emit(f"if ({ok}) p_{_root(s.ptr)}[{off}] = {_to_memory(dtype, self.val(s.value, lane))};")

    def scalar_store(self, s: ir.Store) -> None:
        self.emit("{")
        self.depth += 1
        self.store(s, None)
        self.depth -= 1
        self.emit("}")

    def atomic_expr(self, s: ir.Assign, lane: str | None) -> str:
        ptr, value = s.args[0], s.args[1]
        mask = s.args[2] if len(s.args) > 2 else None
        off, ok, decl = self.access(s, ptr, mask, lane)
        self.emit(decl)
        site = self.sites[id(s)]
        on = self.val(mask, lane) if mask is not None else "1"
        self.emit(f"if (({on}) && !{ok}) return {site};")
        dtype, root = ptr.type.dtype, _root(ptr)
        old = self.fresh("old")
        ctype = _VALUE_TYPE[dtype]
        self.emit(f"{ctype} {old} = {ok} ? {_from_memory(dtype, f'p_{root}[{off}]')} : 0;")
        total = _rounded(dtype, f"{old} + {self.val(value, lane)}")
        self.emit(f"if ({ok}) p_{root}[{off}] = {_to_memory(dtype, total)};")
        return old

    # ------------------------------------------------------------------ reductions

    def reduction(self, s: ir.Assign) -> None:
        src, dst = s.args[0], s.dst
        self.note(dst)
        shape = src.type.shape
        axis = s.attrs.get("axis")
        if axis is None:
            outer, extent, inner = 1, src.type.numel, 1
        else:
            axis %= len(shape)
            outer, extent, inner = math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1:])
        out_t = dst.type
        ctype = _VALUE_TYPE[out_t.dtype]
        in_ref = f"v_{src.name}"
        out_ref = (lambda k: f"v_{dst.name}") if out_t.shape == () else (lambda k: f"v_{dst.name}[{k}]")
        self.emit("{")
        self.depth += 1
        if s.op == "argmax":
            self.argmax(in_ref, out_ref, outer, extent, inner, src.type.dtype)
        else:
            self.fold(s.op, in_ref, out_ref, outer, extent, inner, ctype, out_t.dtype)
        self.depth -= 1
        self.emit("}")

    def fold(self, op: str, src: str, out, outer: int, extent: int, inner: int, ctype: str, dtype: DType) -> None:
        """Folds contiguous values into 16 partial results (one vector) combined pairwise:
        combined one by one, the 15 dependent adds cost more than a short row's loop. The
        folding loop stays a loop (`unroll 1`): gcc unrolls a short one into scalar adds."""
        init = {"sum": "0", "max": _lowest(dtype), "min": _highest(dtype)}[op]
        lanes = 16 if inner == 1 and extent >= 32 else 1
        acc = self.fresh("acc")
        self.emit(f"for (long long o = 0; o < {outer}; o++) for (long long j = 0; j < {inner}; j++) {{")
        self.depth += 1
        self.emit(f"{ctype} {acc}[{lanes}];")
        self.emit(f"for (int l = 0; l < {lanes}; l++) {acc}[l] = {init};")
        self.emit("long long r = 0;")
        x = f"({ctype}){src}[(o * {extent} + r + l) * {inner} + j]"
        self.emit("#pragma GCC unroll 1")
        self.emit(f"for (; r + {lanes} <= {extent}; r += {lanes}) for (int l = 0; l < {lanes}; l++) "
                  f"{acc}[l] = {_combine(op, f'{acc}[l]', x)};")
        x_tail = f"({ctype}){src}[(o * {extent} + r) * {inner} + j]"
        self.emit(f"for (; r < {extent}; r++) {acc}[0] = {_combine(op, f'{acc}[0]', x_tail)};")
        width = lanes // 2
        while width:  # one loop per level: constant bounds show the halves do not overlap
            self.emit(f"for (int l = 0; l < {width}; l++) {acc}[l] = {_combine(op, f'{acc}[l]', f'{acc}[l + {width}]')};")
            width //= 2
        self.emit(f"{out(f'o * {inner} + j')} = {_rounded(dtype, f'{acc}[0]')};")
        self.depth -= 1
        self.emit("}")

    def argmax(self, src: str, out, outer: int, extent: int, inner: int, dtype: DType) -> None:
        ctype = _VALUE_TYPE[dtype]
        self.emit(f"for (long long o = 0; o < {outer}; o++) for (long long j = 0; j < {inner}; j++) {{")
        self.depth += 1
        self.emit(f"{ctype} best = {src}[o * {extent} * {inner} + j]; int at = 0;")
        self.emit(f"for (long long r = 1; r < {extent}; r++) {{")
        self.emit(f"    {ctype} x = {src}[(o * {extent} + r) * {inner} + j];")
        nan = " || (x != x && best == best)" if dtype.is_float else ""
        self.emit(f"    if (x > best{nan}) {{ best = x; at = (int)r; }}")
        self.emit("}")
        self.emit(f"{out(f'o * {inner} + j')} = at;")
        self.depth -= 1
        self.emit("}")

    # ------------------------------------------------------------------ expressions

    def ref(self, var: ir.Var, lane: str | None = None) -> str:
        if var.type.shape == () or var.name in self.locals or lane is None:
            return f"v_{var.name}"
        fixed = self.constant_forms.get(var.name)
        if fixed is None:
            return f"v_{var.name}[{lane}]"
        # The lane's value as arithmetic, not a load: offsets read from an array look like a
        # gather to gcc, which then leaves the loop scalar. The conditions fold at compile time.
        base, coef, conds = fixed
        ctype = "long long" if var.type.is_pointer else _VALUE_TYPE[var.type.dtype]
        value = f"({ctype})(({base}) + {coef}LL * {lane})"
        return f"(({' && '.join(conds)}) ? {value} : v_{var.name}[{lane}])" if conds else value

    def val(self, a: ir.Operand, lane: str | None = None) -> str:
        if isinstance(a, ir.Const):
            return _literal(a)
        return self.ref(a, lane)

    def expr(self, s: ir.Assign, lane: str | None) -> str:
        op, args, t = s.op, s.args, s.dst.type
        dtype = t.dtype
        v = [self.val(a, lane) for a in args] if op not in _REMAPPED else []
        if op == "program_id":
            return f"({_VALUE_TYPE[dtype]})kf_pid{s.attrs['axis']}"
        if op == "num_programs":
            return f"({_VALUE_TYPE[dtype]})kf_g{s.attrs['axis']}"
        if op == "arange":
            return f"({_VALUE_TYPE[dtype]})({s.attrs['start']} + {lane})"
        if op in ("full", "reshape", "expand_dims"):
            return v[0]
        if op in _REMAPPED:
            return self.remapped(s, lane)
        if op == "load":
            return self.load_expr(s, lane)
        if op == "atomic_add":
            return self.atomic_expr(s, lane)
        if op in ("sum", "max", "min", "argmax"):  # of a scalar
            return v[0] if op != "argmax" else "0"
        if op == "addptr":
            return f"({v[0]} + (long long)({v[1]}))"
        if op == "cast" and t.is_pointer:
            if dtype != args[0].type.dtype:
                raise Unsupported("a pointer cast to another element type")
            return v[0]
        if op == "cast":
            return _cast(v[0], args[0].type.dtype, dtype)
        if op == "where":
            return f"({v[0]} ? {v[1]} : {v[2]})"
        if op in ("lt", "le", "gt", "ge", "eq", "ne"):
            return f"({v[0]} {_INFIX[op]} {v[1]})"
        if op in _INFIX:
            return _rounded(dtype, f"({_VALUE_TYPE[dtype]})({v[0]} {_INFIX[op]} {v[1]})")
        if op == "truediv":
            return _rounded(dtype, f"({v[0]} / {v[1]})")
        if op == "floordiv":  # integers only (the frontend rejects // on floats)
            return f"({v[1]} == 0 ? 0 : {v[1]} == -1 ? {_negated(v[0], dtype)} : ({_VALUE_TYPE[dtype]})({v[0]} / {v[1]}))"
        if op == "mod":
            if dtype.is_float:
                return _rounded(dtype, f"{_math('fmod', dtype)}({v[0]}, {v[1]})")
            return f"({v[1]} == 0 || {v[1]} == -1 ? 0 : ({_VALUE_TYPE[dtype]})({v[0]} % {v[1]}))"
        if op in ("minimum", "maximum"):
            return _pick(op, v[0], v[1], dtype)
        if op == "neg":
            return f"({_VALUE_TYPE[dtype]})(-{v[0]})"
        if op == "not":
            return f"(!{v[0]})"
        if op == "invert":
            return f"(!{v[0]})" if dtype.is_bool else f"({_VALUE_TYPE[dtype]})(~{v[0]})"
        if op == "rsqrt":
            return _rounded(dtype, f"(1 / {_math('sqrt', dtype)}({v[0]}))")
        if op == "sigmoid":
            return _rounded(dtype, f"(1 / (1 + {_math('exp', dtype)}(-{v[0]})))")
        if op in _MATH:
            if op == "abs" and not dtype.is_float:
                return f"({_VALUE_TYPE[dtype]})({v[0]} < 0 ? -{v[0]} : {v[0]})"
            return _rounded(dtype, f"{_math(_MATH[op], dtype)}({v[0]})")
        raise Unsupported(op)

    def remapped(self, s: ir.Assign, lane: str | None) -> str:
        """`broadcast_to`/`trans`: the source lane this result lane reads."""
        src = s.args[0]
        if src.type.shape == () or lane is None:
            return self.val(src, lane)
        out_shape = s.dst.type.shape
        in_shape = src.type.shape
        if s.op == "trans":
            perm = s.attrs["perm"]
            in_strides = _strides(in_shape)
            strides = [in_strides[perm[d]] for d in range(len(out_shape))]
        else:
            padded = (1,) * (len(out_shape) - len(in_shape)) + tuple(in_shape)
            strides = [0 if n == 1 else st for n, st in zip(padded, _strides(padded))]
        terms = []
        inner = 1
        for d in reversed(range(len(out_shape))):
            if strides[d] and out_shape[d] > 1:
                index = lane if inner == 1 else f"({lane} / {inner})"
                if d > 0:
                    index = f"({index} % {out_shape[d]})"
                terms.append(f"{index} * {strides[d]}" if strides[d] != 1 else index)
            inner *= out_shape[d]
        return f"v_{src.name}[{' + '.join(terms) or '0'}]"


# ---------------------------------------------------------------------- helpers


def _lane_numel(s: ir.Stmt) -> int | None:
    """Lanes of the loop a statement joins, or None when it is not a lane statement."""
    if isinstance(s, ir.Store):
        shape = s.ptr.type.shape
        return math.prod(shape) if shape != () else None
    if isinstance(s, ir.Assign) and s.op in _LANEWISE and s.dst.type.shape != ():
        return s.dst.type.numel
    return None


def _affine(s: ir.Assign, form, lanes: int) -> tuple[str, int, tuple[str, ...]] | None:
    """`s`'s result as (uniform C expression, coefficient of the lane, conditions), or None.

    The expression is computed in 64 bits; the conditions say that every lane's value
    fits the result's narrower integer type, where C would wrap instead (a narrowing cast
    or int32 arithmetic), so that the form is the value C computes."""
    op, args, t = s.op, s.args, s.dst.type
    if t.dtype.is_float and not t.is_pointer:
        return None
    if op == "arange":
        return (str(s.attrs["start"]), 1, ())
    if op in ("expand_dims", "reshape", "full"):
        return form(args[0])
    if op == "broadcast_to" and isinstance(args[0], ir.Var) and args[0].type.shape != () \
            and args[0].type.numel == 1:  # every lane reads the one element of a finished array
        return (f"v_{args[0].name}[0]", 0, ())
    if op == "cast":
        if t.dtype.is_bool:
            return None
        a = form(args[0])
        return None if a is None else _fitting(a, t, lanes)
    if op not in ("add", "sub", "addptr", "mul"):
        return None
    a, b = form(args[0]), form(args[1])
    if a is None or b is None:
        return None
    if op == "mul":
        if a[1] and b[1]:
            return None
        scalar, lane = (args[1], a) if a[1] else (args[0], b)
        if lane[1] and not isinstance(scalar, ir.Const):
            return None
        factor = int(scalar.value) if lane[1] else 0
        result = (f"((long long)({a[0]}) * (long long)({b[0]}))", lane[1] * factor, a[2] + b[2])
    else:
        sign = "-" if op == "sub" else "+"
        result = (f"((long long)({a[0]}) {sign} (long long)({b[0]}))",
                  a[1] - b[1] if op == "sub" else a[1] + b[1], a[2] + b[2])
    return _fitting(result, t, lanes)


def _fitting(f: tuple[str, int, tuple[str, ...]], t: ir.BlockType, lanes: int) -> tuple[str, int, tuple[str, ...]]:
    """`f` plus the condition that its first and last lanes fit `t` (none for 64-bit offsets)."""
    if t.is_pointer or t.dtype.bits >= 64:
        return f
    base, coef, conds = f
    low, high = (-(1 << (t.dtype.bits - 1)), (1 << (t.dtype.bits - 1)) - 1) if t.dtype.is_signed else \
        (0, (1 << t.dtype.bits) - 1)
    ends = (f"({base})", f"(({base}) + {coef * (lanes - 1)}LL)")
    return base, coef, conds + tuple(f"{e} >= {low}LL && {e} <= {high}LL" for e in ends)


def _constant_form(f: tuple[str, int, tuple[str, ...]]) -> bool:
    """Whether a form names no value (only literals), so that it holds wherever it is read."""
    return "v_" not in f[0] and not any("v_" in c for c in f[2])


def _in_bounds(f: tuple[str, int, tuple[str, ...]], count: str, lanes: int,
               prefix: tuple[str, tuple[str, ...]] | None) -> tuple[str, ...] | None:
    """The conditions that every on lane of an access at offset `f` is below `count`: its
    form's own, and its first and last on lanes (the first `prefix[0]` lanes under a prefix
    mask, else all `lanes`) in bounds. None when the lane span could overflow 64 bits."""
    base, coef, conds = f
    if abs(coef) * lanes >= 1 << 62:
        return None
    n = f"(unsigned long long){count}"
    first = f"(unsigned long long)({base}) < {n}"
    if prefix is None:
        return conds + (first, f"(unsigned long long)(({base}) + {coef * (lanes - 1)}LL) < {n}")
    on, mask_conds = prefix
    last = f"(unsigned long long)(({base}) + {coef}LL * ({on} - 1)) < {n}"
    return conds + mask_conds + (f"({on} == 0 || ({first} && {last}))",)


# A compare `a op b` is on where sign * (a - b) < slack.
_PREFIX_COMPARES = {"lt": (1, 0), "le": (1, 1), "gt": (-1, 0), "ge": (-1, 1)}


def _prefix(s: ir.Assign, form, lanes: int) -> tuple[str, tuple[str, ...]] | None:
    """When `s` is a compare of affine forms that is on exactly for the lanes below some k:
    (C expression of k, the conditions under which that holds), else None.

    Its operands must be 32 bits or narrower: their forms' conditions then make the 64-bit
    forms the exact values C compares."""
    if s.op not in _PREFIX_COMPARES or any(a.type.dtype.is_float or a.type.dtype.bits > 32 for a in s.args):
        return None
    fa, fb = form(s.args[0]), form(s.args[1])
    if fa is None or fb is None:
        return None
    sign, slack = _PREFIX_COMPARES[s.op]
    step = sign * (fa[1] - fb[1])
    if step <= 0 or step * lanes >= 1 << 62:
        return None
    room = f"({slack}LL - {sign}LL * ((long long)({fa[0]}) - (long long)({fb[0]})))"
    return f"kf_prefix({room}, {step}LL, {lanes}LL)", fa[2] + fb[2]


def _remapped_source(s: ir.Stmt) -> ir.Var | None:
    """The block a `broadcast_to`/`trans` reads at other lanes."""
    if isinstance(s, ir.Assign) and s.op in _REMAPPED and isinstance(s.args[0], ir.Var) \
            and s.args[0].type.shape != ():
        return s.args[0]
    return None


def _movable(s: ir.Stmt) -> bool:
    """A statement that may run earlier than written: pure, and a scalar or a lane statement."""
    if not isinstance(s, ir.Assign) or s.op in ("load", "atomic_add", "program_id", "num_programs"):
        return False
    return s.dst.type.shape == () and s.op not in _REDUCTIONS or _lane_numel(s) is not None


def _operand_names(s: ir.Stmt) -> set[str]:
    return {a.name for a in ir.operands(s) if isinstance(a, ir.Var)}


def _group_reads(g: _Group) -> set[str]:
    return set().union(*(_operand_names(s) for s in g.stmts))


def _root(ptr: ir.Operand) -> str:
    if not isinstance(ptr, ir.Var) or ptr.root is None:
        raise Unsupported("a pointer without a root parameter")
    return ptr.root


def _strides(shape) -> list[int]:
    out, step = [], 1
    for n in reversed(shape):
        out.append(step)
        step *= n
    return out[::-1]


def _literal(c: ir.Const) -> str:
    d = c.type.dtype
    if d.is_float:
        v = float(c.value)
        if math.isnan(v):
            return "NAN"
        if math.isinf(v):
            return "INFINITY" if v > 0 else "(-INFINITY)"
        if d in _ROUND:  # the constant as float16/bfloat16 holds it (exact in float)
            v = float(torch.tensor(v, dtype=d.torch_dtype))
        return f"(({_VALUE_TYPE[d]}){v!r})"
    if d.is_bool:
        return "1" if c.value else "0"
    return f"(({_VALUE_TYPE[d]}){int(c.value)}LL)"


def _negated(x: str, dtype: DType) -> str:
    """-x wrapping like torch (the most negative value stays itself), without C's overflow."""
    return f"({_VALUE_TYPE[dtype]})(0ULL - (unsigned long long)({x}))"


def _math(name: str, dtype: DType) -> str:
    """The C math function for `dtype`'s value type (float functions for 32 bits and less)."""
    return name if dtype is DType.float64 else f"{name}f"


def _rounded(dtype: DType, expr: str) -> str:
    return f"{_ROUND[dtype]}({expr})" if dtype in _ROUND else expr


def _cast(x: str, src: DType, dst: DType) -> str:
    if src == dst:
        return x
    if dst.is_bool:
        return f"({x} != 0)"
    return _rounded(dst, f"({_VALUE_TYPE[dst]})({x})")


def _from_memory(dtype: DType, x: str) -> str:
    if dtype is DType.bfloat16:
        return f"kf_bf16_to_float({x})"
    if dtype is DType.float16:
        return f"kf_f16_to_float({x})"
    return x


def _to_memory(dtype: DType, x: str) -> str:
    if dtype is DType.bfloat16:
        return f"kf_float_to_bf16({x})"
    if dtype is DType.float16:
        return f"kf_float_to_f16({x})"
    if dtype.is_bool:
        return f"(unsigned char)(({x}) != 0)"
    return x


def _pick(op: str, a: str, b: str, dtype: DType) -> str:
    """torch.minimum/maximum: NaN in either operand gives NaN."""
    better = "<" if op == "minimum" else ">"
    if dtype.is_float:
        return f"(({a}) != ({a}) || ({a}) {better} ({b}) ? ({a}) : ({b}))"
    return f"(({a}) {better} ({b}) ? ({a}) : ({b}))"


def _combine(op: str, acc: str, x: str) -> str:
    if op == "sum":
        return f"{acc} + {x}"
    return _pick("maximum" if op == "max" else "minimum", x, acc, DType.float32)


def _lowest(dtype: DType) -> str:
    if dtype.is_float:
        return "(-INFINITY)"
    return str(-(1 << (dtype.bits - 1))) + "LL" if dtype.is_signed else "0"


def _highest(dtype: DType) -> str:
    if dtype.is_float:
        return "INFINITY"
    if dtype.is_bool:
        return "1"
    return str((1 << (dtype.bits - (1 if dtype.is_signed else 0))) - 1) + "LL"
