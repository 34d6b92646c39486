"""Structured control flow of the code generator: runtime `if`, `for` and their merges.

- A runtime `if` runs its arms in copies of the scope; a name both arms (re)assign is
  merged into one mutable IR variable written at the end of each arm; a name only one
  arm defines becomes `Undefined` and using it later is an error.
- When one arm ends in `return`, the rest of the enclosing region continues inside the
  other arm (as Triton does), so every IR variable read after an `If` is assigned on
  all paths that reach it.
- A runtime `for` gives each variable its body reassigns a mutable IR variable, copied
  in before the loop and written back at the end of the body, with Triton's check that
  its type stays the same. `kl.static_range` loops are unrolled instead.

`ControlFlow` is a mixin of `CodeGenerator`; it relies on its `b`, `scope`, `frame`,
`terminated`, `error`, `visit`, `visit_stmts` and `_assign`.
"""

from __future__ import annotations

import ast
import builtins
from typing import Any

from kernelforge import ir
from kernelforge.frontend import semantic as sem
from kernelforge.frontend.builtins import builtin_name
from kernelforge.frontend.values import Tensor, Undefined


class ControlFlow:
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
