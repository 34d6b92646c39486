"""`python -m kernelforge show MODULE:KERNEL --backend cpu|triton|interpret|ir --const K=V --sig NAME=TYPE`

Prints the code a backend generates for one specialisation of a kernel, so that what
runs can be read without launching it. Constexpr values are parsed as Python literals
(`--const BLOCK=128`, `--const IS_NEOX=True`); `--sig` types runtime parameters the
Triton way (`--sig x_ptr=*fp16 --sig n=i64`).
"""

from __future__ import annotations

import argparse
import ast
import importlib
import sys
from typing import Any, Sequence

from kernelforge.errors import CompilationError
from kernelforge.jit import JITFunction


def _pair(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value


def _literal(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _resolve(target: str) -> JITFunction:
    module_name, sep, attr = target.partition(":")
    if not sep:
        raise SystemExit(f"expected MODULE:KERNEL, got {target!r}")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise SystemExit(f"cannot find kernel {target}: {exc}") from None
    while not isinstance(obj, JITFunction) and hasattr(obj, "fn"):
        obj = obj.fn  # kf.autotune wrappers
    if not isinstance(obj, JITFunction):
        raise SystemExit(f"{target} is not a @kf.jit kernel")
    return obj


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kernelforge")
    sub = parser.add_subparsers(dest="command", required=True)
    show = sub.add_parser("show", help="print the generated source of a kernel")
    show.add_argument("target", help="MODULE:KERNEL, e.g. kernelforge.kernels.rms_norm:_rms_norm_kernel")
    show.add_argument("--backend", default="cpu", choices=["cpu", "triton", "interpret", "ir"])
    show.add_argument("--const", action="append", type=_pair, default=[], metavar="NAME=VALUE")
    show.add_argument("--sig", action="append", type=_pair, default=[], metavar="NAME=TYPE")
    args = parser.parse_args(argv)

    kernel = _resolve(args.target)
    constexprs = {name: _literal(value) for name, value in args.const}
    try:
        print(kernel.source(args.backend, signature=dict(args.sig), **constexprs))
    except (CompilationError, TypeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
