"""Fixtures for the model tests: the default model (ours and transformers') loaded once per session."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def default_model():
    """Our SmolLM2-135M-Instruct and its tokenizer, float32 on the CPU."""
    from models import load_model

    return load_model(device="cpu")


@pytest.fixture(scope="session")
def reference_model():
    """transformers' own load of the same GGUF (25-40 s: dequantizes everything), float32."""
    from transformers import AutoModelForCausalLM

    from models.default import default_gguf_path

    path = default_gguf_path()
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    return model.eval()


@pytest.fixture(scope="session")
def reference_tokenizer():
    """transformers' tokenizer converted straight from the GGUF metadata (not from our cache)."""
    from transformers import AutoTokenizer

    from models.default import default_gguf_path

    path = default_gguf_path()
    return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
