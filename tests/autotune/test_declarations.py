"""kernelforge.autotuning: Config, keys and bucketing, the launch-time choice of config."""

from __future__ import annotations

import importlib.util
import textwrap

import pytest
import torch
from hypothesis import given, strategies as st

import kernelforge as kf
import kernelforge.language as kl
from kernelforge import autotuning
from kernelforge.autotuning import Config


def test_config_is_a_hashable_mapping_that_round_trips_through_json():
    c = Config(BLOCK=64, num_warps=4, compile=True)
    assert dict(c) == {"BLOCK": 64, "compile": True, "num_warps": 4}
    assert c == Config(num_warps=4, compile=True, BLOCK=64) and hash(c) == hash(Config(num_warps=4, compile=True, BLOCK=64))
    assert Config.from_json(c.to_json()) == c
    assert repr(Config(BLOCK=8)) == "Config(BLOCK=8)"
    with pytest.raises(TypeError):
        Config(BLOCK=[1, 2])


def test_product_and_pow2_helpers():
    assert autotuning.product(A=[1, 2], B=["x"]) == [Config(A=1, B="x"), Config(A=2, B="x")]
    assert autotuning.pow2_between(16, 100) == [16, 32, 64, 128]
    assert autotuning.pow2_between(1, 1) == [1]


@given(st.integers(min_value=-5, max_value=1 << 20))
def test_pow2_bucket_is_the_smallest_power_of_two_not_below(n):
    b = autotuning.bucket_value(n, "pow2")
    assert b & (b - 1) == 0 and b >= max(n, 1)
    assert b == 1 or b // 2 < n


def test_key_buckets_token_counts_and_adds_dtypes(make_scale):
    _, at = make_scale()
    x = torch.zeros(4)
    assert at.key_of({"out": x, "x": x, "n": 100}) == (128, "float32", "")
    assert at.key_of({"out": x, "x": x, "n": 128}) == (128, "float32", "")
    assert at.key_of({"out": x, "x": x.half(), "n": 129}) == (256, "float32+float16", "")
    assert at.key_fields == ("n", "dtypes", "constexprs")


def test_constexprs_given_at_launch_are_part_of_the_key(fake_jit):
    def kernel(out, x, n, FUSED: kl.constexpr, BLOCK: kl.constexpr):
        out.copy_(x)

    at = autotuning.autotune(configs=[Config(BLOCK=4)], key=["n"])(fake_jit(kernel))
    assert at.constexpr_names == ("FUSED", "BLOCK")
    with autotuning.capture_launches() as launches:
        at[(1,)](torch.empty(4), torch.zeros(4), 4, FUSED=True)
        at[(1,)](torch.empty(4), torch.zeros(4), 4, FUSED=False)
    assert [launch.key for launch in launches] == [(4, "float32", "FUSED=True"), (4, "float32", "FUSED=False")]


def test_declaration_errors_name_the_problem(make_scale):
    with pytest.raises(ValueError, match="unknown arguments"):
        autotuning.autotune(configs=[Config(BLOCK=1)], key=["m"])(make_scale()[0])
    with pytest.raises(ValueError, match="not in key"):
        autotuning.autotune(configs=[Config(BLOCK=1)], key=["n"], bucket={"out": "pow2"})(make_scale()[0])
    with pytest.raises(ValueError, match="unknown bucket"):
        autotuning.autotune(configs=[Config(BLOCK=1)], key=["n"], bucket={"n": "log"})(make_scale()[0])


def test_launch_uses_default_heuristic_without_provider(make_scale):
    jit, at = make_scale(configs=(16, 32), default=lambda a: Config(BLOCK=32 if a["n"] > 50 else 16))
    x, out = torch.arange(100.0), torch.empty(100)
    at[(1,)](out, x, 100)
    at.run(out[:10], x[:10], 10, grid=(1,))
    assert [c["BLOCK"] for c in jit.calls] == [32, 16]
    assert torch.equal(out[10:], 2 * x[10:])


def test_first_config_is_the_default_when_none_is_declared(make_scale):
    jit, at = make_scale(configs=(32, 16))
    at[(1,)](torch.empty(8), torch.zeros(8), 8)
    assert jit.calls[-1]["BLOCK"] == 32


def test_default_is_decided_once_per_key_arguments_dtypes_and_keywords(make_scale):
    asked = []

    def default(args):
        asked.append(args["n"])
        return Config(BLOCK=32 if args["n"] > 50 else 16)

    jit, at = make_scale(configs=(16, 32), default=default)
    x, out = torch.arange(100.0), torch.empty(100)
    for _ in range(3):
        at[(1,)](out, x, 100)
    at[(1,)](out[:10], x[:10], 10)
    at[(1,)](out.double(), x.double(), 100)
    assert asked == [100, 10, 100]
    assert [c["BLOCK"] for c in jit.calls] == [32, 32, 32, 16, 32]


def test_default_memo_does_not_hide_the_provider_or_a_forced_config(make_scale):
    jit, at = make_scale(configs=(16, 32))
    x, out = torch.arange(8.0), torch.empty(8)
    at[(1,)](out, x, 8)

    class Provider:
        def get_config(self, autotuned, key, named_args):
            return Config(BLOCK=32)

    autotuning.set_config_provider(Provider())
    at[(1,)](out, x, 8)
    autotuning.set_config_provider(None)
    with autotuning.forced_config(at, Config(BLOCK=32)):
        at[(1,)](out, x, 8)
    with autotuning.capture_launches() as launches:
        at[(1,)](out, x, 8)
    assert [c["BLOCK"] for c in jit.calls] == [16, 32, 32, 16] and len(launches) == 1
    with pytest.raises(TypeError, match="tuned by autotune"):
        at[(1,)](out, x, 8, BLOCK=16)


def test_a_stable_providers_answer_is_memoised_until_the_provider_changes(make_scale):
    jit, at = make_scale(configs=(16, 32))
    x, out = torch.arange(8.0), torch.empty(8)
    asked = []

    class Provider:
        def __init__(self, block, stable):
            self.block, self.stable = block, stable

        def get_config(self, autotuned, key, named_args):
            asked.append(self.block)
            return Config(BLOCK=self.block)

    try:
        autotuning.set_config_provider(Provider(32, stable=True))
        for _ in range(3):
            at[(1,)](out, x, 8)
        autotuning.set_config_provider(Provider(16, stable=True))
        at[(1,)](out, x, 8)
        autotuning.set_config_provider(Provider(32, stable=False))
        at[(1,)](out, x, 8)
        at[(1,)](out, x, 8)
    finally:
        autotuning.set_config_provider(None)
    assert asked == [32, 16, 32, 32], "a stable provider is asked once per key, an unstable one every launch"
    assert [c["BLOCK"] for c in jit.calls] == [32, 32, 32, 16, 32, 32]


def test_memo_keys_keyword_tensors_by_shape_not_identity(make_scale):
    jit, at = make_scale(configs=(16, 32))
    x = torch.arange(8.0)

    class Provider:
        stable = True

        def get_config(self, autotuned, key, named_args):
            return Config(BLOCK=32 if named_args["n"] > 4 else 16)

    autotuning.set_config_provider(Provider())
    try:
        for _ in range(3):
            at[(1,)](torch.empty(8), x=torch.arange(8.0), n=8)
        at[(1,)](torch.empty(8), x=x, n=3)
    finally:
        autotuning.set_config_provider(None)
    assert [c["BLOCK"] for c in jit.calls] == [32, 32, 32, 16]
    assert len(at._configs_seen) == 2, "keyword tensors are keyed by shape and dtype, not identity"


def test_provider_answer_beats_default_and_none_falls_back(make_scale):
    jit, at = make_scale(configs=(16, 32))
    seen = []

    class Provider:
        def __init__(self, answer):
            self.answer = answer

        def get_config(self, autotuned, key, named_args):
            seen.append((autotuned, key, named_args["n"]))
            return self.answer

    autotuning.set_config_provider(Provider(Config(BLOCK=32)))
    at[(1,)](torch.empty(8), torch.zeros(8), 8)
    autotuning.set_config_provider(Provider(None))
    at[(1,)](torch.empty(8), torch.zeros(8), 8)
    assert [c["BLOCK"] for c in jit.calls] == [32, 16]
    assert seen[0] == (at, (8, "float32", ""), 8)
    assert autotuning.get_config_provider().answer is None


def test_forced_config_wins_and_tuned_values_cannot_be_passed(make_scale):
    jit, at = make_scale(configs=(16, 32))
    with autotuning.forced_config(at, Config(BLOCK=32)):
        at[(1,)](torch.empty(8), torch.zeros(8), 8)
    at[(1,)](torch.empty(8), torch.zeros(8), 8)
    assert [c["BLOCK"] for c in jit.calls] == [32, 16]
    with pytest.raises(TypeError, match="tuned by autotune"):
        at[(1,)](torch.empty(8), torch.zeros(8), 8, BLOCK=16)


def test_config_generator_sees_the_arguments(make_scale):
    jit = make_scale()[0]
    at = autotuning.autotune(configs=lambda a: [Config(BLOCK=b) for b in autotuning.pow2_between(8, a["n"])],
                             key=["n"])(jit)
    x = torch.zeros(20)
    assert at.configs({"out": x, "x": x, "n": 20}) == [Config(BLOCK=8), Config(BLOCK=16), Config(BLOCK=32)]


def test_fallback_source_hash_follows_the_source():
    def kernel_a(x, BLOCK):
        return x + 1

    def kernel_b(x, BLOCK):
        return x + 2

    class Jit:
        def __init__(self, fn):
            self.fn = fn

        def run(self, *args, grid, **kwargs):
            return None

    a = autotuning.autotune(configs=[Config(BLOCK=1)], key=[])(Jit(kernel_a))
    b = autotuning.autotune(configs=[Config(BLOCK=1)], key=[])(Jit(kernel_b))
    assert a.source_hash != b.source_hash
    assert a.source_hash == autotuning.autotune(configs=[Config(BLOCK=2)], key=[])(Jit(kernel_a)).source_hash


JIT_MODULE = """
class Jit:
    def __init__(self, fn):
        self.fn = fn

    def run(self, *args, grid, **kwargs):
        return None


@Jit
def helper(x):
    return x * {factor}


@Jit
def kernel(x, BLOCK):
    return helper(x)
"""


def _load(tmp_path, name, factor):
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(JIT_MODULE.format(factor=factor)))
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return autotuning.autotune(configs=[Config(BLOCK=1)], key=[])(module.kernel)


def test_fallback_source_hash_covers_called_jit_functions(tmp_path):
    assert _load(tmp_path, "k1", 2).source_hash == _load(tmp_path, "k2", 2).source_hash
    assert _load(tmp_path, "k3", 2).source_hash != _load(tmp_path, "k4", 3).source_hash


@kf.autotune(configs=[Config(BLOCK=4), Config(BLOCK=8)], key=["n"])
@kf.jit
def _add_one_if(x_ptr, out_ptr, n, FLAG: kl.constexpr, BLOCK: kl.constexpr):
    offs = kl.program_id(0) * BLOCK + kl.arange(0, BLOCK)
    value = kl.load(x_ptr + offs, mask=offs < n)
    if FLAG:
        value = value + 1
    kl.store(out_ptr + offs, value, mask=offs < n)


def test_memo_tells_positional_constexprs_apart():
    blocks = []

    class Provider:
        stable = True

        def get_config(self, autotuned, key, named_args):
            return Config(BLOCK=8 if "FLAG=True" in key[-1] else 4)

    real = _add_one_if.fn.run
    x, out = torch.arange(8.0), torch.zeros(8)
    autotuning.set_config_provider(Provider())
    try:
        _add_one_if.fn.run = lambda *a, **k: blocks.append(k["BLOCK"]) or real(*a, **k)
        _add_one_if[(2,)](x, out, 8, True)
        _add_one_if[(2,)](x, out, 8, False)
    finally:
        del _add_one_if.fn.run
        autotuning.set_config_provider(None)
    assert blocks == [8, 4]
    assert torch.equal(out, x)
