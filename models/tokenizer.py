"""Tokenizers: transformers fast tokenizers with the model's chat template.

For a GGUF we let transformers build the tokenizer from the file's metadata (its
converter knows llama.cpp's vocabulary types and pre-tokenizer regexes, so our token ids
are exactly transformers'); `gguf_loader` saves the result next to the converted weights,
so later loads read a plain `tokenizer.json` and never convert again.
"""

from __future__ import annotations

import os
from pathlib import Path

from transformers import AutoTokenizer, PreTrainedTokenizerFast


def convert_gguf_tokenizer(gguf_path: str | os.PathLike) -> PreTrainedTokenizerFast:
    """transformers' tokenizer for a GGUF file, built from its tokenizer.ggml.* metadata (slow: seconds)."""
    path = Path(gguf_path)
    return _checked(AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name), path)


def load_tokenizer(model_dir: str | os.PathLike) -> PreTrainedTokenizerFast:
    """The tokenizer of a Hugging Face model directory, with the class its tokenizer_config.json names."""
    path = Path(model_dir)
    if not any((path / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json")):
        raise FileNotFoundError(f"{path} has no tokenizer files (tokenizer.json / tokenizer_config.json)")
    return _checked(AutoTokenizer.from_pretrained(str(path)), path)


def load_converted_tokenizer(model_dir: str | os.PathLike) -> PreTrainedTokenizerFast:
    """A tokenizer saved from `convert_gguf_tokenizer`: its class is the plain fast tokenizer, so skip
    AutoTokenizer's class resolution (over a second on first use)."""
    return PreTrainedTokenizerFast.from_pretrained(str(model_dir))


def _checked(tokenizer: PreTrainedTokenizerFast, source: Path) -> PreTrainedTokenizerFast:
    """The runtime relies on a fast tokenizer (offsets, batch decode speed)."""
    if not isinstance(tokenizer, PreTrainedTokenizerFast):
        raise TypeError(f"{source}: expected a fast tokenizer, transformers gave {type(tokenizer).__name__}")
    return tokenizer
