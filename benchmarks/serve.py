"""Serving benchmark: load an OpenAI-compatible server and report `vllm bench serve` metrics.

    python -m benchmarks.serve --base-url http://127.0.0.1:8000 --max-concurrency 1 4 16
    python -m benchmarks.serve --max-concurrency 4 --server-args "--max-model-len 512"

Without --base-url it starts `python -m runtime.serve` on a free port and stops it after.
Each request streams from /v1/completions; time to first token (TTFT), inter-token
latency (ITL, between streamed chunks), time per output token (TPOT, (E2E - TTFT) /
(tokens - 1)) and end-to-end latency (E2EL) are measured on the client, token counts come
from the server's usage chunk. Arrivals are Poisson at --request-rate (inf: all at once),
capped by --max-concurrency; prompts are random words from a fixed seed, so runs compare.
Several --max-concurrency values run one after another on the same server; the table goes
to stdout, all results to --output-json, and --plot draws latency against throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np

WORDS = ("time year people way day man thing woman life child world school state family student group "
         "country problem hand part place case week company system program question work government "
         "number night point home water room mother area money story fact month lot right study book "
         "eye job word business issue side kind head house service friend father power hour game line").split()


@dataclass
class RequestResult:
    ok: bool
    prompt_tokens: int = 0
    output_tokens: int = 0
    ttft: float = 0.0
    e2el: float = 0.0
    itl: list[float] = field(default_factory=list)
    error: str = ""


def make_prompts(n: int, words: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(words)) for _ in range(n)]


async def one_request(client: httpx.AsyncClient, url: str, model: str | None, prompt: str,
                      max_tokens: int, ignore_eos: bool, headers: dict[str, str]) -> RequestResult:
    body: dict[str, Any] = {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0.0, "stream": True,
                            "stream_options": {"include_usage": True}, "ignore_eos": ignore_eos}
    if model:
        body["model"] = model
    result = RequestResult(ok=False)
    start = last = time.perf_counter()
    try:
        async with client.stream("POST", url, json=body, headers=headers) as response:
            if response.status_code != 200:
                result.error = f"HTTP {response.status_code}: {(await response.aread()).decode()[:200]}"
                return result
            async for line in response.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    result.error = chunk["error"]["message"]
                    return result
                now = time.perf_counter()
                if chunk.get("usage"):
                    result.prompt_tokens = chunk["usage"]["prompt_tokens"]
                    result.output_tokens = chunk["usage"]["completion_tokens"]
                if any(c.get("text") for c in chunk.get("choices", [])):
                    if result.ttft == 0.0:
                        result.ttft = now - start
                    else:
                        result.itl.append(now - last)
                    last = now
        result.e2el = time.perf_counter() - start
        result.ok = result.output_tokens > 0
        if not result.ok:
            result.error = "no usage chunk / no output tokens"
    except (httpx.HTTPError, json.JSONDecodeError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    return result


async def run_load(base_url: str, model: str | None, prompts: list[str], max_tokens: int,
                   request_rate: float, max_concurrency: int | None, seed: int, ignore_eos: bool,
                   api_key: str | None) -> tuple[list[RequestResult], float]:
    """Send every prompt (Poisson arrivals, optional concurrency cap); return results and wall time."""
    url = base_url.rstrip("/") + "/v1/completions"
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    rng = np.random.default_rng(seed)
    gate = asyncio.Semaphore(max_concurrency) if max_concurrency else None
    limits = httpx.Limits(max_connections=max_concurrency or len(prompts) or 1)

    async with httpx.AsyncClient(timeout=httpx.Timeout(None), limits=limits) as client:
        async def limited(prompt: str) -> RequestResult:
            if gate is None:
                return await one_request(client, url, model, prompt, max_tokens, ignore_eos, headers)
            async with gate:
                return await one_request(client, url, model, prompt, max_tokens, ignore_eos, headers)

        start = time.perf_counter()
        tasks = []
        for prompt in prompts:
            tasks.append(asyncio.create_task(limited(prompt)))
            if request_rate != float("inf"):
                await asyncio.sleep(float(rng.exponential(1.0 / request_rate)))
        results = await asyncio.gather(*tasks)
        return list(results), time.perf_counter() - start


def summarize(results: list[RequestResult], duration: float) -> dict[str, float]:
    """vLLM's metric names: throughputs per second, latencies in milliseconds."""
    done = [r for r in results if r.ok]
    out_tokens = sum(r.output_tokens for r in done)
    in_tokens = sum(r.prompt_tokens for r in done)
    metrics: dict[str, float] = {
        "completed": len(done), "failed": len(results) - len(done), "duration": duration,
        "total_input_tokens": in_tokens, "total_output_tokens": out_tokens,
        "request_throughput": len(done) / duration, "output_throughput": out_tokens / duration,
        "total_token_throughput": (in_tokens + out_tokens) / duration,
    }
    series = {
        "ttft": [r.ttft for r in done],
        "tpot": [(r.e2el - r.ttft) / (r.output_tokens - 1) for r in done if r.output_tokens > 1],
        "itl": [x for r in done for x in r.itl],
        "e2el": [r.e2el for r in done],
    }
    for name, values in series.items():
        ms = np.asarray(values or [0.0]) * 1000.0
        metrics[f"mean_{name}_ms"] = float(ms.mean())
        metrics[f"median_{name}_ms"] = float(np.median(ms))
        metrics[f"p99_{name}_ms"] = float(np.percentile(ms, 99))
    return metrics


COLUMNS = [("max_concurrency", "conc"), ("completed", "ok"), ("failed", "fail"),
           ("request_throughput", "req/s"), ("output_throughput", "out tok/s"),
           ("mean_ttft_ms", "TTFT mean"), ("median_ttft_ms", "TTFT med"), ("p99_ttft_ms", "TTFT p99"),
           ("mean_tpot_ms", "TPOT mean"), ("median_tpot_ms", "TPOT med"), ("p99_tpot_ms", "TPOT p99"),
           ("mean_itl_ms", "ITL mean"), ("median_itl_ms", "ITL med"), ("p99_itl_ms", "ITL p99"),
           ("mean_e2el_ms", "E2E mean"), ("median_e2el_ms", "E2E med"), ("p99_e2el_ms", "E2E p99")]


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """Latencies in ms, throughputs per second: the table docs/benchmarks.md carries."""
    head = "| " + " | ".join(label for _, label in COLUMNS) + " |"
    rule = "|" + "|".join("---:" for _ in COLUMNS) + "|"
    body = []
    for row in rows:
        cells = []
        for key, _ in COLUMNS:
            value = row[key]
            cells.append(str(value) if isinstance(value, int) or value is None else f"{value:.2f}")
        body.append("| " + " | ".join(cells) + " |")
    return "\n".join([head, rule, *body])


def plot(rows: list[dict[str, Any]], path: str) -> None:
    """Output-token throughput against TTFT / TPOT, one point per concurrency."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    xs = [r["output_throughput"] for r in rows]
    for key, label in [("median_ttft_ms", "TTFT median"), ("median_tpot_ms", "TPOT median"),
                       ("p99_itl_ms", "ITL p99")]:
        ax.plot(xs, [r[key] for r in rows], marker="o", label=label)
    for r, x in zip(rows, xs):
        ax.annotate(f"c={r['max_concurrency']}", (x, r["median_ttft_ms"]), textcoords="offset points",
                    xytext=(4, 4), fontsize=8)
    ax.set_xlabel("output throughput (tokens/s)")
    ax.set_ylabel("latency (ms)")
    ax.set_yscale("log")
    ax.set_title("kernelforge OpenAI server: latency vs throughput")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def local_server(server_args: str, startup_timeout: float) -> Iterator[str]:
    """Start `python -m runtime.serve` on a free port, wait for /health, stop it with SIGTERM."""
    port = _free_port()
    cmd = [sys.executable, "-m", "runtime.serve", "--port", str(port), *shlex.split(server_args)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=sys.stderr)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with code {proc.returncode} during startup")
            try:
                if httpx.get(base + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server not healthy after {startup_timeout}s")
            time.sleep(0.5)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.serve", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--base-url", default=None, help="server to load; default: start runtime.serve locally")
    p.add_argument("--server-args", default="--max-model-len 512",
                   help="flags for the locally started server")
    p.add_argument("--model", default=None, help="model name to send (default: omit, the server's own)")
    p.add_argument("--api-key", default=os.environ.get("OPENAI_API_KEY"))
    p.add_argument("--num-prompts", type=int, default=32)
    p.add_argument("--input-len", type=int, default=64, help="prompt length in words")
    p.add_argument("--output-len", type=int, default=32, help="max_tokens per request")
    p.add_argument("--ignore-eos", action=argparse.BooleanOptionalAction, default=True,
                   help="generate exactly --output-len tokens")
    p.add_argument("--request-rate", type=float, default=float("inf"), help="Poisson arrivals per second")
    p.add_argument("--max-concurrency", type=int, nargs="+", default=[None],
                   help="in-flight request cap(s); several values run in turn")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--warmup", type=int, default=2, help="requests sent (and not measured) first")
    p.add_argument("--startup-timeout", type=float, default=600.0)
    p.add_argument("--output-json", default=None, help="write all results here")
    p.add_argument("--plot", default=None, help="write a latency/throughput PNG here")
    return p.parse_args(argv)


def benchmark(base_url: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    prompts = make_prompts(args.num_prompts, args.input_len, args.seed)
    warm = make_prompts(args.warmup, args.input_len, args.seed + 1)
    if warm:
        asyncio.run(run_load(base_url, args.model, warm, args.output_len, float("inf"), 1, args.seed,
                             args.ignore_eos, args.api_key))
    rows = []
    for cap in args.max_concurrency:
        results, duration = asyncio.run(run_load(base_url, args.model, prompts, args.output_len,
                                                 args.request_rate, cap, args.seed, args.ignore_eos,
                                                 args.api_key))
        errors = sorted({r.error for r in results if not r.ok})
        row = {"max_concurrency": cap, "request_rate": args.request_rate, "num_prompts": args.num_prompts,
               "input_len_words": args.input_len, "output_len": args.output_len, **summarize(results, duration),
               "errors": errors}
        rows.append(row)
        print(f"max_concurrency={cap}: {row['completed']} ok, {row['failed']} failed, "
              f"{row['output_throughput']:.1f} out tok/s" + (f", errors: {errors}" if errors else ""),
              file=sys.stderr)
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.base_url:
        rows = benchmark(args.base_url, args)
    else:
        with local_server(args.server_args, args.startup_timeout) as base_url:
            rows = benchmark(base_url, args)
    print(markdown_table(rows))
    if args.output_json:
        with open(args.output_json, "w") as f:
            json.dump({"args": {k: v for k, v in vars(args).items() if k != "api_key"}, "results": rows},
                      f, indent=2, default=str)
    if args.plot:
        plot(rows, args.plot)


if __name__ == "__main__":
    main()
