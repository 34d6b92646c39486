"""Incremental detokenization: turn one new token at a time into the text it adds.

Decoding each token on its own is wrong for byte-level BPE (a multi-byte character can
be split over several tokens, each decoding to U+FFFD) and for tokenizers that change a
token's text depending on its left neighbour (leading spaces). So we decode a short
window twice, with and without the new token, and emit the difference; while the window
ends in U+FFFD the character is incomplete and we emit nothing yet (the same scheme as
vLLM and TGI). `flush()` releases whatever is still held back when the sequence ends.
"""

from __future__ import annotations

from typing import Protocol

_REPLACEMENT = "\ufffd"
# Prompt tokens kept as left context so the first output token decodes as it would inside
# the full text (e.g. keeps or drops its leading space correctly).
_CONTEXT_TOKENS = 5


class Tokenizer(Protocol):
    def decode(self, token_ids: list[int], skip_special_tokens: bool = ...) -> str: ...


class IncrementalDetokenizer:
    def __init__(self, tokenizer: Tokenizer, prompt_token_ids: list[int], skip_special_tokens: bool = True):
        # A transformers fast tokenizer's Rust backend decodes the same ids without the
        # Python argument handling around it (a third of the per-token cost), unless
        # transformers would post-process the text (clean_up_tokenization_spaces).
        backend = getattr(tokenizer, "backend_tokenizer", None)
        use_backend = backend is not None and not getattr(tokenizer, "clean_up_tokenization_spaces", False)
        self.tokenizer = backend if use_backend else tokenizer
        self.skip_special_tokens = skip_special_tokens
        self.token_ids = list(prompt_token_ids[-_CONTEXT_TOKENS:])
        self.prefix_offset = 0
        self.read_offset = len(self.token_ids)

    def _decode(self, token_ids: list[int]) -> str:
        return self.tokenizer.decode(token_ids, skip_special_tokens=self.skip_special_tokens)

    def step(self, token_id: int) -> str:
        """Add one generated token; return the text it completes (possibly empty)."""
        self.token_ids.append(token_id)
        return self._emit(final=False)

    def flush(self) -> str:
        """Text still held back (an incomplete character at the very end), for the finish."""
        return self._emit(final=True)

    def _emit(self, final: bool) -> str:
        prefix_text = self._decode(self.token_ids[self.prefix_offset:self.read_offset])
        new_text = self._decode(self.token_ids[self.prefix_offset:])
        if len(new_text) <= len(prefix_text) or (new_text.endswith(_REPLACEMENT) and not final):
            return ""
        self.prefix_offset = self.read_offset
        self.read_offset = len(self.token_ids)
        return new_text[len(prefix_text):]
