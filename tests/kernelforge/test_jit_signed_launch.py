"""An autotuned launch memoises the kernel's call signature with its config: a repeated
launch reads its arguments once, and any argument the signature depends on still changes
the outcome (a strided tensor is refused, a wide int is typed i64)."""

from __future__ import annotations

import pytest
import torch

import kernelforge as kf
import kernelforge.language as kl
from kernelforge.jit import JITFunction


@kf.autotune(configs=[kf.Config(BLOCK=16), kf.Config(BLOCK=32)], key=["n"])
@kf.jit
def _shifted_copy(out_ptr, x_ptr, n, shift, BLOCK: kl.constexpr):
    cols = kl.program_id(0) * BLOCK + kl.arange(0, BLOCK)
    mask = cols < n
    kl.store(out_ptr + cols, kl.load(x_ptr + cols, mask=mask) + shift, mask=mask)


def _launch(out: torch.Tensor, x: torch.Tensor, shift: int) -> None:
    _shifted_copy[(2,)](out, x, x.numel(), shift)


def test_repeated_launch_skips_the_kernels_signature(monkeypatch):
    x = torch.arange(20, dtype=torch.int64)
    out = torch.zeros_like(x)
    _launch(out, x, 1)
    calls = []
    jit_fn = _shifted_copy.fn
    original = jit_fn.call_signature
    monkeypatch.setattr(jit_fn, "call_signature", lambda *a: calls.append(a) or original(*a))
    for shift in (2, 3):
        _launch(out, x, shift)
        assert torch.equal(out, x + shift)
    assert calls == [], "a memo hit launches with the signature it memoised"


def test_memo_hit_still_refuses_a_strided_tensor():
    x = torch.arange(40, dtype=torch.int64)
    out = torch.zeros(20, dtype=torch.int64)
    _launch(out, x[:20], 1)
    with pytest.raises(ValueError, match="not contiguous"):
        _launch(out, x[::2], 1)


def test_memo_hit_types_a_wide_int_as_i64():
    x = torch.arange(20, dtype=torch.int64)
    out = torch.zeros_like(x)
    _launch(out, x, 1)
    _launch(out, x, 2**40)
    assert torch.equal(out, x + 2**40)
    _launch(out, x, 5)
    assert torch.equal(out, x + 5)


def test_a_replaced_jit_run_still_sees_memoised_launches(monkeypatch):
    x = torch.arange(20, dtype=torch.int64)
    out = torch.zeros_like(x)
    _launch(out, x, 1)
    seen = []
    monkeypatch.setattr(JITFunction, "run", lambda self, *args, grid, **kwargs: seen.append(kwargs))
    _launch(out, x, 2)
    assert seen == [{"BLOCK": 16}], "a recorder that swaps JITFunction.run sees the launch"
    assert torch.equal(out, x + 1)
