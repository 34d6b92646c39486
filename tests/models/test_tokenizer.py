"""The default model's tokenizer (loaded from our cache) encodes, decodes and applies the chat
template exactly as transformers' tokenizer converted straight from the GGUF does."""

from __future__ import annotations

import gguf
import pytest
from hypothesis import given
from hypothesis import strategies as st
from transformers import PreTrainedTokenizerFast

from models.default import default_gguf_path

pytestmark = pytest.mark.slow

TEXTS = [
    "",
    "Hello world",
    " leading space",
    "trailing space ",
    "two  spaces, three   spaces,\tand a tab",
    "new\nlines\n\n\nand\r\nwindows line ends",
    "     \n   \t  ",
    "unicode: café naïve Ångström 日本語のテキスト 한국어 Ελληνικά русский",
    "emoji 🤖👍🏽🇫🇷 and ZWJ 👩‍👩‍👧",
    "numbers 1234567890 3.14159 1,000,000 -42",
    "code: def f(x):\n    return x**2  # comment\n",
    "contractions: don't can't WON'T it's we'll",
    "nbsp\u00a0and zero\u200bwidth and combining e\u0301",
    "special <|im_start|>user\nhi<|im_end|> tokens<|endoftext|>",
    "<|im_start|><|im_end|><|endoftext|>",
    "not special: <|im_start |> <im_end> <|unknown|>",
    "a" * 300,
    "URL https://example.com/path?q=1&r=2#frag and mail a.b@c.de",
]

CHATS = [
    [{"role": "user", "content": "What is 2 + 2?"}],
    [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "Blue."},
        {"role": "user", "content": "Another, with unicode: ñ 日本 🤖"},
    ],
]


@pytest.fixture(scope="module")
def ours(default_model):
    return default_model[1]


@pytest.mark.parametrize("text", TEXTS)
def test_encode_and_decode_match(ours, reference_tokenizer, text):
    assert ours(text)["input_ids"] == reference_tokenizer(text)["input_ids"]
    assert ours.encode(text, add_special_tokens=False) == reference_tokenizer.encode(text, add_special_tokens=False)
    ids = reference_tokenizer.encode(text)
    assert ours.decode(ids) == reference_tokenizer.decode(ids)
    assert ours.decode(ids, skip_special_tokens=True) == reference_tokenizer.decode(ids, skip_special_tokens=True)


@given(st.text(max_size=120))
def test_random_text_encodes_identically(ours, reference_tokenizer, text):
    assert ours.encode(text) == reference_tokenizer.encode(text)


def test_vocabulary_and_special_tokens_match(ours, reference_tokenizer):
    assert isinstance(ours, PreTrainedTokenizerFast)
    assert len(ours) == len(reference_tokenizer) == 49152
    assert ours.get_vocab() == reference_tokenizer.get_vocab()
    for attribute in ("bos_token", "eos_token", "pad_token", "unk_token", "all_special_tokens", "all_special_ids"):
        assert getattr(ours, attribute) == getattr(reference_tokenizer, attribute), attribute
    assert ours.eos_token == "<|im_end|>"


@pytest.mark.parametrize("chat", CHATS)
def test_chat_template_matches(ours, reference_tokenizer, chat):
    text = ours.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    assert text == reference_tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    assert text.startswith("<|im_start|>system\n") and text.endswith("<|im_start|>assistant\n")
    assert ours.encode(text, add_special_tokens=False) == reference_tokenizer.encode(text, add_special_tokens=False)


def test_chat_template_is_the_gguf_one(ours):
    field = gguf.GGUFReader(default_gguf_path()).fields["tokenizer.chat_template"]
    assert ours.chat_template == field.contents()
