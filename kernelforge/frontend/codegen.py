"""The AST visitor that lowers one `@kf.jit` function into IR (triton's code_generator.py).

Compile-time values are plain Python objects, so constexpr folding, `if` on constexprs
and `kl.static_range` unrolling are ordinary evaluation. Runtime values are `Tensor`s
whose IR is emitted through the shared `Builder`; their typing rules live in
`semantic`, runtime `if`/`for` in `control_flow`.

Called jit functions are inlined by a child generator that shares the builder; their
`return` points are merged like the arms of an `if`.
"""

from __future__ import annotations

import ast
import builtins
import inspect
import operator
from dataclasses import dataclass, field
from typing import Any, Callable

from kernelforge import ir
from kernelforge.errors import CompilationError
from kernelforge.frontend import semantic as sem
from kernelforge.frontend.builder import Builder
from kernelforge.frontend.builtins import TENSOR_METHODS, builtin_name, call_builtin
from kernelforge.frontend.control_flow import ControlFlow
from kernelforge.frontend.source import FunctionSource
from kernelforge.frontend.values import PointerDType, SemanticError, Tensor, Undefined
from kernelforge.language.core import constexpr

JIT_ATTR = "__kf_jit_function__"  # set on JITFunction objects: the Python function they wrap
_MAX_INLINE_DEPTH = 32

# Python builtins a kernel may call on compile-time values.
_PY_BUILTINS: dict[str, Callable] = {
    name: getattr(builtins, name)
    for name in ("len", "min", "max", "int", "float", "bool", "abs", "tuple", "list", "range",
                 "isinstance", "enumerate", "zip")
}

_BINOPS: dict[type, tuple[str, Callable]] = {
    ast.Add: ("add", operator.add), ast.Sub: ("sub", operator.sub), ast.Mult: ("mul", operator.mul),
    ast.Div: ("truediv", operator.truediv), ast.FloorDiv: ("floordiv", operator.floordiv),
    ast.Mod: ("mod", operator.mod), ast.BitAnd: ("and", operator.and_), ast.BitOr: ("or", operator.or_),
    ast.BitXor: ("xor", operator.xor), ast.LShift: ("shl", operator.lshift),
    ast.RShift: ("shr", operator.rshift), ast.Pow: ("pow", operator.pow),
}
_CMPOPS: dict[type, tuple[str, Callable]] = {
    ast.Lt: ("lt", operator.lt), ast.LtE: ("le", operator.le), ast.Gt: ("gt", operator.gt),
    ast.GtE: ("ge", operator.ge), ast.Eq: ("eq", operator.eq), ast.NotEq: ("ne", operator.ne),
}


def binary_op(b: Builder, op: str, x: Any, y: Any) -> Tensor:
    """`x <op> y` where at least one side is a runtime value."""
    if op in ("add", "sub", "mul", "truediv", "floordiv", "mod"):
        return getattr(sem, op)(b, x, y)
    if op in ("and", "or", "xor", "shl", "shr"):
        return sem.bitwise(b, op, x, y)
    raise SemanticError(f"operator {op!r} is not supported on tensors")


@dataclass
class _Method:
    """`tensor.method` before it is called."""

    tensor: Tensor
    name: str


@dataclass
class _ReturnPoint:
    block: ir.Block
    value: Any


@dataclass
class Frame:
    """Per-function compile state (the kernel itself, or one inlined call)."""

    src: FunctionSource
    is_kernel: bool
    depth: int = 0
    returns: list[_ReturnPoint] = field(default_factory=list)


class CodeGenerator(ControlFlow, ast.NodeVisitor):
    def __init__(self, builder: Builder, kernel_name: str, frame: Frame, scope: dict[str, Any]) -> None:
        self.b = builder
        self.kernel_name = kernel_name
        self.frame = frame
        self.scope = scope
        self.terminated = False
        self._globals = frame.src.fn.__globals__
        self._closure = _closure_vars(frame.src.fn)

    # ------------------------------------------------------------------ errors and locations

    def error(self, node: ast.AST, message: str) -> CompilationError:
        src = self.frame.src
        if not self.frame.is_kernel:
            message = f"{message}\n(in @kf.jit function '{src.tree.name}', inlined into '{self.kernel_name}')"
        return CompilationError(message, kernel=self.kernel_name, file=src.file, line=src.line_of(node),
                                source_line=src.source_line(node), col=src.col_of(node))

    def visit(self, node: ast.AST) -> Any:
        outer_loc = self.b.loc
        if isinstance(node, (ast.stmt, ast.expr)):
            src = self.frame.src
            self.b.loc = ir.Loc(src.file, src.line_of(node), src.col_of(node), src.source_line(node))
        try:
            return super().visit(node)
        except CompilationError:
            raise
        except SemanticError as exc:
            raise self.error(node, str(exc)) from None
        except RecursionError:
            raise self.error(node, "expression or call chain is nested too deeply") from None
        except Exception as exc:  # an internal fault must still point at the user's line
            raise self.error(node, f"internal compiler error: {type(exc).__name__}: {exc}") from exc
        finally:
            self.b.loc = outer_loc

    def generic_visit(self, node: ast.AST) -> Any:
        raise self.error(node, f"unsupported construct in a kernel: {type(node).__name__}")

    # ------------------------------------------------------------------ statements

    def visit_stmts(self, stmts: list[ast.stmt]) -> None:
        for stmt in stmts:
            if self.terminated:
                return
            self.visit(stmt)

    def lower_function(self) -> None:
        """Lowers the body of this frame's function (its docstring skipped)."""
        body = self.frame.src.tree.body
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                and isinstance(body[0].value.value, str):
            body = body[1:]
        self.visit_stmts(body)

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        raise self.error(node, "functions cannot be defined inside a kernel; define a @kf.jit helper "
                               "at module level and call it")

    def visit_Pass(self, node: ast.Pass) -> None:
        return None

    def visit_Expr(self, node: ast.Expr) -> None:
        if isinstance(node.value, ast.Constant):
            return  # docstrings and bare literals
        self.visit(node.value)

    def visit_Assign(self, node: ast.Assign) -> None:
        value = self.visit(node.value)
        for target in node.targets:
            self._assign(target, value)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if node.value is None:
            raise self.error(node, "a bare annotation declares nothing; assign a value")
        self._assign(node.target, self.visit(node.value))

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        if not isinstance(node.target, ast.Name):
            raise self.error(node, "augmented assignment is only supported on plain names")
        current = self._lookup(node.target.id, node.target)
        self._assign(node.target, self._binop(node.op, current, self.visit(node.value), node))

    def _assign(self, target: ast.expr, value: Any) -> None:
        if isinstance(target, ast.Name):
            if isinstance(value, constexpr):
                value = value.value
            if isinstance(value, Tensor):
                self.b.name_temp(value, target.id)
            self.scope[target.id] = value
        elif isinstance(target, (ast.Tuple, ast.List)):
            if not isinstance(value, (tuple, list)):
                raise self.error(target, f"cannot unpack {sem.describe(value)}")
            if len(value) != len(target.elts):
                raise self.error(target, f"cannot unpack {len(value)} values into {len(target.elts)} names")
            for t, v in zip(target.elts, value):
                self._assign(t, v)
        else:
            raise self.error(target, f"cannot assign to {type(target).__name__}: kernels assign to "
                                     "names only (use kl.store to write memory)")

    def visit_Assert(self, node: ast.Assert) -> None:
        cond = self.visit(node.test)
        if isinstance(cond, Tensor):
            raise self.error(node, "assert needs a compile-time condition (runtime asserts are not supported)")
        if not cond:
            msg = self.visit(node.msg) if node.msg is not None else "assertion failed"
            raise self.error(node, f"static assertion failed: {msg}")

    def visit_Return(self, node: ast.Return) -> None:
        value = self.visit(node.value) if node.value is not None else None
        if self.frame.is_kernel:
            if value is not None:
                raise self.error(node, "a kernel cannot return a value (store results through a pointer)")
            self.b.emit(ir.Return(self.b.loc))
        else:
            self.frame.returns.append(_ReturnPoint(self.b.current, value))
        self.terminated = True

    # ------------------------------------------------------------------ expressions

    def visit_Constant(self, node: ast.Constant) -> Any:
        return node.value

    def visit_Name(self, node: ast.Name) -> Any:
        return self._lookup(node.id, node)

    def _lookup(self, name: str, node: ast.AST) -> Any:
        if name in self.scope:
            value = self.scope[name]
            if isinstance(value, Undefined):
                raise self.error(node, value.reason)
            return value
        for namespace in (self._closure, self._globals):
            if name in namespace:
                value = namespace[name]
                return value.value if isinstance(value, constexpr) else value  # BLOCK = kl.constexpr(128)
        if name in _PY_BUILTINS:
            return _PY_BUILTINS[name]
        raise self.error(node, f"unknown name '{name}'")

    def visit_Tuple(self, node: ast.Tuple) -> tuple:
        return tuple(self.visit(e) for e in node.elts)

    def visit_List(self, node: ast.List) -> list:
        return [self.visit(e) for e in node.elts]

    def visit_Attribute(self, node: ast.Attribute) -> Any:
        value = self.visit(node.value)
        if isinstance(value, Tensor):
            if node.attr == "dtype":
                return PointerDType(value.dtype) if value.is_pointer else value.dtype
            if node.attr == "shape":
                return value.shape
            if node.attr == "T":
                return sem.trans(self.b, value, ())
            if node.attr == "to" or node.attr in TENSOR_METHODS:
                return _Method(value, node.attr)
            raise self.error(node, f"tensors have no attribute '{node.attr}'")
        try:
            return getattr(value, node.attr)
        except AttributeError:
            raise self.error(node, f"{sem.describe(value)} has no attribute '{node.attr}'") from None

    def visit_BinOp(self, node: ast.BinOp) -> Any:
        return self._binop(node.op, self.visit(node.left), self.visit(node.right), node)

    def _binop(self, op: ast.operator, x: Any, y: Any, node: ast.AST) -> Any:
        if type(op) not in _BINOPS:
            raise self.error(node, f"operator {type(op).__name__} is not supported")
        name, fold = _BINOPS[type(op)]
        if not isinstance(x, Tensor) and not isinstance(y, Tensor):
            try:
                return fold(x, y)
            except Exception as exc:
                raise self.error(node, f"evaluating a compile-time expression failed: {exc}") from None
        return binary_op(self.b, name, x, y)

    def visit_UnaryOp(self, node: ast.UnaryOp) -> Any:
        x = self.visit(node.operand)
        if not isinstance(x, Tensor):
            folds = {ast.USub: operator.neg, ast.UAdd: operator.pos, ast.Not: operator.not_,
                     ast.Invert: operator.invert}
            return folds[type(node.op)](x)
        if isinstance(node.op, ast.USub):
            return sem.neg(self.b, x)
        if isinstance(node.op, ast.UAdd):
            return x
        if isinstance(node.op, ast.Not):
            return sem.logical_not(self.b, x)
        return sem.invert(self.b, x)

    def visit_Compare(self, node: ast.Compare) -> Any:
        if len(node.ops) != 1:
            raise self.error(node, "chained comparisons (a < b < c) are not supported; use (a < b) & (b < c)")
        x, y = self.visit(node.left), self.visit(node.comparators[0])
        op = node.ops[0]
        if isinstance(op, (ast.Is, ast.IsNot)):
            if isinstance(x, Tensor) or isinstance(y, Tensor):
                raise self.error(node, "'is' only compares compile-time values")
            return (x is y) if isinstance(op, ast.Is) else (x is not y)
        if isinstance(op, (ast.In, ast.NotIn)):
            if isinstance(x, Tensor) or isinstance(y, Tensor):
                raise self.error(node, "'in' only works on compile-time values")
            return (x in y) if isinstance(op, ast.In) else (x not in y)
        name, fold = _CMPOPS[type(op)]
        if not isinstance(x, Tensor) and not isinstance(y, Tensor):
            return fold(x, y)
        return sem.compare(self.b, name, x, y)

    def visit_BoolOp(self, node: ast.BoolOp) -> Any:
        is_and = isinstance(node.op, ast.And)
        result = self.visit(node.values[0])
        for operand in node.values[1:]:
            if not isinstance(result, Tensor):
                if bool(result) != is_and:  # short-circuit on a compile-time value
                    return result
                result = self.visit(operand)
                continue
            rhs = self.visit(operand)
            if not isinstance(rhs, Tensor) and bool(rhs) == is_and:
                result = sem.to_bool(self.b, result)
                continue
            result = sem.logical(self.b, "and" if is_and else "or", result, rhs)
        return result

    def visit_IfExp(self, node: ast.IfExp) -> Any:
        cond = self.visit(node.test)
        if not isinstance(cond, Tensor):
            return self.visit(node.body if cond else node.orelse)
        return sem.where(self.b, cond, self.visit(node.body), self.visit(node.orelse))

    def visit_Subscript(self, node: ast.Subscript) -> Any:
        value = self.visit(node.value)
        index = node.slice
        if not isinstance(value, Tensor):
            return value[self.visit(index)]
        items = index.elts if isinstance(index, ast.Tuple) else [index]
        axis = 0
        for item in items:
            if isinstance(item, ast.Constant) and item.value is None:
                value = sem.expand_dims(self.b, value, axis)
                axis += 1
            elif isinstance(item, ast.Slice) and item.lower is None and item.upper is None and item.step is None:
                axis += 1
            else:
                raise self.error(item, "tensors can only be indexed with None and ':' (e.g. x[:, None])")
        if axis > len(value.shape):
            raise self.error(node, f"too many indices for a block of shape {list(value.shape)}")
        return value

    def visit_Call(self, node: ast.Call) -> Any:
        fn = self.visit(node.func)
        args: list[Any] = []
        for a in node.args:
            if isinstance(a, ast.Starred):
                args.extend(self.visit(a.value))
            else:
                args.append(self.visit(a))
        kwargs: dict[str, Any] = {}
        for kw in node.keywords:
            if kw.arg is None:
                kwargs.update(self.visit(kw.value))
            else:
                kwargs[kw.arg] = self.visit(kw.value)
        if isinstance(fn, _Method):
            if fn.name == "to":
                return self._to(fn.tensor, *args, **kwargs)
            return call_builtin(self.b, fn.name, (fn.tensor, *args), kwargs)
        name = builtin_name(fn)
        if name is not None:
            return call_builtin(self.b, name, tuple(args), kwargs)
        if fn is constexpr:
            if len(args) != 1 or kwargs or isinstance(args[0], Tensor):
                raise self.error(node, "kl.constexpr(value) takes one compile-time value")
            return args[0]
        jit_fn = getattr(fn, JIT_ATTR, None)
        if jit_fn is not None:
            return self._inline(node, jit_fn, args, kwargs)
        if fn in _PY_BUILTINS.values():
            if any(isinstance(a, Tensor) for a in [*args, *kwargs.values()]):
                raise self.error(node, f"Python's {fn.__name__}() cannot take runtime values "
                                       "(use kl.minimum / kl.maximum / kl.abs / x.to(...))")
            return fn(*args, **kwargs)
        raise self.error(node, f"cannot call {sem.describe(fn)} in a kernel (only kl.* builtins and "
                               "@kf.jit functions)")

    def _to(self, x: Tensor, dtype: Any = None, **kwargs: Any) -> Tensor:
        if kwargs:
            raise SemanticError(f"x.to() got unexpected arguments {sorted(kwargs)}")
        if not isinstance(dtype, ir.DType):
            raise SemanticError(f"x.to() needs a kl dtype such as kl.float32, got {sem.describe(dtype)}")
        return sem.cast(self.b, x, dtype)

    def _inline(self, node: ast.Call, fn: Callable, args: list[Any], kwargs: dict[str, Any]) -> Any:
        if self.frame.depth >= _MAX_INLINE_DEPTH:
            raise self.error(node, f"@kf.jit calls nest deeper than {_MAX_INLINE_DEPTH} (recursion?)")
        try:
            bound = inspect.signature(fn).bind(*args, **kwargs)
        except TypeError as exc:
            raise self.error(node, f"{fn.__name__}(): {exc}") from None
        bound.apply_defaults()
        try:
            src = FunctionSource.of(fn)
        except OSError:
            raise self.error(node, f"the source of @kf.jit function '{fn.__name__}' is not available") from None
        for param, value in bound.arguments.items():
            if isinstance(value, Tensor):
                self.b.name_temp(value, param)
        frame = Frame(src, is_kernel=False, depth=self.frame.depth + 1)
        child = CodeGenerator(self.b, self.kernel_name, frame, dict(bound.arguments))
        start = self.b.current
        child.lower_function()
        if not child.terminated:
            frame.returns.append(_ReturnPoint(self.b.current, None))
        self.b.move_to(start)
        values = [r.value for r in frame.returns]
        if len(values) == 1:
            return values[0]
        return child._merge_values(node, f"return value of {fn.__name__}", values,
                                   [r.block for r in frame.returns], "function")


def _closure_vars(fn: Callable) -> dict[str, Any]:
    code = fn.__code__
    cells = fn.__closure__ or ()
    out = {}
    for name, cell in zip(code.co_freevars, cells):
        try:
            out[name] = cell.cell_contents
        except ValueError:  # an unassigned cell
            continue
    return out
