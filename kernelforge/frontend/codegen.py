"""The AST visitor that lowers one `@kf.jit` function into IR (triton's code_generator.py).

Compile-time values are plain Python objects, so constexpr folding, `if` on constexprs
and `static_range` unrolling are ordinary evaluation. Runtime values are `Tensor`s whose
IR is emitted through the shared `Builder`. Structured control flow follows three rules:

- A runtime `if` runs its arms in copies of the scope; a name both arms (re)assign is
  merged into one mutable IR variable written at the end of each arm; a name only one
  arm defines becomes `Undefined` and using it later is an error.
- When one arm ends in `return`, the rest of the enclosing region continues inside the
  other arm (as Triton does), so every IR variable read after an `If` is assigned on
  all paths that reach it.
- A runtime `for` gives each variable its body reassigns a mutable IR variable, copied
  in before the loop and written back at the end of the body, with Triton's check that
  its type stays the same.

Called jit functions are inlined by a child generator that shares the builder; their
`return` points are merged the same way.
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
from kernelforge.frontend.source import FunctionSource
from kernelforge.frontend.values import SemanticError, Tensor, Undefined
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
class _Frame:
    """Per-function compile state (the kernel itself, or one inlined call)."""

    src: FunctionSource
    is_kernel: bool
    depth: int = 0
    returns: list[_ReturnPoint] = field(default_factory=list)


class CodeGenerator(ast.NodeVisitor):
    def __init__(self, builder: Builder, kernel_name: str, frame: _Frame, scope: dict[str, Any]) -> None:
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

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        body = node.body
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                and isinstance(body[0].value.value, str):
            body = body[1:]
        self.visit_stmts(body)

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

    def visit_If(self, node: ast.If) -> None:
        cond = self.visit(node.test)
        if not isinstance(cond, Tensor):
            self.visit_stmts(node.body if cond else node.orelse)
            return
        if cond.shape != ():
            raise self.error(node.test, f"if condition must be a scalar, got a block of shape {list(cond.shape)}"
                                        " (use kl.where for elementwise selection)")
        cond = sem.to_bool(self.b, cond)
        loc = self.b.loc
        before = dict(self.scope)
        arms = []
        for body in (node.body, node.orelse):
            self.scope, self.terminated = dict(before), False
            self.b.push(ir.Block())
            entry = self.b.current
            self.visit_stmts(body)
            arms.append((entry, self.b.pop(), self.scope, self.terminated))
        self.b.emit(ir.If(cond.handle, arms[0][0], arms[1][0], loc))
        live = [(exit_, scope) for _, exit_, scope, terminated in arms if not terminated]
        if not live:
            self.scope, self.terminated = before, True
        elif len(live) == 1:
            self.b.move_to(live[0][0])
            self.scope, self.terminated = live[0][1], False
        else:
            self.terminated = False
            self.scope = self._merge_scopes(node, live)

    def _merge_scopes(self, node: ast.If, live: list[tuple[ir.Block, dict]]) -> dict[str, Any]:
        (then_exit, then_scope), (else_exit, else_scope) = live
        merged: dict[str, Any] = {}
        missing = object()
        for name in dict.fromkeys([*then_scope, *else_scope]):
            tv, ev = then_scope.get(name, missing), else_scope.get(name, missing)
            if tv is ev:
                merged[name] = tv
            elif tv is missing or ev is missing or isinstance(tv, Undefined) or isinstance(ev, Undefined):
                merged[name] = Undefined(f"'{name}' is assigned on only one branch of the if at line "
                                         f"{self.frame.src.line_of(node)} and has no value after it")
            else:
                merged[name] = self._merge_values(node, name, [tv, ev], [then_exit, else_exit], "if")
        return merged

    def _merge_values(self, node: ast.AST, name: str, values: list[Any], exits: list[ir.Block],
                      where: str) -> Any:
        """One value that equals `values[i]` when control leaves through `exits[i]`."""
        if all(not isinstance(v, Tensor) for v in values):
            if all(type(v) is type(values[0]) and v == values[0] for v in values):
                return values[0]
            if all(isinstance(v, tuple) for v in values) and len({len(v) for v in values}) == 1:
                return tuple(self._merge_values(node, f"{name}[{i}]", [v[i] for v in values], exits, where)
                             for i in range(len(values[0])))
        if not all(isinstance(v, Tensor) or sem.is_number(v) for v in values):
            raise self.error(node, f"'{name}' gets different compile-time values on the paths of a runtime "
                                   f"{where}: {', '.join(map(repr, values))}")
        tensors = [sem.to_tensor(v) for v in values]
        first = tensors[0].type
        for t in tensors[1:]:
            if t.type != first:
                raise self.error(node, f"Mismatched type for '{name}' between the branches of the {where} "
                                       f"({first} and {t.type}); make both branches produce the same type")
        roots = {t.root for t in tensors}
        if first.is_pointer and len(roots) != 1:
            raise self.error(node, f"'{name}' points into different arguments ({sorted(roots)}) on the "
                                   f"branches of the {where}")
        home = self.b.new_var(first, name, tensors[0].root)
        for t, exit_ in zip(tensors, exits):
            exit_.stmts.append(_copy(home, t, self.b.loc))
        return Tensor(home)

    def visit_For(self, node: ast.For) -> None:
        if node.orelse:
            raise self.error(node, "for ... else is not supported in kernels")
        it = node.iter
        fn = self.visit(it.func) if isinstance(it, ast.Call) else None
        if builtin_name(fn) == "static_range":
            self._static_for(node)
        elif fn is builtins.range:
            self._runtime_for(node)
        else:
            raise self.error(it, "a kernel can only loop over range(...) or kl.static_range(...)")

    def _range_args(self, call: ast.Call) -> list[Any]:
        if call.keywords:
            raise self.error(call, "range() takes no keyword arguments")
        if not 1 <= len(call.args) <= 3:
            raise self.error(call, f"range expected 1 to 3 arguments, got {len(call.args)}")
        args = [self.visit(a) for a in call.args]
        if len(args) == 1:
            args = [0, args[0]]
        if len(args) == 2:
            args.append(1)
        return args

    def _static_for(self, node: ast.For) -> None:
        args = self._range_args(node.iter)
        if any(isinstance(a, Tensor) or not isinstance(a, int) for a in args):
            raise self.error(node.iter, "kl.static_range bounds must be constexpr ints")
        for i in range(*args):
            if self.terminated:
                return
            self._assign(node.target, i)
            self.visit_stmts(node.body)

    def _runtime_for(self, node: ast.For) -> None:
        if not isinstance(node.target, ast.Name):
            raise self.error(node.target, "the loop variable must be a single name")
        if not self.frame.is_kernel and any(isinstance(n, ast.Return) for s in node.body for n in ast.walk(s)):
            raise self.error(node, "return inside a loop of an inlined @kf.jit function is not supported")
        start, stop, step = self._range_args(node.iter)
        for what, v in (("start", start), ("stop", stop), ("step", step)):
            if isinstance(v, Tensor):
                if v.shape != () or v.dtype.is_float or v.dtype.is_bool or v.is_pointer:
                    raise self.error(node.iter, f"range {what} must be an integer scalar, got {v.type}")
            elif not isinstance(v, int) or isinstance(v, bool):
                raise self.error(node.iter, f"range {what} must be an integer, got {sem.describe(v)}")
        if step == 0:
            raise self.error(node.iter, "range step must not be zero")
        wide = any(isinstance(v, Tensor) and v.dtype.bits == 64 for v in (start, stop, step)) or \
            any(not isinstance(v, Tensor) and sem.number_dtype(v) is ir.DType.int64 for v in (start, stop, step))
        dtype = ir.DType.int64 if wide else ir.DType.int32
        bounds = [sem.cast(self.b, v, dtype) for v in (start, stop, step)]

        before = dict(self.scope)
        homes: dict[str, ir.Var] = {}
        for name in _assigned_names(node.body):
            value = before.get(name)
            if isinstance(value, Tensor) or (sem.is_number(value) and name != node.target.id):
                init = sem.to_tensor(value)
                home = self.b.new_var(init.type, name, init.root)
                self.b.emit(_copy(home, init, self.b.loc))
                homes[name] = home
                self.scope[name] = Tensor(home)
        loop_var = self.b.new_var(ir.BlockType(dtype), node.target.id)
        self.scope[node.target.id] = Tensor(loop_var)

        self.b.push(ir.Block())
        body = self.b.current
        self.visit_stmts(node.body)
        exit_ = self.b.pop()
        if not self.terminated:
            for name, home in homes.items():
                exit_.stmts.extend(self._carry_back(node, name, home))
        self.b.emit(ir.For(loop_var, bounds[0].handle, bounds[1].handle, bounds[2].handle, body,
                           ir.Loc(self.frame.src.file, self.frame.src.line_of(node), self.frame.src.col_of(node),
                                  self.frame.src.source_line(node))))
        line = self.frame.src.line_of(node)
        after = dict(before)
        for name in homes:
            after[name] = Tensor(homes[name])
        for name, value in self.scope.items():
            if name not in after or (name not in homes and value is not before.get(name)):
                after[name] = Undefined(f"'{name}' is assigned inside the for loop at line {line} "
                                        "and has no value after it")
        self.scope, self.terminated = after, False

    def _carry_back(self, node: ast.For, name: str, home: ir.Var) -> list[ir.Stmt]:
        value = self.scope.get(name)
        if isinstance(value, Tensor) and value.handle is home:
            return []
        if isinstance(value, Undefined):
            raise self.error(node, value.reason)
        if sem.is_number(value):
            value = sem.constant(value, home.type.dtype)
        if not isinstance(value, Tensor):
            raise self.error(node, f"loop-carried variable '{name}' becomes {sem.describe(value)} in the loop")
        if value.type != home.type or (home.type.is_pointer and value.root != home.root):
            raise self.error(node, f"Loop-carried variable '{name}' has initial type {home.type} but is "
                                   f"re-assigned to {value.type} in the loop; make sure the type stays consistent")
        return [_copy(home, value, self.b.loc)]

    def visit_While(self, node: ast.While) -> None:
        raise self.error(node, "while loops are not supported in kernels; use for ... in range(...)")

    def visit_Break(self, node: ast.Break) -> None:
        raise self.error(node, "break is not supported in kernels")

    def visit_Continue(self, node: ast.Continue) -> None:
        raise self.error(node, "continue is not supported in kernels")

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
        if name in self._closure:
            return self._closure[name]
        if name in self._globals:
            return self._globals[name]
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
                return value.dtype
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
        frame = _Frame(src, is_kernel=False, depth=self.frame.depth + 1)
        child = CodeGenerator(self.b, self.kernel_name, frame, dict(bound.arguments))
        start = self.b.current
        child.visit(src.tree)
        if not child.terminated:
            frame.returns.append(_ReturnPoint(self.b.current, None))
        self.b.move_to(start)
        values = [r.value for r in frame.returns]
        if len(values) == 1:
            return values[0]
        return child._merge_values(node, f"return value of {fn.__name__}", values,
                                   [r.block for r in frame.returns], "function")


def _copy(home: ir.Var, value: Tensor, loc: ir.Loc | None) -> ir.Assign:
    """`home = value`: a same-type cast, or `addptr(p, 0)` for pointers."""
    if home.type.is_pointer:
        return ir.Assign(home, "addptr", (value.handle, ir.Const(0, ir.BlockType(ir.DType.int32))), {}, loc)
    return ir.Assign(home, "cast", (value.handle,), {}, loc)


def _assigned_names(stmts: list[ast.stmt]) -> list[str]:
    """Names (re)bound anywhere in `stmts`, in first-assignment order."""
    names: dict[str, None] = {}
    for stmt in stmts:
        for node in ast.walk(stmt):
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names[node.id] = None
    return list(names)


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
