"""The ops' launch memo (`launch.LaunchMemo`): a repeated call with the same metadata skips
the metadata checks and launches the compiled kernel directly, and everything the memo
does not cover still runs or still misses it: new data, changed metadata, content
checks, forced configs and captured launches, the launch environment, a reloaded backend."""

from __future__ import annotations

import importlib
import os
from unittest import mock

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import kernelforge as kf
from kernelforge.autotuning import capture_launches, forced_config
from kernelforge.jit import BoundLaunch
from kernelforge.kernels import reference, reshape_and_cache, rms_norm, rotary_embedding, validation
from kernelforge.kernels.launch import LaunchMemo, memo_key
from kernelforge.memo import BoundedMemo

rms_norm_module = importlib.import_module("kernelforge.kernels.rms_norm")


def _norm_args(rows: int = 3, hidden: int = 96, dtype: torch.dtype = torch.float32, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, hidden, generator=g).to(dtype)
    return torch.empty_like(x), x, torch.randn(hidden, generator=g).to(dtype)


def test_a_repeated_call_skips_the_metadata_checks_and_reads_the_new_data():
    rms_norm(*_norm_args(seed=0), 1e-6)
    with mock.patch.object(validation, "check_rms_norm", side_effect=AssertionError("checked again")):
        for seed in (1, 2):
            out, x, weight = _norm_args(seed=seed)
            rms_norm(out, x, weight, 1e-6)
            expected = torch.empty_like(x)
            reference.rms_norm(expected, x, weight, 1e-6)
            torch.testing.assert_close(out, expected)


BAD_NORM_CALLS = [
    (lambda out, x, w: (out, x, w[:-1], 1e-6), ValueError, "weight has 95 elements"),
    (lambda out, x, w: (out, x.int(), w, 1e-6), TypeError, "x has dtype torch.int32"),
    (lambda out, x, w: (out[:, :-1], x, w, 1e-6), ValueError, "out and x must have the same shape"),
    (lambda out, x, w: (torch.empty(96, 3).t(), x, w, 1e-6), ValueError, "out must be contiguous"),
    (lambda out, x, w: (out, x, w, -1.0), ValueError, "eps"),
    (lambda out, x, w: (out, x, w, True), ValueError, "eps"),
    (lambda out, x, w: (out, x, w, [1e-6]), ValueError, "eps"),
]


@pytest.mark.parametrize(("change", "error", "message"), BAD_NORM_CALLS)
def test_changed_metadata_after_a_memoised_call_is_checked_again(change, error, message):
    out, x, weight = _norm_args()
    rms_norm(out, x, weight, 1e-6)
    rms_norm(out, x, weight, 1e-6)
    with pytest.raises(error, match=message):
        rms_norm(*change(out, x, weight))


def test_a_changed_dtype_after_a_memoised_call_gets_its_own_launch():
    out, x, weight = _norm_args()
    for w in (weight, weight, weight.half(), weight.half()):
        rms_norm(out, x, w, 1e-6)
        expected = torch.empty_like(x)
        reference.rms_norm(expected, x, w, 1e-6)
        torch.testing.assert_close(out, expected)


@settings(max_examples=25, deadline=None)
@given(rows=st.integers(1, 6), hidden=st.sampled_from([1, 63, 64, 96, 200]),
       dtype=st.sampled_from([torch.float32, torch.float16, torch.bfloat16]), repeats=st.integers(1, 3))
def test_memoised_launches_match_the_reference(rows, hidden, dtype, repeats):
    """Calls of one metadata (the memo hits) and of another (it misses) in any order."""
    for seed in range(repeats):
        out, x, weight = _norm_args(rows, hidden, dtype, seed)
        rms_norm(out, x, weight, 1e-5)
        expected = torch.empty_like(x)
        reference.rms_norm(expected, x, weight, 1e-5)
        torch.testing.assert_close(out.float(), expected.float(), rtol=2e-2, atol=2e-2)


def test_content_checks_run_on_every_call():
    q = torch.randn(3, 2 * 64)
    cache = torch.randn(10, 64)
    for _ in range(2):
        rotary_embedding(torch.tensor([0, 1, 9]), q, None, 64, cache, True)
    with pytest.raises(ValueError, match=r"positions must lie in \[0, 10\)"):
        rotary_embedding(torch.tensor([0, 1, 10]), q, None, 64, cache, True)
    key = torch.randn(2, 2, 64)
    key_cache, value_cache = torch.zeros(2, 16, 2, 64), torch.zeros(2, 16, 2, 64)
    for _ in range(2):
        reshape_and_cache(key, key, key_cache, value_cache, torch.tensor([0, 31]))
    with pytest.raises(ValueError, match="slot_mapping holds slot 32"):
        reshape_and_cache(key, key, key_cache, value_cache, torch.tensor([0, 32]))
    assert torch.equal(key_cache.view(32, 2, 64)[31], key[1]), "the rejected call wrote nothing"


def _memoised_norm() -> tuple[tuple, torch.Tensor]:
    out, x, weight = _norm_args(rows=5, hidden=40)
    rms_norm(out, x, weight, 1e-6)
    return memo_key((False, 1e-6), out, x, weight), x


def test_forced_configs_and_captures_bypass_the_memo():
    memo, x = _memoised_norm()
    kernel = rms_norm_module._rms_norm_kernel
    assert rms_norm_module._memo.find(memo, x) is not None
    with forced_config(kernel, kf.Config(BLOCK=64)):
        assert kernel.memo_state(x.device) is None
        assert rms_norm_module._memo.find(memo, x) is None
    with capture_launches() as launches:
        rms_norm(torch.empty_like(x), x, torch.ones(40), 1e-6)
    assert [launch.autotuned for launch in launches] == [kernel], "a captured call launches the checked way"


@pytest.mark.parametrize(("flag", "default"), [("KF_CPU_NATIVE", "1"), ("KF_SANITIZE", "0")])
def test_a_changed_launch_flag_misses_the_memo(flag, default):
    """The flag is flipped from whatever the run set (make test runs with KF_CPU_NATIVE=0 too)."""
    memo, x = _memoised_norm()
    flipped = "0" if os.environ.get(flag, default) == "1" else "1"
    with mock.patch.dict(os.environ, {flag: flipped}):
        assert rms_norm_module._memo.find(memo, x) is None
        out = torch.empty_like(x)
        rms_norm(out, x, torch.ones(40), 1e-6)
        expected = torch.empty_like(x)
        reference.rms_norm(expected, x, torch.ones(40), 1e-6)
        torch.testing.assert_close(out, expected)


def test_a_bound_launch_whose_backend_was_reloaded_launches_nothing():
    memo, x = _memoised_norm()
    found = rms_norm_module._memo.find(memo, x)
    assert isinstance(found, BoundLaunch)
    stale = BoundLaunch(found._jit, found._plan._replace(backend=object()), found._grid)
    out = torch.zeros_like(x)
    assert stale([out, x, x, torch.ones(40), 5, 40, 40, 40, 40, 1e-6]) is False
    assert not out.any()


def test_memo_key_refuses_what_it_cannot_key():
    x = torch.ones(2)
    assert memo_key((1.0,), x, None) is not None
    assert memo_key(([1.0],), x) is None
    assert memo_key((1.0,), x.numpy()) is None
    assert memo_key((1.0,), x) != memo_key((1,), x), "a scalar's type is part of the key"


def test_sanitized_calls_are_never_memoised():
    _, x = _memoised_norm()
    with mock.patch.dict(os.environ, {"KF_SANITIZE": "1"}):
        assert rms_norm_module._rms_norm_kernel.memo_state(x.device) is None
        with mock.patch.object(validation, "check_rms_norm", wraps=validation.check_rms_norm) as check:
            for _ in range(2):
                rms_norm(torch.empty_like(x), x, torch.ones(40), 1e-6)
        assert check.call_count == 2, "every sanitized call runs the full checks"


def test_a_memo_without_a_key_always_launches_the_checked_way():
    memo = LaunchMemo(rms_norm_module._rms_norm_kernel)
    out, x, weight = _norm_args(rows=2, hidden=8)
    memo.launch(None, x.device, None, (2,), (out, x, x, weight, 2, 8, 8, 8, 8, 1e-6),
                {"FUSED_ADD": False, "PERSISTENT": False})
    assert memo._launches == {}
    expected = torch.empty_like(x)
    reference.rms_norm(expected, x, weight, 1e-6)
    torch.testing.assert_close(out, expected)


def test_bounded_memo_forgets_its_oldest_entry():
    memo = BoundedMemo(limit=3)
    for key in "abcd":
        memo[key] = key.upper()
    assert list(memo) == ["b", "c", "d"]
    memo["c"] = "again"
    assert list(memo) == ["b", "c", "d"], "replacing an entry evicts nothing"
