"""GGUF loading: every supported storage type dequantizes like transformers' independent torch
kernels, tiny llama/qwen2 GGUFs (written the way llama.cpp writes them) produce the source
model's logits, and the conversion is cached."""

from __future__ import annotations

import os

import gguf
import numpy as np
import pytest
import torch

import models.gguf_loader as gguf_loader
from models import UnsupportedModelError, load_model
from tests.models.paged import RAGGED_LENGTHS, RAGGED_SCHEDULE, PagedRunner, replay
from tests.models.test_hf_models import random_sequences, reference_logits
from tests.models.tiny import (
    CHAT_TEMPLATE,
    GGUF_KINDS,
    QUANT_TYPES,
    byte_level_vocab,
    random_blocks,
    random_model,
    transformers_dequantize,
    write_gguf,
)

Q = gguf.GGMLQuantizationType


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KF_CACHE_DIR", str(tmp_path / "cache"))


def write_tensors(path, tensors: dict[str, tuple[np.ndarray, Q | None]]) -> None:
    writer = gguf.GGUFWriter(path, arch="llama")
    for name, (data, raw_dtype) in tensors.items():
        writer.add_tensor(name, data, raw_dtype=raw_dtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_quantized_types_dequantize_like_transformers(tmp_path):
    rng = np.random.default_rng(0)
    rows, cols = 6, 512
    blocks = {qtype: random_blocks(qtype, rows, cols, rng) for qtype in QUANT_TYPES}
    write_tensors(tmp_path / "q.gguf", {qtype.name: (data, qtype) for qtype, data in blocks.items()})
    for tensor in gguf.GGUFReader(tmp_path / "q.gguf").tensors:
        qtype = Q[tensor.name]
        ours = torch.from_numpy(gguf_loader.dequantize(tensor))
        assert ours.shape == (rows, cols) and ours.dtype == torch.float32
        torch.testing.assert_close(ours, transformers_dequantize(qtype, blocks[qtype]), rtol=1e-6, atol=1e-7)


def test_float_types_load_exactly(tmp_path):
    values = np.random.default_rng(1).standard_normal((4, 64)).astype(np.float32)
    bf16 = torch.from_numpy(values).to(torch.bfloat16)
    write_tensors(
        tmp_path / "f.gguf",
        {
            "F32": (values, None),
            "F16": (values.astype(np.float16), None),
            "BF16": (bf16.view(torch.uint8).numpy().reshape(4, -1), Q.BF16),
        },
    )
    expected = {
        "F32": torch.from_numpy(values),
        "F16": torch.from_numpy(values.astype(np.float16).astype(np.float32)),
        "BF16": bf16.float(),
    }
    for tensor in gguf.GGUFReader(tmp_path / "f.gguf").tensors:
        assert torch.equal(torch.from_numpy(gguf_loader.dequantize(tensor)), expected[tensor.name])


@pytest.mark.parametrize("kind", GGUF_KINDS)
def test_gguf_model_matches_its_source(tmp_path, kind):
    reference = random_model(kind)
    write_gguf(reference, tmp_path / "tiny.gguf")
    model, tokenizer = load_model(tmp_path / "tiny.gguf", device="cpu")
    assert model.config.architecture == f"{type(reference).__name__}"
    assert model.config.tie_word_embeddings == reference.config.tie_word_embeddings
    assert model.config.name == "tiny"
    assert tokenizer.chat_template == CHAT_TEMPLATE
    sequences = random_sequences(reference.config.vocab_size, RAGGED_LENGTHS)
    expected = [reference_logits(reference, ids) for ids in sequences]
    runner = PagedRunner(model, len(sequences), max(RAGGED_LENGTHS))
    for seq, position, logits in replay(runner, sequences, RAGGED_SCHEDULE):
        torch.testing.assert_close(logits, expected[seq][position], atol=1e-4, rtol=1e-4)


def test_conversion_is_cached_until_the_file_changes(tmp_path, monkeypatch):
    path = tmp_path / "tiny.gguf"
    write_gguf(random_model("llama"), path)
    first, _ = load_model(path, device="cpu")
    assert list((tmp_path / "cache" / "models").iterdir())

    def refuse(*args):
        raise AssertionError("converted again")

    monkeypatch.setattr(gguf_loader, "convert_gguf", refuse)
    again, _ = load_model(path, device="cpu")
    assert torch.equal(first.embed_tokens, again.embed_tokens)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    with pytest.raises(AssertionError, match="converted again"):
        load_model(path, device="cpu")


def test_a_changed_file_replaces_its_old_conversion(tmp_path):
    path, other = tmp_path / "tiny.gguf", tmp_path / "other.gguf"
    write_gguf(random_model("llama"), path)
    write_gguf(random_model("llama"), other)
    load_model(path, device="cpu")
    load_model(other, device="cpu")
    cache = tmp_path / "cache" / "models"
    before = {d.name for d in cache.iterdir()}
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    load_model(path, device="cpu")
    after = {d.name for d in cache.iterdir()}
    assert len(before) == len(after) == 2, "the stale conversion of tiny.gguf is gone; other.gguf's stays"
    assert len(before & after) == 1


def test_unsupported_gguf_architecture_lists_supported_ones(tmp_path):
    writer = gguf.GGUFWriter(tmp_path / "phi.gguf", arch="phi2")
    tokens, merges, types = byte_level_vocab()
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_tensor("token_embd.weight", np.zeros((len(tokens), 32), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(UnsupportedModelError, match="phi2.*llama, qwen2"):
        load_model(tmp_path / "phi.gguf", device="cpu")
    assert not any((tmp_path / "cache" / "models").iterdir())
