"""Fixtures for the runtime tests: the default model's tokenizer, and the toy test-double
model (tests/runtime/toy_model.py) behind a real engine."""

from __future__ import annotations

import pytest

from runtime.engine import EngineArgs, LLMEngine
from toy_model import ToyModel, ToyTokenizer


@pytest.fixture(scope="session")
def tokenizer():
    """SmolLM2's byte-level BPE tokenizer (from the converted GGUF cache; no weights)."""
    from models.default import default_gguf_path
    from models.gguf_loader import cached_model_dir
    from models.tokenizer import load_tokenizer

    return load_tokenizer(cached_model_dir(default_gguf_path()))


@pytest.fixture
def toy_engine():
    """Factory: an LLMEngine over the toy model; keyword arguments go to EngineArgs."""

    def make(**kwargs) -> LLMEngine:
        args = EngineArgs(**{"max_model_len": 64, "max_num_seqs": 4, "max_num_batched_tokens": 16,
                             "block_size": 4, "kv_cache_memory": 64 * 64, **kwargs})
        return LLMEngine(args, model=ToyModel(), tokenizer=ToyTokenizer())

    return make
