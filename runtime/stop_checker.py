"""Decide after each generated token whether a sequence is done, and trim its text.

vLLM's rules: a stop token (EOS unless `ignore_eos`, or one of `stop_token_ids`) ends the
completion with "stop"; the token stays in `token_ids` but adds no text. A stop string
ends it with "stop" and the text is cut just before the stop string. Reaching
`max_tokens` or the model's `max_model_len` ends it with "length".

While a request runs, the last `len(longest stop string) - 1` characters are held back
from the visible text, because they might turn out to be the start of a stop string that
would then be cut; a streaming client must never see text that later disappears.
"""

from __future__ import annotations

from collections.abc import Collection

from runtime.sequence import Sequence


def check_stop(seq: Sequence, new_text: str, eos_token_ids: Collection[int], max_model_len: int) -> str | None:
    """Append `new_text` (the text of `seq`'s newest token) to its output and return the
    finish reason if the sequence is now done, else None."""
    params = seq.params
    token_id = seq.token_ids[-1]
    if token_id in params.stop_token_ids or (not params.ignore_eos and token_id in eos_token_ids):
        return "stop"
    seq.output_text += new_text
    if new_text and params.stop_strings:
        cut = find_stop_string(seq.output_text, len(new_text), params.stop_strings)
        if cut is not None:
            seq.output_text = seq.output_text[:cut]
            return "stop"
    if params.max_tokens is not None and seq.num_output_tokens >= params.max_tokens:
        return "length"
    if seq.num_tokens >= max_model_len:
        return "length"
    return None


def find_stop_string(text: str, num_new_chars: int, stop_strings: tuple[str, ...]) -> int | None:
    """Index where the earliest stop string starts, looking only where the newest
    `num_new_chars` characters could complete one."""
    start = max(0, len(text) - num_new_chars - max(map(len, stop_strings)) + 1)
    hits = [i for i in (text.find(s, start) for s in stop_strings) if i >= 0]
    return min(hits) if hits else None


def visible_text(seq: Sequence) -> str:
    """The output text a client may see now (holds back a possible partial stop string)."""
    strings = seq.params.stop_strings
    if seq.is_finished or not strings:
        return seq.output_text
    hold = max(map(len, strings)) - 1
    return seq.output_text[:max(0, len(seq.output_text) - hold)]
