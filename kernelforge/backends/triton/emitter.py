"""IR -> Triton source: one `@triton.jit` function per kernel plus its `launch`.

The text must mean the same thing under three compilers: upstream Triton (CUDA),
triton-ascend 3.2 (NPU) and Triton's interpreter (CPU). So the emitter uses only the
`triton.language` surface those share and writes every value with exactly the dtype the
IR gives it:

- Python literals are written bare only where Triton's weak typing gives them the IR
  dtype (next to a tensor operand of that dtype); elsewhere they become `tl.full((), v, T)`.
- Where Triton promotes differently from the IR (fp16/bf16 `/` and `%`, math functions
  that only take fp32, `sum` of narrow types, `dot` without an accumulator) the result
  is cast back, so loop-carried variables keep one type.
- Scalar parameters are never value-specialised (`do_not_specialize`): Triton would
  otherwise turn an argument equal to 1 into a constexpr and change its type.
- `return` is removed beforehand (`returns.lower_returns`), so control flow is
  structured `for`/`if` only, which both Triton and triton-ascend's adapter accept.

The `interpret` flavour differs in one way. The interpreter keeps bf16 as raw uint16
bits and does arithmetic on those bits, and it truncates fp32 -> bf16. So there every
fp16/bf16 value lives in an fp32 tensor holding a value exactly representable in the
16-bit type: loads upcast, each arithmetic result is rounded to nearest-even by
`_round_bf16` / `_round_fp16`, stores downcast (exactly, as the value is already
representable). Results therefore match a 16-bit computation rounded after every op,
which is what the CPU backend (PyTorch) computes.
"""

from __future__ import annotations

import keyword
import math

import torch

from kernelforge import ir
from kernelforge.errors import CompilationError
from kernelforge.backends.triton.returns import lower_returns

NATIVE = "triton"
INTERPRET = "interpret"

_HALF = (ir.DType.float16, ir.DType.bfloat16)
_BINARY = {
    "add": "+", "sub": "-", "mul": "*", "and": "&", "or": "|", "xor": "^", "shl": "<<", "shr": ">>",
    "lt": "<", "le": "<=", "gt": ">", "ge": ">=", "eq": "==", "ne": "!=",
}
_DIV = {"truediv": "/", "mod": "%"}
_FLOAT_MATH = {"exp", "exp2", "log", "log2", "sqrt", "rsqrt", "sigmoid", "cos", "sin"}
_COMPARISONS = {"lt", "le", "gt", "ge", "eq", "ne"}
# Ops whose fp16/bf16 result is an input value (or a selection of them): no rounding needed.
# (`full` takes a scalar already of the result dtype, so it is exact as well.)
_EXACT = {"neg", "abs", "minimum", "maximum", "where", "max", "min", "broadcast_to", "expand_dims",
          "reshape", "trans", "load", "full"}
_RESERVED = {"tl", "triton", "torch", "range", "float", "int", "launch",
             "_round_bf16", "_round_fp16", "_SCALAR_ARGS", "_CONSTEXPRS"}

_ROUND_HELPERS = '''
@triton.jit
def _round_bf16(x):
    # fp32 -> nearest-even bf16, kept in fp32 (the interpreter truncates on .to(bf16)).
    bits = x.to(tl.uint32, bitcast=True)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return bits.to(tl.float32, bitcast=True)


@triton.jit
def _round_fp16(x):
    return x.to(tl.float16).to(tl.float32)
'''


def generate(kernel: ir.Kernel, flavour: str = NATIVE) -> str:
    """The text of a Python module defining the `@triton.jit` kernel and `launch(grid, args)`."""
    if flavour not in (NATIVE, INTERPRET):
        raise ValueError(f"unknown flavour {flavour!r}")
    return _Emitter(lower_returns(kernel), flavour).module()


_SIGNATURE_TYPES = {
    ir.DType.int1: "i1", ir.DType.int8: "i8", ir.DType.int16: "i16", ir.DType.int32: "i32",
    ir.DType.int64: "i64", ir.DType.uint8: "u8", ir.DType.float16: "fp16", ir.DType.bfloat16: "bf16",
    ir.DType.float32: "fp32", ir.DType.float64: "fp64",
}


def triton_types(kernel: ir.Kernel) -> list[str]:
    """Triton's type string for each runtime parameter ('*bf16', 'i32', 'fp32', ...)."""
    return [("*" if p.is_pointer else "") + _SIGNATURE_TYPES[p.var.type.dtype] for p in kernel.params]


def python_name(name: str) -> str:
    """`name` made safe to use as a Python identifier in generated code."""
    safe = "".join(c if c.isalnum() or c == "_" else "_" for c in name) or "v"
    if safe[0].isdigit():
        safe = "v" + safe
    if keyword.iskeyword(safe) or safe in _RESERVED:
        safe += "_"
    return safe


def simple_constexpr(value: object) -> bool:
    """Whether a constexpr can be written as a literal and passed to Triton."""
    return value is None or isinstance(value, (bool, int, float, str))


class _Emitter:
    def __init__(self, kernel: ir.Kernel, flavour: str) -> None:
        self.kernel = kernel
        self.interpret = flavour == INTERPRET
        self.flavour = flavour
        self.names: dict[str, str] = {}
        self.lines: list[str] = []
        self.last_line = -1
        self.fn_name = python_name(kernel.name)

    # ---- names, types, operands -------------------------------------------------------

    def name(self, var: ir.Var) -> str:
        if var.name not in self.names:
            base = python_name(var.name)
            candidate = base
            while (candidate in self.names.values() or candidate == self.fn_name
                   or candidate in self.kernel.constexprs):
                candidate += "_"
            self.names[var.name] = candidate
        return self.names[var.name]

    def held(self, dtype: ir.DType) -> ir.DType:
        """The dtype a value of IR dtype `dtype` has in the generated code."""
        return ir.DType.float32 if self.interpret and dtype in _HALF else dtype

    def tl(self, dtype: ir.DType) -> str:
        return self.held(dtype).triton_name

    def literal(self, const: ir.Const) -> str:
        value, dtype = const.value, const.type.dtype
        if dtype.is_bool:
            return "True" if value else "False"
        if dtype.is_float:
            value = float(value)
            if self.interpret and dtype in _HALF:
                value = float(torch.tensor(value, dtype=dtype.torch_dtype).float())
            if math.isnan(value):
                return 'float("nan")'
            if math.isinf(value):
                return 'float("inf")' if value > 0 else '-float("inf")'
            return repr(value)
        return str(int(value))

    def typed(self, const: ir.Const) -> str:
        """`const` as a scalar tensor of exactly its IR dtype."""
        return f"tl.full((), {self.literal(const)}, {self.tl(const.type.dtype)})"

    def operand(self, x: ir.Operand) -> str:
        return self.name(x) if isinstance(x, ir.Var) else self.literal(x)

    def operands(self, args: tuple[ir.Operand, ...]) -> list[str]:
        """Elementwise operands: a bare literal only beside a tensor that fixes its type."""
        if any(isinstance(a, ir.Var) for a in args):
            return [self.operand(a) for a in args]
        return [self.typed(a) for a in args]

    # ---- module structure -------------------------------------------------------------

    def emit(self, depth: int, text: str) -> None:
        self.lines.append("    " * depth + text)

    def module(self) -> str:
        k = self.kernel
        scalar_params = [p for p in k.params if not p.is_pointer]
        constexprs = {n: v for n, v in k.constexprs.items() if simple_constexpr(v)}
        signature = [self.name(p.var) for p in k.params] + [f"{n}: tl.constexpr" for n in constexprs]
        no_spec = [self.name(p.var) for p in scalar_params]
        decorator = f"@triton.jit(do_not_specialize={no_spec!r})" if no_spec else "@triton.jit"

        self.emit(0, decorator)
        self.emit(0, f"def {self.fn_name}({', '.join(signature)}):")
        body_start = len(self.lines)
        for p in scalar_params:
            if p.var.type.dtype is ir.DType.int64:
                name = self.name(p.var)
                self.emit(1, f"{name} = {name}.to(tl.int64)")
        self.block(k.body, 1)
        if len(self.lines) == body_start:
            self.emit(1, "pass")

        scalar_idx = tuple(i for i, p in enumerate(k.params) if not p.is_pointer)
        header = [
            f'"""Triton source generated by kernelforge for `{k.name}` ({k.file}:{k.line}), '
            f'{self.flavour} flavour."""',
            "",
            "import torch",
            "import triton",
            "import triton.language as tl",
            "",
        ]
        if self.interpret:
            header += _ROUND_HELPERS.splitlines()
        footer = [
            "",
            "",
            f"_SCALAR_ARGS = {scalar_idx!r}",
            f"_CONSTEXPRS = {constexprs!r}",
            "",
            "",
            "def launch(grid, args):",
            "    args = [a.item() if i in _SCALAR_ARGS and isinstance(a, torch.Tensor) else a",
            "            for i, a in enumerate(args)]",
            f"    {self.fn_name}[tuple(grid)](*args, **_CONSTEXPRS)",
        ]
        return "\n".join(header + ["", ""] + self.lines + footer) + "\n"

    def block(self, block: ir.Block, depth: int) -> None:
        for stmt in block.stmts:
            self.source_comment(stmt.loc, depth)
            if isinstance(stmt, ir.Assign):
                self.emit(depth, f"{self.name(stmt.dst)} = {self.assign(stmt)}")
            elif isinstance(stmt, ir.Store):
                self.emit(depth, self.store(stmt))
            elif isinstance(stmt, ir.For):
                self.for_(stmt, depth)
            elif isinstance(stmt, ir.If):
                self.if_(stmt, depth)
            else:
                raise TypeError(f"unexpected statement {stmt!r} after return lowering")

    def source_comment(self, loc: ir.Loc | None, depth: int) -> None:
        """One `# L<n>: <kernel source>` comment per kernel line, to read the output against."""
        if loc is None or loc.line == self.last_line:
            return
        self.last_line = loc.line
        text = " ".join(loc.source.split())
        self.emit(depth, f"# L{loc.line}: {text}" if text else f"# L{loc.line}")

    def for_(self, stmt: ir.For, depth: int) -> None:
        bounds = [self.operand(stmt.start), self.operand(stmt.stop)]
        if not (isinstance(stmt.step, ir.Const) and stmt.step.value == 1):
            bounds.append(self.operand(stmt.step))
        if stmt.var.type.dtype is ir.DType.int64 and isinstance(stmt.start, ir.Const):
            bounds[0] = self.typed(stmt.start)
        self.emit(depth, f"for {self.name(stmt.var)} in range({', '.join(bounds)}):")
        self.nested(stmt.body, depth + 1)

    def if_(self, stmt: ir.If, depth: int) -> None:
        self.emit(depth, f"if {self.operand(stmt.cond)}:")
        self.nested(stmt.then_body, depth + 1)
        if stmt.else_body.stmts:
            self.emit(depth, "else:")
            self.nested(stmt.else_body, depth + 1)

    def nested(self, block: ir.Block, depth: int) -> None:
        start = len(self.lines)
        self.last_line = -1
        self.block(block, depth)
        if not any(not line.lstrip().startswith("#") for line in self.lines[start:]):
            self.emit(depth, "pass")
        self.last_line = -1

    # ---- statements -------------------------------------------------------------------

    def store(self, stmt: ir.Store) -> str:
        value = self.operand(stmt.value)
        pointee = stmt.ptr.type.dtype
        if self.interpret and pointee in _HALF and isinstance(stmt.value, ir.Var):
            value = f"{value}.to({pointee.triton_name})"
        mask = f", mask={self.operand(stmt.mask)}" if stmt.mask is not None else ""
        return f"tl.store({self.operand(stmt.ptr)}, {value}{mask})"

    def assign(self, stmt: ir.Assign) -> str:
        expr = self.expr(stmt)
        dtype = stmt.dst.type.dtype
        if self.interpret and dtype in _HALF and not stmt.dst.type.is_pointer and stmt.op not in _EXACT:
            return f"{_rounder(dtype)}({expr})"
        return expr

    def expr(self, stmt: ir.Assign) -> str:
        op, args, attrs, dst = stmt.op, stmt.args, stmt.attrs, stmt.dst.type
        dtype = dst.dtype
        if op in ("program_id", "num_programs"):
            return self.cast_from(f"tl.{op}({attrs['axis']})", ir.DType.int32, dtype)
        if op == "arange":
            return self.cast_from(f"tl.arange({attrs['start']}, {attrs['end']})", ir.DType.int32, dtype)
        if op == "full":
            if not dst.shape and isinstance(args[0], ir.Var):
                return self.name(args[0])
            if dst.is_pointer:
                return f"tl.broadcast_to({self.name(args[0])}, {_shape(dst.shape)})"
            return f"tl.full({_shape(dst.shape)}, {self.operand(args[0])}, {self.tl(dtype)})"
        if op in _BINARY:
            a, b = self.operands(args)
            return f"{a} {_BINARY[op]} {b}"
        if op in _DIV:
            a, b = self.operands(args)
            expr = f"{a} {_DIV[op]} {b}"
            return self.back_to_half(expr, dtype)
        if op == "floordiv":
            a, b = self.operands(args)
            if dtype.is_float:
                return self.back_to_half(f"tl.floor({a} / {b})", dtype)
            return f"{a} // {b}"
        if op in ("minimum", "maximum"):
            a, b = self.operands(args)
            return f"tl.{op}({a}, {b})"
        if op == "neg":
            return f"-{self.operands(args)[0]}"
        if op == "not":
            return f"{self.operands(args)[0]} == 0"
        if op == "invert":
            return f"~{self.operands(args)[0]}"
        if op == "abs":
            return f"tl.abs({self.operands(args)[0]})"
        if op in _FLOAT_MATH:
            (a,) = self.operands(args)
            if self.held(dtype) in _HALF:
                return f"tl.{op}({a}.to(tl.float32)).to({dtype.triton_name})"
            return f"tl.{op}({a})"
        if op == "cast":
            return self.cast(args[0], dtype)
        if op == "where":
            c = self.operand(args[0])
            a, b = self.operands(args[1:])
            return f"tl.where({c}, {a}, {b})"
        if op == "broadcast_to":
            return f"tl.broadcast_to({self.operand(args[0])}, {_shape(dst.shape)})"
        if op == "expand_dims":
            return f"tl.expand_dims({self.operand(args[0])}, {attrs['axis']})"
        if op == "reshape":
            if not dst.shape:  # Triton cannot reshape to a scalar: reduce the single element
                flat = f"tl.reshape({self.operand(args[0])}, (1,))"
                return self.back_to_half(f"tl.max({flat}, axis=0)", dtype)
            return f"tl.reshape({self.operand(args[0])}, {_shape(dst.shape)})"
        if op == "trans":
            perm = tuple(attrs["perm"])
            x = self.operand(args[0])
            return f"tl.trans({x})" if perm == (1, 0) else f"tl.permute({x}, {perm!r})"
        if op in ("sum", "max", "min", "argmax"):
            return self.reduction(stmt)
        if op == "dot":
            return self.dot(stmt)
        if op == "addptr":
            return f"{self.operand(args[0])} + {self.operand(args[1])}"
        if op == "load":
            return self.load(stmt)
        if op == "atomic_add":
            return self.atomic_add(stmt)
        raise ir.VerificationError(f"triton emitter: {op!r} is not an IR op (ir.verify rejects it)")

    def cast_from(self, expr: str, produced: ir.DType, wanted: ir.DType) -> str:
        return expr if produced is wanted else f"{expr}.to({self.tl(wanted)})"

    def back_to_half(self, expr: str, dtype: ir.DType) -> str:
        """`expr` (computed in fp32 by Triton) cast back when `dtype` is held as a 16-bit float."""
        if self.held(dtype) in _HALF:
            return f"({expr}).to({dtype.triton_name})"
        return expr

    def cast(self, src: ir.Operand, dtype: ir.DType) -> str:
        x = self.operand(src) if isinstance(src, ir.Var) else self.typed(src)
        held_src, held_dst = self.held(src.type.dtype), self.held(dtype)
        if self.interpret and dtype in _HALF:
            # Rounded by `assign`; here only reach fp32 (bf16 <-> fp16 goes via fp32 too).
            return x if held_src is ir.DType.float32 else f"tl.cast({x}, tl.float32)"
        if held_src is held_dst:
            return x
        # tl.cast, not .to: under the interpreter a loop variable is a plain Python int.
        return f"tl.cast({x}, {held_dst.triton_name})"

    def reduction(self, stmt: ir.Assign) -> str:
        op, (src,), dst = stmt.op, stmt.args, stmt.dst.type
        axis, keep = stmt.attrs["axis"], bool(stmt.attrs["keep_dims"])
        x = self.operand(src)
        keep_arg = ", keep_dims=True" if keep else ""
        if op == "argmax" and axis is None:
            flat = f"tl.reshape({x}, ({src.type.numel},))"
            if keep:
                return f"tl.reshape(tl.argmax({flat}, 0, keep_dims=True), {_shape((1,) * len(src.type.shape))})"
            return f"tl.argmax({flat}, 0)"
        axis_arg = "" if axis is None else f", axis={axis}"
        if op == "sum":
            held = self.held(dst.dtype)
            if held in _HALF:
                return f"tl.sum({x}.to(tl.float32){axis_arg}{keep_arg}).to({held.triton_name})"
            expr = f"tl.sum({x}{axis_arg}{keep_arg})"
            return expr if held in (ir.DType.float32, ir.DType.float64, ir.DType.int32,
                                    ir.DType.int64) else f"{expr}.to({held.triton_name})"
        # Triton reduces bf16 max/min in fp32: cast back so the type stays put.
        return self.back_to_half(f"tl.{op}({x}{axis_arg}{keep_arg})", dst.dtype)

    def dot(self, stmt: ir.Assign) -> str:
        a, b = (self.operand(x) for x in stmt.args[:2])
        extra = ""
        if all(self.held(x.type.dtype) is ir.DType.float32 for x in stmt.args[:2]):
            extra = ', input_precision="ieee"'
        held = self.held(stmt.dst.type.dtype)
        if len(stmt.args) == 3:
            return f"tl.dot({a}, {b}, {self.operand(stmt.args[2])}{extra})"
        if held is not ir.DType.float32:
            extra += f", out_dtype={held.triton_name}"
        return f"tl.dot({a}, {b}{extra})"

    def load(self, stmt: ir.Assign) -> str:
        ptr, *rest = stmt.args
        parts = [self.operand(ptr)]
        if rest:
            parts.append(f"mask={self.operand(rest[0])}")
        if len(rest) > 1:
            parts.append(f"other={self.operand(rest[1])}")
        expr = f"tl.load({', '.join(parts)})"
        if self.interpret and ptr.type.dtype in _HALF:
            expr += ".to(tl.float32)"
        return expr

    def atomic_add(self, stmt: ir.Assign) -> str:
        ptr, value, *mask = stmt.args
        v = self.operand(value)
        pointee = ptr.type.dtype
        if self.interpret and pointee is ir.DType.bfloat16:
            loc = stmt.loc or ir.Loc(self.kernel.file, self.kernel.line, 0, "")
            raise CompilationError(
                "atomic_add on a bfloat16 pointer cannot run under Triton's interpreter (it has no "
                "bf16 atomics); use the cpu backend, or accumulate into a float32 buffer",
                kernel=self.kernel.name, file=loc.file, line=loc.line, source_line=loc.source, col=loc.col)
        half = self.interpret and pointee in _HALF
        if half and isinstance(value, ir.Var):
            v = f"{v}.to({pointee.triton_name})"
        mask_arg = f", mask={self.operand(mask[0])}" if mask else ""
        expr = f"tl.atomic_add({self.operand(ptr)}, {v}{mask_arg})"
        return f"{expr}.to(tl.float32)" if half else expr


def _rounder(dtype: ir.DType) -> str:
    return "_round_bf16" if dtype is ir.DType.bfloat16 else "_round_fp16"


def _shape(shape: tuple[int, ...]) -> str:
    return repr(tuple(shape))
