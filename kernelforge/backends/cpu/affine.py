"""Affine analysis of pointer offsets and masks, and the liveness it enables.

Most kernel accesses look like `base + pid * stride + arange(B) * 1`: an affine
function of the program ids, of the block indices and of uniform scalars. When the
analysis proves that form, the CPU backend loads through one `as_strided` view of the
argument (no index tensor, no gather) and checks at run time that the view is in
bounds; the offset and mask tensors the kernel computed are then never needed, so
liveness drops them from the generated code (they are rebuilt from the form only on
the fallback path).

Coefficients are polynomials over *atoms*: uniform integer scalars held as Python
numbers (scalar arguments, uniform loop variables, their arithmetic). Because IR
variables are mutable, a form is forgotten as soon as any variable it mentions is
reassigned, and loops forget everything their body assigns.

Masks get a form too: a conjunction of `F < 0` with `F` affine, which lets the run
time prove "all lanes on" from the form's maximum, or clip a view to the valid box.
"""

from __future__ import annotations

from dataclasses import dataclass

from kernelforge import ir
from kernelforge.backends.cpu.analysis import Facts, assigned, operand_names

Monomial = tuple[str, ...]  # sorted atom names; () is the constant term
Poly = dict[Monomial, int]
# None: the constant 1; ("pid", axis); ("blk", dim); ("dyn", var, dims): an integer tensor
# variable without a form (a loaded block index, say), its dim i lying along block dim
# dims[i] (None for a size-1 dim). Dyn terms make "row gathers": a data-dependent start
# per row plus an affine run along the remaining (inner) block dims.
Key = tuple | None


def poly_add(a: Poly, b: Poly, sign: int = 1) -> Poly:
    out = dict(a)
    for m, c in b.items():
        out[m] = out.get(m, 0) + sign * c
        if out[m] == 0:
            del out[m]
    return out


def poly_mul(a: Poly, b: Poly) -> Poly:
    out: Poly = {}
    for ma, ca in a.items():
        for mb, cb in b.items():
            m = tuple(sorted(ma + mb))
            out[m] = out.get(m, 0) + ca * cb
            if out[m] == 0:
                del out[m]
    return out


def poly_atoms(p: Poly) -> set[str]:
    return {a for m in p for a in m}


@dataclass(frozen=True)
class Form:
    """An integer block (or scalar) as `sum(poly_k * index_k)`; index None is the constant 1."""

    terms: tuple[tuple[Key, tuple[tuple[Monomial, int], ...]], ...]
    shape: tuple[int, ...]

    @staticmethod
    def make(terms: dict[Key, Poly], shape: tuple[int, ...]) -> "Form":
        items = tuple(sorted(((k, tuple(sorted((m, c) for m, c in p.items() if c)))
                              for k, p in terms.items() if any(p.values())),
                             key=lambda kv: repr(kv[0])))
        return Form(items, tuple(shape))

    def polys(self) -> dict[Key, Poly]:
        return {k: dict(p) for k, p in self.terms}

    def atoms(self) -> set[str]:
        out: set[str] = set()
        for k, p in self.terms:
            out |= poly_atoms(dict(p))
            if k is not None and k[0] == "dyn":
                out.add(k[1])
        return out

    @property
    def dyn(self) -> list[tuple[str, tuple]]:
        return [(k[1], k[2]) for k, _ in self.terms if k is not None and k[0] == "dyn"]

    def covered(self) -> set[int]:
        """Block dims along which a dyn term varies."""
        return {d for _, dims in self.dyn for d in dims if d is not None}

    @property
    def is_uniform_scalar(self) -> bool:
        return all(k is None for k, _ in self.terms)

    @property
    def gridded(self) -> bool:
        return any(k is not None and k[0] == "pid" for k, _ in self.terms)


@dataclass(frozen=True)
class MaskForm:
    """A bool block that is true exactly where every `F < 0` holds (no conds: all true)."""

    conds: tuple[Form, ...]
    shape: tuple[int, ...]
    tensors: tuple[tuple[str, tuple], ...] = ()  # bool variables ANDed in: (var, dims) as for dyn

    def atoms(self) -> set[str]:
        out: set[str] = {name for name, _ in self.tensors}
        for f in self.conds:
            out |= f.atoms()
        return out

    def covered(self) -> set[int]:
        out = {d for _, dims in self.tensors for d in dims if d is not None}
        for c in self.conds:
            out |= c.covered()
        return out


@dataclass
class Access:
    """What the code generator needs for one load, store or atomic."""

    ptr: Form
    mask: MaskForm | None  # None: the mask is absent or has no form (use the tensor)
    rows: int | None = None  # row gather: block dims from here on are the inner, affine run


def inner_start(ptr: Form, mask: MaskForm | None) -> int:
    """First block dim of the trailing run along which no dyn term or mask tensor varies."""
    covered = ptr.covered() | (mask.covered() if mask is not None else set())
    rank = len(ptr.shape)
    k = rank
    while k > 0 and k - 1 not in covered:
        k -= 1
    return k


def add_forms(a: Form, b: Form, sign: int = 1) -> Form:
    out = a.polys()
    for k, p in b.polys().items():
        out[k] = poly_add(out.get(k, {}), p, sign)
    return Form.make(out, a.shape if len(a.shape) >= len(b.shape) else b.shape)


def scale_form(a: Form, p: Poly, shape: tuple[int, ...]) -> Form:
    return Form.make({k: poly_mul(q, p) for k, q in a.polys().items()}, shape)


def constant(value: int) -> Form:
    return Form.make({None: {(): int(value)}}, ())


def _reindex(f: Form, shape: tuple[int, ...], dims: dict[int, int]) -> Form:
    """Moves block dims (old -> new); dims missing from `dims` must have no term."""
    out: dict[Key, Poly] = {}
    for k, p in f.polys().items():
        if k is not None and k[0] == "blk":
            if k[1] not in dims:
                continue
            k = ("blk", dims[k[1]])
        elif k is not None and k[0] == "dyn":
            k = ("dyn", k[1], tuple(None if d is None else dims.get(d) for d in k[2]))
        out[k] = p
    return Form.make(out, shape)


def _dims_of(op: ir.Var) -> tuple:
    return tuple(None if n == 1 else d for d, n in enumerate(op.type.shape))


class _Env:
    """Forms of the variables at one program point."""

    def __init__(self, facts: Facts) -> None:
        self.facts = facts
        self.forms: dict[str, Form | MaskForm] = {}

    def copy(self) -> "_Env":
        e = _Env(self.facts)
        e.forms = dict(self.forms)
        return e

    def forget(self, names: set[str]) -> None:
        for n in names:
            self.forms.pop(n, None)
        stale = [v for v, f in self.forms.items() if f.atoms() & names]
        for v in stale:
            del self.forms[v]

    def int_form(self, op: ir.Operand) -> Form | None:
        if isinstance(op, ir.Const):
            if op.type.dtype.is_float or op.type.dtype.is_bool:
                return None
            return constant(op.value)
        f = self.forms.get(op.name)
        if isinstance(f, Form):
            return f
        if op.type.dtype.is_float or op.type.dtype.is_bool or isinstance(f, MaskForm):
            return None
        if self.facts.is_py(op):
            if op.type.is_pointer:
                return None
            return Form.make({None: {(op.name,): 1}}, ())
        return Form.make({("dyn", op.name, _dims_of(op)): {(): 1}}, tuple(op.type.shape))

    def form_of(self, s: ir.Assign, params: set[str]) -> Form | MaskForm | None:
        op, args, shape = s.op, s.args, tuple(s.dst.type.shape)
        if op == "program_id":
            return Form.make({("pid", s.attrs["axis"]): {(): 1}}, ())
        if op == "arange":
            return Form.make({None: {(): s.attrs["start"]}, ("blk", 0): {(): 1}}, shape)
        if op == "addptr":
            base = Form.make({}, ()) if isinstance(args[0], ir.Var) and args[0].name in params \
                else self.int_form(args[0])
            off = self.int_form(args[1])
            return add_forms(base, off) if base is not None and off is not None else None
        if op in ("add", "sub") and not s.dst.type.dtype.is_float:
            a, b = self.int_form(args[0]), self.int_form(args[1])
            return add_forms(a, b, 1 if op == "add" else -1) if a is not None and b is not None else None
        if op == "mul" and not s.dst.type.dtype.is_float:
            a, b = self.int_form(args[0]), self.int_form(args[1])
            if a is None or b is None:
                return None
            if b.is_uniform_scalar:
                return scale_form(a, b.polys().get(None, {}), shape)
            if a.is_uniform_scalar:
                return scale_form(b, a.polys().get(None, {}), shape)
            return None
        if op == "shl" and isinstance(args[1], ir.Const):
            a = self.int_form(args[0])
            return scale_form(a, {(): 2 ** int(args[1].value)}, shape) if a is not None else None
        if op == "neg" and not s.dst.type.dtype.is_float:
            a = self.int_form(args[0])
            return scale_form(a, {(): -1}, shape) if a is not None else None
        if op == "cast" and not s.dst.type.dtype.is_float and not s.dst.type.dtype.is_bool:
            if isinstance(args[0], ir.Var) and isinstance(self.forms.get(args[0].name), MaskForm):
                return None
            return self.int_form(args[0]) if not args[0].type.dtype.is_float else None
        if op in ("expand_dims", "broadcast_to", "full", "trans"):
            src = self.int_form(args[0]) if not s.dst.type.dtype.is_bool else self.mask_form(args[0])
            if src is None:
                return None
            return _reshape_form(op, s.attrs, src, shape)
        if op in ("lt", "le", "gt", "ge") and not args[0].type.dtype.is_float:
            a, b = self.int_form(args[0]), self.int_form(args[1])
            if a is None or b is None:
                return None
            diff = add_forms(a, b, -1) if op in ("lt", "le") else add_forms(b, a, -1)
            if op in ("le", "ge"):
                diff = add_forms(diff, constant(-1))
            return MaskForm((Form.make(diff.polys(), shape),), shape)
        if op == "and" and s.dst.type.dtype.is_bool:
            a, b = self.mask_form(args[0]), self.mask_form(args[1])
            if a is None or b is None:
                return None
            return MaskForm(a.conds + b.conds, shape, a.tensors + b.tensors)
        return None

    def mask_form(self, op: ir.Operand) -> MaskForm | None:
        if isinstance(op, ir.Const):
            return MaskForm((), ()) if op.value else None
        f = self.forms.get(op.name)
        if isinstance(f, MaskForm):
            return f
        if f is None and op.type.dtype.is_bool and not self.facts.is_py(op):
            return MaskForm((), tuple(op.type.shape), ((op.name, _dims_of(op)),))
        return None


def _reshape_form(op: str, attrs: dict, src: Form | MaskForm, shape: tuple[int, ...]) -> Form | MaskForm | None:
    if isinstance(src, MaskForm):
        conds = []
        for c in src.conds:
            f = _reshape_form(op, attrs, c, shape)
            if f is None:
                return None
            conds.append(f)
        tensors = []
        for name, dims in src.tensors:
            moved = _reshape_form(op, attrs, Form.make({("dyn", name, dims): {(): 1}}, src.shape), shape)
            if moved is None:
                return None
            tensors.append(moved.dyn[0])
        return MaskForm(tuple(conds), shape, tuple(tensors))
    if op == "full":
        return _reindex(src, shape, {})
    if op == "expand_dims":
        axis = attrs["axis"]
        return _reindex(src, shape, {d: d + (d >= axis) for d in range(len(src.shape))})
    if op == "trans":
        perm = list(attrs["perm"])
        return _reindex(src, shape, {old: perm.index(old) for old in range(len(src.shape))})
    # broadcast_to: same rank, size-1 dims grow; their index is always 0 so drop their terms
    keep = {d: d for d in range(len(src.shape)) if src.shape[d] != 1 or shape[d] == 1}
    return _reindex(src, shape, keep)


def analyze_accesses(kernel: ir.Kernel, facts: Facts) -> dict[int, Access]:
    """Affine forms of every load/store pointer (and mask) that has one, by `id(stmt)`."""
    params = {p.name for p in kernel.params}
    out: dict[int, Access] = {}

    def visit(block: ir.Block, env: _Env, record: bool = True) -> None:
        for s in block.stmts:
            if isinstance(s, ir.Assign):
                if s.op == "load" and record:
                    _record(s, s.args[0], s.args[1] if len(s.args) > 1 else None, env)
                full = env.form_of(s, params)
                form = _atomize(full, s.dst)
                env.forget({s.dst.name})
                # an atomized form names the new value itself; any other form naming the
                # destination would mean its old value
                if form is not None and (form is not full or s.dst.name not in form.atoms()):
                    env.forms[s.dst.name] = form
            elif isinstance(s, ir.Store) and record:
                _record(s, s.ptr, s.mask, env)
            elif isinstance(s, ir.For):
                names = assigned(s.body) | {s.var.name}
                inductions = _inductions(s, env, names, visit)
                env.forget(names)
                inner = env.copy()
                inner.forms.update(inductions)
                visit(s.body, inner, record)
                env.forget(names)
            elif isinstance(s, ir.If):
                visit(s.then_body, env.copy(), record)
                visit(s.else_body, env.copy(), record)
                env.forget(assigned(s.then_body) | assigned(s.else_body))

    def _record(s: ir.Stmt, ptr: ir.Operand, mask: ir.Operand | None, env: _Env) -> None:
        f = env.int_form(ptr) if isinstance(ptr, ir.Var) else None
        if f is None or not f.shape == tuple(ptr.type.shape):
            return
        m = env.mask_form(mask) if mask is not None else None
        if not f.dyn and (m is None or not any(c.dyn for c in m.conds)):
            # a view; a mask with tensor parts is then passed as the tensor it is
            out[id(s)] = Access(f, None if m is not None and m.tensors else m)
        elif (isinstance(s, ir.Store) or s.op == "load") and (mask is None or m is not None):
            inner = inner_start(f, m)
            if inner < len(f.shape):  # rows of at least one element along a block axis
                out[id(s)] = Access(f, m, rows=inner)

    visit(kernel.body, _Env(facts))
    return out


def _atomize(form: Form | MaskForm | None, dst: ir.Var) -> Form | MaskForm | None:
    """Keeps at most one data-dependent term per form: a sum of several is cheaper to read
    from the variable the kernel computes anyway than to rebuild term by term."""
    if isinstance(form, Form) and len(form.dyn) > 1:
        return Form.make({("dyn", dst.name, _dims_of(dst)): {(): 1}}, form.shape)
    if isinstance(form, MaskForm) and any(len(c.dyn) > 1 for c in form.conds):
        return MaskForm((), form.shape, ((dst.name, _dims_of(dst)),))
    return form


def _inductions(loop: ir.For, env: _Env, names: set[str], visit) -> dict[str, Form]:
    """Forms, valid at the top of each iteration, of pointers the loop steps by a fixed amount.

    `p += inc` once per iteration (Triton's `a_ptrs += BLOCK_K * stride_ak`) with `inc`
    loop-invariant makes `p = p0 + (i - start) * inc` for a unit-step loop variable `i`,
    which keeps the loop's loads on the strided fast path.
    """
    if not (isinstance(loop.step, ir.Const) and loop.step.value == 1) or not env.facts.is_py(loop.var):
        return {}
    start = env.int_form(loop.start)
    if start is None or start.atoms() & names:
        return {}
    updates: dict[str, ir.Assign] = {}
    counts: dict[str, int] = {}
    for st in ir.walk(loop.body):
        if isinstance(st, ir.Assign):
            counts[st.dst.name] = counts.get(st.dst.name, 0) + 1
    for st in loop.body.stmts:
        if (isinstance(st, ir.Assign) and st.op in ("addptr", "add") and counts[st.dst.name] == 1
                and isinstance(st.args[0], ir.Var) and st.args[0].name == st.dst.name
                and isinstance(env.forms.get(st.dst.name), Form)):
            updates[st.dst.name] = st
    if not updates:
        return {}
    probe = env.copy()
    probe.forget(names)
    increments: dict[str, Form] = {}

    class _Probe(_Env):
        def form_of(self, s: ir.Assign, params: set[str]):  # noqa: D401 - captures increments
            if s.dst.name in updates and updates[s.dst.name] is s:
                inc = self.int_form(s.args[1])
                if inc is not None and inc.is_uniform_scalar and not inc.atoms() & names:
                    increments[s.dst.name] = inc
            return super().form_of(s, params)

    probing = _Probe(env.facts)
    probing.forms = probe.forms
    visit(loop.body, probing, False)
    t = add_forms(Form.make({None: {(loop.var.name,): 1}}, ()), start, -1)
    out: dict[str, Form] = {}
    for v, inc in increments.items():
        init = env.forms[v]
        assert isinstance(init, Form)
        out[v] = add_forms(init, scale_form(t, inc.polys().get(None, {}), ()))
        out[v] = Form.make(out[v].polys(), init.shape)
    return out


def live_assigns(kernel: ir.Kernel, accesses: dict[int, Access]) -> set[int]:
    """`id()`s of the assignments whose results some emitted statement needs.

    Stores, atomics and control flow are always emitted. A memory access with an
    affine form needs only its form's atoms (plus the mask tensor if the mask has no
    form), not the pointer and mask variables the kernel computed.
    """
    needed: set[str] = set()
    stmts = list(ir.walk(kernel.body))

    def reads(s: ir.Stmt) -> set[str]:
        acc = accesses.get(id(s))
        if acc is None:
            return set(operand_names(s))
        ptr, mask = (s.ptr, s.mask) if isinstance(s, ir.Store) else (s.args[0], s.args[1] if len(s.args) > 1 else None)
        names = set(operand_names(s)) - {getattr(ptr, "name", None)}
        names |= acc.ptr.atoms()
        if acc.mask is not None and isinstance(mask, ir.Var):
            names.discard(mask.name)
            names |= acc.mask.atoms()
        return names

    for s in stmts:
        if not isinstance(s, ir.Assign) or s.op == "atomic_add":
            needed |= reads(s)
    changed = True
    live: set[int] = set()
    while changed:
        changed = False
        for s in stmts:
            if isinstance(s, ir.Assign) and id(s) not in live and (s.dst.name in needed or s.op == "atomic_add"):
                live.add(id(s))
                new = reads(s) - needed
                if new:
                    needed |= new
                changed = True
    return live
