"""Request bodies of the OpenAI-compatible API, and the checks that turn bad input into 400s.

Field names and meanings follow OpenAI's `/v1/completions` and `/v1/chat/completions`,
plus vLLM's extra sampling fields (`top_k`, `min_p`, `ignore_eos`, `stop_token_ids`), so
that existing clients work unchanged. Numbers are strict: `max_tokens: 1.5` or `"8"` is
an error rather than something silently coerced, because a client that sends them has a
bug it should hear about. Limits that depend on the served model (context length) are
checked later, once the prompt is tokenized (see `prompts.py`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, model_validator

MAX_N = 16
MAX_LOGPROBS = 20

PositiveInt = Annotated[StrictInt, Field(ge=1)]
Number = Annotated[float, Field(strict=True)]


class StreamOptions(BaseModel):
    """OpenAI `stream_options`: ask for a final chunk that carries the usage counts."""

    model_config = ConfigDict(extra="ignore")
    include_usage: StrictBool = False


class SamplingFields(BaseModel):
    """Fields shared by both endpoints; `sampling_kwargs` maps them to SamplingParams names."""

    model_config = ConfigDict(extra="ignore")

    model: StrictStr | None = None
    n: Annotated[StrictInt, Field(ge=1, le=MAX_N)] = 1
    temperature: Annotated[Number, Field(ge=0.0, le=2.0)] | None = None
    top_p: Annotated[Number, Field(gt=0.0, le=1.0)] | None = None
    top_k: Annotated[StrictInt, Field(ge=-1)] | None = None
    min_p: Annotated[Number, Field(ge=0.0, le=1.0)] | None = None
    seed: StrictInt | None = None
    stop: StrictStr | list[StrictStr] | None = None
    stop_token_ids: list[Annotated[StrictInt, Field(ge=0)]] | None = None
    ignore_eos: StrictBool = False
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    frequency_penalty: Number | None = None
    presence_penalty: Number | None = None
    logit_bias: dict[str, Number] | None = None
    user: StrictStr | None = None

    @model_validator(mode="after")
    def _check_shared(self) -> SamplingFields:
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options can only be set when stream is true")
        if any(s == "" for s in self.stop_list):
            raise ValueError("stop strings must not be empty")
        # Accepting these and ignoring them would silently change what the client asked for.
        for name in ("frequency_penalty", "presence_penalty"):
            if getattr(self, name) not in (None, 0.0):
                raise ValueError(f"{name} is not supported by this server; leave it at 0")
        if self.logit_bias:
            raise ValueError("logit_bias is not supported by this server")
        return self

    @property
    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage

    def sampling_kwargs(self, max_tokens: int, logprobs: int | None) -> dict[str, Any]:
        """Keyword arguments for `SamplingParams`; absent fields keep the engine's defaults
        except temperature, which defaults to 1.0 as in the OpenAI API."""
        kwargs: dict[str, Any] = {
            "n": self.n,
            "max_tokens": max_tokens,
            "temperature": 1.0 if self.temperature is None else float(self.temperature),
            "stop": self.stop_list,
            "ignore_eos": self.ignore_eos,
        }
        optional = {
            "top_p": None if self.top_p is None else float(self.top_p),
            # vLLM treats 0 and -1 alike as "no top-k"; the engine only needs one spelling.
            "top_k": None if self.top_k in (None, 0) else self.top_k,
            "min_p": None if self.min_p is None else float(self.min_p),
            "seed": self.seed,
            "stop_token_ids": self.stop_token_ids,
            "logprobs": logprobs,
        }
        kwargs.update({k: v for k, v in optional.items() if v is not None})
        return kwargs


PromptInput = StrictStr | list[StrictInt] | list[StrictStr] | list[list[StrictInt]]


class CompletionRequest(SamplingFields):
    """Body of POST /v1/completions."""

    prompt: PromptInput
    max_tokens: PositiveInt | None = 16
    logprobs: Annotated[StrictInt, Field(ge=0, le=MAX_LOGPROBS)] | None = None
    echo: StrictBool = False
    best_of: StrictInt | None = None
    suffix: StrictStr | None = None

    @model_validator(mode="after")
    def _check_prompt(self) -> CompletionRequest:
        if self.prompt == "" or self.prompt == [] or any(p in ("", []) for p in self.prompt_list):
            raise ValueError("prompt must not be empty")
        if self.best_of not in (None, self.n):
            raise ValueError("best_of is not supported by this server (leave it unset or equal to n)")
        if self.suffix:
            raise ValueError("suffix is not supported by this server")
        if self.echo and self.logprobs is not None:
            raise ValueError("echo together with logprobs is not supported (no prompt logprobs)")
        return self

    @property
    def prompt_list(self) -> list[str | list[int]]:
        """The prompt(s) as a list with one entry per engine request."""
        p = self.prompt
        if isinstance(p, str):
            return [p]
        if p and all(isinstance(t, int) for t in p):
            return [list(p)]  # a single prompt given as token ids
        return list(p)

    def requested_max_tokens(self) -> int | None:
        return self.max_tokens

    def requested_logprobs(self) -> int | None:
        return self.logprobs


class TextPart(BaseModel):
    """One `{"type": "text", "text": ...}` entry of a multi-part message content."""

    type: Literal["text"]
    text: StrictStr


class ChatMessage(BaseModel):
    """A chat turn. Content may be a string or a list of text parts (no images here)."""

    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: StrictStr | list[TextPart] | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class ChatCompletionRequest(SamplingFields):
    """Body of POST /v1/chat/completions."""

    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_tokens: PositiveInt | None = None
    max_completion_tokens: PositiveInt | None = None
    logprobs: StrictBool = False
    top_logprobs: Annotated[StrictInt, Field(ge=0, le=MAX_LOGPROBS)] | None = None
    add_generation_prompt: StrictBool = True
    tools: list[Any] | None = None

    @model_validator(mode="after")
    def _check_chat(self) -> ChatCompletionRequest:
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs requires logprobs to be true")
        if self.tools:
            raise ValueError("tools are not supported by this server")
        return self

    def requested_max_tokens(self) -> int | None:
        # max_completion_tokens is OpenAI's newer name and wins when both are sent.
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    def requested_logprobs(self) -> int | None:
        if not self.logprobs:
            return None
        return self.top_logprobs or 0

    def chat_messages(self) -> list[dict[str, str]]:
        """The messages in the plain form that tokenizer chat templates expect."""
        return [{"role": m.role, "content": m.text()} for m in self.messages]


class TokenizeRequest(BaseModel):
    """Body of POST /tokenize (vLLM): either a prompt or chat messages."""

    model_config = ConfigDict(extra="ignore")
    model: StrictStr | None = None
    prompt: StrictStr | None = None
    messages: list[ChatMessage] | None = None
    add_special_tokens: StrictBool = True
    add_generation_prompt: StrictBool = True

    @model_validator(mode="after")
    def _one_input(self) -> TokenizeRequest:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of prompt or messages")
        return self


class DetokenizeRequest(BaseModel):
    """Body of POST /detokenize (vLLM)."""

    model_config = ConfigDict(extra="ignore")
    model: StrictStr | None = None
    tokens: list[Annotated[StrictInt, Field(ge=0)]]
