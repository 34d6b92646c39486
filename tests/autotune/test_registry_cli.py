"""autotune.registry and the CLI's argument handling (shapes, --model, errors)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from autotune import AutotuneCache, registry
from autotune.__main__ import format_key, main
from kernelforge.autotuning import next_power_of_2


def test_parse_shape_types_values():
    assert registry.parse_shape(["num_tokens=64", "eps=1e-6", "dtype=bfloat16", "name=x"]) == {
        "num_tokens": 64, "eps": 1e-6, "dtype": torch.bfloat16, "name": "x"}
    with pytest.raises(ValueError, match="name=value"):
        registry.parse_shape(["num_tokens"])
    with pytest.raises(ValueError, match="dtype"):
        registry.parse_shape(["dtype=float5"])


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


def test_a_module_without_make_args_is_reported_not_fatal(kernels_package, monkeypatch, capsys):
    kernel = kernels_package()
    monkeypatch.delattr(kernel.module, "make_args")
    assert main(["tune", "--kernel", "double_kernel"]) == 1
    assert "make_args" in capsys.readouterr().out
