"""Paged-attention decode bandwidth: the bytes a decode step must move over the time it takes.

    python -m benchmarks.attention_bandwidth [--device cpu|cuda] [--backend NAME] [--dtype D]
        [--models smollm2,llama2-7b] [--seqs 1,16,64] [--contexts 128,2048] [--json PATH]

Decode attention is memory-bound: each sequence's new token reads every cached key and
value once, so the least a step can move is the K/V bytes of all contexts plus the
queries, outputs and block-table rows. That count over the measured time is the
achieved bandwidth, reported as a share of the device's copy bandwidth measured in the
same run (a large `copy_`, read plus write) and, where torch reports the memory clock
and bus width, of the theoretical peak. The default device is `cuda` when there is one
(backend `triton`, float16), else `cpu` (backend `cpu`, float32, one thread). Every
result is checked against `kernelforge.kernels.reference` first. Prints a Markdown
table and writes the rows to --json (default bench-results/attention_bandwidth.json).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Callable

import torch

import kernelforge as kf
from benchmarks import write_json
from benchmarks.kernels import BLOCK_SIZE, MODELS
from kernelforge import kernels
from kernelforge.kernels import reference


def _timer(device: torch.device) -> Callable[[Callable[[], object]], float]:
    """Milliseconds of one call: CUDA events on a GPU (the launch is asynchronous)."""
    if device.type != "cuda":
        def wall(fn: Callable[[], object]) -> float:
            start = time.perf_counter()
            fn()
            return (time.perf_counter() - start) * 1e3
        return wall

    def events(fn: Callable[[], object]) -> float:
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        fn()
        end.record()
        torch.cuda.synchronize(device)
        return begin.elapsed_time(end)
    return events


def best_ms(fn: Callable[[], object], device: torch.device, reps: int) -> float:
    """Fastest of `reps` calls after two warm-up calls (the first compiles)."""
    timer = _timer(device)
    fn()
    fn()
    return min(timer(fn) for _ in range(reps))


def copy_bandwidth(device: torch.device, megabytes: int, reps: int) -> float:
    """GB/s of a device-to-device `copy_` of `megabytes` (bytes read plus bytes written)."""
    src = torch.empty(megabytes << 20, dtype=torch.uint8, device=device).fill_(1)
    dst = torch.empty_like(src)
    ms = best_ms(lambda: dst.copy_(src), device, reps)
    return 2 * src.numel() / (ms * 1e-3) / 1e9


def peak_bandwidth(device: torch.device) -> float | None:
    """GB/s from the memory clock and bus width when torch reports them (double data rate)."""
    if device.type != "cuda":
        return None
    props = torch.cuda.get_device_properties(device)
    clock_khz, bus_bits = getattr(props, "memory_clock_rate", None), getattr(props, "memory_bus_width", None)
    if not clock_khz or not bus_bits:
        return None
    return 2 * clock_khz * 1e3 * bus_bits / 8 / 1e9


def decode_batch(m: dict, seqs: int, context: int, dtype: torch.dtype, device: torch.device) -> tuple:
    """Arguments of `paged_attention` for one decode step: `seqs` sequences of `context`
    keys in blocks scattered over the cache."""
    blocks_per_seq = -(-context // BLOCK_SIZE)
    shape = (seqs * blocks_per_seq, BLOCK_SIZE, m["num_kv_heads"], m["head_size"])
    key_cache = torch.randn(shape, dtype=dtype, device=device)
    value_cache = torch.randn_like(key_cache)
    block_table = torch.randperm(shape[0], device=device).to(torch.int32).view(seqs, blocks_per_seq)
    query = torch.randn(seqs, m["num_heads"], m["head_size"], dtype=dtype, device=device)
    cu_seqlens_q = torch.arange(seqs + 1, dtype=torch.int32, device=device)
    seqused_k = torch.full((seqs,), context, dtype=torch.int32, device=device)
    return (query, key_cache, value_cache, block_table, cu_seqlens_q, seqused_k, 1, context,
            m["head_size"] ** -0.5)


def bytes_moved(m: dict, seqs: int, context: int, dtype: torch.dtype) -> int:
    """The least a decode step reads and writes: K and V of every context position, the
    queries and outputs, and the block-table rows (int32) it looks up."""
    item = torch.empty((), dtype=dtype).element_size()
    kv = 2 * seqs * context * m["num_kv_heads"] * m["head_size"] * item
    q_and_out = 2 * seqs * m["num_heads"] * m["head_size"] * item
    return kv + q_and_out + seqs * -(-context // BLOCK_SIZE) * 4


def measure_case(m: dict, seqs: int, context: int, dtype: torch.dtype, device: torch.device,
                 reps: int) -> tuple[float, float]:
    """(best ms, max abs error against the reference) of one decode step."""
    args = decode_batch(m, seqs, context, dtype, device)
    out, want = torch.empty_like(args[0]), torch.empty_like(args[0])
    kernels.paged_attention(out, *args)
    reference.paged_attention(want, *args)
    error = (out.float() - want.float()).abs().max().item()
    return best_ms(lambda: kernels.paged_attention(out, *args), device, reps), error


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--backend", default=None, help="kernelforge backend (default: triton on cuda, else cpu)")
    parser.add_argument("--dtype", default=None, choices=["float32", "float16", "bfloat16"],
                        help="default: float16 on cuda, float32 on cpu")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--seqs", default="1,16,64")
    parser.add_argument("--contexts", default="128,2048")
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads on cpu (0: torch's default)")
    parser.add_argument("--copy-mb", type=int, default=None, help="copy-bandwidth buffer (default 1024 cuda, 256 cpu)")
    parser.add_argument("--json", type=Path, default=Path("bench-results/attention_bandwidth.json"))
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    on_gpu = device.type == "cuda"
    backend = args.backend or ("triton" if on_gpu else "cpu")
    dtype_name = args.dtype or ("float16" if on_gpu else "float32")
    dtype = getattr(torch, dtype_name)
    if not on_gpu and args.threads:
        torch.set_num_threads(args.threads)
    for name in args.models.split(","):
        if name not in MODELS:
            parser.error(f"--models: unknown model {name!r}; choose from {', '.join(MODELS)}")
    torch.manual_seed(0)
    copy_gbs = copy_bandwidth(device, args.copy_mb or (1024 if on_gpu else 256), args.reps)
    peak_gbs = peak_bandwidth(device)
    peak_note = f", theoretical peak {peak_gbs:.0f} GB/s" if peak_gbs else ""
    print(f"{device} ({backend}, {dtype_name}): copy bandwidth {copy_gbs:.1f} GB/s{peak_note}\n")
    print("| model | seqs | context | ms | GB/s | share of copy | share of peak |\n|---|---:|---:|---:|---:|---:|---:|",
          flush=True)
    rows = []
    with kf.backend(backend):
        for name in args.models.split(","):
            m = MODELS[name]
            for seqs in (int(s) for s in args.seqs.split(",")):
                for context in (int(c) for c in args.contexts.split(",")):
                    ms, error = measure_case(m, seqs, context, dtype, device, args.reps)
                    gbs = bytes_moved(m, seqs, context, dtype) / (ms * 1e-3) / 1e9
                    peak_share = gbs / peak_gbs if peak_gbs else None
                    rows.append(dict(model=name, seqs=seqs, context=context, ms=round(ms, 4), gb_per_s=round(gbs, 2),
                                     copy_gb_per_s=round(copy_gbs, 2), share_of_copy=round(gbs / copy_gbs, 4),
                                     peak_gb_per_s=peak_gbs, share_of_peak=peak_share, max_abs_err=error,
                                     device=str(device), backend=backend, dtype=dtype_name))
                    peak_cell = f"{peak_share:.0%}" if peak_share else "-"
                    print(f"| {name} | {seqs} | {context} | {ms:.3f} | {gbs:.1f} | {gbs / copy_gbs:.0%} | {peak_cell} |",
                          flush=True)
    write_json(args.json, rows)
    return rows


if __name__ == "__main__":
    main()
