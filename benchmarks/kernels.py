"""LLM kernel benchmark: each public op on the CPU backend against its torch reference.

    python -m benchmarks.kernels [--json PATH] [--reps N] [--threads N] [--dtype float32]
                                 [--models smollm2,llama2-7b] [--seqs 1,16,64] [--contexts 128,2048]

Decode steps at serving shapes: SmolLM2-135M (hidden 576, 9 query / 3 KV heads of 64)
and Llama-2-7B (hidden 4096, 32 / 32 heads of 128), with 1, 16 and 64 sequences (one new
token each) and, for attention, 128 and 2048 tokens of context per sequence in a paged
cache of 16-token blocks scattered over the cache, plus two batches a continuous-batching
engine runs (a ragged prefill; decodes beside a prefill chunk; `--no-serving` skips them). The torch column runs
`kernelforge.kernels.reference` on the same inputs. Repetitions alternate between the
two so machine noise hits both alike; each column is the fastest run (on a shared,
oversubscribed machine preemption only ever adds time, and medians of a few runs swing
by multiples), with 20 runs for cases under 5 ms and --reps for the rest. Every kernel result is
checked against the reference once before timing (the error goes into the JSON). Runs
single-threaded by default (`--threads`), like benchmarks.dsl. Prints a Markdown table and
writes a list of rows {"kernel", "shape", "kf_ms", "torch_ms", ...} to --json (default
bench-results/kernels.json). Never asserts anything about speed.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

import kernelforge as kf
from benchmarks import write_json
from kernelforge import kernels
from kernelforge.kernels import reference

MODELS = {
    "smollm2": dict(hidden=576, num_heads=9, num_kv_heads=3, head_size=64),
    "llama2-7b": dict(hidden=4096, num_heads=32, num_kv_heads=32, head_size=128),
}
BLOCK_SIZE = 16
MAX_POSITION = 4096


@dataclass
class Case:
    kernel: str
    shape: str
    run_kf: Callable[[], object]
    run_torch: Callable[[], object]
    outputs: Callable[[], tuple[torch.Tensor, torch.Tensor]]  # (kf result, reference result) after one run each


def _norm_cases(model: str, m: dict, seqs: int, dtype: torch.dtype) -> list[Case]:
    x = torch.randn(seqs, m["hidden"], dtype=dtype)
    residual = torch.randn_like(x)
    weight = torch.randn(m["hidden"], dtype=dtype)
    out_kf, out_ref = torch.empty_like(x), torch.empty_like(x)
    shape = f"{model} T={seqs} hidden={m['hidden']}"
    x_kf, r_kf, x_ref, r_ref = x.clone(), residual.clone(), x.clone(), residual.clone()
    return [
        Case("rms_norm", shape, lambda: kernels.rms_norm(out_kf, x, weight, 1e-6),
             lambda: reference.rms_norm(out_ref, x, weight, 1e-6), lambda: (out_kf, out_ref)),
        # In place: repeated runs keep adding into the residual; both sides see the same sequence.
        Case("fused_add_rms_norm", shape, lambda: kernels.fused_add_rms_norm(x_kf, r_kf, weight, 1e-6),
             lambda: reference.fused_add_rms_norm(x_ref, r_ref, weight, 1e-6), lambda: (x_kf, x_ref)),
    ]


def _rotary_case(model: str, m: dict, seqs: int, dtype: torch.dtype) -> Case:
    d = m["head_size"]
    inv_freq = 1.0 / (10000 ** (torch.arange(0, d, 2).float() / d))
    freqs = torch.outer(torch.arange(MAX_POSITION).float(), inv_freq)
    cos_sin = torch.cat((freqs.cos(), freqs.sin()), dim=-1).to(dtype)
    positions = torch.randint(0, MAX_POSITION, (seqs,))
    q = torch.randn(seqs, m["num_heads"] * d, dtype=dtype)
    k = torch.randn(seqs, m["num_kv_heads"] * d, dtype=dtype)
    q_kf, k_kf, q_ref, k_ref = q.clone(), k.clone(), q.clone(), k.clone()
    return Case("rotary_embedding", f"{model} T={seqs} heads={m['num_heads']}/{m['num_kv_heads']}x{d}",
                lambda: kernels.rotary_embedding(positions, q_kf, k_kf, d, cos_sin, True),
                lambda: reference.rotary_embedding(positions, q_ref, k_ref, d, cos_sin, True),
                lambda: (q_kf, q_ref))


def _paged_cache(m: dict, seqs: int, context: int, dtype: torch.dtype):
    blocks_per_seq = -(-context // BLOCK_SIZE)
    num_blocks = seqs * blocks_per_seq
    shape = (num_blocks, BLOCK_SIZE, m["num_kv_heads"], m["head_size"])
    key_cache, value_cache = torch.randn(shape, dtype=dtype), torch.randn(shape, dtype=dtype)
    block_table = torch.randperm(num_blocks, dtype=torch.int32).view(seqs, blocks_per_seq)
    return key_cache, value_cache, block_table


def _cache_write_case(model: str, m: dict, seqs: int, dtype: torch.dtype) -> Case:
    key_cache, value_cache, block_table = _paged_cache(m, seqs, 128, dtype)
    caches_kf = (key_cache, value_cache)
    caches_ref = (key_cache.clone(), value_cache.clone())
    key = torch.randn(seqs, m["num_kv_heads"], m["head_size"], dtype=dtype)
    value = torch.randn_like(key)
    slots = block_table[:, 3].long() * BLOCK_SIZE + 5  # each sequence's next slot, mid-block
    return Case("reshape_and_cache", f"{model} T={seqs} kv_heads={m['num_kv_heads']}x{m['head_size']}",
                lambda: kernels.reshape_and_cache(key, value, *caches_kf, slots),
                lambda: reference.reshape_and_cache(key, value, *caches_ref, slots),
                lambda: (caches_kf[0], caches_ref[0]))


def _attention_case(model: str, m: dict, seqs: int, context: int, dtype: torch.dtype) -> Case:
    key_cache, value_cache, block_table = _paged_cache(m, seqs, context, dtype)
    query = torch.randn(seqs, m["num_heads"], m["head_size"], dtype=dtype)
    cu_seqlens_q = torch.arange(seqs + 1, dtype=torch.int32)
    seqused_k = torch.full((seqs,), context, dtype=torch.int32)
    args = (query, key_cache, value_cache, block_table, cu_seqlens_q, seqused_k, 1, context,
            m["head_size"] ** -0.5)
    out_kf, out_ref = torch.empty_like(query), torch.empty_like(query)
    return Case("paged_attention", f"{model} decode S={seqs} ctx={context}",
                lambda: kernels.paged_attention(out_kf, *args), lambda: reference.paged_attention(out_ref, *args),
                lambda: (out_kf, out_ref))


def _varlen_attention_case(model: str, m: dict, name: str, q_lens: list[int], contexts: list[int],
                           dtype: torch.dtype) -> Case:
    """A serving batch: sequence i brings q_lens[i] new tokens at the end of contexts[i] keys."""
    key_cache, value_cache, block_table = _paged_cache(m, len(q_lens), max(contexts), dtype)
    query = torch.randn(sum(q_lens), m["num_heads"], m["head_size"], dtype=dtype)
    cu_seqlens_q = torch.tensor([0, *q_lens], dtype=torch.int32).cumsum(0, dtype=torch.int32)
    seqused_k = torch.tensor(contexts, dtype=torch.int32)
    args = (query, key_cache, value_cache, block_table, cu_seqlens_q, seqused_k, max(q_lens), max(contexts),
            m["head_size"] ** -0.5)
    out_kf, out_ref = torch.empty_like(query), torch.empty_like(query)
    return Case("paged_attention", f"{model} {name}",
                lambda: kernels.paged_attention(out_kf, *args), lambda: reference.paged_attention(out_ref, *args),
                lambda: (out_kf, out_ref))


def _serving_attention_cases(model: str, m: dict, dtype: torch.dtype) -> list[Case]:
    """The batches a continuous-batching engine runs besides pure decode (fixed seed): a
    ragged prefill of 12 prompts, and 31 decodes beside a 256-token prefill chunk."""
    rng = torch.Generator().manual_seed(1)
    prompts = torch.randint(8, 301, (12,), generator=rng).tolist()
    decode_contexts = torch.randint(30, 561, (31,), generator=rng).tolist()
    return [
        _varlen_attention_case(model, m, "prefill 12 prompts of 8-300", prompts, prompts, dtype),
        _varlen_attention_case(model, m, "mixed 31 decodes (ctx 30-560) + 256-token chunk",
                               [1] * 31 + [256], decode_contexts + [256], dtype),
    ]


def _time(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3


def measure(case: Case, reps: int) -> tuple[float, float, float]:
    """(kf best ms, torch best ms, max abs error of the first run)."""
    case.run_kf()  # compiles on first use
    case.run_torch()
    got, want = case.outputs()
    error = (got.float() - want.float()).abs().max().item()
    kf_times, torch_times = [], []
    for _ in range(reps if _time(case.run_kf) > 5.0 else max(reps, 20)):
        kf_times.append(_time(case.run_kf))
        torch_times.append(_time(case.run_torch))
    return min(kf_times), min(torch_times), error


def build_cases(models: list[str], seqs: list[int], contexts: list[int],
                dtype: torch.dtype, serving: bool = True) -> list[Callable[[], list[Case]]]:
    """Case factories, so only one case's tensors are alive at a time."""
    factories: list[Callable[[], list[Case]]] = []
    for model in models:
        m = MODELS[model]
        if serving:
            factories.append(lambda model=model, m=m: _serving_attention_cases(model, m, dtype))
        for s in seqs:
            factories.append(lambda model=model, m=m, s=s: _norm_cases(model, m, s, dtype))
            factories.append(lambda model=model, m=m, s=s: [_rotary_case(model, m, s, dtype)])
            factories.append(lambda model=model, m=m, s=s: [_cache_write_case(model, m, s, dtype)])
            for c in contexts:
                factories.append(lambda model=model, m=m, s=s, c=c: [_attention_case(model, m, s, c, dtype)])
    return factories


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, default=Path("bench-results/kernels.json"))
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (0: torch's default)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--seqs", default="1,16,64")
    parser.add_argument("--contexts", default="128,2048")
    parser.add_argument("--no-serving", dest="serving", action="store_false",
                        help="skip the ragged-prefill and mixed-batch attention cases")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dtype = getattr(torch, args.dtype)
    factories = build_cases(args.models.split(","), [int(s) for s in args.seqs.split(",")],
                            [int(c) for c in args.contexts.split(",")], dtype, args.serving)
    rows = []
    print("| kernel | shape | kf ms | torch ms | kf/torch |\n|---|---|---:|---:|---:|", flush=True)
    with kf.backend("cpu"):
        for make in factories:
            for case in make():
                kf_ms, torch_ms, error = measure(case, args.reps)
                rows.append(dict(kernel=case.kernel, shape=case.shape, kf_ms=round(kf_ms, 3),
                                 torch_ms=round(torch_ms, 3), max_abs_err=error, dtype=args.dtype,
                                 threads=torch.get_num_threads()))
                print(f"| {case.kernel} | {case.shape} | {kf_ms:.3f} | {torch_ms:.3f} | {kf_ms / torch_ms:.2f} |",
                      flush=True)
    write_json(args.json, rows)
    return rows


if __name__ == "__main__":
    main()
