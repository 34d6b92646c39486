"""`python -m autotune`: tune kernels ahead of time and manage the autotune cache.

    python -m autotune tune --kernel rms_norm --shape num_tokens=64 hidden_size=576 [--effort full]
    python -m autotune tune --model [PATH]        # every kernel at the model's serving shapes
    python -m autotune list | show | export FILE | import FILE | clear

Tuning writes to `$KF_CACHE_DIR/autotune` (default `~/.cache/kernelforge`); a serving
process that called `autotune.install()` then launches every kernel with its tuned config.
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any, Sequence

import torch
from rich.console import Console
from rich.table import Table
from tqdm import tqdm

from autotune import registry
from autotune.cache import AutotuneCache
from autotune.effort import EFFORTS
from autotune.search import SEARCHES
from autotune.tuner import TuneError, TuneResult, Tuner
from kernelforge.autotuning import Config


def format_key(fields: Sequence[str], key: Sequence[Any]) -> str:
    """`n_rows=128 hidden=576 float32 FUSED_ADD=True`: empty parts dropped, dtypes unnamed."""
    parts = []
    for name, value in zip(fields, key):
        if name in ("dtypes", "constexprs"):
            if value != "":
                parts.append(str(value))
        else:
            parts.append(f"{name}={value}")
    return " ".join(parts)


def format_config(text_or_config: Any) -> str:
    return " ".join(f"{k}={v}" for k, v in dict(text_or_config).items())


def format_time(seconds: float) -> str:
    return "failed" if not math.isfinite(seconds) else f"{seconds * 1e6:,.1f} us"


def console() -> Console:
    """Rich wraps tables to 80 columns when stdout is not a terminal; a log file wants them whole."""
    terminal = Console()
    return terminal if terminal.is_terminal else Console(width=200)


def default_device() -> str:
    """Where serving would run: CUDA, else an Ascend NPU, else the CPU."""
    if torch.cuda.is_available():
        return "cuda"
    npu = getattr(torch, "npu", None)
    if npu is not None and npu.is_available():
        return "npu"
    return "cpu"


def _shapes(args: argparse.Namespace) -> list[dict[str, Any]]:
    base: dict[str, Any] = {"device": args.device}
    if args.model is not None:
        import models  # lazily: only `--model` needs the model code

        model, _ = models.load_model(args.model or None, dtype=args.dtype, device=args.device)
        base.update(registry.model_shape(model.config))
        base.update(registry.parse_shape(args.shape))
        return registry.serving_shapes(base, args.max_tokens)
    if args.dtype != "auto":
        base["dtype"] = registry.parse_shape([f"dtype={args.dtype}"])["dtype"]
    base.update(registry.parse_shape(args.shape))
    return [base]


def cmd_tune(args: argparse.Namespace) -> int:
    kernels = registry.tunable_kernels()
    try:
        chosen = registry.select(kernels, args.kernel) if args.kernel else list(kernels.values())
    except LookupError as exc:
        print(exc, file=sys.stderr)
        return 2
    try:
        shapes = _shapes(args)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    tasks = [(k, shape) for shape in shapes for k in chosen]
    tuner = Tuner(effort=args.effort, budget_s=args.budget, search=args.search, force=args.force)
    results: list[TuneResult] = []
    problems: list[str] = []
    with tqdm(tasks, desc="autotune", unit="shape", file=sys.stderr) as bar:
        for kernel, shape in bar:
            bar.set_postfix_str(f"{kernel.name.lstrip('_')} tokens={shape.get('num_tokens')}")
            try:
                for launch in kernel.launches(shape):
                    results.append(tuner.tune(launch))
            except (TuneError, ValueError, TypeError) as exc:
                problems.append(f"{kernel.name} at {shape}: {exc}")
    table = Table(title=f"autotune ({args.effort})")
    for column in ("kernel", "key", "default", "default time", "best", "best time", "speed-up", "timed"):
        table.add_column(column, justify="right" if "time" in column or column in ("speed-up", "timed") else "left")
    for r in results:
        speedup = r.default_time / r.best_time if math.isfinite(r.default_time) else math.inf
        table.add_row(r.kernel, format_key(r.key_fields, r.key), format_config(r.default), format_time(r.default_time),
                      format_config(r.best), format_time(r.best_time), f"{speedup:.2f}x", str(r.timed))
    out = console()
    out.print(table)
    for problem in problems:
        out.print(f"[red]skipped[/red] {problem}")
    return 1 if problems else 0


def cmd_show(args: argparse.Namespace) -> int:
    table = Table(title=f"autotune cache: {AutotuneCache().root}")
    for column in ("kernel", "key", "backend", "device", "best config", "best time", "configs timed"):
        table.add_column(column, justify="right" if column in ("best time", "configs timed") else "left")
    for entry in AutotuneCache().entries():
        if args.kernel and args.kernel not in (entry.kernel, entry.kernel.lstrip("_")):
            continue
        best = entry.best()
        failed = len(entry.failures)
        timed = f"{len(entry.timings)}" + (f" ({failed} failed)" if failed else "")
        table.add_row(entry.kernel, format_key(entry.key_fields, entry.key), entry.backend, entry.device,
                      format_config(best[0]) if best else "-", format_time(best[1]) if best else "-", timed)
        if args.failures:
            for text, reason in entry.failures.items():
                table.add_row("", "", "", "", format_config(Config.from_json(text)), "failed", reason)
    console().print(table)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    for kernel in registry.tunable_kernels().values():
        print(f"{kernel.name.lstrip('_'):32} {kernel.module.__name__}  key={list(kernel.autotuned.key_names)}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    print(f"exported {AutotuneCache().export(args.file)} entries to {args.file}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    try:
        count = AutotuneCache().import_(args.file)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"imported {count} entries from {args.file}")
    return 0


def cmd_clear(args: argparse.Namespace) -> int:
    cache = AutotuneCache()
    print(f"removed {cache.clear()} files from {cache.root}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m autotune", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    tune = sub.add_parser("tune", help="time candidate configs and store them in the cache")
    tune.add_argument("--kernel", help="kernel or kernel-module name (default: every tunable kernel)")
    tune.add_argument("--model", nargs="?", const="", default=None, metavar="PATH",
                      help="tune at this model's serving shapes (no PATH: the default model)")
    tune.add_argument("--shape", nargs="*", default=[], metavar="K=V",
                      help=f"shape fields over the defaults {sorted(registry.SHAPE_DEFAULTS)}")
    tune.add_argument("--effort", choices=sorted(EFFORTS), default="quick")
    tune.add_argument("--budget", type=float, metavar="SECONDS", help="wall-time budget per key")
    tune.add_argument("--search", choices=sorted(SEARCHES), help="override the effort's search algorithm")
    tune.add_argument("--force", action="store_true", help="re-time configs that are already cached")
    tune.add_argument("--device", default=default_device())
    tune.add_argument("--dtype", default="auto", help="activation dtype (auto: the model's, else float32)")
    tune.add_argument("--max-tokens", type=int, default=max(registry.PREFILL_CHUNKS),
                      help="largest token count tuned with --model")
    tune.set_defaults(run=cmd_tune)

    show = sub.add_parser("show", help="list cached results")
    show.add_argument("--kernel")
    show.add_argument("--failures", action="store_true", help="also list failed configs and why")
    show.set_defaults(run=cmd_show)
    sub.add_parser("list", help="list tunable kernels").set_defaults(run=cmd_list)
    export = sub.add_parser("export", help="write every cache entry to one file")
    export.add_argument("file")
    export.set_defaults(run=cmd_export)
    imp = sub.add_parser("import", help="merge an exported file into the cache")
    imp.add_argument("file")
    imp.set_defaults(run=cmd_import)
    sub.add_parser("clear", help="delete the autotune cache").set_defaults(run=cmd_clear)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "tune" and args.kernel is None and args.model is None:
        build_parser().error("tune needs --kernel NAME and/or --model [PATH]")
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
