"""The tunable kernels by name, and the example launches they are tuned on.

Every `kf.autotune` kernel in a module of `kernelforge.kernels` is tunable. Tuning at a
shape needs real arguments: by default they are one serving step through the public
ops (`autotune.serving`), which launches every LLM kernel the way serving does. A kernel
module outside that contract (or wanting other arguments) provides

    def make_args(**shape) -> list[tuple[Callable, tuple]]:
        '''(public op, positional args) calls that exercise this module's autotuned kernels.'''

with `shape` keys from `SHAPE_DEFAULTS`. The tools call each op under
`capture_launches()` and tune the launches of the kernel at hand, so a kernel is tuned
with exactly the grid and arguments its op uses in serving.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable, Iterable, Mapping

import torch

from autotune import serving
from kernelforge.autotuning import Autotuned, Launch, capture_launches

KERNELS_PACKAGE = "kernelforge.kernels"

# SmolLM2-135M (the default model) serving a decode batch, on the CPU in float32.
SHAPE_DEFAULTS: dict[str, Any] = {
    "num_tokens": 16, "num_seqs": 16, "hidden_size": 576, "num_heads": 9, "num_kv_heads": 3,
    "head_size": 64, "block_size": 16, "context_len": 256, "dtype": torch.float32, "device": "cpu",
}

# Token counts the serving runtime launches with: decode batches (one token per sequence)
# and prefill chunks (one sequence); with pow2 bucketing, one tuned key each.
DECODE_BATCHES = (1, 4, 16, 64)
PREFILL_CHUNKS = (128, 512, 2048)


@dataclass(frozen=True)
class TunableKernel:
    name: str
    autotuned: Autotuned
    module: ModuleType

    def launches(self, shape: Mapping[str, Any]) -> list[Launch]:
        """This kernel's launches (one per distinct key) when its module's ops run at `shape`."""
        make_args: Callable[..., Iterable[tuple[Callable, tuple]]] = getattr(
            self.module, "make_args", serving.serving_calls)
        by_key: dict[tuple, Launch] = {}
        for op, args in make_args(**with_defaults(shape)):
            with capture_launches() as launches:
                op(*args)
            for launch in launches:
                if launch.autotuned is self.autotuned:
                    by_key.setdefault(launch.key, launch)
        return list(by_key.values())


def tunable_kernels() -> dict[str, TunableKernel]:
    """Every Autotuned kernel defined in a module of `kernelforge.kernels`, by name."""
    package = importlib.import_module(KERNELS_PACKAGE)
    found: dict[str, TunableKernel] = {}
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{KERNELS_PACKAGE}.{info.name}")
        for value in vars(module).values():
            if isinstance(value, Autotuned) and _defined_in(value, module):
                found[value.name] = TunableKernel(value.name, value, module)
    return dict(sorted(found.items()))


def _defined_in(autotuned: Autotuned, module: ModuleType) -> bool:
    fn = getattr(autotuned.fn, "fn", None)
    return getattr(fn, "__module__", module.__name__) == module.__name__


def select(kernels: Mapping[str, TunableKernel], name: str) -> list[TunableKernel]:
    """Kernels matching `name`: a kernel's name (leading underscores optional) or its module's."""
    matches = [k for k in kernels.values()
               if name in (k.name, k.name.lstrip("_"), k.module.__name__.rsplit(".", 1)[-1])]
    if not matches:
        names = ", ".join(k.name.lstrip("_") for k in kernels.values()) or "none found"
        raise LookupError(f"no tunable kernel named {name!r}; tunable kernels: {names}")
    return matches


def parse_shape(items: Iterable[str]) -> dict[str, Any]:
    """`["num_tokens=64", "dtype=bfloat16"]` -> {"num_tokens": 64, "dtype": torch.bfloat16}.

    Only the names of `SHAPE_DEFAULTS` are accepted, so a misspelt name is an error rather
    than a silent tune of the default shape.
    """
    shape: dict[str, Any] = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep or not name:
            raise ValueError(f"--shape expects name=value, got {item!r}")
        if name not in SHAPE_DEFAULTS:
            raise ValueError(f"--shape: unknown name {name!r}; known names: {', '.join(SHAPE_DEFAULTS)}")
        shape[name] = _parse_value(name, text)
    return shape


def with_defaults(shape: Mapping[str, Any]) -> dict[str, Any]:
    """`shape` completed from `SHAPE_DEFAULTS`; a batch smaller than the default has one token per sequence."""
    full = {**SHAPE_DEFAULTS, **shape}
    if "num_seqs" not in shape:
        full["num_seqs"] = min(SHAPE_DEFAULTS["num_seqs"], full["num_tokens"])
    return full


def _parse_value(name: str, text: str) -> Any:
    if name == "dtype":
        dtype = getattr(torch, text.removeprefix("torch."), None)
        if not isinstance(dtype, torch.dtype):
            raise ValueError(f"--shape: unknown dtype {text!r}")
        return dtype
    if name == "device":
        return text
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"--shape: {name} must be an integer, got {text!r}") from None
    if value < 1:
        raise ValueError(f"--shape: {name} must be at least 1, got {value}")
    return value


def model_shape(config: Any) -> dict[str, Any]:
    """The shape fields of a `models.ModelConfig`."""
    return {"hidden_size": config.hidden_size, "num_heads": config.num_heads,
            "num_kv_heads": config.num_kv_heads, "head_size": config.head_size, "dtype": config.dtype}


def serving_shapes(base: Mapping[str, Any], max_tokens: int = max(PREFILL_CHUNKS)) -> list[dict[str, Any]]:
    """`base` at every decode batch and prefill chunk size up to `max_tokens` (a prefill
    chunk is a fresh prompt: its context is its own tokens)."""
    shapes = [{**base, "num_tokens": n, "num_seqs": n} for n in DECODE_BATCHES if n <= max_tokens]
    shapes += [{**base, "num_tokens": n, "num_seqs": 1, "context_len": n} for n in PREFILL_CHUNKS if n <= max_tokens]
    return shapes
