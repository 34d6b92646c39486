"""Benchmarks: each module prints a Markdown table, writes JSON, and never asserts speed.

    python -m benchmarks.dsl                  # DSL kernels on the CPU backend vs hand-written torch
    python -m benchmarks.kernels              # the LLM kernels vs their torch references
    python -m benchmarks.attention_bandwidth  # decode attention's bandwidth vs the device's
    python -m benchmarks.throughput           # offline LLM vs transformers static batching
    python -m benchmarks.projection           # the model's weight layout: [out, in] vs [in, out] matmuls
    python -m benchmarks.autotune             # default vs tuned kernel configs
    python -m benchmarks.serve                # the serving runtime under load
    python -m benchmarks.load                 # model load time
"""

from __future__ import annotations

import json
from pathlib import Path


def write_json(path: Path, data: object) -> None:
    """`data` as indented JSON at `path`, creating its folder (bench-results/ is not in git)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))
