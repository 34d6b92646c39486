"""CPU backend stores whose address or mask the access analysis takes apart: the generated
code must neither overwrite a value an address still reads nor lose a data-dependent mask."""

import pytest
import torch

import kernelforge as kf
import kernelforge.language as kl


@kf.jit
def _partials_kernel(start_ptr, len_ptr, m_ptr, acc_ptr, GROUP: kl.constexpr, BLOCK_M: kl.constexpr,
                     NSEG: kl.constexpr, D: kl.constexpr):
    """The split-KV partial stores' addressing: a loaded start, scaled twice, plus a pid."""
    kv_head = kl.program_id(1)
    seg = kl.program_id(2)
    offs_m = kl.arange(0, BLOCK_M)
    offs_d = kl.arange(0, D)
    row_token = offs_m // GROUP
    q_start = kl.load(start_ptr + kl.program_id(0))
    row_valid = (row_token < 1) & (row_token < kl.load(len_ptr + kl.program_id(0)))
    head = kv_head * GROUP + offs_m % GROUP
    part = ((q_start + row_token) * (kl.num_programs(1) * GROUP) + head) * NSEG + seg
    kl.store(m_ptr + part, part.to(kl.float32), mask=row_valid)
    value = kl.broadcast_to(part[:, None], (BLOCK_M, D)).to(kl.float32)
    kl.store(acc_ptr + part[:, None] * D + offs_d[None, :], value, mask=row_valid[:, None])


def test_an_address_term_is_not_overwritten_by_a_later_in_place_op():
    tokens, kv_heads, group, segments, d = 3, 2, 3, 2, 8
    n = tokens * kv_heads * group * segments
    m, acc = torch.full((n,), -1.0), torch.full((n, d), -1.0)
    with kf.backend("cpu"):
        _partials_kernel[(tokens, kv_heads, segments)](
            torch.arange(tokens, dtype=torch.int32), torch.ones(tokens, dtype=torch.int32), m, acc,
            GROUP=group, BLOCK_M=4, NSEG=segments, D=d)
    expected = torch.arange(n, dtype=torch.float32)
    assert torch.equal(m, expected)
    assert torch.equal(acc, expected[:, None].expand(n, d))


@kf.jit
def _positive_part_kernel(x_ptr, out_ptr, heads, G: kl.constexpr, D: kl.constexpr):
    offs = (kl.program_id(0) * heads * D + (kl.program_id(1) * G + kl.arange(0, G))[:, None] * D
            + kl.arange(0, D)[None, :])
    x = kl.load(x_ptr + offs)
    kl.store(out_ptr + offs, x * 2.0 + 1.0, mask=x > 0.0)


def test_a_computed_store_keeps_its_data_dependent_mask():
    x = torch.randn(3, 2, 4, 8, generator=torch.Generator().manual_seed(0))
    out = torch.zeros_like(x)
    with kf.backend("cpu"):
        _positive_part_kernel[(3, 2)](x, out, 8, G=4, D=8)
    torch.testing.assert_close(out, torch.where(x > 0, x * 2 + 1, 0.0))


@kf.jit
def through_bare_arguments(x_ptr, out_ptr):
    kl.store(out_ptr, kl.load(x_ptr) + 1.0)


@pytest.mark.parametrize("sanitize", ["0", "1"])
def test_an_argument_used_as_a_pointer_addresses_its_first_element(sanitize, monkeypatch):
    monkeypatch.setenv("KF_SANITIZE", sanitize)
    x, out = torch.tensor([3.0, 9.0]), torch.zeros(2)
    through_bare_arguments[(2,)](x, out)
    torch.testing.assert_close(out, torch.tensor([4.0, 0.0]))
