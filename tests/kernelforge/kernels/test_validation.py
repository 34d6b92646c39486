"""The public ops reject bad arguments with errors that name the argument, before launching."""

from __future__ import annotations

import pytest
import torch
from kernel_cases import make_paged_batch

from kernelforge.kernels import fused_add_rms_norm, paged_attention, reshape_and_cache, rms_norm, rotary_embedding


def attention_call(**changes):
    batch = make_paged_batch(q_lens=[1, 3], ctx_lens=[20, 3], num_heads=4, num_kv_heads=2, head_size=64,
                             block_size=16, dtype=torch.float32, seed=0)
    args = dict(out=torch.empty_like(batch.query), query=batch.query, key_cache=batch.key_cache,
                value_cache=batch.value_cache, block_table=batch.block_table, cu_seqlens_q=batch.cu_seqlens_q,
                seqused_k=batch.seqused_k, max_seqlen_q=batch.max_seqlen_q, max_seqlen_k=batch.max_seqlen_k,
                softmax_scale=0.125)
    args.update({k: (v(args) if callable(v) else v) for k, v in changes.items()})
    return lambda: paged_attention(**args)


ATTENTION_ERRORS = [
    (dict(query=lambda a: a["query"].half()), TypeError, "out and query must have the same dtype"),
    (dict(out=lambda a: a["out"][:1]), ValueError, "out and query must have the same shape"),
    (dict(query=lambda a: a["query"][..., :32], out=lambda a: a["out"][..., :32]), ValueError, "head size"),
    (dict(key_cache=lambda a: a["key_cache"][:, :, :1].contiguous()), ValueError, "value_cache"),
    (dict(block_table=lambda a: a["block_table"].long()), TypeError, "block_table"),
    (dict(cu_seqlens_q=lambda a: a["cu_seqlens_q"][:2]), ValueError, "cu_seqlens_q"),
    (dict(cu_seqlens_q=lambda a: torch.tensor([0, 3, 1], dtype=torch.int32)), ValueError, "cu_seqlens_q"),
    (dict(seqused_k=lambda a: torch.tensor([20, 2], dtype=torch.int32)), ValueError, "seqused_k"),
    # seqused_k - q_len would wrap around to a positive int32
    (dict(seqused_k=lambda a: torch.tensor([20, -2**31], dtype=torch.int32)), ValueError, "seqused_k"),
    (dict(seqused_k=lambda a: torch.tensor([20, 50], dtype=torch.int32), max_seqlen_k=50), ValueError, "block_table"),
    (dict(max_seqlen_k=4), ValueError, "max_seqlen_k"),
    (dict(max_seqlen_q=1), ValueError, "max_seqlen_q"),
    (dict(block_table=lambda a: a["block_table"].clone().fill_(99)), ValueError, "block_table holds block"),
    (dict(softmax_scale=0.0), ValueError, "softmax_scale"),
    (dict(query=lambda a: a["query"].numpy()), TypeError, "query must be a torch.Tensor"),
]


@pytest.mark.parametrize(("changes", "error", "message"), ATTENTION_ERRORS)
def test_paged_attention_rejects(changes, error, message):
    with pytest.raises(error, match=message):
        attention_call(**changes)()


def test_paged_attention_rejects_bad_window_and_gqa():
    with pytest.raises(ValueError, match="sliding_window"):
        paged_attention(**{**_attention_kwargs(), "sliding_window": 0})
    kwargs = _attention_kwargs()
    bad_heads = kwargs["query"][:, :3].contiguous()
    with pytest.raises(ValueError, match="not a multiple of the cache's num_kv_heads"):
        paged_attention(**{**kwargs, "query": bad_heads, "out": torch.empty_like(bad_heads)})


def _attention_kwargs() -> dict:
    batch = make_paged_batch(q_lens=[2], ctx_lens=[9], num_heads=4, num_kv_heads=2, head_size=64,
                             block_size=16, dtype=torch.float32, seed=1)
    return dict(out=torch.empty_like(batch.query), query=batch.query, key_cache=batch.key_cache,
                value_cache=batch.value_cache, block_table=batch.block_table, cu_seqlens_q=batch.cu_seqlens_q,
                seqused_k=batch.seqused_k, max_seqlen_q=2, max_seqlen_k=9, softmax_scale=0.125)


def test_rms_norm_rejects():
    x = torch.randn(4, 64)
    with pytest.raises(ValueError, match="weight has 32 elements"):
        rms_norm(torch.empty_like(x), x, torch.ones(32), 1e-6)
    with pytest.raises(ValueError, match="out and x must have the same shape"):
        rms_norm(torch.empty(4, 65), x, torch.ones(64), 1e-6)
    with pytest.raises(TypeError, match="x has dtype torch.int32"):
        rms_norm(torch.empty(4, 64), x.int(), torch.ones(64), 1e-6)
    with pytest.raises(ValueError, match="x must be contiguous in its last dim"):
        rms_norm(torch.empty(64, 4), x.t(), torch.ones(4), 1e-6)
    with pytest.raises(ValueError, match="eps"):
        rms_norm(torch.empty_like(x), x, torch.ones(64), -1.0)
    with pytest.raises(ValueError, match="eps must be a non-negative float, got 'a'"):
        rms_norm(torch.empty_like(x), x, torch.ones(64), "a")
    with pytest.raises(TypeError, match="residual and x must have the same dtype"):
        fused_add_rms_norm(x, x.half(), torch.ones(64), 1e-6)


def test_rotary_embedding_rejects():
    q = torch.randn(3, 4 * 64)
    cache = torch.randn(10, 64)
    with pytest.raises(ValueError, match="positions has 2 elements"):
        rotary_embedding(torch.arange(2), q, None, 64, cache, True)
    with pytest.raises(ValueError, match="not a multiple of head_size"):
        rotary_embedding(torch.arange(3), q, None, 60, cache, True)
    with pytest.raises(ValueError, match="rot_dim"):
        rotary_embedding(torch.arange(3), q, None, 32, cache, True)
    with pytest.raises(ValueError, match="key has 2 tokens"):
        rotary_embedding(torch.arange(3), q, torch.randn(2, 64), 64, cache, True)
    with pytest.raises(ValueError, match=r"positions must lie in \[0, 10\)"):
        rotary_embedding(torch.tensor([0, 3, 10]), q, None, 64, cache, True)
    with pytest.raises(TypeError, match="positions has dtype torch.float32"):
        rotary_embedding(torch.zeros(3), q, None, 64, cache, True)


def test_reshape_and_cache_rejects():
    key = torch.randn(3, 2, 64)
    cache = torch.zeros(2, 16, 2, 64)
    slots = torch.tensor([0, 1, 2])
    with pytest.raises(ValueError, match="slot_mapping holds slot 32"):
        reshape_and_cache(key, key, cache, cache.clone(), torch.tensor([0, 1, 32]))
    with pytest.raises(ValueError, match="slot_mapping has 2 entries"):
        reshape_and_cache(key, key, cache, cache.clone(), slots[:2])
    with pytest.raises(TypeError, match="key has dtype torch.float16 but key_cache"):
        reshape_and_cache(key.half(), key.half(), cache, cache.clone(), slots)
    with pytest.raises(ValueError, match="key heads"):
        reshape_and_cache(key[:, :1], key[:, :1], cache, cache.clone(), slots)
    with pytest.raises(ValueError, match="key_cache and value_cache must have the same shape"):
        reshape_and_cache(key, key, cache, cache[:1].clone(), slots)
    with pytest.raises(ValueError, match="key's heads must be contiguous"):
        reshape_and_cache(key.transpose(0, 1).contiguous().transpose(0, 1), key, cache, cache.clone(), slots)


def test_paged_attention_checks_only_the_block_table_entries_a_context_uses():
    """Entries past each context (vLLM pads with -1 or stale numbers) are never read; a used
    entry out of range is named with the used entries' exact range."""
    def table(a, bad):
        t = torch.full_like(a["block_table"], -1 if bad is None else 7)
        used = (torch.arange(t.shape[1])[None, :] * 16) < a["seqused_k"][:, None].long()
        t[used] = a["block_table"][used]
        t[0, 2] = 1 << 20  # the first context (20 keys) uses two blocks: 4 and 0
        if bad is not None:
            t[1, 0] = bad
        return t
    out = torch.empty(4, 4, 64)
    attention_call(block_table=lambda a: table(a, None), out=out)()
    assert torch.isfinite(out).all()
    for bad, used_range in ((-3, r"-3\.\.4"), (500, r"0\.\.500")):
        with pytest.raises(ValueError, match=rf"block_table holds block {used_range} "):
            attention_call(block_table=lambda a: table(a, bad))()


def test_a_block_table_viewed_out_of_a_wider_one_is_read_through_its_strides():
    """The contents checks read the table's memory as it is laid out (numpy views of a
    column slice): an entry in the used columns is found, padding past them is not read."""
    def sliced(a, bad):
        wide = torch.full((a["block_table"].shape[0], a["block_table"].shape[1] + 3), 1 << 20, dtype=torch.int32)
        wide[:, :a["block_table"].shape[1]] = a["block_table"]
        if bad:
            wide[1, 0] = -1
        return wide[:, :a["block_table"].shape[1]]
    attention_call(block_table=lambda a: sliced(a, False))()
    with pytest.raises(ValueError, match=r"block_table holds block -1\.\."):
        attention_call(block_table=lambda a: sliced(a, True))()
