"""A jit function's parsed source, with the offsets that map AST positions back to the
file so that errors and `ir.Loc`s point at the user's real lines."""

from __future__ import annotations

import ast
import functools
import inspect
import textwrap
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class FunctionSource:
    fn: Callable
    text: str            # the function's source as written (decorators included)
    tree: ast.FunctionDef
    file: str
    first_line: int      # file line of the first line of `text`
    indent: int          # columns removed by dedenting
    lines: tuple[str, ...]  # `text` split into lines, for error messages and locations

    @staticmethod
    @functools.lru_cache(maxsize=None)
    def of(fn: Callable) -> "FunctionSource":
        """Parses `fn` once per process; raises OSError when its source is unavailable."""
        lines, first_line = inspect.getsourcelines(fn)
        text = "".join(lines)
        dedented = textwrap.dedent(text)
        indent = len(lines[0]) - len(lines[0].lstrip()) if dedented != text else 0
        module = ast.parse(dedented)
        tree = next(n for n in module.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)))
        file = inspect.getsourcefile(fn) or inspect.getfile(fn)
        return FunctionSource(fn, text, tree, file, first_line, indent, tuple(text.splitlines()))

    def line_of(self, node: ast.AST) -> int:
        return self.first_line + getattr(node, "lineno", 1) - 1

    def col_of(self, node: ast.AST) -> int:
        return getattr(node, "col_offset", 0) + self.indent

    def source_line(self, node: ast.AST) -> str:
        i = getattr(node, "lineno", 1) - 1
        return self.lines[i] if 0 <= i < len(self.lines) else ""
