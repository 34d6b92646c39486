"""Turning request prompts into token ids, and the checks that need the tokenizer.

The server tokenizes on its own (with a private copy of the engine's tokenizer, so the
HTTP thread never shares tokenizer state with the engine thread) and hands the engine
token ids. That lets it refuse an over-long prompt with a 400 before the engine sees it,
and report exact prompt token counts in `usage`.
"""

from __future__ import annotations

import copy
from functools import lru_cache
from typing import Any

from runtime.server.errors import APIError


class PromptProcessor:
    """Tokenizes completion prompts and chat conversations for one served model."""

    def __init__(self, tokenizer: Any, max_model_len: int) -> None:
        self.tokenizer = copy.deepcopy(tokenizer)
        self.max_model_len = max_model_len
        self.vocab_size = len(self.tokenizer)
        self.token_text = lru_cache(maxsize=65536)(self._token_text)

    def encode(self, prompt: str | list[int], add_special_tokens: bool = True) -> list[int]:
        """Token ids of a text prompt, or the given ids after a vocabulary check."""
        if isinstance(prompt, str):
            return list(self.tokenizer.encode(prompt, add_special_tokens=add_special_tokens))
        bad = [t for t in prompt if not 0 <= t < self.vocab_size]
        if bad:
            raise APIError(f"prompt token id {bad[0]} is outside the vocabulary (size {self.vocab_size})",
                           param="prompt")
        return list(prompt)

    def render_chat(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        """The conversation as text, through the model's own chat template."""
        try:
            return self.tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=add_generation_prompt)
        except Exception as exc:  # a template may reject a role order; that is the client's input
            raise APIError(f"chat template failed: {exc}", param="messages") from exc

    def encode_chat(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> list[int]:
        # The template already writes the special tokens; adding them again would double BOS.
        return self.encode(self.render_chat(messages, add_generation_prompt), add_special_tokens=False)

    def decode(self, token_ids: list[int]) -> str:
        return self.tokenizer.decode(token_ids, skip_special_tokens=False)

    def _token_text(self, token_id: int) -> str:
        return self.tokenizer.decode([token_id], skip_special_tokens=False)

    def completion_budget(self, prompt_len: int, requested: int | None, param: str) -> int:
        """max_tokens to give the engine: the client's, if prompt + completion fit the
        context; the rest of the context when the client gave none; else a 400."""
        limit = self.max_model_len
        if prompt_len >= limit:
            raise APIError(f"This model's maximum context length is {limit} tokens. However, your "
                           f"prompt has {prompt_len} tokens, leaving no room for a completion.",
                           param=param)
        if requested is None:
            return limit - prompt_len
        if prompt_len + requested > limit:
            raise APIError(f"This model's maximum context length is {limit} tokens. However, you "
                           f"requested {prompt_len + requested} tokens ({prompt_len} in the prompt, "
                           f"{requested} for the completion). Reduce the prompt or max_tokens.",
                           param="max_tokens")
        return requested
