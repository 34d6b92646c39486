"""DSL benchmark: kernels written with `@kf.jit` on the CPU backend against hand-written torch.

    python -m benchmarks.dsl [--json PATH] [--reps N] [--compile]

Three Triton-tutorial kernels — a vector add, a row softmax and a tiled matmul — run
at three sizes each. For every case the kernel and its torch counterpart (`x + y`,
`torch.softmax`, `a @ b`) are timed side by side: the repetitions alternate between
the two, so machine noise hits both alike; times are medians, and the ratio of the
fastest runs is shown too (on a shared machine preemption only ever adds time).
`--compile` adds a column for the generated code handed to `torch.compile`
(`KF_CPU_COMPILE=1`). Runs single-threaded by default (`--threads`). Prints a Markdown table and writes every number to --json
(default bench-results/dsl.json). Checks results, never asserts anything about speed.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch

from benchmarks import write_json
import kernelforge as kf
import kernelforge.language as kl


@kf.jit
def add_kernel(x_ptr, y_ptr, out_ptr, n, BLOCK: kl.constexpr):
    pid = kl.program_id(0)
    offs = pid * BLOCK + kl.arange(0, BLOCK)
    mask = offs < n
    x = kl.load(x_ptr + offs, mask=mask)
    y = kl.load(y_ptr + offs, mask=mask)
    kl.store(out_ptr + offs, x + y, mask=mask)


@kf.jit
def softmax_kernel(out_ptr, in_ptr, in_row_stride, out_row_stride, n_cols, BLOCK: kl.constexpr):
    row = kl.program_id(0)
    cols = kl.arange(0, BLOCK)
    mask = cols < n_cols
    x = kl.load(in_ptr + row * in_row_stride + cols, mask=mask, other=-float("inf"))
    x = x - kl.max(x, axis=0)
    num = kl.exp(x)
    kl.store(out_ptr + row * out_row_stride + cols, num / kl.sum(num, axis=0), mask=mask)


@kf.jit
def matmul_kernel(a_ptr, b_ptr, c_ptr, M, N, K, stride_am, stride_ak, stride_bk, stride_bn,
                  stride_cm, stride_cn, BM: kl.constexpr, BN: kl.constexpr, BK: kl.constexpr):
    pid_m = kl.program_id(0)
    pid_n = kl.program_id(1)
    offs_m = pid_m * BM + kl.arange(0, BM)
    offs_n = pid_n * BN + kl.arange(0, BN)
    offs_k = kl.arange(0, BK)
    a_ptrs = a_ptr + offs_m[:, None] * stride_am + offs_k[None, :] * stride_ak
    b_ptrs = b_ptr + offs_k[:, None] * stride_bk + offs_n[None, :] * stride_bn
    acc = kl.zeros((BM, BN), dtype=kl.float32)
    for k in range(0, kl.cdiv(K, BK)):
        a = kl.load(a_ptrs, mask=offs_k[None, :] < K - k * BK, other=0.0)
        b = kl.load(b_ptrs, mask=offs_k[:, None] < K - k * BK, other=0.0)
        acc = kl.dot(a, b, acc)
        a_ptrs += BK * stride_ak
        b_ptrs += BK * stride_bk
    c = acc.to(c_ptr.dtype.element_ty)
    c_ptrs = c_ptr + offs_m[:, None] * stride_cm + offs_n[None, :] * stride_cn
    kl.store(c_ptrs, c, mask=(offs_m[:, None] < M) & (offs_n[None, :] < N))


def vector_add_case(n: int):
    x, y = torch.randn(n), torch.randn(n)
    out = torch.empty(n)
    block = 1024

    def dsl() -> torch.Tensor:
        add_kernel[(kf.cdiv(n, block),)](x, y, out, n, BLOCK=block)
        return out

    return f"n={n}", dsl, lambda: x + y


def softmax_case(rows: int, cols: int):
    x = torch.randn(rows, cols)
    out = torch.empty_like(x)
    block = 1 << (cols - 1).bit_length()

    def dsl() -> torch.Tensor:
        softmax_kernel[(rows,)](out, x, x.stride(0), out.stride(0), cols, BLOCK=block)
        return out

    return f"{rows}x{cols}", dsl, lambda: torch.softmax(x, dim=-1)


def matmul_case(size: int):
    a, b = torch.randn(size, size), torch.randn(size, size)
    c = torch.empty(size, size)
    blk = {64: 32, 256: 128}.get(size, 512)  # CPU-sized tiles: 4 programs at the largest size

    def dsl() -> torch.Tensor:
        grid = (kf.cdiv(size, blk), kf.cdiv(size, blk))
        matmul_kernel[grid](a, b, c, size, size, size, *a.stride(), *b.stride(), *c.stride(),
                            BM=blk, BN=blk, BK=blk)
        return c

    return f"{size}x{size}x{size}", dsl, lambda: a @ b


CASES = [
    ("vector add", vector_add_case, [(4096,), (262_144,), (4_194_304,)]),
    ("softmax", softmax_case, [(32, 128), (1024, 781), (4096, 1024)]),
    ("matmul", matmul_case, [(64,), (256,), (1024,)]),
]


def _reps_for(seconds: float, reps: int) -> int:
    """Fewer repetitions for slow cases, so the whole run stays a few minutes on 2 cores."""
    return max(5, min(reps, int(2.0 / max(seconds, 1e-6))))


def time_side_by_side(fns: list[Callable[[], Any]], reps: int) -> list[tuple[float, float]]:
    """(median, fastest) seconds of each function, with repetitions interleaved across them."""
    for fn in fns:
        fn()
        fn()
    start = time.perf_counter()
    fns[0]()
    reps = _reps_for(time.perf_counter() - start, reps)
    samples: list[list[float]] = [[] for _ in fns]
    for _ in range(reps):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            samples[i].append(time.perf_counter() - t0)
    return [(statistics.median(s), min(s)) for s in samples]


def _reload_kernels() -> None:
    """Drops the loaded launchers so the next launch loads under the current KF_CPU_COMPILE."""
    from kernelforge import cache

    cache.clear_memory()
    for k in (add_kernel, softmax_kernel, matmul_kernel):
        k._launchers.clear()


def compiled_variant(dsl: Callable[[], torch.Tensor]) -> Callable[[], torch.Tensor]:
    """The same launch with its compute regions under `torch.compile` (KF_CPU_COMPILE=1)."""
    os.environ["KF_CPU_COMPILE"] = "1"
    try:
        _reload_kernels()
        dsl()  # loads the module with compiled regions; Inductor compiles on this first call
    finally:
        os.environ.pop("KF_CPU_COMPILE", None)
    return dsl


def run(reps: int, with_compile: bool) -> list[dict[str, Any]]:
    results = []
    for name, make, sizes in CASES:
        for args in sizes:
            label, dsl, ref = make(*args)
            got, want = dsl().clone(), ref()
            err = float((got - want).abs().max())
            (t_dsl, min_dsl), (t_torch, min_torch) = time_side_by_side([dsl, ref], reps)
            row = {"kernel": name, "size": label, "dsl_us": t_dsl * 1e6, "torch_us": t_torch * 1e6,
                   "ratio": t_dsl / t_torch, "dsl_min_us": min_dsl * 1e6, "torch_min_us": min_torch * 1e6,
                   "min_ratio": min_dsl / min_torch, "max_abs_err": err}
            if with_compile:
                t0 = time.perf_counter()
                compiled = compiled_variant(dsl)
                row["compile_s"] = time.perf_counter() - t0
                (t_comp, min_comp), (t_torch2, min_torch2) = time_side_by_side([compiled, ref], reps)
                row["compiled_us"] = t_comp * 1e6
                row["compiled_ratio"] = t_comp / t_torch2
                row["compiled_min_ratio"] = min_comp / min_torch2
                _reload_kernels()  # back to eager for the next case
            results.append(row)
            print(_format_row(row, with_compile), flush=True)
    return results


def _format_row(r: dict[str, Any], with_compile: bool) -> str:
    cells = [r["kernel"], r["size"], f"{r['dsl_us']:.1f}", f"{r['torch_us']:.1f}", f"{r['ratio']:.2f}x",
             f"{r['min_ratio']:.2f}x", f"{r['max_abs_err']:.1e}"]
    if with_compile:
        cells += [f"{r['compiled_us']:.1f}", f"{r['compiled_ratio']:.2f}x", f"{r['compiled_min_ratio']:.2f}x",
                  f"{r['compile_s']:.1f}"]
    return "| " + " | ".join(cells) + " |"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", default="bench-results/dsl.json", help="where to write the numbers")
    parser.add_argument("--reps", type=int, default=50, help="timed repetitions per case (at most)")
    parser.add_argument("--compile", action="store_true", help="also time KF_CPU_COMPILE=1")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (default 1: on a shared machine every parallel op "
                             "waits for its slowest, possibly preempted, thread, which swamps the timings)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    os.environ.setdefault("KF_CACHE_DIR", tempfile.mkdtemp(prefix="kf-bench-"))
    torch.manual_seed(0)
    head = ["kernel", "size", "DSL cpu (us)", "torch (us)", "DSL / torch", "fastest-run ratio", "max abs err"]
    if args.compile:
        head += ["compiled (us)", "compiled / torch", "fastest-run ratio", "compile (s)"]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    results = run(args.reps, args.compile)
    path = Path(args.json)
    meta = {"torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.machine()}
    write_json(path, {"meta": meta, "results": results})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
