"""autotune.registry and the CLI's argument handling (shapes, --model, errors)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from autotune import AutotuneCache, registry
from autotune.__main__ import format_key, main
from kernelforge.autotuning import next_power_of_2


def test_parse_shape_types_values():
    assert registry.parse_shape(["num_tokens=64", "dtype=bfloat16", "device=cpu"]) == {
        "num_tokens": 64, "dtype": torch.bfloat16, "device": "cpu"}
    with pytest.raises(ValueError, match="name=value"):
        registry.parse_shape(["num_tokens"])
    with pytest.raises(ValueError, match="dtype"):
        registry.parse_shape(["dtype=float5"])


@pytest.mark.parametrize("item, message", [
    ("num_tokenz=64", "unknown name 'num_tokenz'.*num_tokens"),
    ("num_tokens=abc", "num_tokens must be an integer"),
    ("hidden_size=0", "hidden_size must be at least 1"),
])
def test_parse_shape_rejects_what_it_cannot_tune(item, message):
    with pytest.raises(ValueError, match=message):
        registry.parse_shape([item])


def test_cli_reports_a_bad_shape_without_a_traceback(capsys):
    assert main(["tune", "--kernel", "rms_norm", "--shape", "hidden_sise=128"]) == 2
    assert "unknown name 'hidden_sise'" in capsys.readouterr().err


def test_a_small_batch_defaults_to_one_token_per_sequence():
    assert registry.with_defaults({"num_tokens": 4})["num_seqs"] == 4
    assert registry.with_defaults({"num_tokens": 64})["num_seqs"] == registry.SHAPE_DEFAULTS["num_seqs"]
    assert registry.with_defaults({"num_tokens": 64, "num_seqs": 1})["num_seqs"] == 1


def test_serving_shapes_cover_decode_and_prefill():
    shapes = registry.serving_shapes({"hidden_size": 576}, max_tokens=512)
    decode = [(s["num_tokens"], s["num_seqs"]) for s in shapes if s["num_seqs"] > 1 or s["num_tokens"] == 1]
    assert decode == [(n, n) for n in registry.DECODE_BATCHES]
    prefill = [s for s in shapes if s["num_seqs"] == 1 and s["num_tokens"] > 1]
    assert [s["num_tokens"] for s in prefill] == [128, 512]
    assert all(s["context_len"] == s["num_tokens"] and s["hidden_size"] == 576 for s in prefill)


def test_format_key_names_fields_and_drops_empty_parts():
    assert format_key(("n", "dtypes", "constexprs"), (128, "float32", "")) == "n=128 float32"
    assert format_key(("n", "dtypes", "constexprs"), (1, "bfloat16", "FUSED=True")) == "n=1 bfloat16 FUSED=True"


def test_tune_needs_a_kernel_or_a_model(capsys):
    with pytest.raises(SystemExit):
        main(["tune"])
    assert "--kernel" in capsys.readouterr().err


def test_tune_model_uses_the_models_serving_shapes(dsl_backend, kernels_package, monkeypatch):
    import models

    kernels_package()
    config = SimpleNamespace(hidden_size=96, num_heads=3, num_kv_heads=1, head_size=32, dtype=torch.float32)
    loaded = []

    def load_model(path=None, dtype="auto", device="auto"):
        loaded.append((path, dtype, device))
        return SimpleNamespace(config=config), None

    monkeypatch.setattr(models, "load_model", load_model)
    assert main(["tune", "--model", "--max-tokens", "16", "--effort", "none", "--device", "cpu"]) == 0
    assert loaded == [(None, "auto", "cpu")]
    keys = sorted(e.key[0] for e in AutotuneCache().entries())
    assert keys == sorted(next_power_of_2(n * 96) for n in (1, 4, 16))


def test_modules_without_make_args_are_tuned_on_serving_calls(kernels_package, monkeypatch):
    kernel = kernels_package()
    make_args = kernel.module.make_args
    monkeypatch.delattr(kernel.module, "make_args")
    shapes = []

    def serving_calls(**shape):
        shapes.append(shape)
        return make_args(**shape)

    monkeypatch.setattr(registry.serving, "serving_calls", serving_calls)
    (launch,) = kernel.launches({"num_tokens": 2, "hidden_size": 8})
    assert launch.key[0] == 16 and shapes[0]["num_heads"] == registry.SHAPE_DEFAULTS["num_heads"]


@pytest.mark.parametrize("tokens, seqs", [(1, 1), (4, 4), (6, 1), (5, 2)])
def test_serving_calls_launch_every_llm_kernel(cpu_backend, tokens, seqs):
    found = registry.tunable_kernels()
    shape = {"num_tokens": tokens, "num_seqs": seqs, "context_len": 40}
    launched = {name for name, kernel in found.items() if kernel.launches(shape)}
    assert {"_rms_norm_kernel", "_rotary_kernel", "_reshape_and_cache_kernel", "_paged_attention_kernel"} <= launched
