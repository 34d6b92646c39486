"""Weight layout of the model's projections: torch's [out, in] against our transposed [in, out].

    python -m benchmarks.projection [--rows 1,2,4,8,12,16,24,32,64,512] [--threads 2]
        [--layers 30] [--reps 6] [--json PATH]

`models.llama.Projection` keeps each weight transposed because CPU sgemm runs small
batches faster against a row-major [in, out] operand. This times one decoder stack's
four matmuls per layer (SmolLM2-135M shapes: q/k/v 960x576, o 576x576, gate/up 3072x576,
down 576x1536) both ways at each batch size, alternating, best of --reps, on fresh
random float32 weights; rows are tokens in the step (a decode step has one per
sequence). Checks the two agree, prints a Markdown table and writes JSON rows
`{"rows", "linear_ms", "projection_ms", "ratio"}` (default bench-results/projection.json).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from benchmarks import write_json
from models.llama import Projection

LAYER_SHAPES = ((960, 576), (576, 576), (3072, 576), (576, 1536))


def _ms(fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3


def measure(rows: int, weights: list[torch.Tensor], projections: list[Projection], reps: int) -> dict:
    """One table row: the stack's matmuls at `rows` tokens, both layouts, alternating."""
    inputs = {k: torch.randn(rows, k) for k in {w.shape[1] for w in weights}}

    def linear() -> None:
        for w in weights:
            F.linear(inputs[w.shape[1]], w)

    def projection() -> None:
        for p, w in zip(projections, weights):
            p(inputs[w.shape[1]])

    x = inputs[weights[0].shape[1]]
    torch.testing.assert_close(projections[0](x), F.linear(x, weights[0]), rtol=1e-4, atol=1e-4)  # sum order
    times = {linear: float("inf"), projection: float("inf")}
    for _ in range(reps):
        for fn in times:
            times[fn] = min(times[fn], _ms(fn))
    return {"rows": rows, "linear_ms": times[linear], "projection_ms": times[projection],
            "ratio": times[projection] / times[linear]}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default="1,2,4,8,12,16,24,32,64,512")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (0: torch's default)")
    parser.add_argument("--layers", type=int, default=30)
    parser.add_argument("--reps", type=int, default=6)
    parser.add_argument("--json", type=Path, default=Path("bench-results/projection.json"))
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    weights = [torch.randn(shape) for _ in range(args.layers) for shape in LAYER_SHAPES]
    projections = [Projection(w) for w in weights]
    print("| rows | F.linear [out, in] ms | Projection [in, out] ms | ratio |\n|---:|---:|---:|---:|")
    results = []
    for rows in (int(r) for r in args.rows.split(",")):
        row = measure(rows, weights, projections, args.reps)
        results.append(row)
        print(f"| {rows} | {row['linear_ms']:.1f} | {row['projection_ms']:.1f} | {row['ratio']:.2f} |", flush=True)
    write_json(args.json, results)
    return results


if __name__ == "__main__":
    main()
