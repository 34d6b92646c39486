"""From engine outputs to OpenAI fields: logprob blocks and streaming deltas.

The engine reports cumulative text and token ids per completion; OpenAI streams deltas.
`DeltaTracker` remembers what each choice has already been sent, so every chunk carries
only new text and new tokens, and each choice gets its finish_reason exactly once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from runtime.server.responses import ChatLogprobs, CompletionLogprobs, TokenLogprob, TopLogprob

TokenText = Callable[[int], str]


def _value(entry: Any) -> float:
    """A logprob entry may be a `Logprob` (vLLM's object) or a bare float."""
    return float(getattr(entry, "logprob", entry))


def _top(candidates: dict[int, Any], k: int) -> list[tuple[int, float]]:
    ranked = sorted(((tid, _value(lp)) for tid, lp in candidates.items()), key=lambda x: -x[1])
    return ranked[:k]


def _sampled(candidates: dict[int, Any], token_id: int) -> float | None:
    return _value(candidates[token_id]) if token_id in candidates else None


def completion_logprobs(token_ids: list[int], logprobs: list[dict[int, Any]], k: int,
                        token_text: TokenText, text_offset: int = 0) -> CompletionLogprobs:
    """The legacy completions block for `token_ids`; `text_offset` is where their text starts."""
    block = CompletionLogprobs()
    offset = text_offset
    for token_id, candidates in zip(token_ids, logprobs):
        text = token_text(token_id)
        block.tokens.append(text)
        block.token_logprobs.append(_sampled(candidates, token_id))
        block.top_logprobs.append({token_text(t): v for t, v in _top(candidates, k)})
        block.text_offset.append(offset)
        offset += len(text)
    return block


def chat_logprobs(token_ids: list[int], logprobs: list[dict[int, Any]], k: int,
                  token_text: TokenText) -> ChatLogprobs:
    """The chat `logprobs.content` list for `token_ids`, with `k` alternatives each."""
    content = []
    for token_id, candidates in zip(token_ids, logprobs):
        text = token_text(token_id)
        sampled = _sampled(candidates, token_id)
        content.append(TokenLogprob(
            token=text, logprob=-9999.0 if sampled is None else sampled, bytes=list(text.encode()),
            top_logprobs=[TopLogprob(token=token_text(t), logprob=v, bytes=list(token_text(t).encode()))
                          for t, v in _top(candidates, k)]))
    return ChatLogprobs(content=content)


@dataclass
class Delta:
    """What one choice gained since the last chunk."""

    index: int
    text: str
    token_ids: list[int]
    logprobs: list[dict[int, Any]] | None
    finish_reason: str | None
    first: bool
    text_offset: int


@dataclass
class DeltaTracker:
    """Per-choice progress of one streamed request (choices keyed by their global index)."""

    sent_chars: dict[int, int] = field(default_factory=dict)
    sent_tokens: dict[int, int] = field(default_factory=dict)
    done: set[int] = field(default_factory=set)

    def update(self, index: int, output: Any) -> Delta | None:
        """The new part of `output` (a cumulative CompletionOutput), or None if nothing
        changed. After a choice's finishing delta, later outputs for it are ignored."""
        if index in self.done:
            return None
        first = index not in self.sent_chars
        chars, tokens = self.sent_chars.get(index, 0), self.sent_tokens.get(index, 0)
        text = output.text[chars:] if len(output.text) > chars else ""
        new_ids = list(output.token_ids[tokens:])
        finish = output.finish_reason
        if not (text or new_ids or finish or first):
            return None
        self.sent_chars[index] = chars + len(text)
        self.sent_tokens[index] = tokens + len(new_ids)
        if finish is not None:
            self.done.add(index)
        logprobs = None if output.logprobs is None else list(output.logprobs[tokens:tokens + len(new_ids)])
        return Delta(index, text, new_ids, logprobs, finish, first, chars)
