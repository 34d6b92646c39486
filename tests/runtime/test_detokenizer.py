"""Incremental detokenization never emits a split multi-byte character and adds up to
the tokenizer's own decode of the whole output."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from runtime.detokenizer import IncrementalDetokenizer

MULTIBYTE = ["héllo wörld", "你好，世界！", "emoji 🙂🚀 and 👩‍👩‍👧 family", "mixed: naïve café 東京 🎉 done",
             "Ω≈ç√∫˜µ≤≥÷ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢"]


def stream(tokenizer, prompt_ids: list[int], output_ids: list[int]) -> list[str]:
    detok = IncrementalDetokenizer(tokenizer, prompt_ids)
    deltas = [detok.step(t) for t in output_ids]
    return deltas + [detok.flush()]


def test_multibyte_characters_are_never_split(tokenizer):
    split = [i for text in MULTIBYTE for i in tokenizer(text).input_ids if "\ufffd" in tokenizer.decode([i])]
    assert split, "the examples must contain characters spread over several tokens"
    for text in MULTIBYTE:
        ids = tokenizer(text).input_ids
        deltas = stream(tokenizer, [], ids)
        assert "".join(deltas) == text
        assert not any("\ufffd" in d for d in deltas)


def test_output_after_a_prompt_decodes_as_in_the_full_text(tokenizer):
    prompt = tokenizer("The answer is").input_ids
    for text in [" 42.", " café 🙂", "\n\n你好 world"]:
        out = tokenizer("The answer is" + text).input_ids[len(prompt):]
        assert "".join(stream(tokenizer, prompt, out)) == tokenizer.decode(prompt + out)[len("The answer is"):]


def test_incomplete_character_is_held_back_until_flush(tokenizer):
    ids = tokenizer("🙂").input_ids
    assert len(ids) > 1, "this emoji spans several byte tokens"
    detok = IncrementalDetokenizer(tokenizer, [])
    assert detok.step(ids[0]) == ""
    assert detok.flush() == tokenizer.decode(ids[:1])


def test_special_tokens_add_no_text(tokenizer):
    ids = tokenizer("hi").input_ids + [tokenizer.eos_token_id]
    assert "".join(stream(tokenizer, [], ids)) == "hi"


@given(st.text(min_size=1, max_size=40))
def test_any_text_roundtrips(tokenizer, text):
    ids = tokenizer(text, add_special_tokens=False).input_ids
    assert "".join(stream(tokenizer, [], ids)) == tokenizer.decode(ids)
