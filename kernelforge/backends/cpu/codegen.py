"""IR -> grid-vectorised PyTorch source (the CPU backend's code generator).

One generated `launch(grid, args)` runs *all* program instances at once:

- a varying value carries a leading grid axis (`program_id(0)` is `[G]`, a block
  `[B]` is `[G, B]`); a uniform value has none and torch broadcasts it for free;
  uniform scalars are Python numbers, so their arithmetic costs no tensor dispatch;
- constant blocks (`arange`, constant `full`) are built once, at module load;
- divergent control flow is predicated with a per-program mask (`predication.py`
  holds the reasoning); uniform control flow stays plain Python;
- loads and stores go through `memory.py`, which picks strided views over gathers
  when the offsets are affine (`affine.py`).
"""

from __future__ import annotations

import builtins
import keyword
import math

from kernelforge import ir
from kernelforge.backends.cpu import affine, aliasing, fusion, memory, predication, regions, trim
from kernelforge.backends.cpu.identities import fold_identities
from kernelforge.backends.cpu.analysis import Facts, analyze, contains_return, references
from kernelforge.ir import DType

# Names the generated module itself uses; kernel variables are renamed around them.
_RESERVED = {"torch", "math", "rt", "rows", "tails", "views", "sanitizer", "P", "grid", "args", "launch", "alive",
             *dir(builtins)}

_BINARY = {"add": "+", "sub": "-", "mul": "*", "and": "&", "or": "|", "xor": "^",
           "shl": "<<", "shr": ">>", "lt": "<", "le": "<=", "gt": ">", "ge": ">=",
           "eq": "==", "ne": "!="}
_UNARY_TORCH = {"exp": "torch.exp", "exp2": "torch.exp2", "log": "torch.log", "log2": "torch.log2",
                "sqrt": "torch.sqrt", "rsqrt": "torch.rsqrt", "sigmoid": "torch.sigmoid",
                "cos": "torch.cos", "sin": "torch.sin", "abs": "torch.abs"}
_REDUCE = {"sum": "torch.sum", "max": "torch.amax", "min": "torch.amin", "argmax": "torch.argmax"}


def torch_dtype(d: DType) -> str:
    return f"torch.{str(d.torch_dtype).removeprefix('torch.')}"


def literal(c: ir.Const) -> str:
    v = c.value
    if c.type.dtype.is_bool:
        return "True" if v else "False"
    if c.type.dtype.is_float:
        v = float(v)
        if math.isnan(v):
            return "math.nan"
        if math.isinf(v):
            return "math.inf" if v > 0 else "-math.inf"
        return repr(v)
    return repr(int(v))


class CodeGen:
    """Emits the module for one kernel; `source()` returns it."""

    def __init__(self, kernel: ir.Kernel, sanitize: bool = False, peepholes: bool = True) -> None:
        self.kernel = kernel
        self.sanitize = sanitize
        self.facts: Facts = analyze(kernel)
        self.softmaxes = fusion.find_softmaxes(kernel) if peepholes else {}
        self.lines: list[str] = []
        self.consts: dict[str, str] = {}  # module-level constant expr -> name
        self.names: dict[str, str] = {}
        self.used: set[str] = set(_RESERVED)
        self.depth = 1
        self.mask: str | None = None  # name of the [G] bool tensor of running programs
        self.defined: set[str] = set()
        self.roots: set[str] = set()
        # Sanitized code checks materialised offsets, so it takes no affine shortcuts.
        self.accesses = {} if sanitize else affine.analyze_accesses(kernel, self.facts)
        self.live = affine.live_assigns(kernel, self.accesses) - {
            i for chain in self.softmaxes.values() for i in chain.covered}
        self.fused = fusion.find_pairs(kernel, self.facts, self.accesses)
        self.deferred = {id(d) for d in self.fused.values()}
        self.accumulators, self.inplace_dots, self.private_inits = fusion.find_accumulators(kernel, self.facts)
        self.total_refs = references(kernel.body)
        for acc in self.accesses.values():  # forms read variables the IR no longer names there
            for atom in acc.ptr.atoms() | (acc.mask.atoms() if acc.mask is not None else set()):
                self.total_refs[atom] += 1
        # reads through access forms count: an in-place op must not reuse a buffer one still reads
        row_gathers = {i for i, acc in self.accesses.items() if acc.rows is not None} - self.deferred
        self.inplace = fusion.find_inplace(kernel, self.facts, self.total_refs, row_gathers)
        self.inplace_dots |= fusion.find_dots_into_temporaries(kernel, self.facts, self.total_refs, row_gathers)
        owned = set(self.softmaxes) | {i for chain in self.softmaxes.values() for i in chain.covered}
        stores = {id(st): st for st in ir.walk(kernel.body) if isinstance(st, ir.Store)}
        fused_stores = {id(d): stores[i] for i, d in self.fused.items()}
        self.trimmed = trim.find_trimmed(kernel, self.facts, self.accesses, owned, fused_stores)
        # a scratch buffer has the block's full shape; a trimmed op's result has the box's
        self.scratch = fusion.find_scratch(kernel, self.facts, self.inplace, self.total_refs) - self.trimmed.stmts
        self.free_broadcasts = (fusion.find_free_broadcasts(kernel, self.facts, self.total_refs) - self.scratch
                                if peepholes else set())
        self.scratch_keys: list[str] = []
        self.fill_wheres = fusion.find_fill_wheres(kernel, self.facts, self.total_refs, row_gathers - self.scratch)
        self.functions: list[str] = []  # module-level compute regions
        self.written_roots = {s.ptr.root for s in ir.walk(kernel.body) if isinstance(s, ir.Store)} | {
            s.args[0].root for s in ir.walk(kernel.body) if isinstance(s, ir.Assign) and s.op == "atomic_add"}
        self.exposed = aliasing.exposed_roots(kernel, fused_stores)
        self.shared_flags: dict[tuple[str, frozenset[str]], str] = {}  # (root, others) -> launch-time flag

    # ------------------------------------------------------------------ naming / output

    def fresh(self, hint: str) -> str:
        base = hint if hint.isidentifier() and not keyword.iskeyword(hint) else f"v_{abs(hash(hint)) % 997}"
        name, i = base, 1
        while name in self.used:
            name, i = f"{base}_{i}", i + 1
        self.used.add(name)
        return name

    def name(self, var: ir.Var | str) -> str:
        key = var if isinstance(var, str) else var.name
        if key not in self.names:
            self.names[key] = self.fresh(key)
        return self.names[key]

    def emit(self, line: str) -> None:
        self.lines.append("    " * self.depth + line)

    def const(self, expr: str, hint: str) -> str:
        """A module-level constant, built once at load; never mutated by generated code."""
        if expr not in self.consts:
            self.consts[expr] = self.fresh(hint)
        return self.consts[expr]

    def flat(self, root: str) -> str:
        self.roots.add(root)
        return f"{self.name(root)}_flat"

    def emit_shared_flags(self) -> None:
        """The launch's storage comparisons (`aliasing.py`): each argument's storage read once."""
        roots = sorted({r for root, others in self.shared_flags for r in (root, *others)})
        storage = {r: self.fresh(f"{r}_storage") for r in roots}
        for r in roots:
            self.emit(f"{storage[r]} = {self.name(r)}.untyped_storage().data_ptr()")
        for (root, others), flag in self.shared_flags.items():
            tests = " or ".join(f"{storage[root]} == {storage[o]}" for o in sorted(others))
            self.emit(f"{flag} = {tests}")

    def shared_flag(self, root: str, others: frozenset[str]) -> str:
        """The name of a flag the launch sets once: whether `root` shares memory with one of `others`."""
        key = (root, others)
        if key not in self.shared_flags:
            self.shared_flags[key] = self.fresh(f"{root}_shared")
        return self.shared_flags[key]

    # ------------------------------------------------------------------ operands

    def varying(self, op: ir.Operand) -> bool:
        return self.facts.is_varying(op)

    def py(self, op: ir.Operand) -> bool:
        return self.facts.is_py(op)

    def val(self, op: ir.Operand, rank: int = 0) -> str:
        """An operand's expression; a varying scalar used in a rank-`rank` op gets trailing axes."""
        if isinstance(op, ir.Const):
            return literal(op)
        name = self.name(op)
        if rank and op.type.is_scalar and self.varying(op):
            return f"{name}[:{', None' * rank}]"
        return name

    def elementwise_val(self, s: ir.Assign, op: ir.Operand, rank: int = 0) -> str:
        """An operand of the elementwise op `s`; a constant beside a tensor of its type is a
        module-level 0-d tensor. Torch wraps a Python number into a fresh 0-d tensor and
        converts it on every call (~1.5 us an op); a tensor of the operand's type gives the
        same values. Not for 16-bit floats, whose ops compute a Python number in fp32."""
        if not isinstance(op, ir.Const) or not any(
                a is not op and not self.py(a) and a.type.dtype == op.type.dtype for a in s.args):
            return self.val(op, rank)
        dtype = op.type.dtype
        if dtype.is_bool or (dtype.is_float and dtype.bits < 32):
            return self.val(op, rank)
        return self.const(f"torch.tensor({literal(op)}, dtype={torch_dtype(dtype)})", "scalar")

    def tensor_val(self, op: ir.Operand) -> str:
        """An operand as a tensor (Python numbers become 0-d tensors of their dtype)."""
        if self.py(op):
            return f"torch.tensor({self.val(op)}, dtype={torch_dtype(op.type.dtype)})"
        return self.val(op)

    def grid_mask(self, rank: int, mask: str | None = None) -> str | None:
        """The running-programs mask shaped to broadcast against a rank-`rank` block."""
        m = self.mask if mask is None else mask
        if m is None:
            return None
        return f"{m}[:{', None' * rank}]" if rank else m

    def dims(self, op: ir.Operand) -> int:
        """Offset of block axes in the run-time tensor (1 when it carries the grid axis)."""
        return 1 if self.varying(op) else 0

    # ------------------------------------------------------------------ module

    def source(self) -> str:
        k = self.kernel
        if self.facts.divergent_return:
            self.mask = "alive"
        self.emit_block(k.body)
        body = self.lines
        self.lines = []
        self.emit(f"{', '.join(self.name(p.name) for p in k.params)}{',' if len(k.params) == 1 else ''} = args"
                  if k.params else "del args")
        for p in k.params:
            if not p.is_pointer:
                conv = "float" if p.var.type.dtype.is_float else ("bool" if p.var.type.dtype.is_bool else "int")
                self.emit(f"{self.name(p.name)} = {conv}({self.name(p.name)})")
        for p in k.params:
            if p.name in self.roots:
                self.emit(f"{self.flat(p.name)} = rt.flat({self.name(p.name)})")
        self.emit_shared_flags()
        self.emit("P = rt.Programs(grid)")
        self.emit("if P.G == 0:")
        self.emit("    return")
        if self.facts.divergent_return:
            self.emit("alive = torch.ones(P.G, dtype=torch.bool)")
        prologue = self.lines
        params = ", ".join(f"{p.name}: {p.var.type}" for p in k.params)
        consts = ", ".join(f"{n}={v!r}" for n, v in k.constexprs.items())
        head = [
            f'"""Kernel `{k.name}` ({k.file}:{k.line}) for the kernelforge CPU backend.',
            "",
            f"params: {params}",
        ]
        if consts:
            head.append(f"constexprs: {consts}")
        if self.sanitize:
            head.append("sanitized: every unmasked load/store lane is bounds-checked")
        head += ['"""', "import math", "", "import torch", "",
                 "from kernelforge.backends.cpu import rows, runtime as rt, tails, views"]
        if self.sanitize:
            head.append("from kernelforge.backends.cpu import sanitizer")
        head.append("")
        for expr, name in self.consts.items():
            head.append(f"{name} = {expr}")
        head += ["", ""] + self.functions + ["def launch(grid, args):"]
        return "\n".join(head + prologue + body) + "\n"

    # ------------------------------------------------------------------ statements

    def emit_block(self, block: ir.Block) -> None:
        start = len(self.lines)
        region = regions.Region()
        for stmt in block.stmts:
            if not isinstance(stmt, ir.Assign):
                self.flush(region)
                self.emit_stmt(stmt)
                if isinstance(stmt, ir.Return):
                    break
                continue
            mark = len(self.lines)
            self.emit_assign(stmt)
            text = self.lines[mark:]
            del self.lines[mark:]
            if not text:  # dead, or deferred into a fused store
                continue
            if regions.eligible(stmt, self.py(stmt.dst), text) and id(stmt) not in self.softmaxes:
                region.stmts.append(stmt)
                region.lines.append(text[0].strip())
            else:
                self.flush(region)
                self.lines.extend(text)
        self.flush(region)
        if len(self.lines) == start:
            self.emit("pass")

    def flush(self, region: regions.Region) -> None:
        """Emits a pending run of tensor math: as a `_compute` function when it has 2+ ops."""
        if len(region.stmts) >= 2:
            inputs, outputs = region.signature(self.total_refs)
            fn = self.fresh("_compute")
            params = [self.name(n) for n in inputs]
            results = [self.name(n) for n in outputs]
            self.functions += regions.function(fn, params, results, region.lines)
            call = f"{fn}({', '.join(params)})"
            self.emit(f"{', '.join(results)} = {call}" if results else call)
        else:
            for line in region.lines:
                self.emit(line)
        region.stmts.clear()
        region.lines.clear()

    def emit_stmt(self, stmt: ir.Stmt) -> None:
        if isinstance(stmt, ir.Assign):
            self.emit_assign(stmt)
        elif isinstance(stmt, ir.Store):
            self.emit_store(stmt)
        elif isinstance(stmt, ir.For):
            self.emit_for(stmt)
        elif isinstance(stmt, ir.If):
            self.emit_if(stmt)
        elif isinstance(stmt, ir.Return):
            self.emit_return()

    def assign_to(self, dst: ir.Var, rhs: str, rhs_varying: bool, rhs_py: bool) -> None:
        name = self.name(dst)
        t = dst.type
        if dst.name in self.facts.varying and not rhs_varying:
            rhs = f"rt.expand_grid({rhs}, P.G, {tuple(t.shape)!r}, {self.store_dtype(t)})"
        elif t.is_scalar and dst.name in self.facts.tensor_scalars and rhs_py:
            rhs = f"torch.tensor({rhs}, dtype={self.store_dtype(t)})"
        self.emit(f"{name} = {rhs}")
        self.defined.add(dst.name)

    def store_dtype(self, t: ir.BlockType) -> str:
        return "torch.int64" if t.is_pointer else torch_dtype(t.dtype)

    def emit_assign(self, s: ir.Assign, now: bool = False) -> None:
        if id(s) not in self.live or (id(s) in self.deferred and not now):
            return
        rhs_varying = s.op in ("program_id", "atomic_add") or any(self.varying(a) for a in s.args)
        rhs_py = s.op in ("num_programs",) or (s.dst.type.is_scalar and not rhs_varying
                                               and s.dst.name not in self.facts.tensor_scalars
                                               and all(self.py(a) for a in s.args))
        if s.op == "load":
            rhs, rhs_varying = memory.load(self, s)
        elif s.op == "atomic_add":
            rhs, rhs_varying = memory.atomic_add(self, s)
        else:
            rhs = self.expr(s)
        private = id(s) in self.private_inits
        self.assign_to(s.dst, rhs, rhs_varying, rhs_py)
        if private:  # an in-place accumulator starts as its own copy
            self.emit(f"{self.name(s.dst)} = {self.name(s.dst)}.clone()")

    def emit_store(self, s: ir.Store) -> None:
        memory.store(self, s)

    def emit_return(self) -> None:
        if self.mask is None:
            self.emit("return")
        else:
            self.emit(f"alive = alive & ~{self.mask}")

    def refresh_mask(self, stmt: ir.For | ir.If) -> None:
        """After a construct that may have ended programs, drop them from the mask."""
        bodies = [stmt.body] if isinstance(stmt, ir.For) else [stmt.then_body, stmt.else_body]
        if self.mask is not None and self.mask != "alive" and any(contains_return(b) for b in bodies):
            m = self.fresh("running")
            self.emit(f"{m} = {self.mask} & alive")
            self.mask = m

    def body_block(self, block: ir.Block, mask: str | None) -> None:
        saved_mask, saved_defined = self.mask, set(self.defined)
        self.mask = mask
        self.depth += 1
        self.emit_block(block)
        self.depth -= 1
        self.mask = saved_mask
        self.defined |= saved_defined

    def bound(self, op: ir.Operand) -> str:
        return self.val(op) if self.py(op) else f"int({self.val(op)})"

    def emit_for(self, s: ir.For) -> None:
        if id(s) in self.facts.divergent:
            predication.divergent_for(self, s)
        else:
            loop = self.name(s.var)
            self.emit(f"for {loop} in range({self.bound(s.start)}, {self.bound(s.stop)}, {self.bound(s.step)}):")
            mask = self.mask
            if mask is not None and contains_return(s.body) and mask != "alive":
                self.depth += 1
                mask = self.fresh("running")
                self.emit(f"{mask} = {self.mask} & alive")
                self.depth -= 1
            self.defined.add(s.var.name)
            self.body_block(s.body, mask)
        self.refresh_mask(s)

    def emit_if(self, s: ir.If) -> None:
        if id(s) in self.facts.divergent:
            predication.divergent_if(self, s)
        else:
            self.emit(f"if {self.val(s.cond)}:")
            self.body_block(s.then_body, self.mask)
            if s.else_body.stmts:
                self.emit("else:")
                self.body_block(s.else_body, self.mask)
        self.refresh_mask(s)

    # ------------------------------------------------------------------ expressions

    def expr(self, s: ir.Assign) -> str:
        op, args, t = s.op, s.args, s.dst.type
        if id(s) in self.softmaxes:  # reads the chain's source, not the (dead) operands
            return fusion.out_call(self, s, self.scratch_buffer(s) if id(s) in self.scratch else None)
        if id(s) in self.inplace:  # the first operand is a dead temporary: reuse its buffer
            return fusion.out_call(self, s, self.val(args[0]))
        if id(s) in self.scratch:  # a once-per-launch temporary: reuse last launch's buffer
            return fusion.out_call(self, s, self.scratch_buffer(s))
        rank = len(t.shape)
        if op in _BINARY:
            return f"{self.elementwise_val(s, args[0], rank)} {_BINARY[op]} {self.elementwise_val(s, args[1], rank)}"
        if op == "truediv":
            a, b = self.val(args[0], rank), self.val(args[1], rank)
            return f"rt.truediv({a}, {b})" if all(self.py(x) for x in args) else f"{a} / {b}"
        if op in ("floordiv", "mod"):
            a, b = self.val(args[0], rank), self.val(args[1], rank)
            if t.dtype.is_float and op == "floordiv":
                return f"torch.div({self.tensor_val(args[0])}, {b}, rounding_mode='floor')"
            return f"rt.{'idiv' if op == 'floordiv' else 'imod'}({a}, {b})"
        if op in ("minimum", "maximum"):
            a, b = self.val(args[0], rank), self.val(args[1], rank)
            if not self.py(args[0]) and not self.py(args[1]):
                return f"torch.{op}({a}, {b})"
            return f"rt.{op}({a}, {b})"
        if op == "neg":
            return f"-{self.val(args[0])}"
        if op == "not":
            return f"not {self.val(args[0])}" if self.py(args[0]) else f"~{self.val(args[0])}"
        if op == "invert":
            return f"~{self.val(args[0])}"
        if op in _UNARY_TORCH:
            if op == "abs" and self.py(args[0]):
                return f"abs({self.val(args[0])})"
            return f"{_UNARY_TORCH[op]}({self.tensor_val(args[0])})"
        if op == "cast":
            return self.cast(args[0], t)
        if op == "where":
            return self.where(s, t, rank)
        if op == "addptr":
            base, off = args
            if isinstance(base, ir.Var) and any(p.name == base.name for p in self.kernel.params):
                return self.val(off)
            if isinstance(off, ir.Const) and off.value == 0:
                return self.val(base)
            return f"{self.val(base, rank)} + {self.val(off, rank)}"
        if op == "program_id":
            return f"P.pid({s.attrs['axis']})"
        if op == "num_programs":
            return f"P.grid[{s.attrs['axis']}]"
        if op == "arange":
            return self.const(f"torch.arange({s.attrs['start']}, {s.attrs['end']}, dtype={torch_dtype(t.dtype)})",
                              f"arange_{s.attrs['start']}_{s.attrs['end']}")
        if op == "full":
            return self.full(args[0], t)
        if op == "broadcast_to":
            a = args[0]
            if id(s) in self.free_broadcasts:  # its readers broadcast it themselves
                return self.val(a, rank)
            kept = self.trimmed.broadcasts.get(id(s), ())  # trimmed axes stay size 1
            sizes = ", ".join("-1" if d in kept else str(n) for d, n in enumerate(t.shape))
            if self.varying(a):
                return f"{self.val(a, rank)}.expand(-1, {sizes})"
            return f"{self.tensor_val(a)}.expand({sizes})"
        if op == "expand_dims":
            return f"{self.tensor_val(args[0])}.unsqueeze({s.attrs['axis'] + self.dims(args[0])})"
        if op == "reshape":
            shape = ", ".join(map(str, t.shape))
            if self.varying(args[0]):
                return f"{self.val(args[0])}.reshape(-1{', ' if shape else ''}{shape})"
            return f"{self.tensor_val(args[0])}.reshape({shape})" if shape else f"{self.tensor_val(args[0])}.reshape(())"
        if op == "trans":
            d = self.dims(args[0])
            perm = ([0] if d else []) + [p + d for p in s.attrs["perm"]]
            return f"{self.val(args[0])}.permute({', '.join(map(str, perm))})"
        if op in _REDUCE:
            return self.reduce(s)
        if op == "dot":
            acc = self.val(args[2]) if len(args) == 3 else "None"
            inplace = ", inplace=True" if id(s) in self.inplace_dots else ""
            return f"rt.dot({self.val(args[0])}, {self.val(args[1])}, {acc}, {torch_dtype(t.dtype)}{inplace})"
        raise ir.VerificationError(f"cpu backend: {op!r} is not an IR op (ir.verify rejects it)")

    def scratch_buffer(self, s: ir.Assign) -> str:
        """A buffer kept from the previous launch for `s`'s result (see `fusion.find_scratch`)."""
        t = s.dst.type
        shape = ("P.G, " if self.varying(s.dst) else "") + "".join(f"{n}, " for n in t.shape)
        key = f"{self.kernel.name}.{len(self.scratch_keys)}"
        self.scratch_keys.append(key)
        return f"rt.scratch({key!r}, ({shape.rstrip(', ')},), {torch_dtype(t.dtype)})"

    def cast(self, a: ir.Operand, t: ir.BlockType) -> str:
        if a.type.dtype == t.dtype or t.is_pointer:
            return self.val(a)
        if self.py(a):
            conv = "float" if t.dtype.is_float else ("bool" if t.dtype.is_bool else "int")
            return f"{conv}({self.val(a)})"
        return f"{self.val(a)}.to({torch_dtype(t.dtype)})"

    def where(self, s: ir.Assign, t: ir.BlockType, rank: int) -> str:
        c, a, b = s.args
        if all(self.py(x) for x in s.args):
            return f"({self.val(a)} if {self.val(c)} else {self.val(b)})"
        if id(s) in self.fill_wheres:  # `a` is a dead private temporary: mask it in place
            return f"rt.keep_where({self.val(a, rank)}, {self.val(c, rank)}, {self.val(b)})"
        av = self.elementwise_val(s, a, rank)
        if self.py(a) and self.py(b):
            av = (self.const(f"torch.tensor({literal(a)}, dtype={torch_dtype(t.dtype)})", "scalar")
                  if isinstance(a, ir.Const) else self.tensor_val(a))
        cv = self.val(c, rank)
        if self.py(c):
            cv = f"torch.tensor({cv})"
        return f"torch.where({cv}, {av}, {self.elementwise_val(s, b, rank)})"

    def full(self, v: ir.Operand, t: ir.BlockType) -> str:
        shape = tuple(t.shape)
        dt = torch_dtype(t.dtype)
        if not shape:
            return self.val(v)
        if isinstance(v, ir.Const):
            return self.const(f"torch.full({shape!r}, {literal(v)}, dtype={dt})", "full")
        if self.varying(v):
            return f"{self.val(v, len(shape))}.expand(-1, {', '.join(map(str, shape))})"
        if self.py(v):
            return f"torch.full({shape!r}, {self.val(v)}, dtype={dt})"
        return f"{self.val(v)}.expand({', '.join(map(str, shape))})"

    def reduce(self, s: ir.Assign) -> str:
        a = s.args[0]
        x = self.tensor_val(a)
        d = self.dims(a)
        axis, keep = s.attrs.get("axis"), bool(s.attrs.get("keep_dims", False))
        fn = _REDUCE[s.op]
        rank = len(a.type.shape)
        if rank == 0:
            return x
        if s.op == "argmax":
            if axis is None:
                flatx = f"{x}.flatten({d})" if rank > 1 or d == 0 else x
                out = f"torch.argmax({flatx}, dim={d})"
                if keep:
                    out = f"{out}.reshape({'-1, ' if d else ''}{', '.join(['1'] * rank)})"
                return f"{out}.to(torch.int32)"
            return f"torch.argmax({x}, dim={axis + d}, keepdim={keep}).to(torch.int32)"
        dims = tuple(range(d, d + rank)) if axis is None else (axis + d,)
        extra = f", dtype={torch_dtype(s.dst.type.dtype)}" if s.op == "sum" else ""
        out = f"{fn}({x}, dim={dims!r}, keepdim={keep}{extra})"
        if s.op != "sum" and s.dst.type.dtype != a.type.dtype:
            out = f"{out}.to({torch_dtype(s.dst.type.dtype)})"
        return out


def generate(kernel: ir.Kernel, sanitize: bool = False, peepholes: bool = True) -> str:
    """The module for `kernel`; `peepholes=False` keeps recognised idioms op by op (tests
    compare the two)."""
    return CodeGen(fold_identities(kernel), sanitize, peepholes).source()

