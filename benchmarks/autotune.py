"""Autotune benchmark: each kernel's default config against its tuned config on the CPU backend.

    python -m benchmarks.autotune [--json PATH] [--effort quick|full] [--max-tokens N] [--threads N]

For every tunable kernel at SmolLM2-135M's serving shapes (decode batches and prefill
chunks, float32), the tuner runs with a private, empty cache; then the default and the
winning config are timed again, side by side, with more repetitions, so the reported
speed-up is not inflated by the noise the search picked its winner from. Prints a
Markdown table and writes every number to --json. Never asserts anything about speed.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

import kernelforge as kf
from benchmarks import write_json
from autotune import AutotuneCache, Tuner, TuneError, registry
from autotune.__main__ import format_config, format_key
from autotune.effort import get_effort


def run(effort: str, max_tokens: int, reps: int, budget: float | None) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    shapes = registry.serving_shapes({**registry.SHAPE_DEFAULTS, "device": "cpu"}, max_tokens)
    with tempfile.TemporaryDirectory() as cache_dir, kf.backend("cpu"):
        tuner = Tuner(AutotuneCache(cache_dir), effort=effort, budget_s=budget)
        remeasure = Tuner(AutotuneCache(cache_dir), effort=replace(get_effort("full"), reps=reps))
        for kernel in registry.tunable_kernels().values():
            for shape in shapes:
                try:
                    launches = kernel.launches(shape)
                except (ValueError, TypeError) as exc:
                    print(f"skipped {kernel.name} at {shape}: {exc}", file=sys.stderr)
                    continue
                for launch in launches:
                    try:
                        result = tuner.tune(launch)
                    except TuneError as exc:
                        print(f"skipped {kernel.name} at {launch.key}: {exc}", file=sys.stderr)
                        continue
                    times = remeasure.measure(launch, [result.default, result.best])
                    rows.append({
                        "kernel": kernel.name, "num_tokens": shape["num_tokens"], "num_seqs": shape["num_seqs"],
                        "key": format_key(result.key_fields, result.key),
                        "default": result.default.kwargs, "tuned": result.best.kwargs,
                        "default_us": times[result.default] * 1e6, "tuned_us": times[result.best] * 1e6,
                        "configs_timed": result.timed, "failed": len(result.failures),
                    })
                    print(f"{kernel.name} {rows[-1]['key']}: {rows[-1]['default_us']:.1f} -> "
                          f"{rows[-1]['tuned_us']:.1f} us", file=sys.stderr)
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    """One row per tuned key; the full key (constexprs included) is in the JSON."""
    lines = ["| kernel | tokens | seqs | variant | default | default (us) | tuned | tuned (us) | speed-up | timed |",
             "|---|---:|---:|---|---|---:|---|---:|---:|---:|"]
    for r in rows:
        variant = "fused add" if "FUSED_ADD=True" in r["key"] else ""
        lines.append(f"| {r['kernel'].lstrip('_')} | {r['num_tokens']} | {r['num_seqs']} | {variant} | "
                     f"{format_config(r['default'])} | {r['default_us']:,.1f} | {format_config(r['tuned'])} | "
                     f"{r['tuned_us']:,.1f} | {r['default_us'] / r['tuned_us']:.2f}x | {r['configs_timed']} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", metavar="PATH", help="write the results here")
    parser.add_argument("--effort", default="quick", choices=["quick", "full"])
    parser.add_argument("--budget", type=float, help="wall-time budget per key (seconds)")
    parser.add_argument("--max-tokens", type=int, default=512)
    parser.add_argument("--reps", type=int, default=30, help="timed runs when re-measuring default and tuned")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice); 1 keeps "
                        "OpenMP barriers from stalling when other processes share the cores")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = run(args.effort, args.max_tokens, args.reps, args.budget)
    print(markdown(rows))
    if args.json:
        meta = {"torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.machine(),
                "processor": platform.processor(), "effort": args.effort, "backend": "cpu"}
        write_json(Path(args.json), {"meta": meta, "results": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
