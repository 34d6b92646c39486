"""`@kf.jit`: the launcher that specialises, compiles, caches and runs a kernel.

    kernel[grid](*args, **constexprs)          # grid: tuple, or callable(meta) -> tuple
    kernel.run(*args, grid=grid, **constexprs)
    kernel.source("cpu", BLOCK=128, signature={"x_ptr": "*fp16"})
    kernel.specialize(args, constexprs) -> ir.Kernel

A launch binds the arguments to the Python signature, types each runtime argument
(tensor -> pointer to its dtype; int -> int32, or int64 when it does not fit;
float -> fp32; bool -> int1), picks the backend from the tensors' device (see
`kernelforge.backends`), and looks the specialisation up in memory, then in the disk
cache (`kernelforge.cache`), before running the frontend and the backend's codegen.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import numbers
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Callable, NamedTuple

import numpy
import torch

from kernelforge import cache, ir
from kernelforge.backends import environ_get, get_backend, launch_flags, select_backend_name
from kernelforge.errors import CompilationError, KernelFault
from kernelforge.frontend import JIT_ATTR, compile_kernel
from kernelforge.language.core import constexpr

# Launch options Triton users pass (and `kf.Config`s may carry); the current backends
# choose their own launch parameters, so they are validated and otherwise not used.
LAUNCH_OPTIONS = ("num_warps", "num_stages")

_SHORT_TYPES = {
    "fp16": ir.DType.float16, "bf16": ir.DType.bfloat16, "fp32": ir.DType.float32,
    "fp64": ir.DType.float64, "i1": ir.DType.int1, "i8": ir.DType.int8, "i16": ir.DType.int16,
    "i32": ir.DType.int32, "i64": ir.DType.int64, "u8": ir.DType.uint8,
}


def parse_type(text: str) -> ir.BlockType:
    """A Triton-style signature type: '*fp16' (pointer), 'i32', 'fp32', ... ('*float16' works too)."""
    is_pointer = text.startswith("*")
    name = text[1:] if is_pointer else text
    dtype = _SHORT_TYPES.get(name) or next((d for d in ir.DType if d.dsl_name == name), None)
    if dtype is None:
        raise ValueError(f"unknown type {text!r}; use e.g. '*fp32', '*bf16', 'i32', 'i64', 'fp32'")
    return ir.BlockType(dtype, (), is_pointer)


# Prebuilt so that typing the arguments of a launch costs dictionary lookups only.
_POINTER_TYPES = {d.torch_dtype: ir.BlockType(d, (), True) for d in ir.DType}
_DTYPES = {d.torch_dtype: d for d in ir.DType}
_BOOL, _I32, _I64, _F32 = (ir.BlockType(d) for d in (ir.DType.int1, ir.DType.int32, ir.DType.int64,
                                                      ir.DType.float32))


def scalar_type(value: Any) -> ir.BlockType:
    """Type of a Python scalar argument (Triton's choice: int32 unless it needs int64)."""
    if isinstance(value, (bool, numpy.bool_)):
        return _BOOL
    if isinstance(value, numbers.Integral):
        if -2**31 <= value < 2**31:
            return _I32
        if -2**63 <= value < 2**63:
            return _I64
        raise ValueError(f"integer {value} does not fit in int64")
    if isinstance(value, numbers.Real):
        return _F32
    raise TypeError(f"unsupported argument type {type(value).__name__}")


def _is_constexpr_annotation(annotation: Any) -> bool:
    if annotation is constexpr:
        return True
    return isinstance(annotation, str) and annotation.split(".")[-1] == "constexpr"


class JITFunction:
    """A kernel written in the DSL. Launch it with `kernel[grid](...)`."""

    def __init__(self, fn: Callable) -> None:
        if not inspect.isfunction(fn):
            raise TypeError(f"@kf.jit decorates a function, got {fn!r}")
        self.fn = fn
        setattr(self, JIT_ATTR, fn)
        functools.update_wrapper(self, fn)
        params = inspect.signature(fn).parameters
        self.arg_names: tuple[str, ...] = tuple(params)
        self.constexpr_names: frozenset[str] = frozenset(
            n for n, p in params.items() if _is_constexpr_annotation(p.annotation))
        self.runtime_names: tuple[str, ...] = tuple(n for n in params if n not in self.constexpr_names)
        self._constexpr_order = tuple(n for n in params if n in self.constexpr_names)
        self._defaults = {n: p.default for n, p in params.items() if p.default is not inspect.Parameter.empty}
        self._launchers: dict[tuple, Callable] = {}
        self._plans: dict[tuple, _LaunchPlan] = {}
        self._source_hash: str | None = None
        # The fast path takes calls that pass every runtime argument positionally and
        # constexprs by keyword; that needs the runtime parameters to come first.
        runtime_first = self.arg_names[:len(self.runtime_names)] == self.runtime_names
        self._fast_arity = len(self.runtime_names) if runtime_first else -1

    def __repr__(self) -> str:
        return f"<kf.jit {self.fn.__module__}.{self.fn.__qualname__}>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"{self.__name__} is a kernel: launch it with {self.__name__}[grid](...), "
                           "or call it from another @kf.jit function")

    # ------------------------------------------------------------------ identity

    @property
    def source_hash(self) -> str:
        """sha256 over this function's source and that of every jit function it calls."""
        if self._source_hash is None:
            digest = hashlib.sha256()
            try:
                for fn in _jit_closure(self.fn):
                    digest.update(inspect.getsource(fn).encode())
            except OSError as exc:
                code = self.fn.__code__
                raise CompilationError(f"cannot read the source of the kernel (define kernels in a file): {exc}",
                                       kernel=self.__name__, file=code.co_filename,
                                       line=code.co_firstlineno) from None
            self._source_hash = digest.hexdigest()
        return self._source_hash

    # ------------------------------------------------------------------ binding

    def _bind(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        name = self.__name__
        if len(args) > len(self.arg_names):
            raise TypeError(f"kernel {name}() takes {len(self.arg_names)} arguments "
                            f"({', '.join(self.arg_names)}), got {len(args)}")
        named = dict(zip(self.arg_names, args))
        for key, value in kwargs.items():
            if key not in self.arg_names:
                raise TypeError(f"kernel {name}() got an unexpected keyword argument {key!r}")
            if key in named:
                raise TypeError(f"kernel {name}() got multiple values for argument {key!r}")
            named[key] = value
        for key, value in self._defaults.items():
            named.setdefault(key, value)
        missing = [n for n in self.arg_names if n not in named]
        if missing:
            kinds = ["constexpr" if n in self.constexpr_names else "argument" for n in missing]
            listed = ", ".join(f"{k} {n!r}" for k, n in zip(kinds, missing))
            raise TypeError(f"kernel {name}() is missing {listed}")
        return {n: named[n] for n in self.arg_names}

    def _constexprs(self, named: Mapping[str, Any]) -> dict[str, Any]:
        out = {}
        for n in self._constexpr_order:
            value = named[n]
            if isinstance(value, constexpr):
                value = value.value
            if isinstance(value, torch.Tensor):
                raise TypeError(f"kernel {self.__name__}(): constexpr {n!r} got a tensor")
            out[n] = _DTYPES.get(value, value) if isinstance(value, torch.dtype) else value
        return out

    def _param_types(self, named: Mapping[str, Any], allow_type_strings: bool = False
                     ) -> tuple[dict[str, ir.BlockType], torch.device | None]:
        """Types of the runtime arguments and the device they live on; `specialize` and
        `source` may give a type string instead of a value."""
        types: dict[str, ir.BlockType] = {}
        device: torch.device | None = None
        device_arg = None
        for n in self.runtime_names:
            value = named[n]
            if isinstance(value, ir.BlockType):
                types[n] = value
            elif isinstance(value, str) and allow_type_strings:
                types[n] = parse_type(value)
            elif isinstance(value, torch.Tensor):
                type_ = _POINTER_TYPES.get(value.dtype)
                if type_ is None:
                    raise TypeError(f"kernel {self.__name__}(): argument {n!r} has unsupported dtype "
                                    f"{value.dtype}")
                if not value.is_contiguous():
                    raise ValueError(f"kernel {self.__name__}(): argument {n!r} is not contiguous "
                                     f"(shape {tuple(value.shape)}, strides {value.stride()}); kernels index "
                                     "tensors through raw pointers, so pass x.contiguous(), or pass a "
                                     "contiguous tensor that holds the view plus its offset and strides "
                                     "as integer arguments")
                if device is None:
                    device, device_arg = value.device, n
                elif value.device != device:
                    raise ValueError(f"kernel {self.__name__}(): argument {n!r} is on {value.device} but "
                                     f"{device_arg!r} is on {device}; all tensors must share a device")
                types[n] = type_
            else:
                try:
                    types[n] = scalar_type(value)
                except (TypeError, ValueError) as exc:
                    raise TypeError(f"kernel {self.__name__}(): argument {n!r}: {exc}") from None
        return types, device

    # ------------------------------------------------------------------ public API

    def specialize(self, args: Sequence[Any] | Mapping[str, Any], constexprs: Mapping[str, Any]) -> ir.Kernel:
        """The IR for runtime `args` (in parameter order, or by name; tensors, scalars or
        type strings such as '*fp32') and `constexprs`."""
        if isinstance(args, Mapping):
            named = dict(args)
        else:
            if len(args) != len(self.runtime_names):
                raise TypeError(f"kernel {self.__name__}: specialize() needs {len(self.runtime_names)} "
                                f"runtime arguments ({', '.join(self.runtime_names)}), got {len(args)}")
            named = dict(zip(self.runtime_names, args))
        named = self._bind((), {**named, **constexprs})
        types, _ = self._param_types(named, allow_type_strings=True)
        return compile_kernel(self.fn, types, self._constexprs(named))

    def source(self, backend: str = "cpu", signature: Mapping[str, str] | None = None, **kwargs: Any) -> str:
        """Generated code for `backend` ('cpu', 'triton', 'interpret', or 'ir' for the IR listing).

        `kwargs` give the constexprs and, optionally, example runtime arguments. A runtime
        parameter that has neither an example nor an entry in `signature` (Triton-style
        types: '*fp16', 'i32', ...) is typed by its name: '*fp32' when it ends in 'ptr',
        else 'i32'.
        """
        given = dict(signature or {})
        unknown = [n for n in given if n not in self.runtime_names]
        if unknown:
            raise TypeError(f"kernel {self.__name__}: signature names unknown runtime parameters {unknown}")
        for n in self.runtime_names:
            if n not in kwargs and n not in self._defaults:
                kwargs[n] = given.get(n, "*fp32" if n.endswith("ptr") else "i32")
        named = self._bind((), kwargs)
        types, _ = self._param_types(named, allow_type_strings=True)
        kernel = compile_kernel(self.fn, types, self._constexprs(named))
        if backend == "ir":
            return ir.format_kernel(kernel)
        return get_backend(backend).generate(kernel)

    def __getitem__(self, grid: Any) -> Callable[..., None]:
        return lambda *args, **kwargs: self.run(*args, grid=grid, **kwargs)

    def run(self, *args: Any, grid: Any, **kwargs: Any) -> None:
        self.run_signed(self.call_signature(args, kwargs), args, kwargs, grid)

    def run_signed(self, signature: tuple | None, args: tuple, kwargs: dict[str, Any], grid: Any) -> None:
        """`run` for a caller that already holds this call's `call_signature` (an autotuner
        memoises it with the config, so a repeated launch reads the arguments once)."""
        try:
            plan = self._plans.get(signature) if signature is not None else None
        except TypeError:  # an unhashable constexpr value: only the checked path handles it
            signature = plan = None
        # A backend module reloaded since (KF_CPU_COMPILE toggled) needs its own launcher.
        if plan is not None and get_backend(plan.backend_name) is plan.backend:
            named = self._bind(args, _without_launch_options(kwargs)) if callable(grid) else {}
            grid3 = _grid3(grid, named, self.__name__)
            if 0 not in grid3:
                self._invoke(plan.launch, plan.backend_name, grid3, list(args))
            return
        self._run_checked(args, kwargs, grid, signature)

    def bind(self, signature: tuple, grid: Any) -> "BoundLaunch | None":
        """The launch a call with `signature` settled (None when no call with it has been
        made yet, or when `grid` is a callable, which reads the arguments) fixed to `grid`."""
        plan = self._plans.get(signature)
        if plan is None or callable(grid):
            return None
        return BoundLaunch(self, plan, _grid3(grid, {}, self.__name__))

    def call_signature(self, args: tuple, kwargs: dict[str, Any]) -> tuple | None:
        """What a checked launch's outcome depends on, read cheaply from the call: per
        argument its dtype and device (tensors) or scalar type, the keywords' values, the
        backend the tensors' device selects and the `launch_flags`. None when the call is not
        of the fast path's shape (see `__init__`) or an argument would fail the checks (the
        checked path then names it)."""
        if len(args) != self._fast_arity:
            return None
        parts = arg_signatures(args)
        if parts is None:
            return None
        return (*launch_flags(), *parts,
                *[(name, *constant_key(value)) for name, value in kwargs.items()],
                select_backend_name(signature_device(parts)))

    def _run_checked(self, args: tuple, kwargs: dict[str, Any], grid: Any, signature: tuple | None) -> None:
        """The launch with every check; remembers a plan for `signature` so that the next
        call with the same signature skips binding and typing."""
        options = {k: kwargs.pop(k) for k in LAUNCH_OPTIONS if k in kwargs}
        for k, v in options.items():
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"kernel {self.__name__}(): {k} must be a positive int, got {v!r}")
        named = self._bind(args, kwargs)
        constexprs = self._constexprs(named)
        types, device = self._param_types(named)
        backend_name = select_backend_name(device)
        backend = get_backend(backend_name)
        type_key = tuple(types.values())
        const_key = tuple((k, type(v).__name__, repr(v)) for k, v in constexprs.items())
        memo_key = (backend_name, id(backend), device, *launch_flags(), const_key, type_key)
        launch = self._launchers.get(memo_key)
        if launch is None:
            launch = self._compile(backend, backend_name, types, constexprs, const_key, type_key)
            self._launchers[memo_key] = launch
        if signature is not None:
            self._plans[signature] = _LaunchPlan(launch, backend_name, backend)
        grid3 = _grid3(grid, named, self.__name__)
        if 0 in grid3:
            return
        self._invoke(launch, backend_name, grid3, [named[n] for n in self.runtime_names])

    def _invoke(self, launch: Callable, backend_name: str, grid3: tuple[int, int, int], args: list) -> None:
        try:
            launch(grid3, args)
        except IndexError as exc:
            if backend_name != "cpu":
                raise
            raise KernelFault(f"out-of-bounds memory access ({exc}); rerun with KF_SANITIZE=1 "
                              "to find the kernel line, offset and tensor", kernel=self.__name__) from exc

    def _compile(self, backend: Any, backend_name: str, types: dict[str, ir.BlockType],
                 constexprs: dict[str, Any], const_key: tuple, type_key: tuple) -> Callable:
        # KF_SANITIZE changes what the cpu backend generates; the frontend's and the backend's
        # tags keep sources written by older versions of either code generator out of use.
        key = cache.cache_key(self.source_hash, backend_name, backend.device_name(), const_key,
                              tuple(map(str, type_key)), environ_get("KF_SANITIZE", "0"),
                              _frontend_tag(), _backend_tag(backend))
        source = cache.get(backend_name, key)
        if source is None:
            source = backend.generate(compile_kernel(self.fn, types, constexprs))
            cache.put(backend_name, key, source)
        return backend.load(source, f"{self.__name__}_{key}")


def launches_signed(fn: Any) -> bool:
    """Whether a caller holding `fn`'s call signature may launch through `run_signed`:
    `fn` is a JITFunction whose `run` nobody replaced (a recorder that swaps
    `JITFunction.run`, as the compile checks' does, must still see every launch)."""
    return getattr(getattr(fn, "run", None), "__func__", None) is _JIT_RUN


class _LaunchPlan(NamedTuple):
    """What a checked launch settled for one call signature: the loaded launcher and the
    backend (name and module object) it was compiled for."""

    launch: Callable
    backend_name: str
    backend: Any


_JIT_RUN = JITFunction.run


class BoundLaunch:
    """A compiled launch fixed to one call signature and grid (see `JITFunction.bind`).

    Calling it with runtime arguments (in parameter order) of that signature runs the
    kernel without binding, typing or looking anything up: the caller vouches that the
    arguments have the signature. It launches nothing and returns False once its backend
    module was reloaded (KF_CPU_COMPILE toggled); the caller then launches the checked way.
    """

    __slots__ = ("_jit", "_plan", "_grid")

    def __init__(self, jit: JITFunction, plan: _LaunchPlan, grid: tuple[int, int, int]) -> None:
        self._jit, self._plan, self._grid = jit, plan, grid

    def __call__(self, args: list) -> bool:
        plan = self._plan
        if get_backend(plan.backend_name) is not plan.backend:
            return False
        if 0 not in self._grid:
            self._jit._invoke(plan.launch, plan.backend_name, self._grid, args)
        return True


def _without_launch_options(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in kwargs.items() if k not in LAUNCH_OPTIONS}


def constant_key(value: Any) -> tuple:
    """A hashable stand-in for a keyword or constexpr value in a per-call memo key: the
    value of a `kl.constexpr(...)` wrapper, a float by its repr (0.0 and -0.0 are equal and
    hash alike, but specialise differently), a tensor by shape, dtype and device (by
    identity it would be held forever and never match again)."""
    if isinstance(value, constexpr):
        value = value.value
    if isinstance(value, torch.Tensor):
        return ("tensor", tuple(value.shape), value.dtype, value.device)
    return (type(value), repr(value) if type(value) is float else value)


def arg_signature(value: Any) -> Any:
    """The part of a call signature one runtime argument contributes, or None when only
    the checked path can type it (and report it, if it is wrong)."""
    cls = type(value)
    if cls is int:
        return "i32" if -2**31 <= value < 2**31 else None
    if isinstance(value, torch.Tensor):
        return (value.dtype, value.device) if value.is_contiguous() else None
    if cls is float:
        return "fp32"
    if cls is bool:
        return "i1"
    return None


def arg_signatures(args: Sequence[Any]) -> tuple | None:
    """Each argument's `arg_signature`, or None when one has none."""
    parts = tuple(map(arg_signature, args))
    return None if None in parts else parts


def signature_device(parts: Sequence[Any]) -> torch.device | None:
    """The device of the first tensor among signature parts (tuples that end in it; None: no tensor)."""
    for part in parts:
        if type(part) is tuple:
            return part[-1]
    return None


def _hash_sources(paths: Sequence[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


@functools.lru_cache(maxsize=None)
def _frontend_tag() -> str:
    """Hash of the code that turns a kernel into IR (language, frontend, IR)."""
    package = Path(__file__).parent
    return _hash_sources([package / "ir.py", *sorted((package / "language").glob("*.py")),
                          *sorted((package / "frontend").glob("*.py"))])


@functools.lru_cache(maxsize=None)
def _backend_tag(backend: Any) -> str:
    """`backend.cache_tag()` when it defines one, else a hash of its package's sources."""
    tag = getattr(backend, "cache_tag", None)
    if tag is not None:
        return str(tag())
    try:
        package = Path(inspect.getfile(type(backend))).parent
    except TypeError:  # a class defined outside any file
        return ""
    return _hash_sources(sorted(package.rglob("*.py")))


def _grid3(grid: Any, named: Mapping[str, Any], name: str) -> tuple[int, int, int]:
    if type(grid) is tuple and all(type(g) is int and g >= 0 for g in grid):
        if len(grid) == 3:
            return grid
        if len(grid) == 1:
            return (grid[0], 1, 1)
    if callable(grid):
        grid = grid(dict(named))
    if isinstance(grid, (int, torch.SymInt)) and not isinstance(grid, bool):
        grid = (grid,)
    if not isinstance(grid, (tuple, list)) or not 1 <= len(grid) <= 3:
        raise ValueError(f"kernel {name}: grid must be a tuple of 1 to 3 ints, got {grid!r}")
    dims = []
    for g in grid:
        try:
            dim = int(g)
        except (TypeError, ValueError):
            raise ValueError(f"kernel {name}: grid entries must be ints, got {grid!r}") from None
        if dim < 0:
            raise ValueError(f"kernel {name}: grid entries must be >= 0, got {grid!r}")
        dims.append(dim)
    return tuple(dims + [1] * (3 - len(dims)))  # type: ignore[return-value]


def _jit_closure(fn: Callable) -> list[Callable]:
    """`fn` and, transitively, every jit function it names (globals, closures, `module.fn`).

    Read from the code objects rather than the AST so that a warm launch never parses.
    """
    order: list[Callable] = []
    pending = [fn]
    while pending:
        current = pending.pop()
        if any(current is seen for seen in order):
            continue
        order.append(current)
        code = current.__code__
        names = code.co_names
        referenced = [current.__globals__.get(n) for n in names]
        for name, cell in zip(code.co_freevars, current.__closure__ or ()):
            try:
                referenced.append(cell.cell_contents)
            except ValueError:  # an unassigned cell
                continue
        for obj in list(referenced):
            if inspect.ismodule(obj):
                referenced.extend(getattr(obj, n, None) for n in names)
        for obj in referenced:
            callee = getattr(obj, JIT_ATTR, None) if obj is not None else None
            if callee is not None:
                pending.append(callee)
    return order


def jit(fn: Callable | None = None) -> Any:
    """Marks `fn` as a kernel (or a helper inlined into kernels): `@kf.jit` or `@kf.jit()`."""
    if fn is None:
        return jit
    return JITFunction(fn)
