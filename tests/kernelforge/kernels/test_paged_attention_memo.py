"""paged_attention's launch memo (`launch.LaunchMemo`): a repeated decode call (one token per
sequence) with the same metadata skips the metadata checks and launches directly, while the
contents are still checked and still decide the launch; prefill calls are always checked."""

from __future__ import annotations

from unittest import mock

import pytest
import torch
from kernel_cases import PagedBatch, make_paged_batch

from kernelforge.kernels import paged_attention, reference, validation

CTX_LENS = [40, 3, 170]


def _decode_batch(seed: int, ctx_lens: list[int] = CTX_LENS) -> PagedBatch:
    return make_paged_batch(q_lens=[1] * len(ctx_lens), ctx_lens=ctx_lens, num_heads=6, num_kv_heads=2,
                            head_size=64, block_size=16, dtype=torch.float32, seed=seed)


def _check(batch: PagedBatch) -> None:
    out = torch.full_like(batch.query, float("nan"))
    expected = torch.full_like(batch.query, float("nan"))
    paged_attention(out, *batch.args(), 0.125)
    reference.paged_attention(expected, *batch.args(), 0.125)
    torch.testing.assert_close(out, expected, equal_nan=True, rtol=1e-4, atol=1e-4)


def _unchecked():
    return mock.patch.object(validation, "check_paged_attention", side_effect=AssertionError("checked again"))


def test_a_repeated_decode_call_skips_the_metadata_checks_and_reads_the_new_data():
    _check(_decode_batch(seed=0))
    with _unchecked():
        for seed, ctx_lens in ((1, CTX_LENS), (2, [170, 1, 48])):  # same max_seqlen_k and shapes
            _check(_decode_batch(seed, ctx_lens))


@pytest.mark.parametrize(("change", "message"), [
    (lambda b: b.seqused_k.fill_(171), "max_seqlen_k"),
    (lambda b: b.block_table.fill_(b.key_cache.shape[0]), "block"),
    (lambda b: b.cu_seqlens_q.copy_(torch.tensor([0, 2, 1, 3])), "cu_seqlens_q"),
])
def test_a_memoised_decode_call_still_checks_the_contents(change, message):
    batch = _decode_batch(seed=3)
    _check(batch)
    change(batch)
    with _unchecked(), pytest.raises(ValueError, match=message):
        paged_attention(torch.empty_like(batch.query), *batch.args(), 0.125)


def test_a_memoised_call_whose_contents_leave_a_slot_empty_launches_the_checked_way():
    """Same metadata, but sequence 1 holds no token and token 2 is padding: the launch of
    one token per sequence would be wrong for it."""
    _check(_decode_batch(seed=4))
    batch = _decode_batch(seed=5)
    batch.cu_seqlens_q.copy_(torch.tensor([0, 1, 1, 2]))
    with _unchecked():
        _check(batch)


def test_prefill_calls_are_always_checked():
    batch = make_paged_batch(q_lens=[3, 1], ctx_lens=[20, 7], num_heads=4, num_kv_heads=2, head_size=64,
                             block_size=16, dtype=torch.float32, seed=6)
    _check(batch)
    with _unchecked(), pytest.raises(AssertionError, match="checked again"):
        paged_attention(torch.empty_like(batch.query), *batch.args(), 0.125)
