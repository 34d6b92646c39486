"""Offline throughput: our continuous-batching `LLM` against transformers' static batching.

    python -m benchmarks.throughput [--json PATH] [--plot docs/throughput.png]
                                    [--num-requests 32] [--sweep 8 16 32 64]

One fixed-seed mixed workload (prompt lengths 8-300, output lengths 4-256, greedy,
ignore_eos) runs through:

- `LLM.generate` at each `max_num_seqs` of the sweep (all requests at once; the engine
  batches them continuously under its token budget);
- transformers' `generate` in static batches of 16 in arrival order, left padded, each
  batch running to its longest output (`max_new_tokens` = batch max), which is how a
  server without continuous batching has to serve the same requests.

Only useful tokens count: each request's own requested output tokens. The padding and
the tokens a short request "generates" while its batch finishes are work transformers
does but nobody asked for. Both use the same GGUF weights in float32 on the same threads.
The workload first runs once untimed through the engine, so kernel compilation (once
per shape specialisation, cached on disk) is not counted.
The table reports useful output tokens/s for both and their ratio; the JSON holds every
run; the plot shows throughput against max_num_seqs. Speed is reported, never asserted.
"""

from __future__ import annotations

import argparse
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from benchmarks import write_json
HF_BATCH = 16


@dataclass
class Workload:
    prompts: list[list[int]]
    output_lens: list[int]

    @property
    def useful_tokens(self) -> int:
        return sum(self.output_lens)


@dataclass
class Run:
    system: str
    max_num_seqs: int | None
    seconds: float
    useful_tokens: int

    @property
    def tokens_per_s(self) -> float:
        return self.useful_tokens / self.seconds


def make_workload(num_requests: int, vocab_size: int, seed: int, max_prompt_len: int = 300,
                  max_output_len: int = 256) -> Workload:
    rng = random.Random(seed)
    prompts = [[rng.randrange(100, vocab_size - 100) for _ in range(rng.randint(8, max_prompt_len))]
               for _ in range(num_requests)]
    return Workload(prompts, [rng.randint(4, max_output_len) for _ in range(num_requests)])


def run_llm(model, tokenizer, work: Workload, max_num_seqs: int, max_num_batched_tokens: int) -> Run:
    from runtime import LLM, SamplingParams
    from runtime.engine import EngineArgs, LLMEngine

    max_len = max(len(p) for p in work.prompts) + max(work.output_lens)
    args = EngineArgs(max_model_len=max_len, max_num_seqs=max_num_seqs, max_num_batched_tokens=max_num_batched_tokens)
    llm = LLM.from_engine(LLMEngine(args, model=model, tokenizer=tokenizer))
    params = [SamplingParams(max_tokens=n, temperature=0.0, ignore_eos=True) for n in work.output_lens]
    prompts = [{"prompt_token_ids": p} for p in work.prompts]
    start = time.perf_counter()
    outs = llm.generate(prompts, params)
    seconds = time.perf_counter() - start
    if [len(o.outputs[0].token_ids) for o in outs] != work.output_lens:
        raise RuntimeError("the engine did not produce the requested number of tokens")
    return Run("kernelforge LLM", max_num_seqs, seconds, work.useful_tokens)


def run_transformers(hf_model, work: Workload, pad_token_id: int) -> Run:
    start = time.perf_counter()
    for first in range(0, len(work.prompts), HF_BATCH):
        prompts = work.prompts[first:first + HF_BATCH]
        width = max(map(len, prompts))
        ids = torch.tensor([[pad_token_id] * (width - len(p)) + p for p in prompts])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
        new = max(work.output_lens[first:first + HF_BATCH])
        with torch.inference_mode():
            hf_model.generate(ids, attention_mask=mask, max_new_tokens=new, min_new_tokens=new,
                              do_sample=False, pad_token_id=pad_token_id)
    return Run("transformers static batching", None, time.perf_counter() - start, work.useful_tokens)


def load_transformers_model():
    from transformers import AutoModelForCausalLM

    from models.default import default_gguf_path

    path = default_gguf_path()
    return AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32).eval()


def plot(runs: list[Run], baseline: Run, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ours = sorted((r for r in runs if r.max_num_seqs is not None), key=lambda r: r.max_num_seqs)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([r.max_num_seqs for r in ours], [r.tokens_per_s for r in ours], "o-", label="kernelforge LLM")
    ax.axhline(baseline.tokens_per_s, color="gray", linestyle="--", label=f"transformers (batches of {HF_BATCH})")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("max_num_seqs")
    ax.set_ylabel("useful output tokens / s")
    ax.set_title(f"Offline throughput, {torch.get_num_threads()} CPU threads")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-requests", type=int, default=32)
    parser.add_argument("--max-prompt-len", type=int, default=300, help="prompts are 8 to this many tokens")
    parser.add_argument("--max-output-len", type=int, default=256, help="outputs are 4 to this many tokens")
    parser.add_argument("--sweep", type=int, nargs="+", default=[8, 16, 32, 64], help="max_num_seqs values")
    parser.add_argument("--max-num-batched-tokens", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write all runs here")
    parser.add_argument("--plot", type=Path, help="throughput against max_num_seqs (PNG)")
    args = parser.parse_args(argv)

    from models import load_model

    model, tokenizer = load_model()
    work = make_workload(args.num_requests, model.config.vocab_size, args.seed, args.max_prompt_len,
                         args.max_output_len)
    print(f"{args.num_requests} requests, prompts {min(map(len, work.prompts))}-{max(map(len, work.prompts))} "
          f"tokens, outputs {min(work.output_lens)}-{max(work.output_lens)} tokens, "
          f"{work.useful_tokens} useful output tokens, {torch.get_num_threads()} threads")
    # Untimed pass first: kernels compile per shape specialisation on first launch, and
    # that one-off cost would otherwise land on whichever sweep point runs first.
    run_llm(model, tokenizer, work, max(args.sweep), args.max_num_batched_tokens)
    runs = [run_llm(model, tokenizer, work, n, args.max_num_batched_tokens) for n in args.sweep]
    baseline = run_transformers(load_transformers_model(), work, tokenizer.pad_token_id or 0)
    best = max(runs, key=lambda r: r.tokens_per_s)

    print(f"\n{'system':<30} {'max_num_seqs':>12} {'seconds':>9} {'useful tok/s':>13} {'vs transformers':>16}")
    for run in [*runs, baseline]:
        seqs = "-" if run.max_num_seqs is None else str(run.max_num_seqs)
        print(f"{run.system:<30} {seqs:>12} {run.seconds:>9.1f} {run.tokens_per_s:>13.1f} "
              f"{run.tokens_per_s / baseline.tokens_per_s:>15.2f}x")
    print(f"\nbest: max_num_seqs={best.max_num_seqs}, {best.tokens_per_s:.1f} useful tok/s, "
          f"{best.tokens_per_s / baseline.tokens_per_s:.2f}x transformers")
    if args.json:
        write_json(args.json, {
            "num_requests": args.num_requests, "seed": args.seed, "max_prompt_len": args.max_prompt_len,
            "max_output_len": args.max_output_len, "threads": torch.get_num_threads(),
            "max_num_batched_tokens": args.max_num_batched_tokens, "useful_tokens": work.useful_tokens,
            "runs": [asdict(r) | {"tokens_per_s": r.tokens_per_s} for r in [*runs, baseline]],
            "best_ratio": best.tokens_per_s / baseline.tokens_per_s,
        })
    if args.plot:
        plot(runs, baseline, args.plot)


if __name__ == "__main__":
    main()
