"""`python -m runtime.serve`: the OpenAI-compatible HTTP server over one LLMEngine.

Flags follow `vllm serve` so that commands carry over:

    python -m runtime.serve --model PATH --port 8000 --max-model-len 2048 --api-key SECRET

Without --model the embedded default model is served. The engine (model load, KV cache
allocation) is built before the port opens, so once /health answers, requests are served.
SIGTERM / Ctrl-C stop accepting connections, let in-flight requests finish (up to
--shutdown-timeout seconds, after which they are cancelled and aborted), then stop the engine.
"""

from __future__ import annotations

import argparse
import logging
import re
from collections.abc import Sequence

import uvicorn

log = logging.getLogger("runtime.serve")

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


def memory_size(text: str) -> int | str:
    """`auto`, a byte count, or a size with a binary unit (`512MiB`, `2G`)."""
    if text.strip().lower() == "auto":
        return "auto"
    match = _SIZE.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"expected 'auto', bytes or a size like 512MiB, got {text!r}")
    size = int(float(match.group(1)) * _UNITS[match.group(2).lower()])
    if size <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text!r}")
    return size


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def port_number(text: str) -> int:
    value = positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"expected a port in 1..65535, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m runtime.serve", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default=None, help="HF model directory or .gguf file (default: embedded SmolLM2-135M-Instruct)")
    p.add_argument("--served-model-name", default=None, help="name clients use in `model` (default: the model's name)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=port_number, default=8000)
    p.add_argument("--api-key", default=None, help="require `Authorization: Bearer KEY` on /v1 routes")
    p.add_argument("--max-model-len", type=positive_int, default=2048)
    p.add_argument("--max-num-seqs", type=positive_int, default=64)
    p.add_argument("--max-num-batched-tokens", type=positive_int, default=2048)
    p.add_argument("--block-size", type=int, choices=[16, 32, 64, 128], default=16)
    p.add_argument("--dtype", choices=["auto", "float32", "float16", "bfloat16"], default="auto")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, npu (optionally with :index)")
    p.add_argument("--kv-cache-memory", type=memory_size, default="auto",
                   help="bytes for the paged KV cache ('auto', 123456789, 512MiB)")
    p.add_argument("--shutdown-timeout", type=float, default=30.0,
                   help="seconds in-flight requests get to finish after SIGTERM")
    p.add_argument("--uvicorn-log-level", default="info",
                   choices=["critical", "error", "warning", "info", "debug", "trace"])
    return p


def build_server(args: argparse.Namespace) -> uvicorn.Server:
    """Load the model into an engine and wrap it in the app; heavy imports happen here."""
    from runtime.engine import EngineArgs, LLMEngine
    from runtime.server.app import build_app
    from runtime.server.context import ServerContext

    engine = LLMEngine(EngineArgs(
        model=args.model, dtype=args.dtype, device=args.device, max_model_len=args.max_model_len,
        max_num_seqs=args.max_num_seqs, max_num_batched_tokens=args.max_num_batched_tokens,
        block_size=args.block_size, kv_cache_memory=args.kv_cache_memory))
    ctx = ServerContext.for_engine(engine, model_name=args.served_model_name or args.model,
                                   model_root=args.model, api_key=args.api_key)
    app = build_app(ctx, registry=engine.metrics.registry)
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level=args.uvicorn_log_level,
                            timeout_graceful_shutdown=args.shutdown_timeout)
    return uvicorn.Server(config)


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    server = build_server(args)
    log.info("engine ready; listening on http://%s:%d", args.host, args.port)
    server.run()


if __name__ == "__main__":
    main()
