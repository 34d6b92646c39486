"""Model-load benchmark: how long `models.load_model()` takes cold (first conversion) and warm.

    python -m benchmarks.load [--path PATH] [--repeats N] [--json PATH]

Every measurement runs in a fresh Python process, so it pays what a user pays: `import
models` (torch, transformers) and then `load_model(...)` on the CPU in float32. The first
run uses an empty private cache ($KF_CACHE_DIR in a temporary directory), so a GGUF is
read, dequantized and its tokenizer converted; the following runs reuse that cache.
Prints a Markdown table and writes every number to --json (default
bench-results/load.json). Never asserts anything about speed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import write_json

# Runs in the child process; prints one JSON line with its timings.
_CHILD = """
import json, sys, time
start = time.perf_counter()
import models
imported = time.perf_counter()
model, tokenizer = models.load_model({path!r}, device="cpu")
loaded = time.perf_counter()
print(json.dumps({{"import_s": imported - start, "load_model_s": loaded - imported,
                   "name": model.config.name, "params": sum(p.numel() for p in model.parameters())}}))
"""


def measure(path: str | None, cache_dir: str) -> dict[str, Any]:
    """One fresh-process load; wall time of the whole process included."""
    env = {**os.environ, "KF_CACHE_DIR": cache_dir, "HF_HUB_OFFLINE": "1"}
    code = _CHILD.format(path=path)
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["process_s"] = time.perf_counter() - start
    return result


def run(path: str | None, repeats: int) -> list[dict[str, Any]]:
    rows = []
    with tempfile.TemporaryDirectory() as cache_dir:
        rows.append({"run": "cold", **measure(path, cache_dir)})
        for i in range(repeats):
            rows.append({"run": f"warm {i + 1}", **measure(path, cache_dir)})
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| run | import models (s) | load_model (s) | whole process (s) |", "|---|---:|---:|---:|"]
    lines += [f"| {r['run']} | {r['import_s']:.2f} | {r['load_model_s']:.2f} | {r['process_s']:.2f} |" for r in rows]
    warm = [r["load_model_s"] for r in rows if r["run"].startswith("warm")]
    if warm:
        lines.append(f"| warm median | | {statistics.median(warm):.2f} | |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", default=None, help="model to load (default: the embedded SmolLM2-135M-Instruct)")
    parser.add_argument("--repeats", type=int, default=3, help="warm loads after the cold one")
    parser.add_argument("--json", default="bench-results/load.json")
    args = parser.parse_args()
    rows = run(args.path, args.repeats)
    print(f"model: {rows[0]['name']} ({rows[0]['params'] / 1e6:.0f}M parameters), cpu, float32\n")
    print(table(rows))
    out = Path(args.json)
    meta = {"machine": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()}
    write_json(out, {"meta": meta, "rows": rows})
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
