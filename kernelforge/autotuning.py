"""Autotune declarations: `kf.Config`, `kf.autotune` and the config-provider hook.

This module is data only. A kernel declares its tunable space here (the configs, which
arguments form the tuning key and how they are bucketed, a heuristic default, which
arguments it writes); the `autotune` package, which sits above `kernelforge`, installs a
provider that answers "which config for this key?" from its cache and does all timing.
Keeping the split means `kernelforge` never imports `autotune` and a kernel launches
with its documented default when nothing was tuned.

    @kf.autotune(configs=[kf.Config(BLOCK=64), kf.Config(BLOCK=128)],
                 key=["n_cols", "num_tokens"], bucket={"num_tokens": "pow2"},
                 default=lambda args: kf.Config(BLOCK=128), outputs=["out_ptr"])
    @kf.jit
    def kernel(out_ptr, x_ptr, n_cols, num_tokens, BLOCK: kl.constexpr): ...

    kernel[grid](out, x, n_cols, num_tokens)     # BLOCK comes from the provider/default

Choice at launch: a config forced with `forced_config`, else the installed provider's
answer, else `default(args)`, else the first config. Tools find the launches behind an
op with `capture_launches` and re-run them with any config through `Launch.run`.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import itertools
import json
import marshal
import threading
from collections.abc import Iterator, Mapping
from typing import Any, Callable, Protocol, Sequence, Union

import torch

from kernelforge.backends import launch_flags, select_backend_name
from kernelforge.jit import BoundLaunch, arg_signature, constant_key, launches_signed, signature_device
from kernelforge.memo import BoundedMemo

ConfigValue = Union[int, float, bool, str]
_JSON_SCALARS = (int, float, bool, str)


class Config(Mapping[str, ConfigValue]):
    """One point of a kernel's tuning space: constexpr values (and launch options) by name.

    Immutable and hashable so that it can key dictionaries and survive a JSON round trip
    (`to_json`/`from_json`) into the autotune cache unchanged.
    """

    __slots__ = ("_items", "_dict")

    def __init__(self, **kwargs: ConfigValue) -> None:
        for name, value in kwargs.items():
            if not isinstance(value, _JSON_SCALARS):
                raise TypeError(f"Config value {name}={value!r} must be an int, float, bool or str")
        self._items: tuple[tuple[str, ConfigValue], ...] = tuple(sorted(kwargs.items()))
        self._dict = dict(self._items)

    def __getitem__(self, name: str) -> ConfigValue:
        return self._dict[name]

    def __iter__(self) -> Iterator[str]:
        return (k for k, _ in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(self._items)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Config) and self._items == other._items

    def __repr__(self) -> str:
        return f"Config({', '.join(f'{k}={v!r}' for k, v in self._items)})"

    @property
    def kwargs(self) -> dict[str, ConfigValue]:
        return dict(self._dict)

    def to_json(self) -> str:
        """Canonical text (sorted keys): the config's identity in the autotune cache."""
        return json.dumps(dict(self._items), sort_keys=True, separators=(",", ":"))

    @staticmethod
    def from_json(text: str) -> "Config":
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError(f"not a Config: {text!r}")
        return Config(**data)


def product(**choices: Sequence[ConfigValue]) -> list[Config]:
    """Every combination of the given values: `product(BLOCK=[64, 128], num_warps=[4, 8])`."""
    names = list(choices)
    return [Config(**dict(zip(names, values))) for values in itertools.product(*choices.values())]


def next_power_of_2(n: int) -> int:
    """Smallest power of two >= n (1 for n <= 1)."""
    n = int(n)
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


def pow2_between(lo: int, hi: int) -> list[int]:
    """Powers of two from `lo` up to `hi` inclusive (both rounded up to powers of two)."""
    lo, hi = next_power_of_2(lo), next_power_of_2(hi)
    return [1 << e for e in range(lo.bit_length() - 1, hi.bit_length())]


Bucket = Union[str, Callable[[int], int]]
_BUCKETS: dict[str, Callable[[int], int]] = {"pow2": next_power_of_2, "exact": int}


def _bucket_rule(bucket: Bucket) -> Callable[[int], int]:
    return _BUCKETS[bucket] if isinstance(bucket, str) else bucket


def bucket_value(value: Any, bucket: Bucket) -> Any:
    """Apply a bucketing rule ("pow2", "exact" or a callable) to one key value."""
    return _bucket_rule(bucket)(value)


class ConfigProvider(Protocol):
    """What `autotune.install()` plugs in: the tuned config for a key, or None if untuned.

    A provider may declare `stable = True`: its answer for a key never changes while it is
    installed. Launches then memoise the config they settle on, as they do without a
    provider, instead of asking the provider every time.
    """

    def get_config(self, autotuned: "Autotuned", key: tuple, named_args: "Launch") -> Config | None: ...


_provider: ConfigProvider | None = None
_provider_generation = 0  # bumped by every set_config_provider: memoised configs die with it
_local = threading.local()


def set_config_provider(provider: ConfigProvider | None) -> ConfigProvider | None:
    """Install `provider` for every Autotuned launch (None removes it); returns the previous one."""
    global _provider, _provider_generation
    previous, _provider = _provider, provider
    _provider_generation += 1
    return previous


def get_config_provider() -> ConfigProvider | None:
    return _provider


@contextlib.contextmanager
def forced_config(autotuned: "Autotuned", config: Config) -> Iterator[None]:
    """Launch `autotuned` with `config` in this block (this thread), whatever the provider says.

    For running one op end to end with a chosen config (timing it, reproducing a bad
    config), since the op computes the grid and arguments itself.
    """
    forced: dict[int, Config] = _local.__dict__.setdefault("forced", {})
    previous = forced.get(id(autotuned))
    forced[id(autotuned)] = config
    try:
        yield
    finally:
        if previous is None:
            del forced[id(autotuned)]
        else:
            forced[id(autotuned)] = previous


@contextlib.contextmanager
def capture_launches() -> Iterator[list["Launch"]]:
    """Record every Autotuned launch made in this block (launches still run).

    This is how tools find the kernel launches behind a public op: call the op with
    example arguments inside `capture_launches()` and tune each recorded `Launch`.
    """
    stack: list[list[Launch]] = _local.__dict__.setdefault("captures", [])
    launches: list[Launch] = []
    stack.append(launches)
    try:
        yield launches
    finally:
        stack.remove(launches)


class Launch(Mapping[str, Any]):
    """One launch of an Autotuned kernel: the call as made (arguments, keywords, grid), a
    read-only mapping of its named kernel arguments, re-runnable with any config via `run`.

    It keeps the call's own positional/keyword split, so re-running it costs no rebinding:
    this object is built on every launch, on the serving hot path.
    """

    __slots__ = ("autotuned", "grid", "args", "kwargs", "_named", "_key")

    def __init__(self, autotuned: "Autotuned", args: tuple, kwargs: dict[str, Any], grid: Any) -> None:
        self.autotuned = autotuned
        self.grid = grid
        self.args = args
        self.kwargs = kwargs
        self._named: dict[str, Any] | None = None
        self._key: tuple | None = None

    @property
    def named(self) -> dict[str, Any]:
        if self._named is None:
            names = self.autotuned.arg_names
            named = dict(zip(names, self.args))
            named.update((k, v) for k, v in self.kwargs.items() if k in names)
            self._named = named
        return self._named

    def __getitem__(self, name: str) -> Any:
        return self.named[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.named)

    def __len__(self) -> int:
        return len(self.named)

    def replace(self, **named: Any) -> "Launch":
        """The same launch with some arguments swapped (e.g. tensors for their clones)."""
        args, kwargs = list(self.args), dict(self.kwargs)
        position = self.autotuned.arg_position
        for name, value in named.items():
            if position.get(name, len(args)) < len(args):
                args[position[name]] = value
            else:
                kwargs[name] = value
        return Launch(self.autotuned, tuple(args), kwargs, self.grid)

    def run(self, config: Config) -> Any:
        """Launch the kernel with `config`, bypassing the provider."""
        given = len(self.args)
        position = self.autotuned.arg_position
        for name in config:
            if name in self.kwargs or position.get(name, given) < given:
                raise TypeError(f"{self.autotuned.name}: {name!r} is tuned by autotune and must not be "
                                "passed at launch")
        return self.autotuned.fn.run(*self.args, grid=self.grid, **self.kwargs, **config.kwargs)

    @property
    def key(self) -> tuple:
        if self._key is None:
            self._key = self.autotuned.key_of(self.named)
        return self._key

    def device(self) -> torch.device | None:
        """Device of the first tensor argument (what picks the backend), None if there is none."""
        for value in itertools.chain(self.args, self.kwargs.values()):
            if isinstance(value, torch.Tensor):
                return value.device
        return None


ConfigsSpec = Union[Sequence[Config], Callable[[Mapping[str, Any]], Sequence[Config]]]
DefaultSpec = Union[Config, Callable[[Mapping[str, Any]], Config], None]


class Autotuned:
    """A `@kf.jit` kernel plus its tuning space; launches like the JITFunction it wraps.

    `kernel[grid](*args, **kwargs)` and `kernel.run(*args, grid=grid, **kwargs)` add the
    chosen config's values as keyword arguments (constexprs) of the underlying launch.
    """

    def __init__(
        self,
        fn: Any,
        configs: ConfigsSpec,
        key: Sequence[str],
        bucket: Mapping[str, Bucket] | None = None,
        default: DefaultSpec = None,
        outputs: Sequence[str] | None = None,
        restore_value: Sequence[str] = (),
        name: str | None = None,
    ) -> None:
        self.fn = fn
        self.arg_names: tuple[str, ...] = _arg_names(fn)
        self.key_names: tuple[str, ...] = tuple(key)
        self.bucket: dict[str, Bucket] = dict(bucket or {})
        self.outputs: tuple[str, ...] | None = None if outputs is None else tuple(outputs)
        self.restore_value: tuple[str, ...] = tuple(restore_value)
        self.arg_position: dict[str, int] = {n: i for i, n in enumerate(self.arg_names)}
        self.constexpr_names: tuple[str, ...] = _constexpr_names(fn, self.arg_names)
        self._launch_constexprs = tuple(n for n in self.constexpr_names if n not in self.key_names)
        self.name: str = name or getattr(fn, "__name__", None) or _python_function(fn).__name__
        self._configs = configs
        self._default = default
        for what, names in (("key", self.key_names), ("outputs", self.outputs or ()),
                            ("restore_value", self.restore_value)):
            unknown = [n for n in names if n not in self.arg_names]
            if unknown:
                raise ValueError(f"autotune({self.name}): {what} names unknown arguments {unknown}; "
                                 f"the kernel's arguments are {list(self.arg_names)}")
        stray = [n for n in self.bucket if n not in self.key_names]
        if stray:
            raise ValueError(f"autotune({self.name}): bucket names {stray} that are not in key")
        for rule in self.bucket.values():
            if isinstance(rule, str) and rule not in _BUCKETS:
                raise ValueError(f"autotune({self.name}): unknown bucket {rule!r}; use {sorted(_BUCKETS)} "
                                 "or a callable")
        self._key_positions = tuple((n, self.arg_position[n]) for n in self.key_names)
        self._constexpr_positions = tuple((n, self.arg_position[n]) for n in self._launch_constexprs)
        self._key_rules = tuple((n, _bucket_rule(self.bucket[n]) if n in self.bucket else None)
                                for n in self.key_names)
        self._configs_seen: BoundedMemo = BoundedMemo()
        if not callable(configs) and not list(configs):
            raise ValueError(f"autotune({self.name}): configs is empty")

    def __repr__(self) -> str:
        return f"<Autotuned {self.name} key={list(self.key_names)}>"

    @property
    def key_fields(self) -> tuple[str, ...]:
        """Names of the key tuple's entries: the declared key, the tensor dtypes, the constexprs."""
        return (*self.key_names, "dtypes", "constexprs")

    def key_of(self, named: Mapping[str, Any]) -> tuple:
        """The tuning key: bucketed key arguments (tensors give their shape), then the
        distinct dtypes of the tensor arguments and the constexprs given at launch (e.g.
        `FUSED_ADD=True`): each specialisation is a different kernel with its own best config."""
        values: list[Any] = []
        for name, rule in self._key_rules:
            value = named[name]
            if isinstance(value, torch.Tensor):
                value = tuple(value.shape)
            elif rule is not None:
                value = rule(value)
            elif isinstance(value, torch.dtype):
                value = _dtype_name(value)
            values.append(value)
        dtypes: list[str] = []
        for value in named.values():
            if isinstance(value, torch.Tensor):
                name = _dtype_name(value.dtype)
                if name not in dtypes:
                    dtypes.append(name)
        values.append("+".join(dtypes))
        values.append(",".join(f"{n}={_constexpr_text(named[n])}" for n in self._launch_constexprs
                               if n in named))
        return tuple(values)

    def configs(self, named: Mapping[str, Any]) -> list[Config]:
        """The candidate configs for these arguments (a generator sees the arguments)."""
        configs = list(self._configs(named) if callable(self._configs) else self._configs)
        if not configs:
            raise ValueError(f"autotune({self.name}): the config generator returned no configs")
        return configs

    def default_config(self, named: Mapping[str, Any]) -> Config:
        """The documented heuristic: `default(args)` (or the Config given), else the first config."""
        if isinstance(self._default, Config):
            return self._default
        if self._default is not None:
            return self._default(named)
        return self.configs(named)[0]

    @property
    def source_hash(self) -> str:
        """Identity of the kernel's code, so cached timings die with a source change.

        Uses the JITFunction's own hash when it has one; otherwise hashes the source of the
        kernel and of every jit function it calls.
        """
        own = getattr(self.fn, "source_hash", None)
        if own is not None:
            return own() if callable(own) else str(own)
        return _fallback_source_hash(self.fn)

    def choose(self, launch: Launch) -> Config:
        """The config this launch uses (see the module docstring for the order)."""
        forced = _local.__dict__.get("forced", {}).get(id(self))
        if forced is not None:
            return forced
        if _provider is not None:
            config = _provider.get_config(self, launch.key, launch)
            if config is not None:
                return config
        return self.default_config(launch)

    def run(self, *args: Any, grid: Any, **kwargs: Any) -> Any:
        if len(args) > len(self.arg_names):
            raise TypeError(f"{self.name}() takes {len(self.arg_names)} arguments, got {len(args)}")
        memo_key = self._config_memo_key(args, kwargs)
        try:
            seen = self._configs_seen.get(memo_key) if memo_key is not None else None
        except TypeError:  # an unhashable argument value: decide without the memo
            memo_key = seen = None
        if seen is not None:
            tuned, signature = seen
            if signature is None or not launches_signed(self.fn):
                return self.fn.run(*args, grid=grid, **kwargs, **tuned)
            return self.fn.run_signed(signature, args, {**kwargs, **tuned}, grid)
        launch = Launch(self, args, kwargs, grid)
        for captured in _local.__dict__.get("captures", ()):
            captured.append(launch)
        config = self.choose(launch)
        result = launch.run(config)
        if memo_key is not None:
            self._configs_seen[memo_key] = (config.kwargs, self._launch_signature(args, kwargs, config))
        return result

    def memo_state(self, device: torch.device | None) -> tuple | None:
        """What a launch memoised outside this object (`bind`) depends on besides its
        arguments: the provider generation, the `launch_flags` and the backend `device`
        selects. None while launches must not be memoised: a config is forced or launches
        are captured (this thread), the provider is not `stable`, the kernel's `run` was
        replaced (a recorder must see every launch), or KF_SANITIZE=1 (a sanitized run checks
        every call in full, which also checks that each op's key covers what its checks read)."""
        if not _memo_allowed() or not launches_signed(self.fn):
            return None
        flags = launch_flags()
        if flags[0] == "1":
            return None
        return (_provider_generation, *flags, select_backend_name(device))

    def bind(self, args: tuple, kwargs: dict[str, Any], grid: Any) -> BoundLaunch | None:
        """The launch that a call with these arguments, already made, settled (config,
        specialisation, compiled launcher), fixed to `grid`: see `JITFunction.bind`. It
        stays right for any later call whose arguments match these in everything
        `_config_memo_key` reads, under the same `memo_state`. None when the call was not
        memoised."""
        memo_key = self._config_memo_key(args, kwargs)
        try:
            seen = self._configs_seen.get(memo_key) if memo_key is not None else None
        except TypeError:  # an unhashable argument value
            return None
        if seen is None or seen[1] is None or not launches_signed(self.fn):
            return None
        return self.fn.bind(seen[1], grid)

    def _launch_signature(self, args: tuple, kwargs: dict[str, Any], config: Config) -> tuple | None:
        """The wrapped kernel's `call_signature` for this call with `config`, when it has
        one: the memo key fixes it (every part of it is a part of the key), so a repeated
        launch hands it to `run_signed` instead of reading the arguments a second time."""
        if not launches_signed(self.fn):
            return None
        return self.fn.call_signature(args, {**kwargs, **config.kwargs})

    def _config_memo_key(self, args: tuple, kwargs: dict[str, Any]) -> tuple | None:
        """What the config of this call depends on, when it can be memoised: no forced config
        or capture is active and the provider (if any) is `stable`. That is the key
        arguments before bucketing (tensors by shape), the keywords and positional
        constexprs (see `constant_key`), per argument its type, dtype, device and whether
        it is contiguous, the `launch_flags` and the backend, and which provider is installed.
        None otherwise, or when a key argument is not given at the call.

        Memoising on it spares every repeated launch (a decode step) the provider lookup,
        the heuristic and the Config it builds; the contract for `default` is that it reads
        nothing else. It also holds everything the kernel's `call_signature` reads, so the
        memo keeps that signature too.
        """
        if not _memo_allowed():
            return None
        parts = tuple(map(arg_signature, args))
        if None in parts:  # rare: only then ask each argument the slower question
            parts = tuple(map(_memo_arg_part, args))
        count = len(args)
        values: list[Any] = []
        for name, position in self._key_positions:
            if position < count:
                value = args[position]
                values.append(tuple(value.shape) if isinstance(value, torch.Tensor) else constant_key(value))
            elif name not in kwargs:  # a keyword one is already part of the keywords
                return None
        for name, position in self._constexpr_positions:  # the provider's key holds them, wherever passed
            if position < count:
                values.append((name, *constant_key(args[position])))
        for name, value in kwargs.items():
            values.append((name, *constant_key(value)))
        return (_provider_generation, *launch_flags(), parts, *values, select_backend_name(signature_device(parts)))

    def __getitem__(self, grid: Any) -> Callable[..., Any]:
        return lambda *args, **kwargs: self.run(*args, grid=grid, **kwargs)


def _memo_allowed() -> bool:
    """Whether a config settled for a launch may be reused: no config is forced and no
    launch is captured in this thread, and the provider (if any) is `stable`."""
    local = _local.__dict__
    return ((_provider is None or getattr(_provider, "stable", False))
            and not local.get("forced") and not local.get("captures"))


def _memo_arg_part(value: Any) -> Any:
    """One argument's part of the autotune memo key: its `arg_signature` part, else (a
    tensor the fast path does not take, a wide int) what the config may still read."""
    part = arg_signature(value)
    if part is not None:
        return part
    if isinstance(value, torch.Tensor):
        return ("strided", value.dtype, value.device)
    return type(value)


def autotune(
    configs: ConfigsSpec,
    key: Sequence[str],
    bucket: Mapping[str, Bucket] | None = None,
    default: DefaultSpec = None,
    outputs: Sequence[str] | None = None,
    restore_value: Sequence[str] = (),
) -> Callable[[Any], Autotuned]:
    """Declare a kernel's tuning space; apply above `@kf.jit`.

    configs: a list of Configs or `callable(named_args) -> list[Config]` (a generator from
        the shapes). key: argument names whose values select the config; bucket: per key
        name "pow2" (next power of two, for token counts), "exact" or `callable(int) -> int`.
    default: the heuristic used when the key was never tuned, a Config or
        `callable(named_args) -> Config`; without it, the first config. It may read the
        key arguments (unbucketed), the tensors' dtypes and device, and the keywords given
        at launch, nothing else: its answer is memoised on those.
    outputs: arguments the kernel writes; the tuner checks each candidate's outputs
        against the default config's (None: every tensor argument is compared).
    restore_value: further arguments the kernel mutates; restored before every timed run.
    """

    def wrap(fn: Any) -> Autotuned:
        return Autotuned(fn, configs, key, bucket, default, outputs, restore_value)

    return wrap


def _python_function(fn: Any) -> Callable[..., Any]:
    """The plain Python function behind a JITFunction (or `fn` itself)."""
    for attr in ("fn", "func", "__wrapped__"):
        inner = getattr(fn, attr, None)
        if inspect.isfunction(inner):
            return inner
    if inspect.isfunction(fn):
        return fn
    raise TypeError(f"kf.autotune must wrap a @kf.jit function, got {fn!r}")


def _arg_names(fn: Any) -> tuple[str, ...]:
    names = getattr(fn, "arg_names", None)
    if names is not None:
        return tuple(names)
    return tuple(inspect.signature(_python_function(fn)).parameters)


def _constexpr_names(fn: Any, arg_names: Sequence[str]) -> tuple[str, ...]:
    """The `kl.constexpr` parameters, in order: the JITFunction's own list, else read from
    the annotations (a string under `from __future__ import annotations`)."""
    declared = getattr(fn, "constexpr_names", None)
    if declared is None:
        params = inspect.signature(_python_function(fn)).parameters
        declared = {n for n, p in params.items()
                    if getattr(p.annotation, "__name__", str(p.annotation)).split(".")[-1] == "constexpr"}
    return tuple(n for n in arg_names if n in declared)


_DTYPE_NAMES: dict[torch.dtype, str] = {}


def _dtype_name(dtype: torch.dtype) -> str:
    """"float32" for torch.float32 (memoised: str() of a dtype is slow for the hot path)."""
    name = _DTYPE_NAMES.get(dtype)
    if name is None:
        name = _DTYPE_NAMES[dtype] = str(dtype).removeprefix("torch.")
    return name


def _constexpr_text(value: Any) -> str:
    return _dtype_name(value) if isinstance(value, torch.dtype) else repr(value)


def _fallback_source_hash(fn: Any) -> str:
    """sha256 over the source of `fn` and, transitively, the jit functions it names."""
    digest = hashlib.sha256()
    seen: set[int] = set()
    pending = [fn]
    while pending:
        current = pending.pop()
        py = _python_function(current)
        if id(py) in seen:
            continue
        seen.add(id(py))
        try:
            digest.update(inspect.getsource(py).encode())
        except OSError:  # defined where no source file exists (a REPL, exec): hash the bytecode
            digest.update(marshal.dumps(py.__code__))
        for name in sorted(py.__code__.co_names):
            callee = py.__globals__.get(name)
            if callee is not None and callee is not current and _is_jit(callee):
                pending.append(callee)
    return digest.hexdigest()


def _is_jit(obj: Any) -> bool:
    """A JITFunction is recognised by shape (it wraps a Python function and has `run`), so
    this module does not import the launcher."""
    return callable(getattr(obj, "run", None)) and inspect.isfunction(getattr(obj, "fn", None))
