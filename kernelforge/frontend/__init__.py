"""AST -> IR: turns a `@kf.jit` function plus its specialisation into an `ir.Kernel`.

`compile_kernel` is the only entry point; `codegen` walks the AST, `semantic` holds the
typing rules, `builtins` maps the `kl` surface onto them, `peephole` tidies the result.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Mapping

from kernelforge import ir
from kernelforge.errors import CompilationError
from kernelforge.frontend.builder import Builder
from kernelforge.frontend.codegen import JIT_ATTR, CodeGenerator, Frame
from kernelforge.frontend.peephole import fold_copies
from kernelforge.frontend.source import FunctionSource
from kernelforge.frontend.values import Tensor

__all__ = ["JIT_ATTR", "compile_kernel", "FunctionSource"]


def compile_kernel(fn: Callable, param_types: Mapping[str, ir.BlockType],
                   constexprs: Mapping[str, Any]) -> ir.Kernel:
    """Lowers `fn` with runtime parameters typed by `param_types` and the rest bound to
    `constexprs`; raises `CompilationError` for anything the DSL does not accept."""
    try:
        src = FunctionSource.of(fn)
    except (OSError, TypeError) as exc:
        raise CompilationError(f"cannot read the source of the kernel (define kernels in a file): {exc}",
                               kernel=fn.__name__, file=fn.__code__.co_filename,
                               line=fn.__code__.co_firstlineno) from None
    try:
        return _compile(fn, src, param_types, constexprs)
    except CompilationError:
        raise
    except Exception as exc:  # a compiler bug outside any statement: still name the kernel
        raise _at_def(src, f"internal compiler error: {type(exc).__name__}: {exc}") from exc


def _at_def(src: FunctionSource, message: str) -> CompilationError:
    return CompilationError(message, kernel=src.fn.__name__, file=src.file, line=src.line_of(src.tree),
                            source_line=src.source_line(src.tree), col=src.col_of(src.tree))


def _compile(fn: Callable, src: FunctionSource, param_types: Mapping[str, ir.BlockType],
             constexprs: Mapping[str, Any]) -> ir.Kernel:
    builder = Builder()
    scope: dict[str, Any] = {}
    params: list[ir.Param] = []
    for name, p in inspect.signature(fn).parameters.items():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise _at_def(src, "kernels cannot take *args or **kwargs")
        if name in constexprs:
            scope[name] = constexprs[name]
            continue
        type_ = param_types[name]
        var = ir.Var(builder.names.fresh(name), type_, name if type_.is_pointer else None)
        params.append(ir.Param(name, var))
        scope[name] = Tensor(var)
    gen = CodeGenerator(builder, fn.__name__, Frame(src, is_kernel=True), scope)
    gen.lower_function()
    kernel = ir.Kernel(fn.__name__, params, dict(constexprs), builder.body, src.file, src.line_of(src.tree))
    fold_copies(kernel)
    try:
        ir.verify(kernel)
        ir.verify_definitions(kernel)
    except ir.VerificationError as exc:
        raise _at_def(src, f"internal compiler error: the frontend produced invalid IR: {exc}") from None
    return kernel
