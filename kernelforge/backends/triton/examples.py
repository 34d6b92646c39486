"""The kernels the offline compile checks lower, and the table they print.

Kernels come from two places:

- the DSL semantics cases, `CASES` in `tests/kernelforge/semantic_cases.py` (each with
  its example arguments and constexprs), when the repository's tests are present;
- the LLM kernels, found by calling each public op of `kernelforge.kernels` on small
  representative CPU tensors (bf16 and fp16) while `JITFunction.run` is replaced by a
  recorder: every launch the op would make is specialised instead of run. New kernels
  and new launch variants of the ops are picked up without a list to maintain. A launch
  made with the constexpr `PERSISTENT=False` (the kernels' per-item grid for CPU tensors)
  is also lowered with `PERSISTENT=True`, the persistent-grid variant an NPU runs.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator
from unittest import mock

import torch

from kernelforge import ir
from kernelforge.backends import backend

SEMANTIC_CASES = Path(__file__).resolve().parents[3] / "tests" / "kernelforge" / "semantic_cases.py"


@dataclass
class Lowering:
    """How far one kernel got: `stage` is the last stage reached, `error` why it stopped."""

    stage: str
    note: str = ""  # e.g. the UB estimate
    error: str = ""
    skipped: bool = False  # stopped only because an external tool (e.g. CANN) is missing
    warnings: tuple[str, ...] = ()  # performance rules the kernel breaks (printed with -v)

    @property
    def ok(self) -> bool:
        return not self.error or self.skipped


@dataclass
class Example:
    """One kernel specialisation to lower: a name for the table and how to build its IR."""

    name: str
    build: Callable[[], ir.Kernel]


def semantic_examples(path: Path = SEMANTIC_CASES) -> list[Example]:
    """The DSL semantics test kernels (none when the tests are not shipped)."""
    if not path.exists():
        return []
    spec = importlib.util.spec_from_file_location("kf_semantic_cases", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return [Example(f"semantics/{case.name}", _specializer(case.fn, case.args, case.constexprs))
            for case in module.CASES]


def _specializer(fn: Any, args: Any, constexprs: dict) -> Callable[[], ir.Kernel]:
    return lambda: fn.specialize(args, constexprs)


@contextlib.contextmanager
def recorded_launches() -> Iterator[list[Example]]:
    """Launches of `kf.jit` kernels inside the block are recorded as Examples, not run."""
    from kernelforge.jit import LAUNCH_OPTIONS, JITFunction

    examples: list[Example] = []
    seen: set[str] = set()

    def record(self: JITFunction, *args: Any, grid: Any, **kwargs: Any) -> None:
        named = dict(zip(self.arg_names, args))
        named.update({k: v for k, v in kwargs.items() if k not in LAUNCH_OPTIONS})
        runtime = {k: v for k, v in named.items() if k in self.runtime_names}
        constexprs = {k: v for k, v in named.items() if k not in self.runtime_names}
        variants = [constexprs]
        if constexprs.get("PERSISTENT") is False:
            # The ops are called on CPU tensors; an NPU runs the persistent-grid variant.
            variants.append({**constexprs, "PERSISTENT": True})
        types = {k: str(v.dtype) if isinstance(v, torch.Tensor) else type(v).__name__ for k, v in runtime.items()}
        dtypes = sorted({str(v.dtype).removeprefix("torch.") for v in runtime.values()
                         if isinstance(v, torch.Tensor) and v.is_floating_point()})
        for consts in variants:
            key = f"{self.__name__}{sorted(types.items())}{sorted(consts.items())}"
            if key not in seen:
                seen.add(key)
                text = ",".join(f"{k}={v}" for k, v in consts.items())
                examples.append(Example(f"kernels/{self.__name__}[{'/'.join(dtypes)}; {text}]",
                                        _specializer(self, runtime, consts)))

    original = JITFunction.run
    JITFunction.run = record
    try:
        yield examples
    finally:
        JITFunction.run = original


def kernel_examples() -> list[Example]:
    """Every launch the LLM ops make at representative shapes (see the module docstring)."""
    ops = {name: importlib.import_module(f"kernelforge.kernels.{name}")
           for name in ("rms_norm", "rotary_embedding", "reshape_and_cache", "paged_attention")}
    # The ops size their blocks for the backend the CPU tensors select; with the native
    # CPU tier off that is the torch tier, whose defaults follow the NPU's (the native
    # tier's one-head rotary blocks, say, are not what an NPU launches).
    with recorded_launches() as examples, mock.patch.dict(os.environ, {"KF_CPU_NATIVE": "0"}):
        for dtype in (torch.bfloat16, torch.float16):
            _call_ops(ops, dtype)
    return examples


def _call_ops(ops: dict, dtype: torch.dtype) -> None:
    tokens, heads, kv_heads, head_size, hidden = 5, 4, 2, 128, 1024
    num_blocks, block_size = 8, 16
    x = torch.randn(tokens, hidden, dtype=dtype)
    weight = torch.ones(hidden, dtype=dtype)
    ops["rms_norm"].rms_norm(torch.empty_like(x), x, weight, 1e-6)
    ops["rms_norm"].fused_add_rms_norm(x, torch.randn_like(x), weight, 1e-6)

    positions = torch.arange(tokens, dtype=torch.int64)
    query = torch.randn(tokens, heads * head_size, dtype=dtype)
    key = torch.randn(tokens, kv_heads * head_size, dtype=dtype)
    cos_sin = torch.randn(64, head_size, dtype=dtype)
    for is_neox in (True, False):
        ops["rotary_embedding"].rotary_embedding(positions, query, key, head_size, cos_sin, is_neox)

    k = torch.randn(tokens, kv_heads, head_size, dtype=dtype)
    key_cache = torch.zeros(num_blocks, block_size, kv_heads, head_size, dtype=dtype)
    value_cache = torch.zeros_like(key_cache)
    slots = torch.tensor([0, 1, 17, -1, 40], dtype=torch.int64)
    ops["reshape_and_cache"].reshape_and_cache(k, k.clone(), key_cache, value_cache, slots)

    q = torch.randn(tokens, heads, head_size, dtype=dtype)
    block_table = torch.arange(8, dtype=torch.int32).view(2, 4)
    cu_seqlens_q = torch.tensor([0, 1, tokens], dtype=torch.int32)
    seqused_k = torch.tensor([20, 10], dtype=torch.int32)
    for window in (None, 8):
        ops["paged_attention"].paged_attention(
            torch.empty_like(q), q, key_cache, value_cache, block_table, cu_seqlens_q, seqused_k,
            tokens - 1, 20, head_size ** -0.5, causal=True, sliding_window=window)

    # A pure decode batch with fewer (sequence, KV head) items than cores and long contexts
    # takes the split-KV path (per-segment partials, then the merge kernel). Recorded as an
    # NPU launches it: on the interpret backend (the NPU/GPU tile rule, not the CPU one), with
    # 16 threads standing in for the cores `num_cores` reports (a process-wide setting,
    # restored below; the checks record launches on one thread).
    long_cache = torch.zeros(2 * 38, block_size, kv_heads, head_size, dtype=dtype)
    decode_q = torch.randn(2, heads, head_size, dtype=dtype)
    threads = torch.get_num_threads()
    torch.set_num_threads(16)
    try:
        with backend("interpret"):
            ops["paged_attention"].paged_attention(
                torch.empty_like(decode_q), decode_q, long_cache, long_cache.clone(),
                torch.arange(2 * 38, dtype=torch.int32).view(2, 38), torch.tensor([0, 1, 2], dtype=torch.int32),
                torch.tensor([600, 520], dtype=torch.int32), 1, 600, head_size ** -0.5, causal=True)
    finally:
        torch.set_num_threads(threads)


def compiler_error(exc: BaseException) -> str:
    """The first informative line of a compiler failure (subprocess stderr included)."""
    stderr = getattr(exc, "stderr", None)
    text = stderr.decode(errors="replace") if isinstance(stderr, bytes) else (stderr or "")
    return first_line(text) or first_line(f"{type(exc).__name__}: {exc}")


def first_line(text: str) -> str:
    for line in text.splitlines():
        if "Assertion" in line:  # an LLVM assert: the condition says more than the path before it
            return line[line.index("Assertion"):].strip()[:300]
        if line.strip() and "error" in line.lower():
            return line.strip()[:300]
    return next((line.strip()[:300] for line in text.splitlines() if line.strip()), "")


def all_examples(patterns: list[str]) -> list[Example]:
    """Semantics cases and LLM kernel launches whose names contain any of `patterns` (all if none)."""
    examples = semantic_examples() + _collect(kernel_examples)
    return [e for e in examples if not patterns or any(p in e.name for p in patterns)]


def report(examples: list[Example], lower: Callable[[ir.Kernel, str], Lowering], verbose: bool) -> tuple[int, int]:
    """Lowers each example, printing one row per kernel; returns (failures, skipped)."""
    failures = skipped = 0
    width = max(len(e.name) for e in examples)
    with tempfile.TemporaryDirectory() as tmp, _cache_dir(tmp):
        for example in examples:
            try:
                kernel = example.build()
            except Exception as exc:  # noqa: BLE001 - a frontend failure is this kernel's row
                failures += 1
                print(f"{example.name:<{width}}  FAILED    frontend: {str(exc).splitlines()[0][:200]}")
                continue
            result = lower(kernel, hashlib.sha256(example.name.encode()).hexdigest()[:16])
            failures += not result.ok
            skipped += result.skipped
            status = "lowered" if result.ok else "FAILED"
            detail = f"{result.note}  reached {result.stage}".strip()
            if result.error and not result.skipped:
                head, _, rest = result.error.partition("\n")
                detail += f": {head if verbose else head[:160]}"
                if verbose and rest:
                    detail += "\n" + "\n".join(f"    {line}" for line in rest.splitlines())
            if result.warnings:
                detail += f"  ({len(result.warnings)} NPU performance warnings)"
            print(f"{example.name:<{width}}  {status:<8}  {detail}", flush=True)
            if verbose:
                for warning in result.warnings:
                    print(f"    warning: {warning}")
    return failures, skipped


def _collect(source: Callable[[], list[Example]]) -> list[Example]:
    try:
        return source()
    except Exception as exc:  # noqa: BLE001 - report and check what can be checked
        print(f"could not enumerate kernels via {source.__name__}: {exc}", file=sys.stderr)
        return [Example(f"<{source.__name__}>", _raiser(exc))]


def _raiser(exc: Exception) -> Callable[[], ir.Kernel]:
    def build() -> ir.Kernel:
        raise exc
    return build


@contextlib.contextmanager
def _cache_dir(path: str) -> Iterator[None]:
    """Generated sources and Triton's own cache go to a scratch directory."""
    saved = {k: os.environ.get(k) for k in ("KF_CACHE_DIR", "TRITON_CACHE_DIR")}
    os.environ["KF_CACHE_DIR"] = path
    os.environ["TRITON_CACHE_DIR"] = os.path.join(path, "triton")
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


