"""How to pick the next tokens of a request and when to stop: vLLM's `SamplingParams`.

Field names and defaults follow vLLM so that code written against it runs unchanged.
Everything is validated at construction: a bad value is a `ValueError` naming the field,
which the server turns into an HTTP 400 before the request ever reaches the scheduler.
"""

from __future__ import annotations

from dataclasses import dataclass, field

_GREEDY_EPS = 1e-5


@dataclass
class SamplingParams:
    """Sampling and stopping settings for one request (all `n` completions share them).

    `temperature=0` is greedy. `top_k=0` or `-1` disables top-k (vLLM accepts both).
    `seed` makes a request reproducible whatever else is in the batch. `stop` strings are
    cut from the returned text; `stop_token_ids` (and EOS unless `ignore_eos`) end the
    completion with `finish_reason="stop"`. `logprobs=k` returns, for every generated token,
    the log-probabilities of the `k` most likely tokens plus the sampled one.
    """

    n: int = 1
    max_tokens: int | None = 16
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    seed: int | None = None
    stop: str | list[str] | None = None
    stop_token_ids: list[int] | None = None
    ignore_eos: bool = False
    logprobs: int | None = None
    stop_strings: tuple[str, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            self.stop_strings = (self.stop,)
        else:
            _check(self.stop is None or isinstance(self.stop, (list, tuple)), "stop", self.stop,
                   "a string, a list of strings or None")
            self.stop_strings = tuple(self.stop or ())
        _check(self.stop_token_ids is None or isinstance(self.stop_token_ids, (list, tuple)),
               "stop_token_ids", self.stop_token_ids, "a list of token ids or None")
        self.stop_token_ids = list(self.stop_token_ids or [])
        if self.top_k == -1:
            self.top_k = 0
        self._validate()

    def _validate(self) -> None:
        _check(_is_int(self.n) and self.n >= 1, "n", self.n, "an integer >= 1")
        _check(self.max_tokens is None or (_is_int(self.max_tokens) and self.max_tokens >= 1),
               "max_tokens", self.max_tokens, "an integer >= 1 or None")
        _check(_is_number(self.temperature) and self.temperature >= 0.0,
               "temperature", self.temperature, "a number >= 0")
        _check(_is_number(self.top_p) and 0.0 < self.top_p <= 1.0, "top_p", self.top_p, "in (0, 1]")
        _check(_is_int(self.top_k) and self.top_k >= 0, "top_k", self.top_k,
               "an integer >= 1, or 0 / -1 to disable")
        _check(_is_number(self.min_p) and 0.0 <= self.min_p <= 1.0, "min_p", self.min_p, "in [0, 1]")
        _check(self.seed is None or _is_int(self.seed), "seed", self.seed, "an integer or None")
        _check(all(isinstance(s, str) and s for s in self.stop_strings), "stop", self.stop,
               "a non-empty string or a list of non-empty strings")
        _check(all(_is_int(t) and t >= 0 for t in self.stop_token_ids), "stop_token_ids",
               self.stop_token_ids, "a list of non-negative integers")
        _check(isinstance(self.ignore_eos, bool), "ignore_eos", self.ignore_eos, "a bool")
        _check(self.logprobs is None or (_is_int(self.logprobs) and self.logprobs >= 0),
               "logprobs", self.logprobs, "an integer >= 0 or None")

    @property
    def greedy(self) -> bool:
        """Whether the next token is simply the argmax (temperature 0, vLLM's threshold)."""
        return self.temperature < _GREEDY_EPS


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


def _check(ok: bool, name: str, value: object, expected: str) -> None:
    if not ok:
        raise ValueError(f"SamplingParams.{name} must be {expected}, got {value!r}")
